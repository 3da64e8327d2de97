"""On-chain payments end to end: a real pod on a real node, metered by its real meter, its
settlements paid by the control plane's payment gateway through the contract on a real anvil.

The `Paid` events are the truth anyone can check: their amounts must equal the control plane's
settlements exactly, and the user's, provider's and treasury's balances must add up."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account as EthAccount

from openpod.adapters.chain import Anvil, Contract, Deployment, Rpc, deploy, short_bytes32
from openpod.adapters.signers import KeystoreSigner
from tests.e2e.conftest import Platform, running_platform
from tests.support.chain import FEE_BPS, balances, fund, make_user, paying_plane_env
from tests.support.net import wait_until

GPU = "NVIDIA GeForce RTX 4090"
PAYOUT = "0x" + "11" * 20  # the provider's payout wallet in running_platform()
TOKENS = 10**24


@dataclass
class Paying:
    platform: Platform
    anvil_url: str
    deployment: Deployment
    admin: KeystoreSigner
    treasury: str


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def paying(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paying]:
    files = tmp_path_factory.mktemp("chain")
    with Anvil() as anvil:
        admin = KeystoreSigner(bytes(EthAccount.create().key))
        hot = KeystoreSigner.create(files / "hot-wallet.json", "hot password")
        (files / "hot-wallet.password").write_text("hot password\n")
        treasury = str(EthAccount.create().address)

        async def setup() -> Deployment:
            async with Rpc(anvil.url) as rpc:
                await fund(rpc, admin.address)
                await fund(rpc, hot.address)
                return await deploy(
                    rpc, admin, rates={}, treasury=treasury, fee_bps=FEE_BPS, operator=hot.address
                )

        deployment = run(setup())
        env = paying_plane_env(files, anvil.url, deployment)
        with running_platform(env) as platform:
            yield Paying(platform, anvil.url, deployment, admin, treasury)


async def _balances(p: Paying, *who: str) -> list[int]:
    async with Rpc(p.anvil_url) as rpc:
        return await balances(rpc, p.deployment, *who)


async def _paid_events(p: Paying, user: str) -> list[dict[str, Any]]:
    async with Rpc(p.anvil_url) as rpc:
        payments = Contract(rpc, "OpenPodPayments", p.deployment.payments)
        topic = "0x" + payments.codec.event_topic("Paid").hex()
        user_topic = "0x" + bytes(12).hex() + user[2:].lower()
        logs = await rpc.logs(payments.address, [topic, None, user_topic])
        return [e.args for e in (payments.codec.decode_log(entry) for entry in logs) if e]


def _settlements(p: Paying, pod_id: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{p.platform.root / 'plane' / 'openpod.db'}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT number, seconds, amount, status, paid_amount, fee, rate_per_second "
            "FROM settlements WHERE pod_id = ? ORDER BY from_second",
            (pod_id,),
        ).fetchall()
    finally:
        db.close()


def test_a_pod_is_paid_on_chain_as_it_runs_and_when_it_ends(paying: Paying) -> None:
    p, api = paying, paying.platform.user
    rate = int(next(g for g in api.ok("GET", "/gpu-types") if g["id"] == GPU)["ratePerSecond"])

    async def prepare() -> KeystoreSigner:
        async with Rpc(p.anvil_url) as rpc:
            payments = Contract(rpc, "OpenPodPayments", p.deployment.payments)
            await payments.send(p.admin, payments.calldata("setRate", short_bytes32(GPU), rate))
            return await make_user(rpc, p.deployment, cap=TOKENS)

    user = run(prepare())
    api.ok("PATCH", "/me", json={"walletAddress": user.address})
    user_before, payout_before, treasury_before = run(
        _balances(p, user.address, PAYOUT, p.treasury)
    )
    body = {"name": "paid", "imageName": "local", "gpuTypeId": GPU, "gpuCount": 1,
            "ports": "22/tcp"}  # fmt: skip
    pod_id = api.ok("POST", "/pods", json=body)["id"]
    api.wait(pod_id, "RUNNING")
    lease = api.ok("GET", f"/pods/{pod_id}/lease")
    assert lease["status"] is None
    signature = user.sign_typed_data(lease["typedData"])
    signed = api.ok("PUT", f"/pods/{pod_id}/lease", json={"signature": "0x" + signature.hex()})
    assert signed["status"] == "SIGNED"

    def confirmed() -> int:
        return sum(1 for row in _settlements(p, pod_id) if row[3] == "CONFIRMED")

    wait_until(lambda: confirmed() >= 3, 60, "three settlements paid on-chain", step=0.2)
    api.ok("POST", f"/pods/{pod_id}/terminate")
    api.wait(pod_id, "TERMINATED")

    def settled() -> bool:
        rows = _settlements(p, pod_id)
        closed = api.ok("GET", f"/pods/{pod_id}/lease")["status"] == "CLOSED"
        return closed and all(row[3] == "CONFIRMED" for row in rows)

    wait_until(settled, 60, "every settlement paid and the lease closed", step=0.2)

    rows = _settlements(p, pod_id)
    events = run(_paid_events(p, user.address))
    assert len(rows) >= 3 and len(events) == len(rows)
    by_number = {int(e["settlementId"]): e for e in events}
    for number, seconds, amount, _, paid_amount, fee, row_rate in rows:
        event = by_number[number]
        assert int(row_rate) == rate
        assert int(event["amount"]) == int(amount) == int(paid_amount) == seconds * rate
        assert int(event["fee"]) == int(fee) == int(amount) * FEE_BPS // 10_000
        assert int(event["durationSeconds"]) == seconds and int(event["gpuCount"]) == 1
    total = sum(int(r[2]) for r in rows)
    fees = sum(int(r[5]) for r in rows)
    user_after, payout_after, treasury_after = run(_balances(p, user.address, PAYOUT, p.treasury))
    assert user_before - user_after == total
    assert payout_after - payout_before == total - fees
    assert treasury_after - treasury_before == fees
