"""Benchmark: gas per settlement paid through OpenPodPayments, read from receipts.

Run `python -m bench.payments_gas` (about 15 s; `--print-only` leaves bench/RESULTS.md alone);
it replaces its own section of bench/RESULTS.md. On a fresh anvil (the npm one, automine):
DevToken and OpenPodPayments deployed as `openpod chain deploy` would (fee 500 bps); 161 users,
each with tokens, an approval, a spending cap and a lease signed for one run of a pod, each
paying a provider of their own. Then:

- worst case: a single `payment`, then `paymentBatch` of 10, 50 and 100, each by users and to
  providers that have never paid or been paid (every balance, budget and lease word goes from
  zero to non-zero), each batch's settlement ids starting a fresh 256-id word of the paid bitmap;
- steady state: the same users pay the same providers again, the next settlement ids (dense,
  as the settlement counter gives them), so every word written is non-zero already;
- the one-time `openLease` of a run.

Gas per settlement = the transaction's gasUsed (21,000 base and calldata included) / charges.
Every charge must come back `Paid`, or the run fails.
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench import stop_cleanly_on_sigterm
from bench.results import write_section
from openpod.adapters.chain import Anvil, Charge, Contract, LeaseTerms, Rpc, anvil_binary, hex_int
from openpod.adapters.chain.contracts import artifact
from tests.support.chain import (
    H100,
    RATES,
    Deployed,
    deploy_openpod,
    make_user,
    new_signer,
    send_many,
)

HEADING = "## Payments: gas per settlement (OpenPodPayments)"
SIZES = (10, 50, 100)
TARGET = 70_000  # gas per settlement, amortised in batches of 100
SECONDS = 60  # each charge bills a minute of one H100


@dataclass(frozen=True)
class Payer:
    user: str
    provider: str
    lease: bytes

    def charge(self, settlement_id: int) -> Charge:
        return Charge(settlement_id, self.lease, self.user, self.provider, SECONDS, H100, 1)


async def make_payers(rpc: Rpc, deployed: Deployed, count: int) -> tuple[list[Payer], list[int]]:
    """`count` users with tokens, approval, cap and an open lease; the leases' gasUsed."""
    d = deployed.deployment
    payments = Contract(rpc, "OpenPodPayments", d.payments)
    latest = await rpc.block("latest")
    assert latest is not None
    start = hex_int(latest["timestamp"]) - 86_400
    payers, opens = [], []
    for i in range(count):
        user = await make_user(rpc, d)
        provider = new_signer().address
        terms = LeaseTerms(f"pod-{i:06d}", 1, user.address, provider, H100, 1, RATES[H100], start)
        signature = user.sign_typed_data(terms.typed_data(d.chain_id, d.payments))
        opens.append(
            (payments.address, payments.calldata("openLease", terms.as_tuple(), signature))
        )
        payers.append(Payer(user.address, provider, terms.lease_id))
    receipts = await send_many(rpc, deployed.operator, opens)
    return payers, [hex_int(r["gasUsed"]) for r in receipts]


async def settle(rpc: Rpc, deployed: Deployed, payers: list[Payer], first_id: int) -> int:
    """Pay one charge per payer (a `payment` for one, else a `paymentBatch`); its gasUsed."""
    payments = Contract(rpc, "OpenPodPayments", deployed.deployment.payments)
    charges = [p.charge(first_id + i) for i, p in enumerate(payers)]
    if len(charges) == 1:
        data = payments.calldata("payment", *charges[0].as_tuple())
    else:
        data = payments.calldata("paymentBatch", [c.as_tuple() for c in charges])
    [receipt] = await send_many(rpc, deployed.operator, [(payments.address, data)], gas=25_000_000)
    paid = [e for e in payments.events(receipt) if e.name == "Paid"]
    if len(paid) != len(charges):
        raise RuntimeError(f"{len(charges) - len(paid)} of {len(charges)} charges not paid")
    return hex_int(receipt["gasUsed"])


async def measure() -> dict[str, Any]:
    with Anvil() as anvil:
        async with Rpc(anvil.url) as rpc:
            deployed = await deploy_openpod(rpc)
            payers, opens = await make_payers(rpc, deployed, 1 + sum(SIZES))
            groups, at = [payers[:1]], 1
            for size in SIZES:
                groups.append(payers[at : at + size])
                at += size
            worst, steady = [], []
            for word, group in enumerate(groups, start=1):
                worst.append(await settle(rpc, deployed, group, word * 256))
            for word, group in enumerate(groups, start=1):
                steady.append(await settle(rpc, deployed, group, word * 256 + len(group)))
    return {"sizes": (1, *SIZES), "worst": worst, "steady": steady, "open": opens}


def report(r: dict[str, Any]) -> str:
    compiler = artifact("OpenPodPayments").compiler
    version = (
        subprocess.run([anvil_binary(), "--version"], capture_output=True, text=True, check=True)
        .stdout.splitlines()[0]
        .replace("Version: ", "")
    )
    optimizer = compiler["settings"]["optimizer"]
    lines = [
        f"{HEADING} ({time.strftime('%Y-%m-%d')}, {platform.node() or 'host'}, "
        f"{os.cpu_count()} cores, {version}, solc {compiler['version'].split('+')[0]})",
        "",
        "`python -m bench.payments_gas`. gasUsed from the receipts on a fresh anvil; each charge "
        "bills 60 s of one H100, fee 500 bps, so every charge moves tokens twice (provider and "
        "treasury). Worst case: users and providers that never paid or were paid, a fresh "
        "word of the paid bitmap per call. Steady state: the same users and providers again, "
        "the next settlement ids. Per settlement = gasUsed / charges (the 21,000 base and "
        f"calldata included). solc optimizer runs {optimizer['runs']}, "
        f"via-IR {compiler['settings'].get('viaIR', False)}.",
        "",
        "| call | charges | gasUsed, worst | per settlement, worst | gasUsed, steady | "
        "per settlement, steady |",
        "|---|---|---|---|---|---|",
    ]
    for size, worst, steady in zip(r["sizes"], r["worst"], r["steady"], strict=True):
        call = "`payment`" if size == 1 else "`paymentBatch`"
        lines.append(
            f"| {call} | {size} | {worst:,} | {worst // size:,} | {steady:,} | {steady // size:,} |"
        )
    opens = r["open"]
    lines.append(
        f"| `openLease` (once per run of a pod) | 1 | {min(opens):,}-{max(opens):,} | | | |"
    )
    per100 = r["worst"][-1] // r["sizes"][-1]
    lines += [
        "",
        f"Batch of 100, amortised: **{per100:,} gas per settlement** worst case, "
        f"{r['steady'][-1] // r['sizes'][-1]:,} steady (target ≤ {TARGET:,}).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    stop_cleanly_on_sigterm()
    started = time.monotonic()
    results = asyncio.run(measure())
    text = report(results)
    print(text)
    if "--print-only" not in sys.argv[1:]:
        write_section(HEADING, text)
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
