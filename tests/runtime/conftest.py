"""Fixtures for the runtime tests: a LocalRuntime under tmp_path and a client SSH key."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openpod.adapters.runtimes.base import MeterLaunch, PodLaunch, PortRequest, ResourceLimits
from openpod.adapters.runtimes.local import LocalRuntime


@pytest.fixture
def client_key(tmp_path: Path) -> Path:
    key = tmp_path / "client" / "id_ed25519"
    key.parent.mkdir()
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "t", "-f", str(key)]
    subprocess.run(argv, check=True)
    return key


@pytest.fixture(params=["bubblewrap", "namespaces"])
def runtime(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalRuntime]:
    """Both ways the local runtime isolates a pod: bwrap where installed, plain mounts else."""
    rt = LocalRuntime(tmp_path / "root", bubblewrap=request.param == "bubblewrap")
    try:
        yield rt
    finally:
        for obs in LocalRuntime(rt.root_dir).adopt():
            rt.remove(obs.pod_id, 0)


@pytest.fixture
def make_launch(client_key: Path) -> Callable[..., PodLaunch]:
    public = client_key.with_suffix(".pub").read_text().strip()

    def make(
        pod_id: str = "pod1",
        generation: int = 1,
        command: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        gpus: tuple[int, ...] = (),
        ports: tuple[int, ...] = (22,),
        meter: MeterLaunch | None = None,
        limits: ResourceLimits | None = None,
    ) -> PodLaunch:
        requests = tuple(PortRequest(p, "tcp") for p in ports)
        return PodLaunch(
            pod_id,
            generation,
            "local",
            command,
            env or {},
            requests,
            gpus,
            (public,),
            meter,
            limits=limits or ResourceLimits(),
        )

    return make
