"""OpenPodPayments on a real anvil: every behaviour the gateway and the users rely on, with
exact amounts, exact event fields and exact custom errors.

Numbers: H100 costs 691_666_666_666_666 base units per GPU per second, H200 958_333_333_333_333;
the fee is 500 bps, rounded down."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from eth_utils.crypto import keccak

from openpod.adapters.chain import (
    ZERO_ADDRESS,
    Charge,
    LeaseTerms,
    Reverted,
    RpcError,
    role,
    send_and_wait,
    short_bytes32,
)
from tests.support.chain import (
    FEE_BPS,
    H100,
    H200,
    MAX_UINT,
    RATES,
    TOKENS,
    Chain,
    MakeUser,
    err,
    new_signer,
)

OPERATOR_ROLE = role("OPERATOR_ROLE")
GUARDIAN_ROLE = role("GUARDIAN_ROLE")
RATE_ADMIN_ROLE = role("RATE_ADMIN_ROLE")
ADMIN_ROLE = role("DEFAULT_ADMIN_ROLE")
# 60 s of one H100 and the fee within it.
MINUTE = 60 * RATES[H100]
MINUTE_FEE = MINUTE * FEE_BPS // 10_000


def unauthorized(account: str, needed: bytes) -> Any:
    return err("AccessControlUnauthorizedAccount", account=account, neededRole=needed)


# ---- a payment ----------------------------------------------------------------------------


async def test_a_payment_moves_the_amount_less_the_fee_to_the_provider_and_the_fee_to_the_treasury(
    chain: Chain, make_user: MakeUser
) -> None:
    user = await make_user(gpu_type=H200, gpu_count=2)
    treasury = chain.treasury.address
    before = await chain.balances(user.address, user.provider, treasury)
    receipt = await chain.pay(user.charge(41, 7))
    after = await chain.balances(user.address, user.provider, treasury)
    # 7 s x 2 GPUs x 958_333_333_333_333 = 13_416_666_666_666_662; 5 % of it is ...333.1 → 333.
    amount, fee = 13_416_666_666_666_662, 670_833_333_333_333
    assert [a - b for a, b in zip(after, before, strict=True)] == [-amount, amount - fee, fee]
    assert amount - fee == 12_745_833_333_333_329
    [paid] = chain.events(receipt)
    assert paid.name == "Paid"
    assert paid.args == {
        "settlementId": 41,
        "user": user.address,
        "provider": user.provider,
        "lease": user.lease_id,
        "gpuType": short_bytes32(H200),
        "gpuCount": 2,
        "durationSeconds": 7,
        "rate": RATES[H200],
        "amount": amount,
        "fee": fee,
    }
    assert await chain.payments.read_one("isPaid", 41) is True
    assert await chain.payments.read_one("isPaid", 40) is False
    assert (await chain.lease_of(user.lease_id))["billedSeconds"] == 7
    assert await chain.budget(user.address) == (TOKENS, amount)
    assert await chain.payments.read("quote", 7, short_bytes32(H200), 2) == (amount, fee)


async def test_settlement_ids_share_bitmap_words_but_not_bits(
    chain: Chain, make_user: MakeUser
) -> None:
    user = await make_user()
    ids = [0, 255, 256, MAX_UINT]
    await chain.pay_batch([user.charge(i, 1) for i in ids])
    for i in ids:
        assert await chain.payments.read_one("isPaid", i) is True
    for i in (1, 254, 257, 512, MAX_UINT - 1):
        assert await chain.payments.read_one("isPaid", i) is False


async def test_a_settlement_is_paid_once_alone_or_in_a_batch(
    chain: Chain, make_user: MakeUser
) -> None:
    user = await make_user()
    await chain.pay(user.charge(1, 60))
    assert await chain.reverts(chain.pay(user.charge(1, 60))) == err("AlreadyPaid", settlementId=1)
    receipt = await chain.pay_batch([user.charge(1, 60), user.charge(2, 60), user.charge(2, 60)])
    assert [e.args["settlementId"] for e in chain.events(receipt, "Paid")] == [2]
    assert chain.rejections(receipt) == {  # 1 paid before; 2 paid by its first charge
        1: err("AlreadyPaid", settlementId=1),
        2: err("AlreadyPaid", settlementId=2),
    }
    # Charged for settlements 1 and 2, once each.
    assert await chain.balance(user.address) == TOKENS - 2 * MINUTE
    assert await chain.balance(user.provider) == 2 * (MINUTE - MINUTE_FEE)
    assert (await chain.lease_of(user.lease_id))["billedSeconds"] == 120


# ---- leases -------------------------------------------------------------------------------


async def test_a_lease_bills_no_more_seconds_than_have_passed_since_its_start(
    chain: Chain, make_user: MakeUser
) -> None:
    start = await chain.now() + 10
    user = await make_user(start=start)
    lease = user.lease_id
    await chain.at(start - 1)  # nothing before the start
    assert await chain.reverts(chain.pay(user.charge(1, 1))) == err(
        "LeaseExceeded", lease=lease, billedSeconds=1, allowedSeconds=0
    )
    await chain.at(start + 5)
    assert await chain.reverts(chain.pay(user.charge(1, 6))) == err(
        "LeaseExceeded", lease=lease, billedSeconds=6, allowedSeconds=5
    )
    await chain.at(start + 100)
    assert await chain.reverts(chain.pay(user.charge(1, 101))) == err(
        "LeaseExceeded", lease=lease, billedSeconds=101, allowedSeconds=100
    )
    await chain.pay(user.charge(1, 100))  # exactly the limit
    await chain.at(start + 130)
    assert await chain.reverts(chain.pay(user.charge(2, 31))) == err(
        "LeaseExceeded", lease=lease, billedSeconds=131, allowedSeconds=130
    )
    await chain.pay(user.charge(2, 30))
    assert (await chain.lease_of(lease))["billedSeconds"] == 130


async def test_a_user_closing_their_lease_bounds_every_later_payment(
    chain: Chain, make_user: MakeUser
) -> None:
    start = await chain.now() + 10
    user = await make_user(start=start)
    await chain.at(start + 100)
    receipt = await chain.send(user.signer, "closeLease", user.lease_id, start + 100)
    [closed] = chain.events(receipt)
    assert (closed.name, closed.args) == (
        "LeaseClosed",
        {"lease": user.lease_id, "by": user.address, "end": start + 100},
    )
    await chain.at(start + 10_000)  # long after the close
    assert await chain.reverts(chain.pay(user.charge(1, 101))) == err(
        "LeaseExceeded", lease=user.lease_id, billedSeconds=101, allowedSeconds=100
    )
    await chain.pay(user.charge(1, 100))  # up to the close still pays
    assert await chain.reverts(chain.pay(user.charge(2, 1))) == err(
        "LeaseExceeded", lease=user.lease_id, billedSeconds=101, allowedSeconds=100
    )
    assert (await chain.lease_of(user.lease_id))["end"] == start + 100


async def test_a_close_is_clamped_between_what_was_billed_and_now(
    chain: Chain, make_user: MakeUser
) -> None:
    start = await chain.now() + 10
    late, early = await make_user(start=start), await make_user(start=start)
    await chain.at(start + 50)
    await chain.send(late.signer, "closeLease", late.lease_id, start + 10**6)  # the future
    assert (await chain.lease_of(late.lease_id))["end"] == start + 50
    await chain.at(start + 60)
    await chain.pay(early.charge(1, 40))
    await chain.at(start + 70)
    await chain.send(early.signer, "closeLease", early.lease_id, start + 10)  # before billed
    assert (await chain.lease_of(early.lease_id))["end"] == start + 40


async def test_the_operator_closes_a_lease_a_stranger_cannot_and_nobody_closes_it_twice(
    chain: Chain, make_user: MakeUser
) -> None:
    user = await make_user()
    stranger = await chain.stranger()
    assert await chain.reverts(
        chain.send(stranger, "closeLease", user.lease_id, await chain.now())
    ) == err("NotLeaseParty", lease=user.lease_id, caller=stranger.address)
    end = await chain.now() - 600
    receipt = await chain.send(chain.operator, "closeLease", user.lease_id, end)
    assert chain.events(receipt)[0].args == {
        "lease": user.lease_id,
        "by": chain.operator.address,
        "end": end,
    }
    for closer in (chain.operator, user.signer):
        assert await chain.reverts(chain.send(closer, "closeLease", user.lease_id, end)) == err(
            "LeaseAlreadyClosed", lease=user.lease_id
        )


async def test_an_unknown_lease_is_refused(chain: Chain, make_user: MakeUser) -> None:
    user = await make_user()
    nowhere = keccak(b"no such lease")
    assert await chain.reverts(chain.pay(user.charge(1, 1, lease=nowhere))) == err(
        "UnknownLease", lease=nowhere
    )
    assert await chain.reverts(
        chain.send(user.signer, "closeLease", nowhere, await chain.now())
    ) == err("UnknownLease", lease=nowhere)


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("user", {"user": "0x" + "cd" * 20}),
        ("provider", {"provider": "0x" + "ab" * 20}),
        ("gpuType", {"gpu_type": H200}),
        ("gpuCount", {"gpu_count": 2}),
    ],
)
async def test_a_charge_that_differs_from_its_lease_is_refused_naming_the_field(
    chain: Chain, make_user: MakeUser, field: str, change: dict[str, Any]
) -> None:
    user = await make_user()
    assert await chain.reverts(chain.pay(user.charge(1, 1, **change))) == err(
        "LeaseMismatch", lease=user.lease_id, field=field
    )


async def test_a_rate_raised_above_the_lease_maximum_is_refused_a_lower_one_is_used(
    chain: Chain, make_user: MakeUser
) -> None:
    user = await make_user()  # maxRate = today's H100 rate
    higher, lower = RATES[H100] + 1, RATES[H100] - 10**12
    await chain.send(chain.admin, "setRate", short_bytes32(H100), higher)
    assert await chain.reverts(chain.pay(user.charge(1, 60))) == err(
        "RateAboveLease", lease=user.lease_id, rate=higher, maxRate=RATES[H100]
    )
    await chain.send(chain.admin, "setRate", short_bytes32(H100), lower)
    [paid] = chain.events(await chain.pay(user.charge(1, 60)))
    assert (paid.args["rate"], paid.args["amount"]) == (lower, 60 * lower)


async def test_a_lease_must_carry_the_users_own_signature_over_these_terms(
    chain: Chain, make_user: MakeUser
) -> None:
    user = await make_user(lease=False)
    provider = new_signer().address
    assert await chain.reverts(
        chain.open_lease(user.signer, provider, signed_by=new_signer())
    ) == err("BadLeaseSignature", user=user.address)
    terms = LeaseTerms("pod-sig", 1, user.address, provider, H100, 1, RATES[H100], 1)
    deployment = chain.deployment
    signature = user.signer.sign_typed_data(
        terms.typed_data(deployment.chain_id, deployment.payments)
    )
    forged = [
        (replace(terms, max_rate=MAX_UINT), signature),  # changed after the user signed
        (replace(terms, start=2), signature),
        (terms, user.signer.sign_typed_data(terms.typed_data(1, deployment.payments))),
        (terms, user.signer.sign_typed_data(terms.typed_data(deployment.chain_id, provider))),
    ]
    for submitted, sig in forged:
        assert await chain.reverts(
            chain.send(chain.operator, "openLease", submitted.as_tuple(), sig)
        ) == err("BadLeaseSignature", user=user.address)
    await chain.send(chain.operator, "openLease", terms.as_tuple(), signature)
    assert (await chain.lease_of(terms.lease_id))["maxRate"] == RATES[H100]


async def test_a_lease_start_of_zero_or_past_40_bits_is_refused(chain: Chain) -> None:
    user = await chain.make_user()
    provider = new_signer().address
    for start in (0, 2**40, 2**64 - 1):
        terms = LeaseTerms("pod-start", 1, user.address, provider, H100, 1, RATES[H100], start)
        signature = user.signer.sign_typed_data(
            terms.typed_data(chain.deployment.chain_id, chain.deployment.payments)
        )
        assert await chain.reverts(
            chain.send(chain.operator, "openLease", terms.as_tuple(), signature)
        ) == err("BadLeaseStart", start=start)


async def test_a_lease_is_opened_once_per_run_of_a_pod(chain: Chain, make_user: MakeUser) -> None:
    user = await make_user(lease=False)
    provider = new_signer().address
    first = await chain.open_lease(user.signer, provider, pod_id="pod-once")
    assert (await chain.lease_of(first.lease_id))["user"] == user.address
    assert await chain.reverts(chain.open_lease(user.signer, provider, pod_id="pod-once")) == err(
        "LeaseExists", lease=first.lease_id
    )
    second = await chain.open_lease(user.signer, provider, pod_id="pod-once", generation=2)
    assert second.lease_id != first.lease_id
    assert (
        await chain.payments.read_one("leaseId", user.address, short_bytes32("pod-once"), 2)
        == second.lease_id
    )


async def test_a_stolen_operator_key_bills_no_more_than_the_users_leases_allow(
    chain: Chain, make_user: MakeUser
) -> None:
    """The drain scenario: the attacker holds the hot wallet's key and a provider address of
    their own. All they can do is bill open leases for the time that passed, to the providers
    the users chose; each victim's loss is bounded by seconds x rate x GPUs of their leases."""
    start = await chain.now() + 10
    victim = await make_user(start=start)
    accomplice = await make_user(start=start, provider=new_signer().address)  # attacker's user
    thief = accomplice.provider
    await chain.at(start + 3600)
    attempts = [
        victim.charge(1, 60, provider=thief),  # the victim's lease, paid to the thief
        accomplice.charge(2, 60, user=victim.address),  # the victim billed on another lease
        victim.charge(3, 3601),  # more time than has passed
    ]
    receipt = await chain.pay_batch(attempts)
    assert chain.events(receipt, "Paid") == []
    assert chain.rejections(receipt) == {
        1: err("LeaseMismatch", lease=victim.lease_id, field="provider"),
        2: err("LeaseMismatch", lease=accomplice.lease_id, field="user"),
        3: err("LeaseExceeded", lease=victim.lease_id, billedSeconds=3601, allowedSeconds=3600),
    }
    # A lease for the victim naming the thief needs the victim's signature.
    assert await chain.reverts(
        chain.open_lease(victim.signer, thief, signed_by=accomplice.signer, max_rate=MAX_UINT)
    ) == err("BadLeaseSignature", user=victim.address)
    # The most it can take: the time that passed, paid to the victim's own provider.
    await chain.at(start + 3601)
    await chain.pay(victim.charge(4, 3601))
    await chain.at(start + 3602)
    assert await chain.reverts(chain.pay(victim.charge(5, 2))) == err(
        "LeaseExceeded", lease=victim.lease_id, billedSeconds=3603, allowedSeconds=3602
    )
    most = 3601 * RATES[H100]
    assert await chain.balance(victim.address) == TOKENS - most
    assert await chain.balance(victim.provider) == most - most * FEE_BPS // 10_000
    assert await chain.balance(thief) == 0
    # Revoking the role stops the key at once.
    await chain.send(chain.admin, "revokeRole", OPERATOR_ROLE, chain.operator.address)
    assert await chain.reverts(chain.pay(victim.charge(6, 1))) == unauthorized(
        chain.operator.address, OPERATOR_ROLE
    )


# ---- spending cap -------------------------------------------------------------------------


async def test_spending_over_the_cap_is_refused(chain: Chain, make_user: MakeUser) -> None:
    cap = MINUTE + RATES[H100] - 1  # 60 s fit, 61 s do not
    user = await make_user(cap=cap)
    await chain.pay(user.charge(1, 60))
    assert await chain.reverts(chain.pay(user.charge(2, 1))) == err(
        "CapExceeded", user=user.address, wouldSpend=MINUTE + RATES[H100], cap=cap
    )
    assert await chain.budget(user.address) == (cap, MINUTE)


async def test_the_cap_is_zero_until_the_user_sets_it_and_raising_it_unblocks(
    chain: Chain, make_user: MakeUser
) -> None:
    user = await make_user(cap=0)
    assert await chain.budget(user.address) == (0, 0)
    assert await chain.reverts(chain.pay(user.charge(1, 60))) == err(
        "CapExceeded", user=user.address, wouldSpend=MINUTE, cap=0
    )
    receipt = await chain.send(user.signer, "setSpendingCap", MINUTE)
    assert chain.events(receipt)[0].args == {"user": user.address, "cap": MINUTE, "spent": 0}
    await chain.pay(user.charge(1, 60))
    assert await chain.budget(user.address) == (MINUTE, MINUTE)
    # A cap above uint128 is taken as uint128's maximum.
    receipt = await chain.send(user.signer, "setSpendingCap", MAX_UINT)
    assert chain.events(receipt)[0].args["cap"] == 2**128 - 1
    assert await chain.budget(user.address) == (2**128 - 1, MINUTE)


# ---- the token's own errors ---------------------------------------------------------------


async def test_too_little_allowance_reverts_with_the_tokens_error_and_moves_nothing(
    chain: Chain, make_user: MakeUser
) -> None:
    # Enough for the provider's share, one unit short for the fee: the whole payment reverts.
    user = await make_user(allowance=MINUTE - 1)
    assert await chain.reverts(chain.pay(user.charge(1, 60))) == err(
        "ERC20InsufficientAllowance",
        spender=chain.payments.address,
        allowance=MINUTE_FEE - 1,
        needed=MINUTE_FEE,
    )
    assert await chain.balances(user.address, user.provider) == [TOKENS, 0]
    assert await chain.payments.read_one("isPaid", 1) is False


async def test_too_small_a_balance_reverts_with_the_tokens_error(
    chain: Chain, make_user: MakeUser
) -> None:
    user = await make_user(tokens=1000)
    assert await chain.reverts(chain.pay(user.charge(1, 60))) == err(
        "ERC20InsufficientBalance", sender=user.address, balance=1000, needed=MINUTE - MINUTE_FEE
    )


async def test_in_a_batch_a_user_who_cannot_pay_does_not_stop_the_others(
    chain: Chain, make_user: MakeUser
) -> None:
    good, broke, stingy = await make_user(), await make_user(tokens=5), await make_user(allowance=7)
    receipt = await chain.pay_batch(
        [good.charge(1, 60), broke.charge(2, 60), stingy.charge(3, 60), good.charge(4, 60)]
    )
    assert [e.args["settlementId"] for e in chain.events(receipt, "Paid")] == [1, 4]
    share = MINUTE - MINUTE_FEE
    assert chain.rejections(receipt) == {
        2: err("ERC20InsufficientBalance", sender=broke.address, balance=5, needed=share),
        3: err(
            "ERC20InsufficientAllowance", spender=chain.payments.address, allowance=7, needed=share
        ),
    }
    assert await chain.balance(good.address) == TOKENS - 2 * MINUTE
    assert await chain.balances(broke.address, stingy.address) == [5, TOKENS]
    assert await chain.budget(broke.address) == (TOKENS, 0)  # rolled back with the charge


# ---- pause --------------------------------------------------------------------------------


async def test_a_guardian_pauses_payments_and_lease_openings_and_only_the_admin_resumes(
    chain: Chain, make_user: MakeUser
) -> None:
    user = await make_user()
    other = await make_user(lease=False)
    receipt = await chain.send(chain.guardian, "pause")
    [paused] = chain.events(receipt, "PaymentsPaused")
    assert paused.args == {"guardian": chain.guardian.address}
    [log] = [g for g in receipt["logs"] if len(g["topics"]) == 2]  # PaymentsPaused, indexed
    assert log["topics"][1] == "0x" + chain.guardian.address[2:].lower().rjust(64, "0")
    assert await chain.payments.read_one("paused") is True
    enforced = err("EnforcedPause")
    assert await chain.reverts(chain.pay(user.charge(1, 60))) == enforced
    assert await chain.reverts(chain.pay_batch([user.charge(1, 60)])) == enforced
    assert await chain.reverts(chain.open_lease(other.signer, new_signer().address)) == enforced
    # Users keep control of their own exposure while payments are paused.
    await chain.send(user.signer, "setSpendingCap", 0)
    await chain.send(user.signer, "setSpendingCap", TOKENS)
    assert await chain.reverts(chain.send(chain.guardian, "unpause")) == unauthorized(
        chain.guardian.address, ADMIN_ROLE
    )
    receipt = await chain.send(chain.admin, "unpause")
    assert chain.events(receipt, "PaymentsResumed")[0].args == {"admin": chain.admin.address}
    await chain.pay(user.charge(1, 60))
    assert await chain.reverts(chain.send(chain.admin, "unpause")) == err("ExpectedPause")


async def test_only_a_guardian_can_pause(chain: Chain) -> None:
    stranger = await chain.stranger()
    for who in (chain.operator, stranger):
        assert await chain.reverts(chain.send(who, "pause")) == unauthorized(
            who.address, GUARDIAN_ROLE
        )
    assert await chain.payments.read_one("paused") is False
    await chain.send(chain.guardian, "pause")
    assert await chain.reverts(chain.send(chain.guardian, "pause")) == err("EnforcedPause")


# ---- access -------------------------------------------------------------------------------


async def test_only_the_operator_pays(chain: Chain, make_user: MakeUser) -> None:
    user = await make_user()
    for who in (chain.admin, user.signer):
        assert await chain.reverts(chain.pay(user.charge(1, 60), by=who)) == unauthorized(
            who.address, OPERATOR_ROLE
        )
        assert await chain.reverts(chain.pay_batch([user.charge(1, 60)], by=who)) == unauthorized(
            who.address, OPERATOR_ROLE
        )
    assert await chain.reverts(
        chain.send(chain.operator, "settleFromBatch", user.charge(1, 60).as_tuple())
    ) == err("OnlySelf")
    assert await chain.balance(user.address) == TOKENS


async def test_only_the_rate_admin_sets_rates_and_each_change_is_an_event(
    chain: Chain,
) -> None:
    b200 = short_bytes32("NVIDIA B200")
    assert await chain.reverts(chain.send(chain.operator, "setRate", b200, 10**15)) == unauthorized(
        chain.operator.address, RATE_ADMIN_ROLE
    )
    receipt = await chain.send(
        chain.admin, "setRates", [b200, short_bytes32(H100)], [10**15, RATES[H100] * 2]
    )
    assert [(e.name, e.args) for e in chain.events(receipt)] == [
        ("RateSet", {"gpuType": b200, "oldRate": 0, "newRate": 10**15}),
        (
            "RateSet",
            {"gpuType": short_bytes32(H100), "oldRate": RATES[H100], "newRate": RATES[H100] * 2},
        ),
    ]
    assert await chain.payments.read_one("rates", b200) == 10**15
    receipt = await chain.send(chain.admin, "setRate", b200, 0)  # removed
    assert chain.events(receipt)[0].args == {"gpuType": b200, "oldRate": 10**15, "newRate": 0}


async def test_the_fee_has_a_ceiling_and_the_admin_alone_sets_it(
    chain: Chain, make_user: MakeUser
) -> None:
    assert await chain.reverts(chain.send(chain.admin, "setFee", 2001)) == err(
        "FeeTooHigh", bps=2001, maxBps=2000
    )
    assert await chain.reverts(chain.send(chain.operator, "setFee", 0)) == unauthorized(
        chain.operator.address, ADMIN_ROLE
    )
    receipt = await chain.send(chain.admin, "setFee", 2000)
    assert chain.events(receipt)[0].args == {"oldBps": FEE_BPS, "newBps": 2000}
    user = await make_user()
    [paid] = chain.events(await chain.pay(user.charge(1, 60)))
    assert paid.args["fee"] == MINUTE // 5


async def test_the_treasury_cannot_be_zero_and_a_new_one_receives_the_fees(
    chain: Chain, make_user: MakeUser
) -> None:
    assert await chain.reverts(chain.send(chain.admin, "setTreasury", ZERO_ADDRESS)) == err(
        "ZeroAddress", field="treasury"
    )
    new = new_signer().address
    receipt = await chain.send(chain.admin, "setTreasury", new)
    assert chain.events(receipt)[0].args == {
        "oldTreasury": chain.treasury.address,
        "newTreasury": new,
    }
    user = await make_user()
    await chain.pay(user.charge(1, 60))
    assert await chain.balances(new, chain.treasury.address) == [MINUTE_FEE, 0]


# ---- bad inputs ---------------------------------------------------------------------------


async def test_bad_charges_are_refused_by_name(chain: Chain, make_user: MakeUser) -> None:
    user = await make_user()
    cases: list[tuple[Charge, Any]] = [
        (
            user.charge(1, 60, gpu_type="NVIDIA B200"),
            err("UnknownGpuType", gpuType=short_bytes32("NVIDIA B200")),
        ),
        (user.charge(2, 0), err("ZeroSeconds", settlementId=2)),
        (user.charge(3, 60, user=ZERO_ADDRESS), err("ZeroAddress", field="user")),
        (user.charge(4, 60, provider=ZERO_ADDRESS), err("ZeroAddress", field="provider")),
    ]
    for charge, error in cases:
        assert await chain.reverts(chain.pay(charge)) == error
    assert await chain.reverts(chain.pay_batch([])) == err("EmptyBatch")
    assert await chain.reverts(
        chain.payments.read("quote", 1, short_bytes32("NVIDIA B200"), 1)
    ) == err("UnknownGpuType", gpuType=short_bytes32("NVIDIA B200"))


async def test_bad_administration_and_lease_inputs_are_refused_by_name(
    chain: Chain, make_user: MakeUser
) -> None:
    assert await chain.reverts(
        chain.send(chain.admin, "setRates", [short_bytes32(H100), short_bytes32(H200)], [1])
    ) == err("LengthMismatch", left=2, right=1)
    assert await chain.reverts(chain.send(chain.admin, "setRate", bytes(32), 1)) == err(
        "UnknownGpuType", gpuType=bytes(32)
    )
    user = await make_user(lease=False)
    assert await chain.reverts(
        chain.open_lease(user.signer, new_signer().address, gpu_count=0)
    ) == err("ZeroGpuCount")
    assert await chain.reverts(chain.open_lease(user.signer, ZERO_ADDRESS)) == err(
        "ZeroAddress", field="provider"
    )


# ---- batches ------------------------------------------------------------------------------


async def test_a_mixed_batch_pays_the_good_charges_and_names_each_bad_one(
    chain: Chain, make_user: MakeUser
) -> None:
    start = await chain.now() + 10
    user = await make_user(start=start)
    capped = await make_user(start=start, cap=RATES[H100])
    await chain.at(start + 100)
    await chain.pay(user.charge(7, 10))
    charges = [
        user.charge(10, 30),  # pays
        user.charge(7, 10),  # paid before
        user.charge(11, 200),  # 10 + 30 + 200 > 102 s allowed
        user.charge(12, 5, gpu_type="NVIDIA B200"),
        capped.charge(13, 2),  # 2 s over a 1 s cap
        user.charge(14, 0),
        user.charge(15, 5, gpu_count=3),
        user.charge(16, 61),  # pays: 10 + 30 + 61 = 101 <= 102
    ]
    await chain.mine(start + 101)
    data = chain.payments.calldata("paymentBatch", [c.as_tuple() for c in charges])
    answer = await chain.payments.simulate(chain.operator.address, data)
    assert chain.payments.codec.decode_result("paymentBatch", answer) == (2,)  # paid
    await chain.at(start + 102)
    receipt = await chain.pay_batch(charges)
    events = chain.events(receipt)
    assert [(e.name, e.args["settlementId"]) for e in events] == [
        ("Paid", 10),
        ("PaymentRejected", 7),
        ("PaymentRejected", 11),
        ("PaymentRejected", 12),
        ("PaymentRejected", 13),
        ("PaymentRejected", 14),
        ("PaymentRejected", 15),
        ("Paid", 16),
    ]
    lease = user.lease_id
    assert chain.rejections(receipt) == {
        7: err("AlreadyPaid", settlementId=7),
        11: err("LeaseExceeded", lease=lease, billedSeconds=240, allowedSeconds=102),
        12: err("UnknownGpuType", gpuType=short_bytes32("NVIDIA B200")),
        13: err("CapExceeded", user=capped.address, wouldSpend=2 * RATES[H100], cap=RATES[H100]),
        14: err("ZeroSeconds", settlementId=14),
        15: err("LeaseMismatch", lease=lease, field="gpuCount"),
    }
    assert await chain.balance(user.address) == TOKENS - 101 * RATES[H100]
    assert await chain.balance(capped.address) == TOKENS


async def test_a_batch_given_too_little_gas_fails_whole_rather_than_rejecting_charges(
    chain: Chain, make_user: MakeUser
) -> None:
    users = [await make_user() for _ in range(3)]
    data = chain.payments.calldata(
        "paymentBatch", [u.charge(i, 60).as_tuple() for i, u in enumerate(users)]
    )
    call = {"from": chain.operator.address, "to": chain.payments.address, "data": "0x" + data.hex()}
    enough = await chain.rpc.estimate_gas(call)
    starved: tuple[int, Any] | None = None
    for limit in range(enough - 1000, enough // 2, -1000):  # gas is deterministic
        try:
            await chain.rpc.request("eth_call", [{**call, "gas": hex(limit)}, "latest"])
        except Reverted as exc:
            if exc.data:
                starved = limit, chain.decode(exc.data)
                break
        except RpcError:  # out of gas outside the charges: no revert data
            continue
    assert starved is not None
    limit, error = starved
    assert error is not None and error.name == "BatchOutOfGas" and error.args["index"] in (0, 1, 2)
    with pytest.raises(Reverted):  # mined, status 0: nothing was paid, nothing rejected
        await send_and_wait(chain.rpc, chain.operator, chain.payments.address, data, gas=limit)
    for i, u in enumerate(users):
        assert await chain.payments.read_one("isPaid", i) is False
        assert await chain.balance(u.address) == TOKENS
    receipt = await send_and_wait(chain.rpc, chain.operator, chain.payments.address, data)
    assert len(chain.events(receipt, "Paid")) == 3
