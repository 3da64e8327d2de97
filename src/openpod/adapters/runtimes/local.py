"""The local runtime: a pod is a process tree on this host, in namespaces of its own.

Each run is `unshare --pid --fork --kill-child --mount-proc --mount --ipc --uts` (util-linux),
started in a new session so that it outlives an agent restart. The unshare process is the
pod's leader: when it dies the kernel tears the whole PID namespace down, which is what stop
and adoption rely on (a process-group kill alone would miss SSH sessions, which call setsid).

Inside, bubblewrap (where installed; `bubblewrap=None`) runs as the namespace's PID 1 and
builds the pod's view: the host's filesystem read-only, the pod's workspace at /workspace,
its boot dir at /run/openpod, fresh tmpfs /tmp, /var/tmp, /run and /dev/shm, a pod-private
/etc/passwd in which the running user's home is /workspace (sshd logins chdir to the passwd
home and read ~/.ssh there, so they land in /workspace with HOME=/workspace, like the
workload), and the pod id as hostname. Without bubblewrap a small sh script makes the same
mounts (less the read-only host, /var/tmp, /run and /dev/shm) before it execs the boot script.
bwrap stays the parent of the boot script and exits with its status, so exit codes and stop
work the same either way. The host gets two empty mountpoint directories, /workspace and
/run/openpod, created if absent; the mounts themselves never leave the pod's namespace.

No network namespace: the workload shares the host's network and must bind the host port
given in OPENPOD_TCP_PORT_<container port> (bound on bind_host). Requires root.

Each run with a `meter` gets a meter process (`python -m openpod.meter`) beside it: started
by this runtime in a session of its own, outside the pod's namespaces, watching the leader by
pid + start time, its token in its environment only. observe() starts it again if it dies
while the pod runs (it replays its journal); stop and remove leave it to see the workload's
exit and send `stopped` itself. The pod sees nothing of root_dir (a tmpfs hides it).

A run with resource limits (`launch.limits`) gets a cgroup of its own (_cgroups.py), which
its leader joins before it forks anything and the meter never joins; stop and remove delete
it, and an agent restart finds it again by name. A run without limits touches no cgroup.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from openpod.adapters.runtimes import _cgroups, _meters, _procs, readiness
from openpod.adapters.runtimes._launch import (
    BOOT_SCRIPT,
    POD_RUN_DIR,
    pod_env,
    pod_passwd,
    unshare_argv,
)
from openpod.adapters.runtimes._podfiles import (
    PodPaths,
    PodState,
    host_key,
    launch_record,
    pod_lock,
    read_state,
    record_exit,
    recorded_exit,
    recorded_exit_at,
    recorded_states,
    write_atomic,
)
from openpod.adapters.runtimes._probing import Prober
from openpod.adapters.runtimes.base import (
    PodLaunch,
    PodObservation,
    PodPhase,
    PodStartError,
    RuntimeError_,
    check_limits,
)

log = logging.getLogger("openpod.runtime")

# Leaders this process started, by pid: only the parent can reap them and learn the exit
# code. Shared by every LocalRuntime instance of the process, as are the per-pod locks.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
__all__ = ["BOOT_SCRIPT", "LocalRuntime"]


class LocalRuntime:
    """Pods as namespaced process trees on this host: the single-host default runtime.

    One agent process per root_dir: locks are per process, not across processes.
    """

    name = "local"

    def __init__(
        self,
        root_dir: Path,
        bind_host: str = "127.0.0.1",
        *,
        probe_timeout: float = 0.2,
        replace_grace_seconds: float = 10.0,
        bubblewrap: bool | None = None,
        meter_drain_seconds: float = 2.0,
    ) -> None:
        """`bubblewrap`: None uses bwrap where it is installed, True requires it, False
        never uses it (the same namespaces, but the host's filesystem stays writable).
        `meter_drain_seconds`: how long remove() lets a pod's meter deliver `stopped`."""
        self.root_dir = Path(root_dir).resolve()
        self.bind_host = bind_host
        self.probe_timeout = probe_timeout
        self.replace_grace_seconds = replace_grace_seconds
        self.bubblewrap = bubblewrap
        self.meter_drain_seconds = meter_drain_seconds
        self._prober = Prober(bind_host, probe_timeout)
        self._meters = _meters.MeterKeeper(lambda pod_id: pod_lock(self.root_dir, pod_id))
        try:
            user = pwd.getpwuid(os.geteuid())
            self._user_name, self._user_home = user.pw_name, user.pw_dir
        except KeyError:  # a uid without a passwd entry: nothing to bind, sshd will refuse
            self._user_name, self._user_home = str(os.geteuid()), ""

    # -- Runtime protocol -------------------------------------------------------------

    def start(self, launch: PodLaunch) -> PodObservation:
        """Start this generation of the pod, or return it if it already runs."""
        paths = PodPaths.of(self.root_dir, launch.pod_id)
        check_limits(launch.limits)  # before anything is made
        with pod_lock(self.root_dir, launch.pod_id):
            old = read_state(paths)
            if old is not None and self._alive(paths, old) and not old.stopped:
                if old.generation == launch.generation:
                    return self.observe(launch.pod_id)
                if old.generation > launch.generation:
                    raise PodStartError(
                        f"pod {launch.pod_id} already runs generation {old.generation}"
                    )
                self._stop_locked(paths, old, self.replace_grace_seconds)
            tools = self._check_host()
            # A fresh cgroup where the pod has limits (an earlier run's goes), gone on error.
            with _cgroups.pod_group(self.root_dir, launch.pod_id, launch.limits) as group:
                paths.make()
                shutil.copyfile(BOOT_SCRIPT, paths.boot / "boot.sh")
                paths.boot_status.unlink(missing_ok=True)
                paths.exit.unlink(missing_ok=True)
                (paths.ssh / "sshd.log").unlink(missing_ok=True)  # judged afresh for each run
                with pod_lock(self.root_dir, ".ports"):
                    try:
                        ports = readiness.allocate_ports(
                            self.bind_host,
                            [22, *(p.port for p in launch.ports)],  # no sshd on host port 22
                            self._ports_of_live_pods(except_pod=launch.pod_id),
                            old.ports if old is not None else {},
                        )
                    except OSError as exc:
                        raise PodStartError(str(exc)) from exc
                    state = self._spawn(paths, launch, ports, tools, group)
                    write_atomic(paths.state, state.to_json())
            self._meters.begin(paths, state, launch)
        return self.observe(launch.pod_id)

    def observe(self, pod_id: str) -> PodObservation:
        """Liveness from /proc, readiness from TCP probes; never blocks for long."""
        paths = PodPaths.of(self.root_dir, pod_id)
        state = read_state(paths) if paths.pod.is_dir() else None
        if state is None:
            return PodObservation(pod_id, 0, PodPhase.ABSENT, ssh_user=self._user_name)
        obs = PodObservation(pod_id, state.generation, PodPhase.STOPPED, ssh_user=self._user_name)
        obs.ssh_host_key = host_key(paths)
        _meters.reap()
        if state.stopped:
            obs.reason = "stopped"
            obs.exit_code = recorded_exit(paths, state)
            obs.exited_at = state.exited_at
            return obs
        if not self._alive(paths, state):
            obs.phase = PodPhase.EXITED
            obs.exit_code = recorded_exit(paths, state)
            obs.reason = (
                "workload exited"
                if obs.exit_code is None
                else f"workload exited with code {obs.exit_code}"
            )
            obs.exited_at = recorded_exit_at(paths, state)
            if obs.exited_at is None:  # not ours to reap (adopted): its exit is seen now
                obs.exited_at = record_exit(paths, state, None)
            obs.reason += _cgroups.oom_note(self.root_dir, pod_id, state.launch)
            return obs
        self._meters.keep(paths, state, self._alive)
        obs.port_mappings = dict(state.ports)
        self._prober.probe(paths, state, obs)
        return obs

    def stop(self, pod_id: str, grace_seconds: float) -> PodObservation:
        """SIGTERM the pod's namespace, SIGKILL it after the grace; keep the workspace."""
        paths = PodPaths.of(self.root_dir, pod_id)
        with pod_lock(self.root_dir, pod_id):
            state = read_state(paths) if paths.pod.is_dir() else None
            if state is not None and not state.stopped:
                self._stop_locked(paths, state, grace_seconds)
        return self.observe(pod_id)

    def remove(self, pod_id: str, grace_seconds: float) -> None:
        """Stop, then delete the pod dir, workspace included. Unknown pod: nothing to do."""
        paths = PodPaths.of(self.root_dir, pod_id)
        with pod_lock(self.root_dir, pod_id):
            state = read_state(paths) if paths.pod.is_dir() else None
            if state is not None and not state.stopped:
                self._stop_locked(paths, state, grace_seconds)
            meter = state.meter if state is not None else None
            _cgroups.release(self.root_dir, pod_id)  # a leftover too; raises if it holds processes
            if meter is not None:  # let it send `stopped` before its journal goes
                _meters.drain(meter, self.meter_drain_seconds)
            shutil.rmtree(paths.pod, ignore_errors=True)
            if meter is not None:
                _meters.kill(meter)
            if paths.pod.exists():
                raise RuntimeError_(f"pod {pod_id}: could not delete {paths.pod}")

    def adopt(self) -> list[PodObservation]:
        """Every pod with a state file under root_dir, observed (after an agent restart)."""
        pods = self.root_dir / "pods"
        if not pods.is_dir():
            return []
        found = sorted(p.parent.parent.name for p in pods.glob("*/run/state.json"))
        return [self.observe(pod_id) for pod_id in found]

    # -- internals ----------------------------------------------------------------------

    def _check_host(self) -> dict[str, str]:
        if os.geteuid() != 0:
            raise PodStartError("the local runtime must run as root (it uses PID/mount namespaces)")
        names = ["unshare", "mount", "sh"]
        if self.bubblewrap is not False and (self.bubblewrap or shutil.which("bwrap")):
            names.append("bwrap")
        tools = {name: shutil.which(name) for name in names}
        missing = [name for name, path in tools.items() if path is None]
        if missing:
            raise PodStartError(f"the local runtime needs {', '.join(missing)} on the host")
        for mountpoint in ("/workspace", POD_RUN_DIR):
            os.makedirs(mountpoint, exist_ok=True)
        return {name: path for name, path in tools.items() if path is not None}

    def _spawn(
        self,
        paths: PodPaths,
        launch: PodLaunch,
        ports: dict[int, int],
        tools: dict[str, str],
        group: _cgroups.PodCgroup | None,
    ) -> PodState:
        passwd = ""
        if self._user_home:  # a uid without a passwd entry: sshd will refuse logins anyway
            passwd_file = paths.boot / "passwd"
            write_atomic(passwd_file, pod_passwd(Path("/etc/passwd").read_text(), self._user_name))
            passwd_file.chmod(0o644)
            passwd = str(passwd_file)
        argv = unshare_argv(tools, paths, passwd, launch.command, launch.pod_id)
        with (
            open(paths.run / "stdout.log", "wb") as out,
            open(paths.run / "stderr.log", "wb") as err,
        ):
            try:
                proc = _cgroups.start_leader(
                    argv,
                    group,
                    sh=tools["sh"],
                    stdout=out,
                    stderr=err,
                    env=pod_env(launch, ports, self.bind_host),
                    cwd=paths.workspace,
                )
            except OSError as exc:
                raise PodStartError(f"cannot start the pod: {exc}") from exc
        started = _procs.start_time(proc.pid)
        if started is None:  # already gone and reaped by no one: keep what we know
            proc.wait()
            started = 0
        _CHILDREN[proc.pid] = proc
        return PodState(
            pod_id=launch.pod_id,
            generation=launch.generation,
            pid=proc.pid,
            start_time=started,
            ports=ports,
            launch=launch_record(launch),
            started_at=time.time(),
        )

    def _alive(self, paths: PodPaths, state: PodState) -> bool:
        """Reap the leader if it is ours (recording its exit code), then check /proc."""
        proc = _CHILDREN.get(state.pid)
        if proc is not None and _procs.start_time(state.pid) in (state.start_time, None):
            code = proc.poll()
            if code is not None:
                _CHILDREN.pop(state.pid, None)
                # unshare re-raises the signal that killed PID 1: report it like a shell.
                record_exit(paths, state, 128 - code if code < 0 else code)
                return False
        return _procs.is_alive(state.pid, state.start_time)

    def _stop_locked(self, paths: PodPaths, state: PodState, grace: float) -> None:
        if self._alive(paths, state):
            gone = _procs.terminate_namespace(state.pid, state.start_time, grace)
            self._alive(paths, state)  # reap
            if not gone:
                raise RuntimeError_(f"pod {state.pod_id}: processes survived SIGKILL")
        state.stopped = True
        state.exited_at = recorded_exit_at(paths, state) or time.time()
        write_atomic(paths.state, state.to_json())
        _cgroups.release(self.root_dir, state.pod_id)

    def _ports_of_live_pods(self, except_pod: str) -> set[int]:
        taken: set[int] = set()
        for state in recorded_states(self.root_dir):
            paths = PodPaths.of(self.root_dir, state.pod_id)
            if state.pod_id != except_pod and not state.stopped and self._alive(paths, state):
                taken.update(state.ports.values())
        return taken
