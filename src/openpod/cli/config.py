"""The CLI's configuration: the API URL and key, kept in a small JSON file.

The file is ``config.json`` in ``$OPENPOD_CONFIG_DIR``, or else ``$XDG_CONFIG_HOME/openpod``, or
else ``~/.config/openpod``. It holds a secret (the API key), so it is written with mode 0600 in a
directory with mode 0700. The environment variables ``OPENPOD_API_URL`` and ``OPENPOD_API_KEY``
override what the file says.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_API_URL = "http://127.0.0.1:8420"
CONFIG_FILE_NAME = "config.json"
ENV_CONFIG_DIR = "OPENPOD_CONFIG_DIR"
ENV_API_URL = "OPENPOD_API_URL"
ENV_API_KEY = "OPENPOD_API_KEY"


class ConfigError(Exception):
    """The config file exists but cannot be read as a JSON object."""


@dataclass(frozen=True)
class Config:
    """The settings the CLI runs with, and where each one came from."""

    api_url: str = DEFAULT_API_URL
    api_key: str | None = None
    api_url_source: str = "default"
    api_key_source: str = "unset"


def config_dir() -> Path:
    """The directory holding the CLI's config file and its ``known_hosts``."""
    explicit = os.environ.get(ENV_CONFIG_DIR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg:
        return Path(xdg).expanduser() / "openpod"
    return Path.home() / ".config" / "openpod"


def config_path() -> Path:
    """The path of the config file (it may not exist yet)."""
    return config_dir() / CONFIG_FILE_NAME


def ensure_config_dir() -> Path:
    """Create the config directory (mode 0700) if it does not exist and return it."""
    directory = config_dir()
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
    return directory


def read_file() -> dict[str, Any]:
    """The raw settings stored in the config file (empty when there is no file)."""
    path = config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def write_private_file(path: Path, text: str) -> None:
    """Atomically write ``text`` to ``path`` with mode 0600 (only the owner may read it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def save(*, api_url: str | None = None, api_key: str | None = None) -> Path:
    """Store the given settings in the config file, keeping the others; return the file's path.

    An empty string removes a setting.
    """
    data = read_file()
    for name, value in (("api_url", api_url), ("api_key", api_key)):
        if value is None:
            continue
        if value == "":
            data.pop(name, None)
        else:
            data[name] = value.rstrip("/") if name == "api_url" else value
    ensure_config_dir()
    path = config_path()
    write_private_file(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def load() -> Config:
    """The effective settings: the environment overrides the file, which overrides defaults."""
    data = read_file()
    api_url, url_source = DEFAULT_API_URL, "default"
    api_key: str | None = None
    key_source = "unset"
    if isinstance(data.get("api_url"), str) and data["api_url"]:
        api_url, url_source = data["api_url"], "file"
    if isinstance(data.get("api_key"), str) and data["api_key"]:
        api_key, key_source = data["api_key"], "file"
    if os.environ.get(ENV_API_URL):
        api_url, url_source = os.environ[ENV_API_URL], f"env {ENV_API_URL}"
    if os.environ.get(ENV_API_KEY):
        api_key, key_source = os.environ[ENV_API_KEY], f"env {ENV_API_KEY}"
    return Config(
        api_url=api_url.rstrip("/"),
        api_key=api_key,
        api_url_source=url_source,
        api_key_source=key_source,
    )


def mask_key(key: str | None) -> str:
    """Show only the start of an API key, e.g. ``op_abcd…``."""
    if not key:
        return "(none)"
    if len(key) <= 8:
        return "…"
    return key[:7] + "…"
