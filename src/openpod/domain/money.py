"""Money: integers in token base units, one rounding rule.

A GPU type's rate is an integer number of base units per GPU per second, so the price of a run
is an exact product and no rounding happens at all; display conversions live at the edges.
"""


def cost(seconds: int, gpu_count: int, rate_per_second: int) -> int:
    """Base units owed for `seconds` of `gpu_count` GPUs at `rate_per_second` each."""
    if seconds < 0 or gpu_count < 0 or rate_per_second < 0:
        raise ValueError("seconds, gpu count and rate must not be negative")
    return seconds * gpu_count * rate_per_second


def per_hour(rate_per_second: int, decimals: int) -> str:
    """A rate shown as whole tokens per hour, e.g. `0.690000` for 18-decimal tokens."""
    units = rate_per_second * 3600
    whole, frac = divmod(units, 10**decimals)
    shown = min(decimals, 6)
    frac_digits = str(frac).rjust(decimals, "0")[:shown] if decimals else ""
    return f"{whole}.{frac_digits}" if shown else str(whole)
