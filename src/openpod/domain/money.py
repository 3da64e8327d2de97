"""Money: integers in token base units, one rounding rule.

A GPU type's rate is an integer number of base units per GPU per second, so the price of a run
is an exact product and no rounding happens at all; display conversions live at the edges.
The one rounding there is, the platform fee, is rounded down, as the payments contract does
(`amount * feeBps / 10_000` in Solidity's integer division): the provider gets the remainder.
"""

BPS = 10_000
"""Basis points in a whole."""


def cost(seconds: int, gpu_count: int, rate_per_second: int) -> int:
    """Base units owed for `seconds` of `gpu_count` GPUs at `rate_per_second` each."""
    if seconds < 0 or gpu_count < 0 or rate_per_second < 0:
        raise ValueError("seconds, gpu count and rate must not be negative")
    return seconds * gpu_count * rate_per_second


def platform_fee(amount: int, fee_bps: int) -> int:
    """The platform's part of `amount` at `fee_bps` basis points, rounded down."""
    if amount < 0 or fee_bps < 0:
        raise ValueError("amount and fee must not be negative")
    if fee_bps > BPS:
        raise ValueError(f"a fee of {fee_bps} bps is more than the whole amount ({BPS} bps)")
    return amount * fee_bps // BPS


def split(amount: int, fee_bps: int) -> tuple[int, int]:
    """`amount` as (the provider's share, the platform fee); the two add up to `amount`."""
    fee = platform_fee(amount, fee_bps)
    return amount - fee, fee


def per_hour(rate_per_second: int, decimals: int, shown: int = 4) -> str:
    """A rate shown as whole tokens per hour, rounded half up: `0.6900` for 18-decimal tokens.

    For display only: it never feeds back into any amount.
    """
    units = rate_per_second * 3600
    shown = min(shown, decimals)
    scaled = (units * 10**shown + 10**decimals // 2) // 10**decimals
    whole, frac = divmod(scaled, 10**shown)
    return f"{whole}.{str(frac).rjust(shown, '0')}" if shown else str(whole)
