"""The `openpod` CLI against the real control plane and node: create, ssh info, real ssh, stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Platform
from tests.support.net import wait_until
from tests.support.platform import Api, NodeAgentProc, signup


def _run(url: str, key: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`openpod ARGS...` as a user would run it, configured by the environment."""
    env = {**os.environ, "OPENPOD_CONFIG_DIR": str(config), "OPENPOD_API_URL": url,
           "OPENPOD_API_KEY": key}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "openpod", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _key(api: Api) -> str:
    return str(api.http.headers["Authorization"]).removeprefix("Bearer ")


def _cli(platform: Platform, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(platform.plane.url, _key(platform.user), tmp_path / "config", *args)


def test_cli_create_then_ssh_then_stop(platform: Platform, tmp_path: Path) -> None:
    created = _cli(
        platform,
        tmp_path,
        "pod",
        "create",
        "--name",
        "cli",
        "--image",
        "local",
        "--gpu-type",
        "NVIDIA GeForce RTX 4090",
        "--gpu-count",
        "1",
        "--ports",
        "8888/http,22/tcp",
        "--env",
        "WHO=cli user",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    pod = json.loads(created.stdout)
    assert pod["status"] == "RUNNING"

    info = _cli(platform, tmp_path, "ssh", "info", pod["id"], "--json")
    assert info.returncode == 0, info.stderr
    ssh_command = json.loads(info.stdout)["ssh_command"]
    assert ssh_command == pod["ssh"]["command"]

    # `openpod ssh` execs OpenSSH with the pod's host key pinned (no prompt, no TOFU).
    out = _cli(
        platform,
        tmp_path,
        "ssh",
        pod["id"],
        "-i",
        str(platform.key_file),
        "-o",
        "BatchMode=yes",
        'echo "$WHO"',
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "cli user"

    listed = _cli(platform, tmp_path, "pod", "list", "--json")
    assert pod["id"] in [p["id"] for p in json.loads(listed.stdout)]
    stopped = _cli(platform, tmp_path, "pod", "stop", pod["id"])
    assert stopped.returncode == 0, stopped.stderr
    waited = _cli(platform, tmp_path, "pod", "wait", pod["id"], "--status", "STOPPED", "--json")
    assert json.loads(waited.stdout)["status"] == "STOPPED"
    missing = _cli(platform, tmp_path, "pod", "get", "nosuchpod123")
    assert missing.returncode == 3
    assert "no such pod 'nosuchpod123'" in missing.stderr
    assert _cli(platform, tmp_path, "pod", "terminate", pod["id"]).returncode == 0


def test_cli_refuses_bad_input_with_exit_codes(platform: Platform, tmp_path: Path) -> None:
    create = ["pod", "create", "--name", "x", "--image", "local", "--no-wait", "--gpu-type"]
    none_free = _cli(platform, tmp_path, *create, "NVIDIA H200")
    assert none_free.returncode == 5
    assert "no free NVIDIA H200: 0 of 0 free" in none_free.stderr
    bad_ports = _cli(platform, tmp_path, *create, "NVIDIA GeForce RTX 4090", "--ports", "8888/udpx")
    assert bad_ports.returncode == 1
    assert "protocol 'udpx'" in bad_ports.stderr
    unauth = _run(platform.plane.url, "op_wrong", tmp_path / "c2", "pod", "list")
    assert unauth.returncode == 4
    assert "invalid API key" in unauth.stderr


def test_cli_provider_registers_a_node_that_comes_online(
    platform: Platform, tmp_path: Path
) -> None:

    with signup(platform.plane.url, "gpu-owner") as owner:

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return _run(platform.plane.url, _key(owner), tmp_path / "cfg", *args)

        bad = cli("provider", "register", "--payout-wallet", "0x123")
        assert bad.returncode == 1
        assert "payout wallet '0x123' is not a 0x-prefixed 20-byte hex address" in bad.stderr
        no_provider = cli("provider", "add-node", "box")
        assert no_provider.returncode == 4
        assert "not a provider" in no_provider.stderr
        assert cli("provider", "register", "--payout-wallet", "0x" + "ab" * 20).returncode == 0
        added = cli("provider", "add-node", "box", "--json")
        assert added.returncode == 0, added.stderr
        node = json.loads(added.stdout)
        assert node["token"].startswith("opn_")

        agent = NodeAgentProc(platform.plane, node["token"], tmp_path / "box", "NVIDIA H200:2")
        agent.start()
        try:

            def online() -> bool:
                listed = json.loads(cli("provider", "nodes", "--json").stdout)
                return any(n["id"] == node["id"] and n["online"] for n in listed)

            wait_until(online, 30, "the new node to come online", step=0.1)
            listed = json.loads(cli("provider", "nodes", "--json").stdout)
            assert [g["type"] for g in listed[0]["gpus"]] == ["NVIDIA H200", "NVIDIA H200"]
            me = json.loads(cli("account", "show", "--json").stdout)
            assert me["isProvider"] is True
            made = json.loads(cli("account", "new-key", "--json").stdout)
            keys = json.loads(cli("account", "keys", "--json").stdout)
            assert made["id"] in [k["id"] for k in keys]
            assert cli("account", "revoke-key", made["id"]).returncode == 0
            gone = cli("account", "revoke-key", made["id"])
            assert gone.returncode == 3
            assert f"no API key '{made['id']}'" in gone.stderr
        finally:
            agent.stop()
