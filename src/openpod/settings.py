"""Settings of the server-side processes, from the environment (OPENPOD_*) with embedded defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "openpod"


class ServerSettings(BaseSettings):
    """`openpod server`: the control plane."""

    model_config = SettingsConfigDict(env_prefix="OPENPOD_", extra="ignore")

    data_dir: Path = default_data_dir()
    database_url: str | None = None  # default: SQLite in data_dir
    host: str = "127.0.0.1"
    port: int = 8420
    open_signup: bool = True  # POST /accounts without an admin (on for the embedded default)
    token_decimals: int = 18  # for display of prices only; money is integers of base units
    wait_max_seconds: float = 60.0  # longest server-side wait of GET /pods/{id}/wait

    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'openpod.db'}"


class NodeSettings(BaseSettings):
    """`openpod node`: a provider node agent."""

    model_config = SettingsConfigDict(env_prefix="OPENPOD_NODE_", extra="ignore")

    api_url: str = "http://127.0.0.1:8420"
    token: str | None = None
    data_dir: Path = default_data_dir() / "node"
    gpus: str | None = None  # "NVIDIA GeForce RTX 4090:2" when NVML finds none
    public_host: str = "127.0.0.1"
    bind_host: str = "127.0.0.1"
    stop_grace_seconds: float = 5.0
