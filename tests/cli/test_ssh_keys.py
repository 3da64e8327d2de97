"""The fast path's signers (cli/ssh_keys.py) against keys ssh-keygen made and a real
ssh-agent: every kind signs what asyncssh, the gateway's verifier, accepts."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from openpod.cli import ssh_keys
from tests.support.ssh import ssh_agent

KINDS = [
    ("ed25519", []),
    ("ecdsa", ["-b", "256"]),
    ("ecdsa", ["-b", "384"]),
    ("ecdsa", ["-b", "521"]),
    ("rsa", ["-b", "2048"]),
    ("rsa", ["-b", "2048", "-m", "PEM"]),  # the old PEM format
]


def keygen(path: Path, kind: str, extra: list[str], passphrase: str = "") -> Path:
    argv = ["ssh-keygen", "-q", "-t", kind, *extra, "-N", passphrase, "-f", str(path)]
    subprocess.run(argv, check=True)
    return path


def verifies(line: str, data: bytes, signature: bytes) -> bool:
    return bool(asyncssh.import_public_key(line).verify(data, signature))


@pytest.mark.parametrize(("kind", "extra"), KINDS)
def test_key_files_sign_what_the_gateway_verifies(
    tmp_path: Path, kind: str, extra: list[str]
) -> None:
    key = keygen(tmp_path / "key", kind, extra)
    signer = ssh_keys.file_signer(key)
    assert signer is not None
    assert signer.public_line == " ".join(key.with_suffix(".pub").read_text().split()[:2])
    data = os.urandom(80)
    signature = signer.sign(data)
    assert verifies(signer.public_line, data, signature)
    assert not verifies(signer.public_line, data + b"!", signature)


def test_unusable_files_are_skipped(tmp_path: Path) -> None:
    locked = keygen(tmp_path / "locked", "ed25519", [], passphrase="a passphrase")
    (tmp_path / "junk").write_text("not a key\n")
    assert ssh_keys.file_signer(locked) is None
    assert ssh_keys.file_signer(tmp_path / "junk") is None
    assert ssh_keys.file_signer(tmp_path / "missing") is None
    assert ssh_keys.signers([locked, tmp_path / "junk"]) == []


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "agent.sock"
    with ssh_agent(sock):
        yield sock


def test_the_agents_keys_sign_what_the_gateway_verifies(
    tmp_path: Path, agent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [keygen(tmp_path / "rsa", "rsa", ["-b", "2048"]), keygen(tmp_path / "ed", "ed25519", [])]
    env = {**os.environ, "SSH_AUTH_SOCK": str(agent)}
    for key in keys:
        subprocess.run(["ssh-add", "-q", str(key)], env=env, check=True)
    found = ssh_keys.agent_signers(str(agent))
    lines = [" ".join(k.with_suffix(".pub").read_text().split()[:2]) for k in keys]
    assert [s.public_line for s in found] == lines
    data = os.urandom(64)
    for signer in found:
        signature = signer.sign(data)
        assert verifies(signer.public_line, data, signature)
    rsa_signature = found[0].sign(data)
    assert rsa_signature[4:16] == b"rsa-sha2-256"  # not SHA-1 ssh-rsa
    # With no -i, the agent's keys come first.
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent))
    monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
    assert [s.public_line for s in ssh_keys.signers([])] == lines
    assert ssh_keys.agent_signers(str(tmp_path / "no-agent.sock")) == []
