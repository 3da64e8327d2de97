"""``openpod config``: the config file, its modes, and environment overrides."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from openpod.cli import config as cfg


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_config_saves_file_with_mode_0600(cli: Any, config_dir: Path) -> None:
    result = cli("config", "--api-url", "https://pods.example.com/", "--api-key", "op_abcdefgh1234")
    assert result.exit_code == 0, result.output
    path = config_dir / "config.json"
    assert json.loads(path.read_text()) == {
        "api_key": "op_abcdefgh1234",
        "api_url": "https://pods.example.com",
    }
    assert _mode(path) == 0o600
    assert _mode(config_dir) == 0o700
    assert "op_abcd…" in result.stdout
    assert "op_abcdefgh1234" not in result.stdout


def test_config_keeps_other_settings_and_shows_them_masked(cli: Any, config_dir: Path) -> None:
    cli("config", "--api-key", "op_secretsecret")
    result = cli("config", "--api-url", "http://10.0.0.5:8420")
    assert result.exit_code == 0
    shown = cli("config")
    assert shown.exit_code == 0
    assert "http://10.0.0.5:8420 (file)" in shown.stdout
    assert "op_secr… (file)" in shown.stdout
    assert "op_secretsecret" not in shown.stdout


def test_config_defaults_without_a_file(cli: Any, config_dir: Path) -> None:
    result = cli("config")
    assert result.exit_code == 0
    assert "http://127.0.0.1:8420 (default)" in result.stdout
    assert "(none)" in result.stdout
    assert not (config_dir / "config.json").exists()


def test_env_overrides_the_file(
    cli: Any, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("config", "--api-url", "http://from-file:1", "--api-key", "op_fromfile123")
    monkeypatch.setenv("OPENPOD_API_URL", "http://from-env:2/")
    monkeypatch.setenv("OPENPOD_API_KEY", "op_fromenv4567")
    loaded = cfg.load()
    assert loaded.api_url == "http://from-env:2"
    assert loaded.api_key == "op_fromenv4567"
    shown = cli("config")
    assert "http://from-env:2 (env OPENPOD_API_URL)" in shown.stdout
    assert "op_from… (env OPENPOD_API_KEY)" in shown.stdout


def test_xdg_config_home_is_used_without_openpod_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENPOD_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert cfg.config_path() == tmp_path / "xdg" / "openpod" / "config.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert cfg.config_path() == tmp_path / "h" / ".config" / "openpod" / "config.json"


def test_config_rejects_a_non_http_url(cli: Any, config_dir: Path) -> None:
    result = cli("config", "--api-url", "pods.example.com")
    assert result.exit_code == 2
    assert not (config_dir / "config.json").exists()


def test_broken_config_file_is_a_clear_error(cli: Any, config_dir: Path) -> None:
    config_dir.mkdir()
    (config_dir / "config.json").write_text("{nope")
    result = cli("gpu", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "config.json is not valid JSON" in result.stderr


def test_mask_key() -> None:
    assert cfg.mask_key("op_abcdefghijk") == "op_abcd…"
    assert cfg.mask_key(None) == "(none)"
    assert cfg.mask_key("short") == "…"
