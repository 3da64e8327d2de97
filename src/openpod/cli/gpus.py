"""``openpod gpu ...``: the GPU types on offer, their prices and how many are free."""

from __future__ import annotations

from typing import Annotated

import typer

from openpod.cli.client import make_client
from openpod.cli.output import handle_api_errors, print_json, print_table

app = typer.Typer(name="gpu", help="See the GPU types on offer.", no_args_is_help=True)


@app.command("list")
@handle_api_errors
def list_gpus(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """List GPU types with their price and how many are free."""
    with make_client() as client:
        gpu_types = client.list_gpu_types()
    if as_json:
        print_json(gpu_types)
        return
    rows = (
        (
            g.get("id"),
            g.get("displayName"),
            f"{g['memoryInGb']} GB" if g.get("memoryInGb") is not None else None,
            g.get("pricePerHour"),
            g.get("ratePerSecond"),
            f"{g.get('free', '?')}/{g.get('total', '?')}",
        )
        for g in gpu_types
    )
    print_table(("ID", "NAME", "MEMORY", "$/HR", "RATE/S", "FREE/TOTAL"), rows, "no GPU types")
