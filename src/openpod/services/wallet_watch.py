"""The hot wallet's watch: every new block is read for what the hot wallet did, and its balance
against what it needs to keep paying.

Incidents (CRITICAL, and the breaker opens before anything else happens):
- a transaction from the hot wallet that the gateway did not sign (not among its stored
  attempts) — whatever it does, since the hot wallet only ever calls the payments contract;
- value sent by the hot wallet to an address off the allowlist;
- a token `Transfer` out of the hot wallet, or an `Approval` by it (a permit signed with a
  stolen key needs no transaction from the wallet), to an address off the allowlist;
- its nonce moved past what the gateway has issued.
Then, where a guardian key is configured, the payments contract is paused by the guardian.

Conditions (an alert when they start, one resolved notice when they end, nothing while they
hold, across restarts — kept in `alert_states`):
- the native balance under the operating floor (CRITICAL);
- the runway (hours of the current gas burn the balance still pays for) under the minimum
  (WARNING).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from openpod.adapters.chain import (
    ChainError,
    Contract,
    Reverted,
    Rpc,
    RpcError,
    RpcUnavailable,
    codec,
    hex_int,
)
from openpod.adapters.store import Database, StoreError
from openpod.adapters.store.models import AlertState, ChainTx, ChainTxAttempt, Counter, utcnow
from openpod.domain.alerts import Alert, Severity
from openpod.services import chain_txs
from openpod.services.chain_txs import Signer
from openpod.services.hot_wallet import Breaker, open_tx_count

log = logging.getLogger(__name__)
T = TypeVar("T")

ERC20 = codec("DevToken")
TRANSFER = "0x" + ERC20.event_topic("Transfer").hex()
APPROVAL = "0x" + ERC20.event_topic("Approval").hex()


@dataclass(frozen=True)
class WatchConfig:
    chain_id: int
    address: str  # the hot wallet
    payments: str
    balance_floor: int  # wei: under it the wallet cannot be trusted to keep paying
    runway_min_hours: float = 72.0
    runway_window_hours: float = 6.0  # the burn rate is the gas paid over this window
    allowlist: frozenset[str] = frozenset()  # lower-case addresses value may go to
    max_blocks_per_step: int = 100
    blind_after_s: float = 60.0  # an outage this long is alerted (the watch sees nothing)


@dataclass
class WalletMetrics:
    balance: int | None = None
    runway_hours: float | None = None
    nonce: int | None = None
    pending: int = 0
    breaker_open: bool = False
    last_block: int | None = None
    incidents: int = 0

    def prometheus(self) -> str:
        def gauge(name: str, help_text: str, value: float | int | None) -> list[str]:
            shown = "NaN" if value is None else ("+Inf" if value == math.inf else str(value))
            return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {shown}"]

        lines = [
            *gauge(
                "openpod_hot_wallet_balance_wei", "Native balance of the hot wallet.", self.balance
            ),
            *gauge(
                "openpod_hot_wallet_runway_hours",
                "Hours of the current gas burn the balance pays for.",
                self.runway_hours,
            ),
            *gauge("openpod_hot_wallet_nonce", "The hot wallet's mined nonce.", self.nonce),
            *gauge(
                "openpod_hot_wallet_pending_transactions",
                "Transactions signed and not yet final.",
                self.pending,
            ),
            *gauge(
                "openpod_hot_wallet_breaker_open",
                "1 while the circuit breaker is open (nothing is signed).",
                int(self.breaker_open),
            ),
            *gauge(
                "openpod_hot_wallet_last_block", "The last block the watch read.", self.last_block
            ),
            "# HELP openpod_hot_wallet_incidents_total Incidents found (foreign transactions...).",
            "# TYPE openpod_hot_wallet_incidents_total counter",
            f"openpod_hot_wallet_incidents_total {self.incidents}",
        ]
        return "\n".join(lines) + "\n"


@dataclass
class StepReport:
    blocks: list[int] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


def _topic(address: str) -> str:
    return "0x" + bytes.fromhex(address[2:]).rjust(32, b"\0").hex()


def _address(topic: str) -> str:
    return "0x" + topic[-40:]


class HotWalletWatch:
    def __init__(
        self,
        db: Database,
        rpc: Rpc,
        config: WatchConfig,
        breaker: Breaker,
        alert: Callable[[Alert], object],
        *,
        guardian: Signer | None = None,
    ) -> None:
        self.db = db
        self.rpc = rpc
        self.config = config
        self.breaker = breaker
        self._alert = alert
        self.guardian = guardian
        self.metrics = WalletMetrics()
        self.pausing: asyncio.Task[None] | None = None
        self._me = config.address.lower()
        self._allowed = {a.lower() for a in config.allowlist} | {config.payments.lower()}
        self._cursor = f"watch-block:{config.chain_id}:{self._me}"
        self._seen_nonce = f"watch-nonce:{config.chain_id}:{self._me}"

    async def _db(self, work: Callable[[Session], T]) -> T:
        return await self.db.run(work)

    def _send(self, alert: Alert, report: StepReport) -> None:
        report.alerts.append(alert)
        self._alert(alert)

    # ---- one step ------------------------------------------------------------------

    async def step(self) -> StepReport:
        report = StepReport()
        head = await self.rpc.block_number()
        first = await self._db(lambda s: _get(s, self._cursor))
        first = head if first is None else first
        last = min(head, first + self.config.max_blocks_per_step - 1)
        for number in range(first, last + 1):
            await self._scan_block(number, report)
        if first <= last:
            await self._scan_tokens(first, last, report)
            await self._db(lambda s: _put(s, self._cursor, last + 1))
            report.blocks = list(range(first, last + 1))
            self.metrics.last_block = last
        # The nonce as of the last block read, so that a transaction mined meanwhile is found
        # by the next step's scan and its nonce together, as one incident.
        await self._check_nonce(last if first <= last else first - 1, report)
        if report.findings:
            await self._incident(report)
        await self._check_balance(report)
        state = await asyncio.to_thread(self.breaker.state)
        self.metrics.breaker_open = state.open
        self.metrics.pending = await self._db(
            lambda s: open_tx_count(s, self.config.chain_id, self.config.address)
        )
        return report

    async def run(self, period_s: float, stop: asyncio.Event) -> None:
        """Steps every `period_s` until `stop`. While the chain or the database cannot be read
        the watch is blind: it backs off up to 30 s, warns once the outage has lasted
        `blind_after_s`, and says when it sees again."""
        loop = asyncio.get_running_loop()
        delay = period_s
        blind_since: float | None = None
        warned = False
        key = f"hot-wallet:{self._me}:watch-blind"
        while not stop.is_set():
            try:
                await self.step()
            except (RpcUnavailable, RpcError, ChainError, StoreError) as error:
                delay = min(max(delay * 2, period_s), 30.0)
                log.warning("hot wallet watch: %s; retrying in %.1f s", error, delay)
                blind_since = loop.time() if blind_since is None else blind_since
                if not warned and loop.time() - blind_since >= self.config.blind_after_s:
                    warned = True
                    title = f"the watch of hot wallet {self.config.address} cannot read the chain"
                    text = f"{type(error).__name__}: {error}; nothing is checked meanwhile"
                    self._alert(Alert(key=key, severity=Severity.WARNING, title=title, text=text))
            else:
                delay, blind_since = period_s, None
                if warned:
                    warned = False
                    title = f"the watch of hot wallet {self.config.address} reads the chain again"
                    self._alert(
                        Alert(
                            key=key,
                            severity=Severity.WARNING,
                            title=title,
                            text=title,
                            resolved=True,
                        )
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    # ---- what the wallet did -------------------------------------------------------

    async def _scan_block(self, number: int, report: StepReport) -> None:
        block = await self.rpc.block(number, transactions=True)
        if block is None:
            raise ChainError(f"block {number} is not available yet")
        mine = [
            tx
            for tx in block.get("transactions") or []
            if isinstance(tx, dict) and str(tx.get("from", "")).lower() == self._me
        ]
        if not mine:
            return
        hashes = [str(tx["hash"]) for tx in mine]
        known = await self._db(lambda s: _known_hashes(s, hashes))
        for tx in mine:
            to = str(tx.get("to") or "(contract creation)")
            value = hex_int(tx.get("value", "0x0"))
            facts = f"{tx['hash']} in block {number} (nonce {hex_int(tx['nonce'])}, to {to}"
            facts += f", {value} wei)" if value else ")"
            if str(tx["hash"]).lower() not in known:
                report.findings.append(f"a transaction the gateway did not sign: {facts}")
            if value and to.lower() not in self._allowed:
                report.findings.append(f"value sent to an address off the allowlist: {facts}")

    async def _scan_tokens(self, first: int, last: int, report: StepReport) -> None:
        me = _topic(self.config.address)
        for topic, what in ((TRANSFER, "token transfer"), (APPROVAL, "token approval")):
            for entry in await self.rpc.logs(None, [topic, me], first, last):
                topics = entry.get("topics") or []
                other = _address(str(topics[2])) if len(topics) > 2 else "?"
                if other.lower() in self._allowed:
                    continue
                block = hex_int(entry.get("blockNumber", "0x0"))
                report.findings.append(
                    f"{what} by the hot wallet to {other} on token {entry.get('address')} "
                    f"(tx {entry.get('transactionHash')}, block {block})"
                )

    async def _check_nonce(self, block: int, report: StepReport) -> None:
        nonce = await self.rpc.nonce(self.config.address, hex(block))
        self.metrics.nonce = nonce
        name = chain_txs.nonce_counter(self.config.chain_id, self.config.address)

        def expected(session: Session) -> tuple[int | None, int | None]:
            return _get(session, name), _get(session, self._seen_nonce)

        issued, seen = await self._db(expected)
        allowed = max(issued or 0, seen or 0)
        if seen is None and issued is None:
            allowed = nonce  # the first look at a wallet the gateway never used
        if nonce > allowed:
            issued_text = f"up to {allowed - 1}" if allowed else "none"
            report.findings.append(
                f"the nonce moved to {nonce} by block {block}; the gateway issued {issued_text}"
            )
        if seen is None or nonce > seen:
            await self._db(lambda s: _put(s, self._seen_nonce, nonce))

    async def _incident(self, report: StepReport) -> None:
        self.metrics.incidents += 1
        reason = report.findings[0]
        await asyncio.to_thread(self.breaker.open, f"watch: {reason}", "watch")
        self.metrics.breaker_open = True
        text = "\n".join(f"- {finding}" for finding in report.findings)
        text += "\nThe circuit breaker is open: the gateway signs nothing until an operator "
        text += "runs `openpod wallet breaker close --reason ...` after review."
        # Every incident has the contract paused, even with the breaker open already (by an
        # operator, say): `_pause` does nothing when it is paused.
        if self.guardian is not None and (self.pausing is None or self.pausing.done()):
            text += f"\nThe guardian {self.guardian.address} pauses the payments contract (unless "
            text += "it is paused already)."
            self.pausing = asyncio.create_task(self._pause())
        self._send(
            Alert(
                key=f"hot-wallet:{self._me}:incident:{reason}",
                severity=Severity.CRITICAL,
                title=f"hot wallet {self.config.address}: activity the gateway did not do",
                text=text,
                fields=(("address", self.config.address), ("chain", str(self.config.chain_id))),
            ),
            report,
        )

    async def _pause(self) -> None:
        assert self.guardian is not None
        payments = Contract(self.rpc, "OpenPodPayments", self.config.payments)
        try:
            if await payments.read_one("paused"):
                return
            receipt = await payments.send(self.guardian, payments.calldata("pause"))
        except (Reverted, ChainError, RpcError, RpcUnavailable) as error:
            self._alert(
                Alert(
                    key=f"hot-wallet:{self._me}:guardian-pause",
                    severity=Severity.CRITICAL,
                    title="the guardian could not pause the payments contract",
                    text=f"{type(error).__name__}: {error}. Pause it by hand.",
                )
            )
            return
        self._alert(
            Alert(
                key=f"hot-wallet:{self._me}:guardian-pause",
                severity=Severity.CRITICAL,
                title=f"payments contract {self.config.payments} paused by the guardian",
                text=f"transaction {receipt['transactionHash']}; only the admin can unpause it.",
            )
        )

    # ---- balance -------------------------------------------------------------------

    async def _check_balance(self, report: StepReport) -> None:
        balance = await self.rpc.balance(self.config.address)
        window = self.config.runway_window_hours
        burned = await self._db(
            lambda s: _fees_paid(s, self.config.chain_id, self.config.address, window)
        )
        per_hour = burned / window
        runway = math.inf if per_hour == 0 else balance / per_hour
        self.metrics.balance, self.metrics.runway_hours = balance, runway
        eth = f"{balance / 1e18:.6f} ETH"
        floor = self.config.balance_floor
        await self._condition(
            "balance-floor",
            balance < floor,
            Severity.CRITICAL,
            f"hot wallet {self.config.address} balance {eth} is under the floor "
            f"{floor / 1e18:.6f} ETH",
            f"hot wallet {self.config.address} balance {eth} is back over the floor",
            report,
        )
        minimum = self.config.runway_min_hours
        await self._condition(
            "runway",
            runway < minimum,
            Severity.WARNING,
            f"hot wallet {self.config.address} runway {runway:.1f} h is under {minimum:g} h "
            f"(burning {per_hour / 1e18:.6f} ETH an hour)",
            f"hot wallet {self.config.address} runway is back over {minimum:g} h",
            report,
        )

    async def _condition(
        self,
        name: str,
        firing: bool,
        severity: Severity,
        fired: str,
        resolved: str,
        report: StepReport,
    ) -> None:
        key = f"hot-wallet:{self._me}:{name}"
        changed = await self._db(lambda s: _flip(s, key, firing, fired if firing else resolved))
        if not changed:
            return
        title = fired if firing else resolved
        self._send(
            Alert(key=key, severity=severity, title=title, text=title, resolved=not firing),
            report,
        )


# ---- database steps -------------------------------------------------------------------


def _get(session: Session, name: str) -> int | None:
    row = session.get(Counter, name)
    return None if row is None else row.value


def _put(session: Session, name: str, value: int) -> None:
    row = session.get(Counter, name, with_for_update=True)
    if row is None:
        session.add(Counter(name=name, value=value))
    else:
        row.value = value


def _known_hashes(session: Session, hashes: list[str]) -> set[str]:
    lowered = [h.lower() for h in hashes]
    query = select(ChainTxAttempt.hash).where(ChainTxAttempt.hash.in_(lowered))
    return {h.lower() for h in session.scalars(query)}


def _fees_paid(session: Session, chain_id: int, sender: str, hours: float) -> int:
    since = utcnow() - timedelta(hours=hours)
    query = select(ChainTx.fee_paid).where(
        ChainTx.chain_id == chain_id,
        ChainTx.sender == sender,
        ChainTx.fee_paid.is_not(None),
        ChainTx.updated_at >= since,
    )
    return sum(int(fee) for fee in session.scalars(query) if fee is not None)


def _flip(session: Session, key: str, firing: bool, detail: str) -> bool:
    """Record the condition's state; True when it changed (a first look at a condition that
    holds counts as a change, a first look at one that does not is silent)."""
    row = session.get(AlertState, key, with_for_update=True)
    if row is None:
        session.add(AlertState(key=key, firing=firing, detail=detail))
        return firing
    if row.firing == firing:
        return False
    row.firing, row.detail, row.since = firing, detail, utcnow()
    return True
