"""On-disk layout and state of one local pod: what survives an agent restart.

    <root>/pods/<pod_id>/
        workspace/            the user's files; kept across stop/resume, deleted by remove
        run/                  0700, never visible to the pod
            state.json        generation, leader pid + start time, port mappings, launch
            exit.json         exit code of the leader, once reaped by this agent
            stdout.log, stderr.log
            boot/             bound at /run/openpod inside the pod
                boot.sh, boot-status, ssh/ (host keys kept across runs, sshd config, log)

state.json lives outside boot/ on purpose: the pod must not be able to point the
agent's signals at another pid.
"""

from __future__ import annotations

import json
import os
import re
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

    def to_json(self) -> str:
        data = asdict(self)
        data["ports"] = {str(k): v for k, v in self.ports.items()}
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PodState:
        data = json.loads(text)
        data["ports"] = {int(k): int(v) for k, v in data.get("ports", {}).items()}
        return cls(**data)


def launch_record(launch: PodLaunch) -> dict[str, Any]:
    """The launch as plain JSON data (for the state file and for debugging)."""
    return asdict(launch)


@dataclass(frozen=True)
class PodPaths:
    """Every path of one pod, derived from root_dir and the pod id."""

    pod: Path

    @classmethod
    def of(cls, root: Path, pod_id: str) -> PodPaths:
        return cls(root / "pods" / check_pod_id(pod_id))

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
        for private in (self.run, self.boot, self.ssh):
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


def record_exit(paths: PodPaths, state: PodState, code: int) -> None:
    """Keep the reaped exit code, tied to the run it belongs to."""
    record = {"pid": state.pid, "start_time": state.start_time, "exit_code": code}
    write_atomic(paths.exit, json.dumps(record))


def recorded_exit(paths: PodPaths, state: PodState) -> int | None:
    text = read_text(paths.exit)
    if text is None:
        return None
    record = json.loads(text)
    if record.get("pid") != state.pid or record.get("start_time") != state.start_time:
        return None
    code = record.get("exit_code")
    return int(code) if code is not None else None
