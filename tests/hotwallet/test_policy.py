"""The signing policy in front of the hot wallet's key (a real SoftHSM2 key): only payment
functions of the payments contract, fees under the cap, an hourly gas budget, and nothing at
all while the breaker is open. Each refusal names its reason, raises an alert, and never
reaches the key."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address

from openpod.adapters.chain import codec
from openpod.adapters.signers.pkcs11 import HsmSigner
from openpod.adapters.store import Database
from openpod.adapters.store.models import utcnow
from openpod.domain.alerts import Alert, Severity
from openpod.services import chain_txs
from openpod.services.chain_txs import Fees
from openpod.services.hot_wallet import (
    Breaker,
    GuardedSigner,
    SigningPolicy,
    SigningRefused,
    SpendLedger,
    payment_selectors,
)
from tests.support.hsm import SoftHsmToken

CHAIN_ID = 31337
PAYMENTS = to_checksum_address("0x" + "5a" * 20)
GWEI = 10**9
PAYMENTS_ABI = codec("OpenPodPayments")


class CountingKey:
    """The HSM key, counting what it was asked to sign."""

    def __init__(self, key: HsmSigner) -> None:
        self.key = key
        self.signed = 0

    @property
    def address(self) -> str:
        return self.key.address

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        self.signed += 1
        return self.key.sign_transaction(tx)


class Now:
    def __init__(self) -> None:
        self.at = utcnow()

    def __call__(self) -> datetime:
        return self.at


def close_lease_call() -> bytes:
    return PAYMENTS_ABI.encode_call("closeLease", b"\1" * 32, 1_700_000_000)


def tx(nonce: int = 0, **changes: Any) -> dict[str, Any]:
    base = {
        "type": 2,
        "chainId": CHAIN_ID,
        "nonce": nonce,
        "to": PAYMENTS,
        "value": 0,
        "data": close_lease_call(),
        "gas": 100_000,
        "maxFeePerGas": 50 * GWEI,
        "maxPriorityFeePerGas": GWEI,
    }
    return base | changes


@pytest.fixture
def key(token: SoftHsmToken) -> CountingKey:
    return CountingKey(HsmSigner.generate(token.config()))


def guarded(db: Database, key: CountingKey, alerts: list[Alert], **policy: Any) -> GuardedSigner:
    rules = SigningPolicy(
        chain_id=CHAIN_ID,
        payments=PAYMENTS,
        selectors=payment_selectors(),
        max_fee_per_gas=policy.pop("max_fee", 100 * GWEI),
        gas_spend_per_hour=policy.pop("per_hour", 10**18),
    )
    breaker = Breaker(db, CHAIN_ID, key.address)
    return GuardedSigner(key, rules, breaker, alert=alerts.append, **policy)


def refused(signer: GuardedSigner, transaction: dict[str, Any], code: str) -> str:
    with pytest.raises(SigningRefused) as caught:
        signer.sign_transaction(transaction)
    assert caught.value.code == code
    return caught.value.reason


def test_a_payment_call_is_signed_by_the_key(db: Database, key: CountingKey) -> None:
    alerts: list[Alert] = []
    signer = guarded(db, key, alerts)
    raw = signer.sign_transaction(tx())
    assert Account.recover_transaction(raw) == key.address
    assert key.signed == 1 and alerts == []


def test_requests_outside_the_policy_are_refused_with_a_reason_and_an_alert(
    db: Database, key: CountingKey
) -> None:
    alerts: list[Alert] = []
    signer = guarded(db, key, alerts, max_fee=100 * GWEI)
    stranger = to_checksum_address("0x" + "77" * 20)
    assert "is not the payments contract" in refused(signer, tx(to=stranger), "to")
    assert "creation" in refused(signer, tx(to=""), "to")
    transfer = codec("DevToken").encode_call("transfer", stranger, 10**18)
    assert "selector 0x" in refused(signer, tx(data=transfer), "selector")
    pause = PAYMENTS_ABI.encode_call("pause")  # the contract's, but not a payment function
    refused(signer, tx(data=pause), "selector")
    refused(signer, tx(data=b""), "selector")
    assert "moves value" in refused(signer, tx(value=1), "value")
    assert "above the cap" in refused(signer, tx(maxFeePerGas=101 * GWEI), "fee")
    assert "is not 31337" in refused(signer, tx(chainId=1), "chain")
    assert key.signed == 0
    assert signer.refused == 8
    assert [a.severity for a in alerts] == [Severity.CRITICAL] * 8
    assert {a.key.rsplit(":", 1)[1] for a in alerts} == {"to", "selector", "value", "fee", "chain"}
    assert all(key.address in a.title for a in alerts)


def test_the_hourly_gas_budget_counts_each_nonce_once_at_its_dearest(
    db: Database, key: CountingKey
) -> None:
    alerts: list[Alert] = []
    now = Now()
    # Each transaction may cost up to 100,000 gas x 50 gwei = 0.005 ETH; the hour allows 0.012.
    signer = guarded(db, key, alerts, per_hour=12 * 10**15, ledger=SpendLedger(now))
    signer.sign_transaction(tx(0))
    signer.sign_transaction(tx(1))
    # A fee bump of nonce 1 (60 gwei) adds only its difference: 0.001 ETH.
    signer.sign_transaction(tx(1, maxFeePerGas=60 * GWEI))
    assert signer.ledger.spent() == 11 * 10**15
    reason = refused(signer, tx(2), "spend")
    assert "11000000000000000 wei signed in the last hour" in reason
    assert key.signed == 3 and len(alerts) == 1
    now.at += timedelta(minutes=61)  # the hour has passed: the budget is free again
    assert signer.ledger.spent() == 0
    signer.sign_transaction(tx(2))
    assert key.signed == 4


def test_the_budget_survives_a_restart(db: Database, key: CountingKey) -> None:
    signer = guarded(db, key, [])
    with db.transaction() as session:
        for _ in range(2):
            chain_txs.sign_and_store(
                session,
                signer,
                chain_id=CHAIN_ID,
                to=PAYMENTS,
                data=close_lease_call(),
                gas=100_000,
                fees=Fees(50 * GWEI, GWEI),
                kind="close",
                chain_nonce=0,
                link=lambda _tx: None,
            )
    restarted = SpendLedger()
    restarted.seed(db, CHAIN_ID, key.address)
    assert restarted.spent() == 2 * 100_000 * 50 * GWEI


def test_nothing_is_signed_while_the_breaker_is_open(db: Database, key: CountingKey) -> None:
    alerts: list[Alert] = []
    signer = guarded(db, key, alerts)
    assert signer.breaker.open("test: suspicious activity", "test")
    assert not signer.breaker.open("again", "test")  # the first reason is kept
    reason = refused(signer, tx(), "breaker")
    assert "breaker is open" in reason and "suspicious activity" in reason
    assert "openpod wallet breaker close" in reason
    assert key.signed == 0
    assert alerts[0].severity == Severity.WARNING
    with pytest.raises(ValueError, match="needs a reason"):
        signer.breaker.close("  ", "test")
    assert signer.breaker.close("reviewed: a test", "test")
    signer.sign_transaction(tx())
    assert key.signed == 1
    events = signer.breaker.history()
    assert [(e.action, e.reason) for e in events] == [
        ("close", "reviewed: a test"),
        ("open", "test: suspicious activity"),
    ]
