"""Property: for any seconds, rate, GPU count and fee, the contract charges exactly what
`domain.money` computes off-chain (`cost`, then `platform_fee` rounded down), and the tokens
move by exactly those amounts. The one rounding rule, checked against the real contract."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openpod.adapters.chain import Charge, LeaseTerms, short_bytes32
from openpod.domain.money import cost, platform_fee, split
from tests.support.chain import H200, MAX_UINT, Chain, User, new_signer

MAX_RATE = 10**18
MAX_SECONDS = 1_000_000
MAX_GPUS = 8
# 50 examples of at most 10**6 s x 8 GPUs x 10**18: 4 x 10**26, under one faucet call.
FUNDS = 10**27


@dataclass
class Payer:
    """One user with a lease for each GPU count, all started long ago, none rate-capped."""

    user: User
    leases: dict[int, LeaseTerms]
    settlement: int = 0


@pytest.fixture
async def payer(chain: Chain) -> Payer:
    user = await chain.make_user(tokens=FUNDS, cap=MAX_UINT, lease=False)
    provider = new_signer().address
    leases = {
        n: await chain.open_lease(
            user.signer, provider, gpu_type=H200, gpu_count=n, max_rate=MAX_UINT, start=1
        )
        for n in range(1, MAX_GPUS + 1)
    }
    return Payer(user, leases)


@settings(
    max_examples=50,
    derandomize=True,  # the same examples on every run: CI stays deterministic
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seconds=st.integers(1, MAX_SECONDS),
    rate=st.integers(1, MAX_RATE),
    gpu_count=st.integers(1, MAX_GPUS),
    fee_bps=st.integers(0, 2_000),
)
async def test_the_contract_charges_what_domain_money_computes(
    chain: Chain, payer: Payer, seconds: int, rate: int, gpu_count: int, fee_bps: int
) -> None:
    gpu = short_bytes32(H200)
    if await chain.payments.read_one("rates", gpu) != rate:
        await chain.send(chain.admin, "setRate", gpu, rate)
    if await chain.payments.read_one("feeBps") != fee_bps:
        await chain.send(chain.admin, "setFee", fee_bps)
    lease = payer.leases[gpu_count]
    payer.settlement += 1
    user, provider, treasury = payer.user.address, lease.provider, chain.treasury.address
    before = await chain.balances(user, provider, treasury)
    charge = Charge(payer.settlement, lease.lease_id, user, provider, seconds, H200, gpu_count)
    receipt = await chain.pay(charge)
    after = await chain.balances(user, provider, treasury)

    amount = cost(seconds, gpu_count, rate)
    fee = platform_fee(amount, fee_bps)
    [paid] = chain.events(receipt, "Paid")
    assert (paid.args["amount"], paid.args["fee"], paid.args["rate"]) == (amount, fee, rate)
    share, _ = split(amount, fee_bps)
    assert [a - b for a, b in zip(after, before, strict=True)] == [-amount, share, fee]
