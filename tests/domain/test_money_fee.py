"""The platform fee: one rounding rule (down), the same as the payments contract's; the chain
tests (tests/chain/test_fee_property.py) check the two agree on a real contract."""

from __future__ import annotations

import pytest

from openpod.domain.money import BPS, cost, platform_fee, split


@pytest.mark.parametrize(
    ("amount", "bps", "fee"),
    [
        (0, 500, 0),
        (19, 500, 0),  # 0.95 → 0
        (20, 500, 1),
        (39, 500, 1),  # 1.95 → 1: never rounded up
        (10_000, 1, 1),
        (9_999, 1, 0),
        (13_416_666_666_666_662, 500, 670_833_333_333_333),  # 670_833_333_333_333.1
        (12_345, 0, 0),
        (12_345, BPS, 12_345),
        (2**256 - 1, 2_000, (2**256 - 1) // 5),  # Python ints: no overflow at any size
    ],
)
def test_the_fee_is_rounded_down(amount: int, bps: int, fee: int) -> None:
    assert platform_fee(amount, bps) == fee


def test_split_gives_the_provider_the_remainder() -> None:
    assert split(39, 500) == (38, 1)
    assert split(0, 2_000) == (0, 0)
    assert split(10**18, BPS) == (0, 10**18)
    amount = cost(7, 2, 958_333_333_333_333)
    share, fee = split(amount, 500)
    assert (share, fee) == (12_745_833_333_333_329, 670_833_333_333_333)
    for amount in range(0, 1_000):
        for bps in (0, 1, 333, 500, 2_000, 9_999, BPS):
            share, fee = split(amount, bps)
            assert share + fee == amount and 0 <= fee <= amount
            assert fee * BPS <= amount * bps < (fee + 1) * BPS


@pytest.mark.parametrize(
    ("amount", "bps", "message"),
    [
        (-1, 500, "must not be negative"),
        (100, -1, "must not be negative"),
        (100, BPS + 1, "more than the whole amount"),
    ],
)
def test_bad_fee_inputs_are_refused(amount: int, bps: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        platform_fee(amount, bps)
    with pytest.raises(ValueError, match=message):
        split(amount, bps)
