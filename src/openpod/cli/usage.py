"""``openpod usage``: what each of your pods has run and cost, settled and still pending.

Amounts come from the API as decimal strings of token base units; the table shows them as whole
tokens (``TOKEN_DECIMALS``), rounded half up like the prices ``openpod gpu list`` shows. ``--json``
prints the API's answer unchanged, exact to the base unit.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from openpod.cli.client import Json, make_client
from openpod.cli.output import handle_api_errors, print_json, print_table
from openpod.domain import money

TOKEN_DECIMALS = 18
"""The payment token's decimals: base units per whole token are ``10**TOKEN_DECIMALS``."""

SHOWN_DECIMALS = 4
"""Decimals shown for token amounts (as ``money.per_hour`` shows prices)."""

COLUMNS = ("POD", "GPU", "RATE/HR", "SECONDS", "AMOUNT", "SETTLED", "PENDING", "RUNNING")


def _units(value: Any) -> int | None:
    """An amount in base units, or ``None`` when the API sent no integer."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def tokens(units: int, decimals: int = TOKEN_DECIMALS, shown: int = SHOWN_DECIMALS) -> str:
    """Base units as whole tokens, rounded half up: ``10.8030`` for ``10803000000000000000``."""
    shown = min(shown, decimals)
    scaled = (units * 10**shown + 10**decimals // 2) // 10**decimals
    whole, frac = divmod(scaled, 10**shown)
    return f"{whole}.{str(frac).rjust(shown, '0')}" if shown else str(whole)


def _amount(value: Any) -> str | None:
    """An amount cell: whole tokens, or what the API sent when it is no integer."""
    units = _units(value)
    if units is None:
        return None if value is None else str(value)
    return tokens(units)


def _rate_per_hour(entry: Json) -> str | None:
    """The pod's rate in whole tokens per hour: the per-GPU rate times its GPUs."""
    rate, count = _units(entry.get("ratePerSecond")), _units(entry.get("gpuCount"))
    if rate is None or count is None:
        return None
    return money.per_hour(rate * count, TOKEN_DECIMALS, SHOWN_DECIMALS)


def clock(seconds: int) -> str:
    """``3601`` as ``1:00:01`` (hours are not wrapped into days)."""
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _seconds(value: Any) -> str | None:
    """``3601 (1:00:01)``."""
    seconds = _units(value)
    if seconds is None:
        return None if value is None else str(value)
    return f"{seconds} ({clock(seconds)})"


def _row(entry: Json) -> tuple[Any, ...]:
    return (
        entry.get("podId"),
        f"{entry.get('gpuCount', '?')}x {entry.get('gpuType') or '?'}",
        _rate_per_hour(entry),
        _seconds(entry.get("seconds")),
        _amount(entry.get("amount")),
        _amount(entry.get("settledAmount")),
        _amount(entry.get("pendingAmount")),
        "yes" if entry.get("running") else "no",
    )


@handle_api_errors
def usage(
    pod: Annotated[
        str | None, typer.Option("--pod", metavar="POD", help="Only this pod's usage.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Show your pods' metered seconds and what they cost: settled, pending, running or not.

    Amounts are in whole tokens; --json gives the exact base units.
    """
    with make_client() as client:
        entries = client.usage(pod)
    if as_json:
        print_json(entries)
        return
    print_table(COLUMNS, (_row(entry) for entry in entries), "no usage yet")
