"""``openpod account ...`` and ``openpod provider ...``: who you are, and renting out GPUs."""

from __future__ import annotations

from typing import Annotated

import typer

from openpod.cli.client import make_client
from openpod.cli.output import handle_api_errors, print_json, print_line, print_table

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]

account_app = typer.Typer(name="account", help="Your account.", no_args_is_help=True)
app = typer.Typer(name="provider", help="Rent out GPUs: register nodes.", no_args_is_help=True)


@account_app.command("show")
@handle_api_errors
def show(as_json: JsonFlag = False) -> None:
    """Show the account the configured API key belongs to."""
    with make_client() as client:
        me = client.me()
    if as_json:
        print_json(me)
        return
    print_line(f"account   {me.get('id')} ({me.get('name')})")
    print_line(f"admin     {'yes' if me.get('isAdmin') else 'no'}")
    print_line(f"provider  {'yes' if me.get('isProvider') else 'no'}")
    print_line(f"wallet    {me.get('walletAddress') or 'none'}")


@account_app.command("wallet")
@handle_api_errors
def wallet(
    address: Annotated[str, typer.Argument(help='0x address, or "" to clear it.')],
    as_json: JsonFlag = False,
) -> None:
    """Set the wallet address pods are paid from (verified by signing in a later release)."""
    with make_client() as client:
        me = client.set_wallet(address or None)
    if as_json:
        print_json(me)
    else:
        print_line(f"wallet    {me.get('walletAddress') or 'none'}")


@account_app.command("keys")
@handle_api_errors
def keys(as_json: JsonFlag = False) -> None:
    """List your API keys (their hints: a key is shown only when it is made)."""
    with make_client() as client:
        listed = client.list_api_keys()
    if as_json:
        print_json(listed)
        return
    rows = ((k.get("id"), k.get("hint"), k.get("createdAt")) for k in listed)
    print_table(("ID", "KEY", "CREATED"), rows, "no API keys")


@account_app.command("new-key")
@handle_api_errors
def new_key(as_json: JsonFlag = False) -> None:
    """Make another API key and print it (shown once)."""
    with make_client() as client:
        made = client.create_api_key()
    if as_json:
        print_json(made)
    else:
        print_line(f"api key {made.get('id')} (shown once): {made.get('apiKey')}")


@account_app.command("revoke-key")
@handle_api_errors
def revoke_key(key_id: Annotated[str, typer.Argument(help="The key's id (see `keys`).")]) -> None:
    """Revoke an API key at once (your last key cannot be revoked)."""
    with make_client() as client:
        client.revoke_api_key(key_id)
    print_line(f"revoked {key_id}")


@app.command("register")
@handle_api_errors
def register(
    payout_wallet: Annotated[
        str, typer.Option("--payout-wallet", help="0x address that receives your earnings.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Make your account a provider, paid to PAYOUT_WALLET."""
    with make_client() as client:
        provider = client.become_provider(payout_wallet)
    if as_json:
        print_json(provider)
    else:
        print_line(f"provider {provider.get('id')}, paid to {provider.get('payoutWallet')}")


@app.command("add-node")
@handle_api_errors
def add_node(
    name: Annotated[str, typer.Argument(help="A name for the machine.")],
    public_host: Annotated[
        str | None, typer.Option("--public-host", help="Address users reach its pods at.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Register a node and print its token (shown once) and the command that runs it."""
    with make_client() as client:
        node = client.register_node(name, public_host)
    if as_json:
        print_json(node)
        return
    print_line(f"node {node.get('id')} ({node.get('name')})")
    print_line(f"token (shown once): {node.get('token')}")
    print_line("run it on the machine with the GPUs:")
    print_line("  OPENPOD_NODE_TOKEN=<token> openpod node --api-url <this API's URL>")


@app.command("nodes")
@handle_api_errors
def nodes(as_json: JsonFlag = False) -> None:
    """List your nodes, whether they are online, and their free GPUs."""
    with make_client() as client:
        listed = client.list_nodes()
    if as_json:
        print_json(listed)
        return
    rows = []
    for node in listed:
        gpus = node.get("gpus") or []
        free = sum(1 for g in gpus if g.get("free"))
        types = sorted({str(g.get("type")) for g in gpus})
        rows.append(
            (
                node.get("id"),
                node.get("name"),
                "online" if node.get("online") else "offline",
                f"{free}/{len(gpus)}",
                ", ".join(types),
            )
        )
    print_table(("ID", "NAME", "STATE", "FREE/GPUS", "GPU TYPES"), rows, "no nodes")
