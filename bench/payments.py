"""Benchmark: settlements per second the payment gateway sustains against anvil.

Run `python -m bench.payments` (about a minute); it replaces its own section of
bench/RESULTS.md. On a fresh anvil (mining every transaction) with openpod's contracts:
50 users, each with 4 open leases (200 runs); 2,000 PENDING settlements in a SQLite store
(10 per run). The gateway (services.payments, batches of 100, 1 confirmation) runs rounds
until every settlement is CONFIRMED: settlements/s = 2,000 / elapsed, with every Paid event
checked against the store. The reference in the same run: the same kind of settlements paid
one `payment` transaction each, sent and awaited in turn (what a gateway without batching
does), for 200 settlements.
"""

from __future__ import annotations

import asyncio
import platform
import tempfile
import time
from pathlib import Path

from eth_account import Account as EthAccount
from sqlalchemy import func, select

from bench import stop_cleanly_on_sigterm
from bench.results import write_section
from openpod.adapters.chain import Anvil, Charge, Contract, LeaseTerms, Rpc, deploy
from openpod.adapters.signers import KeystoreSigner
from openpod.adapters.store import Database, migrate
from openpod.adapters.store.models import PodLease, Settlement
from openpod.domain import ids
from openpod.services import accounts, providers
from openpod.services.payments import GatewayConfig, LeaseStatus, PaymentGateway
from tests.support.chain import fund

HEADING = "## Payments: settlements through the gateway to the contract"
GPU, RATE = "NVIDIA H100 80GB HBM3", 830555555555556
USERS, LEASES_PER_USER, PER_RUN = 50, 4, 10
REFERENCE = 200


async def main_async() -> str:
    with Anvil() as anvil, tempfile.TemporaryDirectory() as tmp:
        async with Rpc(anvil.url) as rpc:
            admin = KeystoreSigner(bytes(EthAccount.create().key))
            hot = KeystoreSigner(bytes(EthAccount.create().key))
            provider = str(EthAccount.create().address)
            for signer in (admin, hot):
                await fund(rpc, signer.address)
            deployment = await deploy(
                rpc, admin, rates={GPU: RATE}, treasury=admin.address, fee_bps=500,
                operator=hot.address,
            )  # fmt: skip
            token = Contract(rpc, "DevToken", deployment.token)
            payments = Contract(rpc, "OpenPodPayments", deployment.payments)
            now = int(str((await rpc.block("latest") or {})["timestamp"]), 16)

            url = f"sqlite:///{Path(tmp) / 'openpod.db'}"
            migrate(url)
            db = Database(url)
            with db.transaction() as s:
                account, _ = accounts.create_account(s, "bench")
                owner, _ = accounts.create_account(s, "provider")
                provider_row = providers.become_provider(s, owner, provider)
                account_id, provider_id = account.id, provider_row.id

            users, leases = [], []
            for _ in range(USERS):
                user = KeystoreSigner(bytes(EthAccount.create().key))
                users.append(user)
                await fund(rpc, user.address)
                await token.send(user, token.calldata("faucet", user.address, 10**27))
                await token.send(user, token.calldata("approve", deployment.payments, 2**256 - 1))
                await payments.send(user, payments.calldata("setSpendingCap", 10**27))
                for _ in range(LEASES_PER_USER):
                    terms = LeaseTerms(
                        ids.new_id("pod")[:16], 1, user.address, provider, GPU, 1, RATE,
                        now - 10**7,
                    )  # fmt: skip
                    signature = user.sign_typed_data(
                        terms.typed_data(deployment.chain_id, deployment.payments)
                    )
                    await payments.send(
                        hot, payments.calldata("openLease", terms.as_tuple(), signature)
                    )
                    leases.append((terms, signature))

            with db.transaction() as s:
                for terms, signature in leases:
                    s.add(
                        PodLease(
                            pod_id=terms.pod_id, generation=1, account_id=account_id,
                            lease_id="0x" + terms.lease_id.hex(), user_wallet=terms.user,
                            provider_wallet=provider, gpu_type_id=GPU, gpu_count=1,
                            max_rate=RATE, start=terms.start, signature="0x" + signature.hex(),
                            status=LeaseStatus.OPEN,
                        )
                    )  # fmt: skip
                    for k in range(PER_RUN):
                        s.add(
                            Settlement(
                                id=ids.new_id("st"), pod_id=terms.pod_id, generation=1,
                                account_id=account_id, provider_id=provider_id,
                                payout_wallet=provider, gpu_type_id=GPU, gpu_count=1,
                                rate_per_second=RATE, from_second=60 * k, seconds=60,
                                amount=60 * RATE, status="PENDING",
                            )
                        )  # fmt: skip
            total = len(leases) * PER_RUN

            config = GatewayConfig(deployment.chain_id, deployment.payments, confirmations=1)
            gateway = PaymentGateway(db, rpc, hot, config)
            started = time.perf_counter()
            rounds = 0
            while True:
                await gateway.round()
                rounds += 1
                with db.transaction(readonly=True) as s:
                    left = s.scalar(select(func.count()).where(Settlement.status != "CONFIRMED"))
                if not left:
                    break
            gateway_s = time.perf_counter() - started
            with db.transaction(readonly=True) as s:
                wrong = sum(
                    1 for row in s.scalars(select(Settlement)) if row.paid_amount != row.amount
                )
            assert wrong == 0, f"{wrong} settlements paid a different amount"

            # The reference: one payment per transaction, each awaited.
            started = time.perf_counter()
            for n in range(REFERENCE):
                terms, _ = leases[n % len(leases)]
                charge = Charge(10**6 + n, terms.lease_id, terms.user, provider, 1, GPU, 1)
                await payments.send(hot, payments.calldata("payment", *charge.as_tuple()))
            reference_s = time.perf_counter() - started
            db.dispose()

    gateway_rate = total / gateway_s
    reference_rate = REFERENCE / reference_s
    return "\n".join(
        [
            HEADING,
            "",
            f"Machine: {platform.machine()}, {platform.system()} {platform.release()}; "
            "anvil mining every transaction; SQLite store.",
            "",
            "| what | settlements | seconds | settlements/s |",
            "|---|---:|---:|---:|",
            f"| gateway, batches of 100, 1 confirmation ({rounds} rounds) | {total} | "
            f"{gateway_s:.2f} | {gateway_rate:,.0f} |",
            f"| reference: one `payment` transaction each, awaited | {REFERENCE} | "
            f"{reference_s:.2f} | {reference_rate:,.0f} |",
            "",
            f"Gateway / reference: {gateway_rate / reference_rate:.1f}x. Target: ≥ 200 "
            "settlements/s. Every settlement's on-chain amount equals the store's.",
        ]
    )


def main() -> None:
    stop_cleanly_on_sigterm()
    text = asyncio.run(main_async())
    print(text)
    write_section(HEADING, text)


if __name__ == "__main__":
    main()
