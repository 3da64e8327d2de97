"""Tables. Money columns hold exact integers of any size (stored as decimal text)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class BigUInt(TypeDecorator[int]):
    """A non-negative integer of any size (token base units), exact on SQLite and PostgreSQL."""

    impl = String(78)
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if value < 0:
            raise ValueError("amounts are never negative")
        return str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    wallet_address: Mapped[str | None] = mapped_column(String(42), default=None)
    # Funds in token base units, for the database-backed funds guard (services.funds).
    balance: Mapped[int] = mapped_column(BigUInt, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SSHKey(Base):
    __tablename__ = "ssh_keys"
    __table_args__ = (UniqueConstraint("account_id", "fingerprint"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    key_type: Mapped[str] = mapped_column(String(40))
    bits: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(60))
    public_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GpuType(Base):
    __tablename__ = "gpu_types"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # "NVIDIA H100 80GB HBM3"
    display_name: Mapped[str] = mapped_column(String(100))
    memory_gb: Mapped[int] = mapped_column(Integer)
    rate_per_second: Mapped[int] = mapped_column(BigUInt)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Provider(Base):
    __tablename__ = "providers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), unique=True)
    payout_wallet: Mapped[str] = mapped_column(String(42))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    public_host: Mapped[str | None] = mapped_column(String(255), default=None)
    runtime: Mapped[str | None] = mapped_column(String(32), default=None)
    # [{"index": 0, "type": "NVIDIA H200", "uuid": null}, ...] as the node last declared them
    gpus: Mapped[list[Any]] = mapped_column(default=list)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Pod(Base):
    __tablename__ = "pods"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    node_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id"), index=True, default=None)
    name: Mapped[str] = mapped_column(String(100))
    image: Mapped[str] = mapped_column(String(500))
    gpu_type_id: Mapped[str] = mapped_column(ForeignKey("gpu_types.id"))
    gpu_count: Mapped[int] = mapped_column(Integer)
    gpu_indices: Mapped[list[Any]] = mapped_column(default=list)
    ports: Mapped[list[Any]] = mapped_column(default=list)  # ["22/tcp", "8888/http"]
    env: Mapped[dict[str, Any]] = mapped_column(default=dict)
    command: Mapped[list[Any]] = mapped_column(default=list)
    pod_public_key: Mapped[str | None] = mapped_column(Text, default=None)
    rate_per_second: Mapped[int] = mapped_column(BigUInt)  # fixed when the run starts
    desired_status: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    # Grows at every change of what the node is told (desired status, run, spec).
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    public_host: Mapped[str | None] = mapped_column(String(255), default=None)
    # Where the edge and the gateway reach the pod's ports when not at its node's address
    # (a Kubernetes Pod IP, reached inside the cluster); None: public_host + mapped ports.
    address: Mapped[str | None] = mapped_column(String(255), default=None)
    port_mappings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"22": 40123}
    ready_ports: Mapped[list[Any]] = mapped_column(default=list)
    ssh_ready: Mapped[bool] = mapped_column(Boolean, default=False)
    ssh_available: Mapped[bool] = mapped_column(Boolean, default=True)
    ssh_user: Mapped[str | None] = mapped_column(String(64), default=None)
    ssh_host_key: Mapped[str | None] = mapped_column(Text, default=None)
    # Connect info of the current run, recorded as it becomes true (see services.connect).
    private: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    ssh_command: Mapped[str | None] = mapped_column(Text, default=None)
    http_urls: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"8888": "http://..."}
    ready_at: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"22": "2026-...Z"}
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_started_at: Mapped[datetime | None] = mapped_column(default=None)


class GpuAllocation(Base):
    """One GPU of a node held by one pod. The primary key makes double-booking impossible."""

    __tablename__ = "gpu_allocations"

    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), primary_key=True)
    gpu_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    pod_id: Mapped[str] = mapped_column(ForeignKey("pods.id"), index=True)
    # Declared so that a unit of work inserts the pod before its allocations.
    pod: Mapped[Pod] = relationship()


class PodRun(Base):
    """One run of a pod (its generation): what it costs, and its meter's usage so far.

    `intervals`, `next_seq`, `open_` and `closed` are domain.metering.Usage as stored;
    `billable_ms` what of it is billed; `billed_seconds` is the watermark that settlements
    have been cut up to."""

    __tablename__ = "pod_runs"

    pod_id: Mapped[str] = mapped_column(ForeignKey("pods.id"), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"))
    payout_wallet: Mapped[str] = mapped_column(String(42))
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"))
    gpu_type_id: Mapped[str] = mapped_column(ForeignKey("gpu_types.id"))
    gpu_count: Mapped[int] = mapped_column(Integer)
    rate_per_second: Mapped[int] = mapped_column(BigUInt)  # per GPU, fixed at the run's start
    grace_ms: Mapped[int] = mapped_column(BigInteger)
    next_seq: Mapped[int] = mapped_column(BigInteger, default=1)
    max_seq: Mapped[int] = mapped_column(BigInteger, default=0)  # highest seq stored
    intervals: Mapped[list[Any]] = mapped_column(default=list)  # [[start_ms, end_ms], ...]
    billable_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    open_: Mapped[bool] = mapped_column("open", Boolean, default=False)
    closed: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    billed_seconds: Mapped[int] = mapped_column(BigInteger, default=0)
    # Control plane clock: when the run's first and latest events arrived. The node's clock may
    # not run faster than ours: billable_ms never exceeds the time since the first event + grace.
    first_event_at: Mapped[datetime | None] = mapped_column(default=None)
    last_event_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(default=None)


class MeterEventRow(Base):
    """One event as a meter sent it; (pod, generation, seq) once, however often it came."""

    __tablename__ = "meter_events"

    pod_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    at_ms: Mapped[int] = mapped_column(BigInteger)
    gpus: Mapped[list[Any]] = mapped_column(default=list)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class Settlement(Base):
    """Seconds of one run cut for payment: user → provider's payout wallet."""

    __tablename__ = "settlements"
    __table_args__ = (UniqueConstraint("pod_id", "generation", "from_second"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pod_id: Mapped[str] = mapped_column(String(16), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"))
    payout_wallet: Mapped[str] = mapped_column(String(42))
    gpu_type_id: Mapped[str] = mapped_column(String(100))
    gpu_count: Mapped[int] = mapped_column(Integer)
    rate_per_second: Mapped[int] = mapped_column(BigUInt)
    from_second: Mapped[int] = mapped_column(BigInteger)
    seconds: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigUInt)
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    tx_hash: Mapped[str | None] = mapped_column(String(66), default=None)
    # On-chain: the settlement id the contract knows (dense, so its paid-once bitmap stays
    # cheap), the transaction that carries it, and what the `Paid` event said.
    number: Mapped[int | None] = mapped_column(BigInteger, unique=True, default=None)
    chain_tx_id: Mapped[str | None] = mapped_column(
        ForeignKey("chain_txs.id"), index=True, default=None
    )
    paid_amount: Mapped[int | None] = mapped_column(BigUInt, default=None)
    fee: Mapped[int | None] = mapped_column(BigUInt, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Counter(Base):
    """A named counter bumped under a row lock: the hot wallet's next nonce, settlement numbers."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(120), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class PodLease(Base):
    """What a user signed (EIP-712) to let one run of a pod be billed on-chain."""

    __tablename__ = "pod_leases"

    pod_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    lease_id: Mapped[str] = mapped_column(String(66), unique=True)
    user_wallet: Mapped[str] = mapped_column(String(42))
    provider_wallet: Mapped[str] = mapped_column(String(42))
    gpu_type_id: Mapped[str] = mapped_column(String(100))
    gpu_count: Mapped[int] = mapped_column(Integer)
    max_rate: Mapped[int] = mapped_column(BigUInt)
    start: Mapped[int] = mapped_column(BigInteger)  # unix seconds
    signature: Mapped[str] = mapped_column(String(300))
    # SIGNED → OPENING (in a transaction) → OPEN → CLOSING → CLOSED; FAILED with the reason.
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    open_tx_id: Mapped[str | None] = mapped_column(ForeignKey("chain_txs.id"), default=None)
    close_tx_id: Mapped[str | None] = mapped_column(ForeignKey("chain_txs.id"), default=None)
    end: Mapped[int | None] = mapped_column(BigInteger, default=None)  # unix seconds
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ChainTx(Base):
    """One nonce of the hot wallet and what it carries; its signed attempts (fee bumps) are
    `ChainTxAttempt`s. Stored before it is sent, so a restart finds and finishes it."""

    __tablename__ = "chain_txs"
    __table_args__ = (UniqueConstraint("chain_id", "sender", "nonce"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    sender: Mapped[str] = mapped_column(String(42))
    nonce: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))  # payments | lease | close
    to: Mapped[str] = mapped_column(String(42))
    data: Mapped[str] = mapped_column(Text)  # calldata, hex
    gas: Mapped[int] = mapped_column(BigInteger)
    # SIGNED → SENT → MINED → CONFIRMED; REVERTED (mined, failed); back to SENT on a reorg
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    mined_hash: Mapped[str | None] = mapped_column(String(66), default=None)
    block_number: Mapped[int | None] = mapped_column(BigInteger, default=None)
    block_hash: Mapped[str | None] = mapped_column(String(66), default=None)
    gas_used: Mapped[int | None] = mapped_column(BigInteger, default=None)
    fee_paid: Mapped[int | None] = mapped_column(BigUInt, default=None)  # wei: gas used x price
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ChainTxAttempt(Base):
    """One signed version of a `ChainTx` (the first, then each fee bump), kept to rebroadcast."""

    __tablename__ = "chain_tx_attempts"

    hash: Mapped[str] = mapped_column(String(66), primary_key=True)
    tx_id: Mapped[str] = mapped_column(ForeignKey("chain_txs.id"), index=True)
    raw: Mapped[str] = mapped_column(Text)  # the signed transaction, hex (public once sent)
    max_fee: Mapped[int] = mapped_column(BigUInt)
    tip: Mapped[int] = mapped_column(BigUInt)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class HotWalletBreaker(Base):
    """The hot wallet's circuit breaker: open, nothing is signed. Opened by the watch (or an
    operator), closed only by an operator after review; every change is a `BreakerEvent`."""

    __tablename__ = "hot_wallet_breakers"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    open: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    actor: Mapped[str | None] = mapped_column(String(120), default=None)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class BreakerEvent(Base):
    """One opening or closing of a hot wallet's breaker: who, why, when."""

    __tablename__ = "hot_wallet_breaker_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    address: Mapped[str] = mapped_column(String(42), index=True)
    action: Mapped[str] = mapped_column(String(8))  # open | close
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(120))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class AlertState(Base):
    """Whether a condition the watch follows (balance under the floor...) is firing, so that
    it alerts once when it starts and once when it ends, across restarts."""

    __tablename__ = "alert_states"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    firing: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str | None] = mapped_column(Text, default=None)
    since: Mapped[datetime] = mapped_column(default=utcnow)
