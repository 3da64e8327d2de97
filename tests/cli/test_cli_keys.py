"""``openpod ssh-key ...``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMyKey me@laptop"
ADDED = {
    "id": "key_1",
    "name": "laptop",
    "type": "ssh-ed25519",
    "bits": 256,
    "fingerprint": "SHA256:abc",
    "publicKey": KEY,
    "createdAt": "2025-01-01T00:00:00Z",
}


def test_add_reads_the_file(cli: Any, fake_api: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "laptop.pub"
    key_file.write_text(f"{KEY}\n")
    fake_api.on("POST", "/ssh-keys", ADDED, status=201)
    result = cli("ssh-key", "add", str(key_file), "--name", "laptop")
    assert result.exit_code == 0, result.output
    assert fake_api.body("POST", "/ssh-keys") == {"publicKey": KEY, "name": "laptop"}
    assert "added SSH key key_1 (laptop, SHA256:abc)" in result.stdout


def test_add_defaults_to_the_first_key_in_dot_ssh(
    cli: Any, fake_api: Any, config_dir: Path, tmp_path: Path
) -> None:
    ssh_dir = tmp_path / "home" / ".ssh"
    ssh_dir.mkdir(parents=True)
    (ssh_dir / "id_rsa.pub").write_text("ssh-rsa AAAArsa me\n")
    (ssh_dir / "id_ecdsa.pub").write_text("ecdsa-sha2-nistp256 AAAAecdsa me\n")
    fake_api.on("POST", "/ssh-keys", ADDED, status=201)
    result = cli("ssh-key", "add", "--json")
    assert result.exit_code == 0, result.output
    assert fake_api.body("POST", "/ssh-keys") == {"publicKey": "ecdsa-sha2-nistp256 AAAAecdsa me"}
    assert json.loads(result.stdout) == ADDED


def test_add_without_any_key_is_a_usage_error(cli: Any, fake_api: Any) -> None:
    result = cli("ssh-key", "add")
    assert result.exit_code == 2
    assert "ssh-keygen" in result.stderr
    assert fake_api.requests == []


def test_add_refuses_a_private_key(cli: Any, fake_api: Any, tmp_path: Path) -> None:
    private = tmp_path / "id_ed25519"
    private.write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nxxx\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    result = cli("ssh-key", "add", str(private))
    assert result.exit_code == 2
    assert "private key" in result.stderr
    assert fake_api.requests == []


def test_add_inline_key(cli: Any, fake_api: Any) -> None:
    fake_api.on("POST", "/ssh-keys", ADDED, status=201)
    result = cli("ssh-key", "add", "--key", KEY)
    assert result.exit_code == 0, result.output
    assert fake_api.body("POST", "/ssh-keys") == {"publicKey": KEY}


def test_list_and_remove(cli: Any, fake_api: Any) -> None:
    fake_api.on("GET", "/ssh-keys", [ADDED])
    fake_api.on("DELETE", "/ssh-keys/key_1", None, status=204)
    listed = cli("ssh-key", "list")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[0].split() == ["ID", "NAME", "TYPE", "FINGERPRINT", "CREATED"]
    assert "SHA256:abc" in listed.stdout
    removed = cli("ssh-key", "remove", "key_1")
    assert (removed.exit_code, removed.stdout) == (0, "removed SSH key key_1\n")
    assert len(fake_api.sent("DELETE", "/ssh-keys/key_1")) == 1
