"""The real meter beside real pods: started by the local runtime, killed, restarted, cut off.

A control plane with a 0.5 s heartbeat (grace 1.5 s) and a 1 s settlement period; one node
agent with the local runtime. Seconds here are wall-clock seconds, so the assertions bound
them by what was measured around them rather than naming exact values (the exact arithmetic
is tested in test_billing.py and tests/store)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Platform, running_platform
from tests.support.net import wait_until
from tests.support.platform import wait_node_online

HEARTBEAT = 0.5


Metered = Platform


@pytest.fixture(scope="module")
def metered() -> Iterator[Platform]:
    with running_platform({"OPENPOD_METER_HEARTBEAT": str(HEARTBEAT)}) as running:
        yield running


def _create(m: Metered) -> str:
    body = {"name": "m", "imageName": "local", "gpuTypeId": "NVIDIA GeForce RTX 4090",
            "gpuCount": 1, "ports": "22/tcp"}  # fmt: skip
    pod_id: str = m.user.ok("POST", "/pods", json=body)["id"]
    m.user.wait(pod_id, "RUNNING")
    return pod_id


def _usage(m: Metered, pod_id: str) -> dict[str, Any]:
    row: dict[str, Any] = m.user.ok("GET", "/usage", params={"pod": pod_id})[0]
    return row


def _meter_of(m: Metered, pod_id: str) -> tuple[int, int]:
    """(pid, start time) of the pod's meter, as the runtime recorded it."""
    state = json.loads((m.root / "node" / "pods" / pod_id / "run" / "state.json").read_text())
    return state["meter"]["pid"], state["meter"]["start_time"]


def _metric(m: Metered, name: str) -> float:
    for line in httpx.get(f"{m.plane.url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {name} at /metrics")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_a_pod_is_metered_while_it_runs_and_settled_when_it_stops(metered: Metered) -> None:
    m = metered
    before = time.monotonic()
    pod_id = _create(m)
    after_running = time.monotonic()
    wait_until(lambda: _usage(m, pod_id)["seconds"] >= 3, 20, "3 metered seconds", step=0.1)
    m.user.ok("POST", f"/pods/{pod_id}/stop")
    m.user.wait(pod_id, "STOPPED")
    stopped = time.monotonic()

    def settled() -> bool:
        usage = _usage(m, pod_id)
        return bool(usage["pendingSeconds"] == 0 and not usage["running"])

    wait_until(settled, 20, "the stopped run to be settled", step=0.1)
    usage = _usage(m, pod_id)
    assert 3 <= usage["seconds"] <= stopped - before + 1
    assert usage["seconds"] >= stopped - after_running - 2 * HEARTBEAT - 1
    assert int(usage["settledAmount"]) == usage["seconds"] * int(usage["ratePerSecond"])
    pid, _ = _meter_of(m, pod_id)
    wait_until(lambda: not _alive(pid), 20, "the meter to exit after its run ended")
    m.user.ok("DELETE", f"/pods/{pod_id}")


def test_a_killed_meter_is_restarted_and_replays_without_losing_or_doubling(
    metered: Metered,
) -> None:
    m = metered
    pod_id = _create(m)
    started = time.monotonic()
    wait_until(lambda: _usage(m, pod_id)["seconds"] >= 2, 20, "2 metered seconds", step=0.1)
    pid, start_time = _meter_of(m, pod_id)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _meter_of(m, pod_id)[0] != pid, 20, "the runtime to restart the meter")
    restarted = _meter_of(m, pod_id)
    assert _alive(restarted[0]) and restarted != (pid, start_time)
    seconds_then = _usage(m, pod_id)["seconds"]
    wait_until(
        lambda: _usage(m, pod_id)["seconds"] >= seconds_then + 2, 20, "metering to go on",
        step=0.1,
    )  # fmt: skip
    m.user.ok("POST", f"/pods/{pod_id}/stop")
    m.user.wait(pod_id, "STOPPED")
    elapsed = time.monotonic() - started
    wait_until(lambda: _usage(m, pod_id)["pendingSeconds"] == 0, 20, "the final settlement")
    seconds = _usage(m, pod_id)["seconds"]
    # Never more than the wall time (nothing counted twice), and the restart, well within the
    # grace, lost no more than a heartbeat or so.
    assert seconds <= elapsed + 1
    assert seconds >= elapsed - 4 * HEARTBEAT - 2
    m.user.ok("DELETE", f"/pods/{pod_id}")


def test_a_node_gone_offline_is_billed_up_to_its_last_heartbeat(metered: Metered) -> None:
    m = metered
    pod_id = _create(m)
    wait_until(lambda: _usage(m, pod_id)["seconds"] >= 2, 20, "2 metered seconds", step=0.1)
    meter_pid, _ = _meter_of(m, pod_id)
    # The machine is gone: its agent and the meter with it (the pod's processes stay, as a
    # partitioned machine's would; nobody observes them any more).
    m.node.kill9()
    os.kill(meter_pid, signal.SIGKILL)
    last = _usage(m, pod_id)["seconds"]
    wait_until(
        lambda: not any(n["online"] for n in m.provider.ok("GET", "/nodes")), 20, "node offline"
    )
    # Time passes with nobody observing: two settlement rounds (1 s apart, longer than the
    # grace together) run and bill nothing more.
    rounds = _metric(m, "openpod_settlement_rounds_total")
    wait_until(
        lambda: _metric(m, "openpod_settlement_rounds_total") >= rounds + 2, 20, "two rounds"
    )
    frozen = _usage(m, pod_id)["seconds"]
    assert last <= frozen <= last + 1  # what was in flight at the kill, and then nothing
    m.user.ok("DELETE", f"/pods/{pod_id}")  # terminated while its node is away

    def closed() -> bool:
        usage = _usage(m, pod_id)
        return bool(usage["pendingSeconds"] == 0)

    wait_until(closed, 20, "the abandoned run to be closed and settled", step=0.1)
    assert _usage(m, pod_id)["seconds"] == frozen
    m.node.start()  # the machine comes back: it removes what the plane terminated
    wait_node_online(m.provider, m.node_id)
    wait_until(
        lambda: m.user.ok("GET", f"/pods/{pod_id}")["status"] == "TERMINATED", 30, "terminated"
    )
    assert _usage(m, pod_id)["seconds"] == frozen
