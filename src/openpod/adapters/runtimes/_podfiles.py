"""On-disk layout and state of one local pod: what survives an agent restart.

    <root>/pods/<pod_id>/
        workspace/            the user's files; kept across stop/resume, deleted by remove
        run/                  0700, never visible to the pod
            state.json        generation, leader pid + start time, port mappings, launch
            exit.json         exit code of the leader (once reaped by this agent) and when
            stdout.log, stderr.log
            meter.token       0600: the run's meter token, to restart its meter
            meter.log         the meters' stderr
            boot/             bound at /run/openpod inside the pod
                boot.sh, boot-status, ssh/ (host keys kept across runs, sshd config, log)
        meter/<generation>/   0700: each run's meter journal (docs/metering.md)

state.json lives outside boot/ on purpose: the pod must not be able to point the
agent's signals at another pid. No pod sees any of <root>: it is hidden under a tmpfs in
every pod, so neither its workspace nor another pod's files, journals or tokens show.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from openpod.adapters.runtimes.base import PodLaunch

_POD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_pod_id(pod_id: str) -> str:
    """Pod ids become directory names: refuse anything that could escape root_dir."""
    if not _POD_ID.match(pod_id) or pod_id in (".", ".."):
        raise ValueError(f"invalid pod id {pod_id!r}")
    return pod_id


@dataclass
class MeterRecord:
    """The meter of a run: how to start it again, and the process that runs it now."""

    url: str
    heartbeat_s: float
    gpus: tuple[int, ...]
    pid: int = 0
    start_time: int = 0


@dataclass
class PodState:
    """What the agent must remember about a pod's current (or last) run."""

    pod_id: str
    generation: int
    pid: int
    start_time: int
    ports: dict[int, int]
    launch: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False
    started_at: float = 0.0
    exited_at: float | None = None  # wall clock, when the stop was recorded
    meter: MeterRecord | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["ports"] = {str(k): v for k, v in self.ports.items()}
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PodState:
        data = json.loads(text)
        data["ports"] = {int(k): int(v) for k, v in data.get("ports", {}).items()}
        meter = data.pop("meter", None)
        state = cls(**data)
        if meter is not None:
            meter["gpus"] = tuple(meter.get("gpus", ()))
            state.meter = MeterRecord(**meter)
        return state


def launch_record(launch: PodLaunch) -> dict[str, Any]:
    """The launch as plain JSON data (for the state file and for debugging), less the meter
    token: that lives in its own 0600 file."""
    record = asdict(launch)
    if record.get("meter") is not None:
        record["meter"].pop("token", None)
    return record


@dataclass(frozen=True)
class PodPaths:
    """Every path of one pod, derived from root_dir and the pod id."""

    pod: Path

    @classmethod
    def of(cls, root: Path, pod_id: str) -> PodPaths:
        return cls(root / "pods" / check_pod_id(pod_id))

    @property
    def root(self) -> Path:
        """The runtime's root_dir, which holds every pod."""
        return self.pod.parent.parent

    @property
    def workspace(self) -> Path:
        return self.pod / "workspace"

    @property
    def run(self) -> Path:
        return self.pod / "run"

    @property
    def state(self) -> Path:
        return self.run / "state.json"

    @property
    def exit(self) -> Path:
        return self.run / "exit.json"

    @property
    def meter_token(self) -> Path:
        return self.run / "meter.token"

    @property
    def meter_log(self) -> Path:
        return self.run / "meter.log"

    def meter_journal(self, generation: int) -> Path:
        return self.pod / "meter" / str(generation)

    @property
    def boot(self) -> Path:
        return self.run / "boot"

    @property
    def ssh(self) -> Path:
        return self.boot / "ssh"

    @property
    def boot_status(self) -> Path:
        return self.boot / "boot-status"

    @property
    def host_key_pub(self) -> Path:
        return self.ssh / "ssh_host_ed25519_key.pub"

    def make(self) -> None:
        self.workspace.mkdir(parents=True, exist_ok=True)
        # sshd logins read the workspace as their home: keep it root-owned, not group/world
        # writable, so it also passes StrictModes if an image turns it back on.
        os.chmod(self.workspace, 0o755)  # noqa: S103 (a home dir, not a secret)
        for private in (self.run, self.boot, self.ssh, self.pod / "meter"):
            private.mkdir(mode=0o700, exist_ok=True)
            os.chmod(private, 0o700)


def write_atomic(path: Path, text: str) -> None:
    """Readers never see a half-written file (write to a temp name, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_state(paths: PodPaths) -> PodState | None:
    try:
        return PodState.from_json(paths.state.read_text())
    except FileNotFoundError:
        return None


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


def write_secret(path: Path, text: str) -> None:
    """A 0600 file, never readable by others even for a moment, replaced atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def record_exit(paths: PodPaths, state: PodState, code: int | None) -> float:
    """Keep the reaped exit code (None: not ours to reap) and when the exit was seen, tied to
    the run it belongs to; returns that time."""
    at = time.time()
    record = {"pid": state.pid, "start_time": state.start_time, "exit_code": code, "exited_at": at}
    write_atomic(paths.exit, json.dumps(record))
    return at


def _exit_record(paths: PodPaths, state: PodState) -> dict[str, Any] | None:
    text = read_text(paths.exit)
    if text is None:
        return None
    record: dict[str, Any] = json.loads(text)
    if record.get("pid") != state.pid or record.get("start_time") != state.start_time:
        return None
    return record


def recorded_exit(paths: PodPaths, state: PodState) -> int | None:
    record = _exit_record(paths, state)
    code = record.get("exit_code") if record is not None else None
    return int(code) if code is not None else None


def recorded_exit_at(paths: PodPaths, state: PodState) -> float | None:
    """When this run's exit was recorded, or None when it was not (yet)."""
    record = _exit_record(paths, state)
    at = record.get("exited_at") if record is not None else None
    return float(at) if at is not None else None


# Per-pod locks of every runtime instance in this process, by (root_dir, key): one agent
# process per root_dir, so these serialise its starts, stops and removes of one pod.
_LOCKS: dict[tuple[Path, str], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def pod_lock(root: Path, key: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault((root, key), threading.Lock())


def recorded_states(root: Path) -> Iterator[PodState]:
    """The state of every run recorded under `root` (after an agent restart too)."""
    for state_file in sorted((root / "pods").glob("*/run/state.json")):
        state = read_state(PodPaths(state_file.parent.parent))
        if state is not None:
            yield state


def host_key(paths: PodPaths) -> str | None:
    """The pod's ed25519 host public key as `type base64`, once its boot has made it."""
    text = read_text(paths.host_key_pub)
    return " ".join(text.split()[:2]) if text else None
