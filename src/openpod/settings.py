"""Settings of the server-side processes, from the environment (OPENPOD_*) with embedded defaults."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclasses.dataclass(frozen=True)
class ChainConfig:
    """Where openpod's contracts live: what `openpod chain deploy` writes (chain.json)."""

    rpc_url: str
    chain_id: int
    token: str
    payments: str
    from_block: int = 0  # the block the payments contract was deployed in (for log queries)

    @classmethod
    def load(cls, path: Path) -> ChainConfig:
        try:
            data = json.loads(path.read_text())
            return cls(
                rpc_url=str(data["rpcUrl"]),
                chain_id=int(data["chainId"]),
                token=str(data["token"]),
                payments=str(data["payments"]),
                from_block=int(data.get("fromBlock", 0)),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"chain config {path} is unreadable: {exc}") from None

    def save(self, path: Path) -> None:
        data = {
            "rpcUrl": self.rpc_url,
            "chainId": self.chain_id,
            "token": self.token,
            "payments": self.payments,
            "fromBlock": self.from_block,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)


class IceServer(BaseModel):
    """A STUN/TURN server for WebRTC transfers (the browser's RTCIceServer)."""

    urls: str | list[str]
    username: str | None = None
    credential: str | None = None


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
    # Edge proxy: pods' HTTP ports at {scheme}://{pod}-{port}.{proxy_domain}[:proxy_port]
    proxy_domain: str = "proxy.localhost"
    proxy_scheme: str = "http"
    proxy_port: int | None = 8480  # the edge's public port (None: the scheme's default)
    edge_state_dir: Path | None = None  # where `openpod edge` keeps HAProxy's files; None: no edge
    # SSH gateway: `ssh -J openpod@{gateway_host}:{gateway_port} root@POD`
    gateway_host: str | None = None  # public address of `openpod gateway`; None: no gateway
    gateway_port: int = 2222
    gateway_fast_port: int | None = None  # its fast path (`openpod gateway --fast-port`)
    gateway_host_key_file: Path | None = None  # its public host key, shown to clients to pin
    edge_secret_file: Path | None = None
    # Metering and settlement (docs/metering.md)
    meter_heartbeat: float = 5.0  # seconds between a meter's heartbeats; grace = 3 of them
    meter_clock_check: bool = True  # bill no run more than our own clock saw pass (+ grace)
    settlement_period: float = 60.0  # seconds between settlement cuts and funds checks
    funds_guard: bool = True  # an hour of funds to start a pod; stop pods that run out
    signup_credit: int = 0  # base units credited to each account at sign-up
    # On-chain payments (docs/chain.md): on when a deployment is configured, by the file that
    # `openpod chain deploy` writes (chain.json in data_dir) or by OPENPOD_CHAIN_* variables.
    chain_file: Path | None = None  # default: data_dir/chain.json
    chain_rpc_url: str | None = None  # overrides the file's rpcUrl
    hot_wallet_keystore: Path | None = None  # default: data_dir/hot-wallet.json (dev signer)
    hot_wallet_password_file: Path | None = None  # default: data_dir/hot-wallet.password
    payments_batch_size: int = 100  # settlements per transaction
    payments_confirmations: int = 2  # blocks on top before a settlement is CONFIRMED
    payments_bump_after: float = 30.0  # seconds a sent transaction waits before a fee bump
    payments_poll: float = 1.0  # seconds between the payment gateway's rounds
    lease_deadline: float = 600.0  # seconds a pod may run without a signed lease (on-chain)
    # The hot wallet (docs/hot-wallet.md). Its key: "hsm" (PKCS#11, production) or "keystore"
    # (development; refused on a mainnet unless hot_wallet_keystore_on_mainnet).
    hot_wallet_signer: Literal["keystore", "hsm"] = "keystore"
    hot_wallet_keystore_on_mainnet: bool = False
    hsm_module: Path = Path("/usr/lib/softhsm/libsofthsm2.so")
    hsm_token_label: str = "openpod"  # noqa: S105 (a label, not a secret)
    hsm_key_label: str = "openpod-hot-wallet"
    hsm_pin: SecretStr | None = None  # OPENPOD_HSM_PIN, or in a file:
    hsm_pin_file: Path | None = None
    # What the hot wallet may sign: payments-contract calls with fees under these caps.
    hot_wallet_max_fee_per_gas: int = 500 * 10**9  # wei (500 gwei)
    hot_wallet_gas_per_hour: int = 10**18  # wei of worst-case gas signed in any hour
    # Its watch: balance floor, runway, where value may go, and a guardian that pauses.
    hot_wallet_balance_floor: int = 5 * 10**16  # wei (0.05 ETH)
    hot_wallet_runway_hours: float = 72.0
    hot_wallet_allowlist: str = ""  # comma-separated addresses value may be sent to
    hot_wallet_watch_poll: float = 1.0  # seconds between looks at the chain
    guardian_keystore: Path | None = None  # a key with GUARDIAN_ROLE: pauses on an incident
    guardian_password_file: Path | None = None
    # Alerts: a webhook (JSON, Slack-compatible; its URL is a secret, read from a file),
    # e-mail over SMTP, and the log (always).
    alert_webhook_url_file: Path | None = None
    alert_smtp_host: str | None = None
    alert_smtp_port: int = 25
    alert_smtp_from: str = "openpod@localhost"
    alert_smtp_to: str = ""  # comma-separated
    alert_smtp_user: str | None = None
    alert_smtp_password_file: Path | None = None
    alert_smtp_starttls: bool = False
    alert_dedupe_seconds: float = 300.0
    alert_rate_per_minute: int = 20
    siwe_domain: str | None = None  # Sign-In with Ethereum domain(s); default: host:port
    # `openpod send`/`receive` (docs/transfer.md): signaling rooms and the relay
    transfer_signal_max_message: int = 65536  # bytes in one signaling frame
    transfer_signal_rate: float = 20.0  # signaling messages a second per connection (bursts: 2x)
    transfer_room_lifetime: float = 1800.0  # seconds a room lives from its allocation
    transfer_rooms_per_client: int = 16  # rooms one client address holds at once
    transfer_max_rooms: int = 10000  # rooms at once, in all
    transfer_relay_max_frame: int = 1048576 + 1024  # bytes in one relay frame (a record)
    transfer_relay_max_bytes: int = 107374182400  # bytes one room's relay carries (100 GiB)
    transfer_relay_lifetime: float = 21600.0  # seconds a relay lives
    transfer_max_relays: int = 64  # relays at once
    transfer_ice_servers: list[IceServer] = []  # STUN/TURN for WebRTC; JSON in the environment

    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'openpod.db'}"

    def chain_path(self) -> Path:
        return self.chain_file or self.data_dir / "chain.json"

    def chain(self) -> ChainConfig | None:
        """The deployment payments go to, or None when on-chain payments are off."""
        path = self.chain_path()
        if not path.exists():
            return None
        config = ChainConfig.load(path)
        if self.chain_rpc_url:
            config = dataclasses.replace(config, rpc_url=self.chain_rpc_url)
        return config

    def hot_wallet_paths(self) -> tuple[Path, Path]:
        return (
            self.hot_wallet_keystore or self.data_dir / "hot-wallet.json",
            self.hot_wallet_password_file or self.data_dir / "hot-wallet.password",
        )

    def hsm_pin_value(self) -> str:
        """The token's PIN: OPENPOD_HSM_PIN, else the first line of OPENPOD_HSM_PIN_FILE."""
        if self.hsm_pin is not None:
            return self.hsm_pin.get_secret_value()
        if self.hsm_pin_file is None:
            raise ValueError("the HSM's PIN is not set: OPENPOD_HSM_PIN or OPENPOD_HSM_PIN_FILE")
        try:
            return self.hsm_pin_file.read_text().strip()
        except OSError:
            raise ValueError(f"cannot read the HSM PIN file {self.hsm_pin_file}") from None

    def edge_secret(self) -> bytes:
        """The key private pods' access tokens derive from: a 0600 file in data_dir, made
        once (OPENPOD_EDGE_SECRET_FILE moves it). Written whole, then linked into place, so
        two processes starting at once agree on one key."""
        path = self.edge_secret_file or self.data_dir / "edge-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
            finally:
                tmp.unlink()
        return bytes.fromhex(path.read_text().strip())


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
    # How pods run here: "local" (namespaced processes), "docker" (containers of dockerd),
    # "kubernetes" (bare Pods of a cluster; docs/kubernetes.md).
    runtime: Literal["local", "docker", "kubernetes"] = "local"
    docker_host: str = "unix:///var/run/docker.sock"
    docker_network: Literal["bridge", "host"] = "bridge"  # host: pods share the host's network
    docker_gpu_driver: str | None = "nvidia"  # None on hosts without the container toolkit
    docker_pull: bool = True  # pull images the node does not have
    # Per GPU type (its catalog id; "" for any other), what a pod may use for each GPU it
    # rents, e.g. OPENPOD_NODE_POD_LIMITS='{"rtx4090": {"cpus": 8, "memory_gib": 48,
    # "pids": 4096}}'. Empty: no limits.
    pod_limits: dict[str, dict[str, float]] = {}
    # The Kubernetes runtime: one of kube_kubeconfig (+ kube_context), kube_service_account
    # (in-cluster) or kube_server with kube_token (+ kube_ca_file for https).
    kube_kubeconfig: str | None = None
    kube_context: str | None = None
    kube_service_account: str | None = None
    kube_server: str | None = None
    kube_token: SecretStr | None = None
    kube_ca_file: str | None = None
    kube_namespace: str = "openpod"
    kube_gpu_type_label: str = "openpod.io/gpu-type"
    kube_storage_class: str | None = None
    kube_workspace_size: str = "20Gi"
    kube_meter_image: str = "openpod/meter:latest"
