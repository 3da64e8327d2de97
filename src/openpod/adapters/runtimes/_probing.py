"""Readiness of a pod whose ports are reached on this host: its SSH and its other ports.

The boot script writes `ssh=started` or `ssh=unavailable: why` (boot-status); a pod is
RUNNING once its sshd answers with a banner, or once SSH is known to be unavailable (an
image without sshd still runs). Each port is probed by TCP. Once everything is ready the
result is trusted for REPROBE_SECONDS: each banner probe is a connection sshd logs.
"""

from __future__ import annotations

import time

from openpod.adapters.runtimes import readiness
from openpod.adapters.runtimes._podfiles import PodPaths, PodState, read_text
from openpod.adapters.runtimes.base import PodObservation, PodPhase

REPROBE_SECONDS = 10.0  # how long an all-ready probe result is trusted


class Prober:
    def __init__(self, bind_host: str, timeout: float) -> None:
        self.host = readiness.probe_host(bind_host)
        self.timeout = timeout
        # (pod id, generation) -> (when, ready ports) of the last probe that found all ready
        self._ready: dict[tuple[str, int], tuple[float, tuple[int, ...]]] = {}

    def probe(self, paths: PodPaths, state: PodState, obs: PodObservation) -> None:
        """Fill `obs` (phase, ssh_ready, ready_ports, reason) for a pod that is alive."""
        key = (paths.pod.name, state.generation)
        cached = self._ready.get(key)
        if cached is not None and time.monotonic() - cached[0] < REPROBE_SECONDS:
            obs.ssh_ready, obs.ready_ports = True, cached[1]
            obs.phase = PodPhase.RUNNING
            return
        self._probe_now(paths, state, obs)
        if obs.ssh_ready and set(obs.ready_ports) == set(state.ports):
            self._ready[key] = (time.monotonic(), obs.ready_ports)
        else:
            self._ready.pop(key, None)

    def _probe_now(self, paths: PodPaths, state: PodState, obs: PodObservation) -> None:
        status = (read_text(paths.boot_status) or "").strip()
        ssh_port = state.ports.get(22)
        ready: list[int] = []
        if status.startswith("ssh=unavailable") or ssh_port is None:
            obs.ssh_available = False
            obs.reason = status.removeprefix("ssh=") or "no SSH port"
        elif status == "ssh=started":
            obs.ssh_ready = readiness.ssh_banner(self.host, ssh_port, self.timeout)
            if not obs.ssh_ready and "Cannot bind any address" in (
                read_text(paths.ssh / "sshd.log") or ""
            ):
                obs.ssh_available = False
                obs.reason = f"unavailable: sshd cannot bind port {ssh_port}"
        for cport, hport in sorted(state.ports.items()):
            # SSH answered its banner already: no second connection to its port.
            if (cport == 22 and obs.ssh_ready) or readiness.port_open(
                self.host, hport, self.timeout
            ):
                ready.append(cport)
        obs.ready_ports = tuple(ready)
        started = obs.ssh_ready or not obs.ssh_available
        obs.phase = PodPhase.RUNNING if started else PodPhase.STARTING
