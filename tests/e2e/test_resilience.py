"""Restarts: the node agent killed with -9 adopts its pods; the control plane restarts losing nothing."""

from __future__ import annotations

from pathlib import Path

from openpod.adapters.runtimes.local import LocalRuntime
from tests.e2e.conftest import Platform
from tests.support.net import port_open, wait_until
from tests.support.platform import wait_node_online
from tests.support.ssh import ssh

POD = {
    "name": "survivor",
    "imageName": "local",
    "gpuTypeId": "NVIDIA H100 80GB HBM3",
    "gpuCount": 1,
}


def _node_online(platform: Platform) -> bool:
    return any(n["online"] for n in platform.provider.ok("GET", "/nodes"))


def test_node_kill9_and_restart_adopts_running_pods(platform: Platform, tmp_path: Path) -> None:
    user = platform.user
    pod = user.wait(user.ok("POST", "/pods", json=POD)["id"])
    user.ok(
        "POST", f"/pods/{pod['id']}/stop"
    )  # ... and a second pod, stopped while the node is away
    other = user.wait(user.ok("POST", "/pods", json=POD)["id"])

    platform.node.kill9()
    wait_until(lambda: not _node_online(platform), 15, "the control plane to see the node go")
    out = ssh(other, platform.key_file, "echo still here", tmp_path)
    assert out.stdout.strip() == "still here", out.stderr  # pods outlive their agent
    user.ok("POST", f"/pods/{other['id']}/stop")
    assert user.ok("GET", f"/pods/{other['id']}")["status"] == "STOPPING"  # the node is away

    platform.node.start()
    wait_node_online(platform.provider, platform.node_id)
    user.wait(pod["id"], "STOPPED")
    user.wait(other["id"], "STOPPED")  # the stop asked while the node was away is carried out
    assert not port_open(int(other["portMappings"]["22"]))

    user.ok("POST", f"/pods/{other['id']}/start")
    resumed = user.wait(other["id"])
    platform.node.kill9()
    platform.node.start()
    wait_node_online(platform.provider, platform.node_id)
    again = user.wait(other["id"])
    assert again["portMappings"] == resumed["portMappings"]  # adopted, not restarted
    held = [
        obs for obs in LocalRuntime(platform.root / "node").adopt() if obs.pod_id == other["id"]
    ]
    assert len(held) == 1  # no duplicate
    out = ssh(again, platform.key_file, "echo adopted", tmp_path)
    assert out.stdout.strip() == "adopted", out.stderr
    for p in (pod, other):
        user.ok("DELETE", f"/pods/{p['id']}")
        user.wait(p["id"], "TERMINATED")


def test_control_plane_restart_keeps_state(platform: Platform, tmp_path: Path) -> None:
    user = platform.user
    pod = user.wait(user.ok("POST", "/pods", json=POD)["id"])
    keys_before = user.ok("GET", "/ssh-keys")

    platform.plane.stop()
    platform.plane.start()
    wait_node_online(platform.provider, platform.node_id)

    after = user.ok("GET", f"/pods/{pod['id']}")
    assert after["status"] == "RUNNING"
    assert after["portMappings"] == pod["portMappings"]
    assert user.ok("GET", "/ssh-keys") == keys_before
    out = ssh(after, platform.key_file, "echo same pod", tmp_path)
    assert out.stdout.strip() == "same pod", out.stderr
    user.ok("POST", f"/pods/{pod['id']}/stop")
    assert user.wait(pod["id"], "STOPPED")["status"] == "STOPPED"
    user.ok("DELETE", f"/pods/{pod['id']}")
    user.wait(pod["id"], "TERMINATED")


def test_node_with_a_wrong_token_stops_with_a_clear_error(platform: Platform) -> None:
    from tests.support.platform import NodeAgentProc

    agent = NodeAgentProc(
        platform.plane, "opn_not-a-token", platform.root / "badnode", "NVIDIA H200:1"
    )
    agent.start()
    try:
        assert agent.proc is not None
        assert agent.proc.wait(30) == 4
        assert "the control plane refused this node's token" in agent.output()
    finally:
        agent.stop()
