"""Metering through the real control plane: meters' WebSocket, usage, settlements, the funds
guard, restarts. The node and the meter are played here over their wire protocols (the real
ones are tested against this same server in test_metering_e2e.py), so every event's time is
ours to choose: a run of 3,601 s takes no hour."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from openpod.protocol import GpuInfo, Hello
from openpod.services.metering import meter_token
from tests.support.net import wait_until
from tests.support.platform import Api, ControlPlane, signup

T0 = 1_764_140_000.0  # the node's clock, seconds
H100 = "NVIDIA H100 80GB HBM3"


@dataclass
class Plane:
    root: Path
    plane: ControlPlane
    node: ClientConnection
    provider: Api
    user: Api

    @property
    def secret(self) -> bytes:
        return bytes.fromhex((self.root / "edge-secret").read_text().strip())

    def ws_url(self, path: str) -> str:
        return self.plane.url.replace("http://", "ws://") + path


def _fake_node(plane: ControlPlane, provider: Api) -> ClientConnection:
    """A node that says hello with 16 H100s and then only listens."""
    created = provider.ok("POST", "/nodes", json={"name": "fake"})
    url = plane.url.replace("http://", "ws://") + "/nodes/connect"
    ws = connect(url, additional_headers={"Authorization": f"Bearer {created['token']}"})
    ws.__enter__()  # a connection we close ourselves (websockets wants a `with`)
    hello = Hello(runtime="fake", public_host="127.0.0.1", pods=[],
                  gpus=[GpuInfo(index=i, type=H100) for i in range(16)])  # fmt: skip
    ws.send(hello.model_dump_json())
    json.loads(ws.recv(timeout=10))  # the sync
    return ws


@pytest.fixture(scope="module")
def billing() -> Iterator[Plane]:
    root = Path(tempfile.mkdtemp(prefix="openpod-billing-"))
    (root / "plane").mkdir()
    # Hours of events are played in a second here: the check that no run bills more than
    # the control plane saw pass is off (it has its own tests in tests/store).
    plane = ControlPlane(root / "plane", env={"OPENPOD_METER_CLOCK_CHECK": "false"})
    node: ClientConnection | None = None
    clients: list[Api] = []
    try:
        plane.start()
        provider = signup(plane.url, "provider")
        clients.append(provider)
        provider.ok("POST", "/providers", json={"payoutWallet": "0x" + "22" * 20})
        node = _fake_node(plane, provider)
        user = signup(plane.url, "user")
        clients.append(user)
        yield Plane(root / "plane", plane, node, provider, user)
    finally:
        for client in clients:
            client.http.close()
        if node is not None:
            node.close()
        plane.stop()
        shutil.rmtree(root, ignore_errors=True)


def _pod(p: Plane, gpus: int = 1) -> dict[str, Any]:
    pod: dict[str, Any] = p.user.ok(
        "POST", "/pods", json={"name": "m", "imageName": "img", "gpuTypeId": H100,
                               "gpuCount": gpus, "ports": "22/tcp"},
    )  # fmt: skip
    return pod


class Meter:
    """The meter's side of /meter/connect."""

    def __init__(self, p: Plane, pod_id: str, generation: int = 1, token: str | None = None):
        token = token or meter_token(p.secret, pod_id, generation)
        self.ws = connect(
            p.ws_url("/meter/connect"), additional_headers={"Authorization": f"Bearer {token}"}
        )
        self.ws.__enter__()  # a connection we close ourselves (websockets wants a `with`)
        self.welcome = json.loads(self.ws.recv(timeout=10))

    def send(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        self.ws.send(json.dumps({"type": "events", "events": events}))
        answer: dict[str, Any] = json.loads(self.ws.recv(timeout=10))
        return answer

    def close(self) -> None:
        self.ws.close()


def beats(first_seq: int, times: list[float], kind: str = "heartbeat") -> list[dict[str, Any]]:
    return [
        {"seq": first_seq + i, "kind": "started" if first_seq + i == 1 else kind, "at": T0 + t}
        for i, t in enumerate(times)
    ]


def _usage(p: Plane, pod_id: str) -> dict[str, Any]:
    rows = p.user.ok("GET", "/usage", params={"pod": pod_id})
    assert len(rows) == 1
    row: dict[str, Any] = rows[0]
    return row


def test_a_run_of_3601_seconds_costs_exactly_its_price(billing: Plane) -> None:
    pod = _pod(billing, gpus=2)
    meter = Meter(billing, pod["id"])
    assert meter.welcome == {"type": "welcome", "acked": 0, "closed": False}
    times = [5.0 * i for i in range(721)] + [3601.0]
    for start in range(0, len(times), 250):
        ack = meter.send(beats(start + 1, times[start : start + 250]))
        assert ack == {"type": "ack", "acked": min(start + 250, len(times)), "closed": False}
    # Visible at once, with no settlement round in between needed.
    usage = _usage(billing, pod["id"])
    rate = int(usage["ratePerSecond"])
    assert (usage["seconds"], int(usage["amount"])) == (3601, 3601 * rate * 2)
    assert usage["running"] is True
    stop = meter.send([{"seq": len(times) + 1, "kind": "stopped", "at": T0 + 3601.0}])
    assert stop == {"type": "ack", "acked": len(times) + 1, "closed": True}
    usage = _usage(billing, pod["id"])
    assert (usage["settledSeconds"], usage["pendingSeconds"]) == (3601, 0)
    assert int(usage["settledAmount"]) == 3601 * rate * 2
    meter.close()


def test_duplicates_out_of_order_and_skew_change_nothing(billing: Plane) -> None:
    pod = _pod(billing)
    meter = Meter(billing, pod["id"])
    skew = -47.0  # the node's clock is 47 s behind: only differences count
    first = beats(1, [skew, skew + 5, skew + 10])
    assert meter.send(first)["acked"] == 3
    assert meter.send(first)["acked"] == 3  # a replay
    assert meter.send(beats(5, [skew + 20]))["acked"] == 3  # early: waits for seq 4
    assert meter.send(beats(4, [skew + 15]))["acked"] == 5
    assert _usage(billing, pod["id"])["seconds"] == 20
    meter.close()
    again = Meter(billing, pod["id"])  # a restarted meter learns where to resume
    assert again.welcome["acked"] == 5
    again.close()


def _metric(p: Plane, name: str) -> float:
    text = httpx.get(f"{p.plane.url}/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def test_malformed_events_and_wrong_tokens_are_refused_and_counted(billing: Plane) -> None:
    pod = _pod(billing)
    bad_token = 'openpod_meter_refused_total{reason="invalid_token"}'
    malformed = 'openpod_meter_refused_total{reason="malformed"}'
    refused_before, malformed_before = _metric(billing, bad_token), _metric(billing, malformed)
    forged = meter_token(b"not the secret", pod["id"], 1)
    for token in (forged, "op_" + "x" * 40, meter_token(billing.secret, pod["id"], 1)[:-2]):
        with (
            connect(billing.ws_url("/meter/connect"),
                    additional_headers={"Authorization": f"Bearer {token}"}) as ws,
            pytest.raises(ConnectionClosed) as closed,
        ):  # fmt: skip
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "invalid meter token")
    assert _metric(billing, bad_token) == refused_before + 3
    meter = Meter(billing, pod["id"])
    for events, problem in [
        ([{"seq": 0, "kind": "heartbeat", "at": T0}], "seq must be an integer"),
        ([{"seq": 1, "kind": "sleeping", "at": T0}], "kind must be one of"),
        ([{"seq": 1, "kind": "started", "at": "noon"}], "at must be a number"),
        ([{"seq": 1, "kind": "started", "at": T0, "gpus": [{"index": -1}]}], "gpus.index"),
        ([], "non-empty list"),
    ]:
        answer = meter.send(events)
        assert answer["type"] == "error"
        assert problem in answer["error"]
    meter.ws.send("{not json")
    assert json.loads(meter.ws.recv(timeout=10))["type"] == "error"
    assert _metric(billing, malformed) == malformed_before + 6
    assert _usage(billing, pod["id"])["seconds"] == 0  # nothing half-stored
    assert meter.send(beats(1, [0, 1.5]))["acked"] == 2  # and the connection still works
    meter.close()


def test_a_control_plane_restart_loses_no_second(billing: Plane) -> None:
    pod = _pod(billing)
    meter = Meter(billing, pod["id"])
    assert meter.send(beats(1, [0, 5, 10]))["acked"] == 3
    meter.close()
    billing.node.close()
    billing.plane.stop()
    billing.plane.start()
    billing.node = _fake_node(billing.plane, billing.provider)
    meter = Meter(billing, pod["id"])
    assert meter.welcome["acked"] == 3
    assert meter.send(beats(4, [15, 20]))["acked"] == 5
    assert _usage(billing, pod["id"])["seconds"] == 20
    meter.close()


def test_events_of_another_run_are_acked_and_never_billed(billing: Plane) -> None:
    pod = _pod(billing)
    meter = Meter(billing, pod["id"], generation=9)
    assert meter.welcome == {"type": "welcome", "acked": 0, "closed": True}
    assert meter.send(beats(1, [0, 5]))["closed"] is True
    assert _usage(billing, pod["id"])["seconds"] == 0
    meter.close()


def test_settlements_are_cut_every_period(billing: Plane) -> None:
    pod = _pod(billing)
    meter = Meter(billing, pod["id"])
    meter.send(beats(1, [0, 5, 10]))

    def settled() -> bool:
        return bool(_usage(billing, pod["id"])["settledSeconds"] == 10)

    wait_until(settled, 10, "a settlement round to cut the run's 10 s", step=0.1)
    meter.send(beats(4, [15]))
    wait_until(lambda: _usage(billing, pod["id"])["settledSeconds"] == 15, 10, "the next cut")
    meter.close()


def _admin_cli(p: Plane, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "openpod", "admin", *args, "--data-dir", str(p.root)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout


def _new_account(p: Plane, name: str, *flags: str) -> Api:
    out = _admin_cli(p, "create-account", name, *flags)
    key = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("api key"))
    return Api(p.plane.url, key)


def _told_to_stop(p: Plane, pod_id: str) -> bool:
    """Read the fake node's messages until one tells it to stop `pod_id`."""
    while True:
        message = json.loads(p.node.recv(timeout=10))
        pods = message["pods"] if message["type"] == "sync" else [message["pod"]]
        if any(a["podId" if "podId" in a else "pod_id"] == pod_id and a["desired"] == "stopped"
               for a in pods):  # fmt: skip
            return True


def test_the_funds_guard_refuses_an_hour_it_cannot_pay_and_stops_a_pod_that_runs_out(
    billing: Plane,
) -> None:
    admin = _new_account(billing, "boss", "--admin")
    poor = _new_account(billing, "poor")
    me = poor.ok("GET", "/me")
    body = {"name": "m", "imageName": "img", "gpuTypeId": H100, "gpuCount": 1, "ports": "22/tcp"}
    refused = poor.http.post("/pods", json=body)
    assert refused.status_code == 402
    assert "insufficient funds" in refused.json()["detail"]
    assert poor.ok("GET", "/balance")["available"] == "0"

    rate = int(next(t for t in admin.ok("GET", "/gpu-types") if t["id"] == H100)["ratePerSecond"])
    assert poor.http.post(f"/accounts/{me['id']}/credit", json={"amount": "1"}).status_code == 403
    bad = admin.http.post(f"/accounts/{me['id']}/credit", json={"amount": "-5"})
    assert bad.status_code == 400
    admin.ok("POST", f"/accounts/{me['id']}/credit", json={"amount": str(rate * 3630)})
    pod = poor.ok("POST", "/pods", json=body)
    assert int(poor.ok("GET", "/balance")["available"]) == rate * 3630

    meter = Meter(billing, pod["id"])
    times = [5.0 * i for i in range(729)]  # 0 .. 3640 s: more than the account can pay
    for start in range(0, len(times), 250):
        meter.send(beats(start + 1, times[start : start + 250]))

    def stopped_for_funds() -> bool:
        got = poor.ok("GET", f"/pods/{pod['id']}")
        return bool(
            got["desiredStatus"] == "STOPPED" and got["statusReason"] == "insufficient_funds"
        )

    wait_until(stopped_for_funds, 10, "the funds guard to stop the pod", step=0.1)
    assert _told_to_stop(billing, pod["id"])  # and its node is told
    assert int(poor.ok("GET", "/balance")["available"]) < 0  # what it used is still owed
    again = poor.http.post(f"/pods/{pod['id']}/start")
    assert again.status_code in (402, 409)
    meter.close()
    admin.http.close()
    poor.http.close()
