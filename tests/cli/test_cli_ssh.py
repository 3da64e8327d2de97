"""``openpod ssh`` and ``openpod ssh info``: argv building, host key pinning, errors."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from openpod.cli import ssh

POD_ID = "k3x9q2m7v1c4"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey"
TARGET = ssh.SshTarget(
    user="root",
    host="127.0.0.1",
    port=40123,
    command="ssh root@127.0.0.1 -p 40123",
    host_key=HOST_KEY,
)


def test_ssh_info_json(cli: Any, fake_api: Any, make_pod: Any) -> None:
    fake_api.on("GET", f"/pods/{POD_ID}", make_pod())
    result = cli("ssh", "info", POD_ID, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "ssh_command": "ssh root@127.0.0.1 -p 40123",
        "gateway_command": None,
        "direct_command": "ssh root@127.0.0.1 -p 40123",
        "host": "127.0.0.1",
        "port": 40123,
        "user": "root",
        "host_key": HOST_KEY,
    }


def test_ssh_info_prints_the_command(cli: Any, fake_api: Any, make_pod: Any) -> None:
    fake_api.on("GET", f"/pods/{POD_ID}", make_pod())
    result = cli("ssh", "info", POD_ID)
    assert (result.exit_code, result.stdout) == (0, "ssh root@127.0.0.1 -p 40123\n")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"status": "STARTING"}, f"pod {POD_ID} is STARTING: SSH is not ready yet"),
        ({"sshAvailable": False}, f"pod {POD_ID} has no SSH (its image has no sshd)"),
        ({"status": "STOPPED"}, f"pod {POD_ID} is STOPPED: it has no SSH"),
    ],
)
def test_ssh_info_without_ssh_exits_1(
    cli: Any, fake_api: Any, make_pod: Any, overrides: dict[str, Any], message: str
) -> None:
    fake_api.on("GET", f"/pods/{POD_ID}", make_pod(ssh=None, **overrides))
    for args in (("ssh", "info", POD_ID), ("ssh", POD_ID)):
        result = cli(*args)
        assert result.exit_code == 1
        assert result.stderr == f"error: {message}\n"


def test_build_argv_pins_known_hosts(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    assert ssh.build_ssh_argv(TARGET, known) == [
        "ssh",
        "-p",
        "40123",
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "StrictHostKeyChecking=yes",
        "root@127.0.0.1",
    ]


def test_build_argv_without_host_key_and_with_extra_args() -> None:
    argv = ssh.build_ssh_argv(
        TARGET, None, ["-L", "8888:localhost:8888", "-vA", "nvidia-smi", "-L", "x"]
    )
    assert argv == [
        "ssh",
        "-p",
        "40123",
        "-L",
        "8888:localhost:8888",
        "-vA",
        "root@127.0.0.1",
        "nvidia-smi",
        "-L",
        "x",
    ]


def test_build_argv_quotes_odd_paths() -> None:
    argv = ssh.build_ssh_argv(TARGET, Path("/home/a b/100%/known_hosts"))
    assert argv[4] == 'UserKnownHostsFile="/home/a b/100%%/known_hosts"'


def test_split_ssh_args() -> None:
    assert ssh.split_ssh_args([]) == ([], [])
    assert ssh.split_ssh_args(["ls", "-la"]) == ([], ["ls", "-la"])
    assert ssh.split_ssh_args(["-oServerAliveInterval=5", "-t", "top"]) == (
        ["-oServerAliveInterval=5", "-t"],
        ["top"],
    )
    assert ssh.split_ssh_args(["-vL", "1:h:2", "--", "-x"]) == (["-vL", "1:h:2"], ["-x"])


def test_pin_host_key_replaces_the_old_line(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("[127.0.0.1]:40123 ssh-ed25519 AAAAold\n[127.0.0.1]:40999 ssh-rsa AAAAother\n")
    ssh.pin_host_key(known, "127.0.0.1", 40123, HOST_KEY + " root@pod")
    assert known.read_text().splitlines() == [
        "[127.0.0.1]:40999 ssh-rsa AAAAother",
        f"[127.0.0.1]:40123 {HOST_KEY}",
    ]
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    ssh.pin_host_key(known, "pod.example.com", 22, HOST_KEY)
    assert known.read_text().splitlines()[-1] == f"pod.example.com {HOST_KEY}"


def test_ssh_execs_openssh_with_pinned_host_key(
    cli: Any, fake_api: Any, make_pod: Any, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(os, "execvp", lambda file, argv: calls.append((file, list(argv))))
    fake_api.on("GET", f"/pods/{POD_ID}", make_pod())
    result = cli("ssh", POD_ID, "-L", "8888:localhost:8888", "nvidia-smi", "-q")
    assert result.exit_code == 0, result.output
    known = config_dir / "known_hosts"
    assert known.read_text() == f"[127.0.0.1]:40123 {HOST_KEY}\n"
    assert calls == [
        (
            "ssh",
            [
                "ssh",
                "-p",
                "40123",
                "-o",
                f"UserKnownHostsFile={known}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-L",
                "8888:localhost:8888",
                "root@127.0.0.1",
                "nvidia-smi",
                "-q",
            ],
        )
    ]


def test_ssh_without_host_key_does_not_pin(
    cli: Any, fake_api: Any, make_pod: Any, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execvp", lambda file, argv: calls.append(list(argv)))
    pod = make_pod()
    pod["ssh"]["hostKey"] = None
    fake_api.on("GET", f"/pods/{POD_ID}", pod)
    result = cli("ssh", "connect", POD_ID)
    assert result.exit_code == 0, result.output
    assert calls == [["ssh", "-p", "40123", "root@127.0.0.1"]]
    assert not (config_dir / "known_hosts").exists()


def test_ssh_missing_binary(
    cli: Any, fake_api: Any, make_pod: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(file: str, argv: list[str]) -> None:
        raise FileNotFoundError(file)

    monkeypatch.setattr(os, "execvp", missing)
    fake_api.on("GET", f"/pods/{POD_ID}", make_pod())
    result = cli("ssh", POD_ID)
    assert result.exit_code == 1
    assert "ssh not found" in result.stderr


def test_ssh_unknown_pod_exits_3(cli: Any, fake_api: Any) -> None:
    fake_api.error("GET", "/pods/nope", 404, "pod nope not found")
    result = cli("ssh", "nope")
    assert (result.exit_code, result.stderr) == (3, "error: pod nope not found\n")


GATEWAY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGatewayGatewayGatewayGatewayGatewayGatew"


def _gateway_pod(make_pod: Any) -> Any:
    pod = make_pod()
    pod["ssh"]["gatewayCommand"] = f"ssh -J openpod@gw.example:2222 root@{POD_ID}"
    pod["ssh"]["gateway"] = {
        "host": "gw.example", "port": 2222, "user": "openpod", "hostKey": GATEWAY_KEY,
    }  # fmt: skip
    return pod


def test_ssh_info_shows_the_gateway_command_first(cli: Any, fake_api: Any, make_pod: Any) -> None:
    fake_api.on("GET", f"/pods/{POD_ID}", _gateway_pod(make_pod))
    result = cli("ssh", "info", POD_ID, "--json")
    info = json.loads(result.stdout)
    assert info["ssh_command"] == f"ssh -J openpod@gw.example:2222 root@{POD_ID}"
    assert info["direct_command"] == "ssh root@127.0.0.1 -p 40123"
    human = cli("ssh", "info", POD_ID).stdout.splitlines()
    assert human[0].startswith(f"ssh -J openpod@gw.example:2222 root@{POD_ID}")
    assert human[1].startswith("ssh root@127.0.0.1 -p 40123")


def test_ssh_through_the_gateway_pins_both_host_keys(make_pod: Any, config_dir: Path) -> None:
    from openpod.cli.ssh import SshTarget, prepare_ssh

    target = SshTarget.from_pod(_gateway_pod(make_pod))
    assert target is not None
    argv = prepare_ssh(target, ["-i", "/k/id", "-L", "8888:localhost:8888", "nvidia-smi"])
    known = config_dir / "known_hosts"
    lines = known.read_text().splitlines()
    assert f"{POD_ID} {HOST_KEY}" in lines  # the pod by its id: the name ssh is given
    assert f"[gw.example]:2222 {GATEWAY_KEY}" in lines
    proxy = argv[2].removeprefix("ProxyCommand=")
    assert argv[:2] == ["ssh", "-o"]
    assert proxy == (
        f"ssh -p 2222 -o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes "
        "-i /k/id -W %h:%p openpod@gw.example"
    )
    assert argv[-4:] == ["-L", "8888:localhost:8888", f"root@{POD_ID}", "nvidia-smi"]
    direct = prepare_ssh(target, [], direct=True)
    assert direct[-1] == "root@127.0.0.1"


def test_ssh_takes_the_fast_path_when_the_gateway_has_one(make_pod: Any, config_dir: Path) -> None:
    import sys

    from openpod.cli.ssh import SshTarget, prepare_ssh
    from openpod.cli.ssh_config import host_block

    pod = _gateway_pod(make_pod)
    pod["ssh"]["gateway"]["fastPort"] = 2223
    target = SshTarget.from_pod(pod)
    assert target is not None
    argv = prepare_ssh(target, ["-i", "/k/id", "nvidia-smi"])
    assert argv[:2] == ["ssh", "-o"]
    assert argv[2] == (
        f"ProxyCommand={sys.executable} -m openpod ssh proxy %h --relay gw.example:2223 -i /k/id"
    )
    assert argv[3:5] == ["-o", "ProxyUseFdpass=yes"]
    known = config_dir / "known_hosts"
    assert f"{POD_ID} {HOST_KEY}" in known.read_text().splitlines()  # the pod is still pinned
    assert argv[-2:] == [f"root@{POD_ID}", "nvidia-smi"]
    block = host_block(pod["ssh"]["gateway"], known)
    assert "    ProxyUseFdpass yes" in block and "ProxyJump" not in block
    assert "ssh proxy %h --relay gw.example:2223" in block
