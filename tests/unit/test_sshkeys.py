"""SSH public keys: real keys made by ssh-keygen, and broken ones."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from openpod.domain.errors import InvalidSSHKey
from openpod.domain.sshkeys import parse_public_key


def _keygen(tmp_path: Path, kind: str, bits: int | None = None) -> tuple[str, str]:
    path = tmp_path / f"k_{kind}_{bits}"
    cmd = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "me@host", "-f", str(path)]
    if bits:
        cmd += ["-b", str(bits)]
    subprocess.run(cmd, check=True)
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", f"{path}.pub"], check=True, capture_output=True, text=True
    ).stdout.split()[1]
    return Path(f"{path}.pub").read_text(), fingerprint


@pytest.mark.parametrize(
    ("kind", "bits", "expected_bits"),
    [
        ("ed25519", None, 256),
        ("ecdsa", 256, 256),
        ("ecdsa", 384, 384),
        ("ecdsa", 521, 521),
        ("rsa", 2048, 2048),
        ("rsa", 3072, 3072),
    ],
)
def test_real_keys_parse_with_ssh_keygens_fingerprint(
    tmp_path: Path, kind: str, bits: int | None, expected_bits: int
) -> None:
    text, fingerprint = _keygen(tmp_path, kind, bits)
    key = parse_public_key(text)
    assert key.bits == expected_bits
    assert key.fingerprint == fingerprint
    assert key.comment == "me@host"
    assert key.openssh == text.strip()


def test_short_rsa_is_refused(tmp_path: Path) -> None:
    text, _ = _keygen(tmp_path, "rsa", 1024)
    with pytest.raises(InvalidSSHKey, match="1024 bits: at least 2048"):
        parse_public_key(text)


def test_private_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    _keygen(tmp_path, "ed25519")
    private = (tmp_path / "k_ed25519_None").read_text()
    with pytest.raises(InvalidSSHKey, match="private key") as info:
        parse_public_key(private.splitlines()[0] + " " + private.splitlines()[1])
    assert private.splitlines()[1] not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("ssh-ed25519", "must look like"),
        ("ssh-ed25519 !!!notbase64", "not base64"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "not base64|unsupported|truncated"),
        (
            "ssh-rsa " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519").decode(),
            "holds 'ssh-ed25519'",
        ),
        (
            "ssh-ed25519 "
            + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x02ab").decode(),
            "32 bytes",
        ),
        ("ssh-ed25519 AAAA\nssh-ed25519 AAAA", "single line"),
    ],
)
def test_broken_keys_are_named(text: str, message: str) -> None:
    with pytest.raises(InvalidSSHKey, match=message):
        parse_public_key(text)
