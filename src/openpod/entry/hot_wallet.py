"""`openpod wallet hot ...` and `openpod wallet breaker ...`: the operator's hot wallet.

`hot init --hsm` makes the hot wallet's key inside a PKCS#11 token (production; without --hsm,
a development keystore, refused on a mainnet); `hot show` says where the key is, what the chain
and the database know of it (balance, nonces, transactions in flight, the breaker);
`breaker open|close|status` stops and resumes its signing, recorded with who and why.

The PIN comes from OPENPOD_HSM_PIN or a PIN file only, never from the command line, and is
never printed. Failures are one line and exit code 1. Server code is imported in the commands
(see entry/chain.py), so that every `openpod` command starts fast.
"""

from __future__ import annotations

import getpass
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from openpod.entry.chain import ChainSetupError, hot_wallet, hsm_hot_wallet, show_url

if TYPE_CHECKING:
    from openpod.adapters.store import Database
    from openpod.services.hot_wallet import BreakerState
    from openpod.settings import ChainConfig, ServerSettings

hot = typer.Typer(
    help="(operator) The control plane's hot wallet: its key and its state.", no_args_is_help=True
)
breaker = typer.Typer(
    help="(operator) The hot wallet's breaker: stop or resume its signing.", no_args_is_help=True
)

DataDir = Annotated[Path | None, typer.Option(help="The control plane's data dir.")]
DatabaseUrl = Annotated[str | None, typer.Option(help="The control plane's database.")]
Module = Annotated[Path | None, typer.Option("--module", help="The PKCS#11 module (.so).")]
TokenLabel = Annotated[str | None, typer.Option(help="The HSM token's label.")]
KeyLabel = Annotated[str | None, typer.Option(help="The key's label in the token.")]
PinFile = Annotated[
    Path | None, typer.Option(help="A file holding the token's PIN (else OPENPOD_HSM_PIN).")
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Reason = Annotated[str | None, typer.Option(help="Why (recorded with your user name).")]


class HotWalletCommandError(Exception):
    """What stops a hot wallet command, in one line naming what to fix (no PIN, no password)."""


def _settings(
    data_dir: Path | None = None,
    database_url: str | None = None,
    module: Path | None = None,
    token_label: str | None = None,
    key_label: str | None = None,
    pin_file: Path | None = None,
) -> ServerSettings:
    """ServerSettings (OPENPOD_* env) with what the options say; a --pin-file beats the env PIN."""
    from pydantic import ValidationError

    from openpod.settings import ServerSettings

    given: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "hsm_module": module,
        "hsm_token_label": token_label,
        "hsm_key_label": key_label,
        "hsm_pin_file": pin_file,
    }
    given = {name: value for name, value in given.items() if value is not None}
    if pin_file is not None:
        given["hsm_pin"] = None
    try:
        return ServerSettings(**given)
    except ValidationError as error:
        fields = ", ".join(str(e["loc"][0]).upper() for e in error.errors() if e["loc"])
        raise HotWalletCommandError(f"invalid settings: OPENPOD_{fields or '?'}") from None


def _run(work: Callable[[], None]) -> None:
    """Run a command's work: a failure is `error: ...` on stderr and exit code 1."""
    try:
        work()
    except (HotWalletCommandError, ChainSetupError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def _chain(settings: ServerSettings) -> ChainConfig | None:
    try:
        return settings.chain()
    except ValueError as error:
        raise HotWalletCommandError(str(error)) from None


def _required_chain(settings: ServerSettings) -> ChainConfig:
    chain = _chain(settings)
    if chain is None:
        raise HotWalletCommandError(
            f"no chain configured: {settings.chain_path()} does not exist "
            "(run `openpod chain deploy --rpc-url URL`)"
        )
    return chain


def _key(settings: ServerSettings) -> tuple[str, str]:
    """The configured hot wallet's (address, where its key is), without decrypting anything."""
    if settings.hot_wallet_signer == "hsm":
        return hsm_hot_wallet(settings)
    wallet = hot_wallet(settings)
    if not wallet.exists():
        raise HotWalletCommandError(
            f"no hot wallet keystore at {wallet.keystore}: run `openpod wallet hot init` "
            "(or `--hsm`, with OPENPOD_HOT_WALLET_SIGNER=hsm)"
        )
    return wallet.address, f"keystore {wallet.keystore}"


def _database(settings: ServerSettings) -> Database:
    from sqlalchemy.exc import SQLAlchemyError

    from openpod.adapters.store import Database, StoreError, migrate

    # The breaker logs its changes at CRITICAL for the server's log; here they are printed.
    logging.getLogger("openpod.services.hot_wallet").addHandler(logging.NullHandler())
    try:
        migrate(settings.db_url())
        return Database(settings.db_url())
    except (StoreError, SQLAlchemyError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise HotWalletCommandError(f"cannot open the control plane's database: {first}") from None


def _when(at: datetime | None) -> str | None:
    if at is None:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).isoformat("T", "seconds")


def _state(state: BreakerState) -> dict[str, Any]:
    since = _when(state.changed_at)
    return {"open": state.open, "reason": state.reason, "actor": state.actor, "since": since}


def _eth(wei: int) -> str:
    whole, part = divmod(wei, 10**18)
    return f"{whole}.{part:018d}".rstrip("0").rstrip(".")


def _refuse_mainnet_keystore(settings: ServerSettings, chain: ChainConfig | None) -> None:
    from openpod.api.hot_wallet import MAINNETS

    if chain and chain.chain_id in MAINNETS and not settings.hot_wallet_keystore_on_mainnet:
        raise HotWalletCommandError(
            f"chain {chain.chain_id} is {MAINNETS[chain.chain_id]}: the hot wallet's key belongs "
            "in an HSM there (`openpod wallet hot init --hsm`); a keystore only with "
            "OPENPOD_HOT_WALLET_KEYSTORE_ON_MAINNET=true"
        )


@hot.command("init")
def init_command(
    hsm: Annotated[bool, typer.Option("--hsm", help="Make the key inside the HSM.")] = False,
    data_dir: DataDir = None,
    module: Module = None,
    token_label: TokenLabel = None,
    key_label: KeyLabel = None,
    pin_file: PinFile = None,
    json_out: JsonOut = False,
) -> None:
    """Make the hot wallet's key: in the HSM (--hsm), else a development keystore."""

    def work() -> None:
        settings = _settings(data_dir, None, module, token_label, key_label, pin_file)
        if hsm:
            from openpod.adapters.signers import SignerError
            from openpod.adapters.signers.pkcs11 import HsmSigner
            from openpod.api.hot_wallet import HotWalletSetupError, hsm_config

            try:
                config = hsm_config(settings)
                signer = HsmSigner.generate(config)
            except (HotWalletSetupError, SignerError) as error:
                raise HotWalletCommandError(str(error)) from None
            address, where = signer.address, config.where()
            signer.close()
            use = [
                "OPENPOD_HOT_WALLET_SIGNER=hsm",
                f"OPENPOD_HSM_TOKEN_LABEL={config.token_label}",
                f"OPENPOD_HSM_KEY_LABEL={config.key_label}",
            ]
        else:
            _refuse_mainnet_keystore(settings, _chain(settings))
            wallet = hot_wallet(settings)
            if wallet.exists():
                raise HotWalletCommandError(
                    f"{wallet.keystore} exists already (address {wallet.address})"
                )
            address, where = wallet.signer(create=True).address, f"keystore {wallet.keystore}"
            use = ["OPENPOD_HOT_WALLET_SIGNER=keystore (the default)"]
        if json_out:
            typer.echo(json.dumps({"address": address, "signer": "hsm" if hsm else "keystore"}))
            return
        typer.echo(f"hot wallet {address}: {where}")
        typer.echo("next:")
        typer.echo(f"  1. configure the control plane: {' '.join(use)}")
        typer.echo(f"  2. fund {address} with ETH: it pays the gas of every payment")
        typer.echo(
            f"  3. grant it OPERATOR_ROLE: `openpod chain deploy --operator {address}`, "
            "or grantRole(OPERATOR_ROLE, it) on a deployed payments contract"
        )

    _run(work)


async def _read_chain(url: str, address: str) -> dict[str, Any]:
    import asyncio

    from openpod.adapters.chain import Rpc

    async with Rpc(url) as rpc:
        chain_id, balance, latest, pending = await asyncio.gather(
            rpc.chain_id(), rpc.balance(address), rpc.nonce(address, "latest"), rpc.nonce(address)
        )
    return {
        "chainId": chain_id,
        "balanceWei": str(balance),
        "balanceEth": _eth(balance),
        "nonceLatest": latest,
        "noncePending": pending,
    }


def _show(settings: ServerSettings) -> dict[str, Any]:
    import asyncio

    from openpod.adapters.chain import ChainError
    from openpod.adapters.store.models import Counter
    from openpod.services.chain_txs import nonce_counter
    from openpod.services.hot_wallet import Breaker, open_tx_count

    address, where = _key(settings)
    problems: list[str] = []
    shown: dict[str, Any] = {"address": address, "signer": settings.hot_wallet_signer}
    shown.update(key=where, chainId=None, problems=problems)
    chain = _chain(settings)
    if chain is None:
        return shown
    try:
        _refuse_mainnet_keystore(settings, chain)
    except HotWalletCommandError as refused:
        problems.append(f"the control plane will refuse this key: {refused}")
    db = _database(settings)
    try:
        state = Breaker(db, chain.chain_id, address).state()
        with db.transaction(readonly=True) as session:
            counter = session.get(Counter, nonce_counter(chain.chain_id, address))
            in_flight = open_tx_count(session, chain.chain_id, address)
    finally:
        db.dispose()
    floor = settings.hot_wallet_balance_floor
    shown.update(chainId=chain.chain_id, rpc=show_url(chain.rpc_url), floorWei=str(floor))
    shown.update(gatewayNextNonce=counter.value if counter else None, pendingTransactions=in_flight)
    shown["breaker"] = _state(state)
    try:
        onchain = asyncio.run(_read_chain(chain.rpc_url, address))
    except ChainError as error:
        problems.append(f"could not read the chain at {show_url(chain.rpc_url)}: {error}")
        onchain = None
    shown["onChain"] = onchain
    if onchain and onchain["chainId"] != chain.chain_id:
        problems.append(f"the RPC is on chain {onchain['chainId']}, chain.json says otherwise")
    shown["underFloor"] = None if onchain is None else int(onchain["balanceWei"]) < floor
    if shown["underFloor"]:
        problems.append(f"the balance is under the floor of {_eth(floor)} ETH: fund it")
    if state.open:
        problems.append("the breaker is open: nothing is signed")
    return shown


@hot.command("show")
def show_command(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    check: Annotated[
        bool,
        typer.Option(help="Exit 1 when the chain is unreadable, under the floor, breaker open."),
    ] = False,
    json_out: JsonOut = False,
) -> None:
    """The hot wallet: its key, balance, nonces, transactions in flight and breaker.

    When the chain cannot be read it shows what the database knows and says so (exit 0,
    or 1 with --check)."""
    problems: list[str] = []

    def work() -> None:
        shown = _show(_settings(data_dir, database_url))
        problems.extend(shown["problems"])
        if json_out:
            typer.echo(json.dumps(shown, indent=2))
        else:
            typer.echo(f"hot wallet   {shown['address']} ({shown['key']})")
            if shown["chainId"] is None:
                typer.echo("chain        none configured")
            else:
                _print_state(shown)
        for problem in problems:
            typer.echo(f"warning: {problem}", err=True)

    _run(work)
    if check and problems:
        raise typer.Exit(1)


def _print_state(shown: dict[str, Any]) -> None:
    onchain = shown["onChain"] or {}
    typer.echo(f"chain        {shown['chainId']} at {shown['rpc']}")
    if onchain:
        under = " (UNDER the floor)" if shown["underFloor"] else ""
        typer.echo(f"balance      {onchain['balanceEth']} ETH ({onchain['balanceWei']} wei){under}")
        typer.echo(
            f"nonce        {onchain['nonceLatest']} mined, {onchain['noncePending']} pending"
        )
    else:
        typer.echo("balance      unknown: the chain could not be read")
    typer.echo(f"floor        {_eth(int(shown['floorWei']))} ETH")
    counter = shown["gatewayNextNonce"]
    typer.echo(f"next nonce   {'none yet' if counter is None else counter} (the gateway's counter)")
    typer.echo(f"in flight    {shown['pendingTransactions']} transactions")
    _print_breaker(shown["breaker"])


def _print_breaker(state: dict[str, Any]) -> None:
    if state["open"]:
        typer.echo(
            f"breaker      OPEN since {state['since']} by {state['actor']}: {state['reason']}"
        )
    else:
        since = f" since {state['since']} by {state['actor']}" if state["since"] else ""
        typer.echo(f"breaker      closed{since}")


def _breaker(action: str, reason: str | None, settings: ServerSettings, as_json: bool) -> None:
    from openpod.services.hot_wallet import Breaker

    if action != "status" and not (reason and reason.strip()):
        raise HotWalletCommandError(f"--reason is required to {action} the breaker (say why)")
    chain = _required_chain(settings)
    address, _ = _key(settings)
    db = _database(settings)
    try:
        switch = Breaker(db, chain.chain_id, address)
        changed = None
        if action != "status":
            try:
                actor = "cli:" + getpass.getuser()
            except (OSError, KeyError):
                actor = "cli:unknown"
            flip = switch.open if action == "open" else switch.close
            changed = flip(str(reason).strip(), actor)
        state, events = switch.state(), switch.history(10)
    finally:
        db.dispose()
    now = _state(state)
    listed = [
        {"action": e.action, "reason": e.reason, "actor": e.actor, "at": _when(e.at)}
        for e in events
    ]
    if as_json:
        found = {"address": address, "chainId": chain.chain_id, "changed": changed}
        typer.echo(json.dumps({**found, "breaker": now, "events": listed}, indent=2))
        return
    if changed is False:
        typer.echo(f"the breaker was {'open' if state.open else 'closed'} already: nothing changed")
    typer.echo(f"hot wallet   {address} on chain {chain.chain_id}")
    _print_breaker(now)
    for event in listed:
        typer.echo(f"  {event['at']}  {event['action']:<5}  {event['actor']}: {event['reason']}")


@breaker.command("open")
def open_command(
    reason: Reason = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json_out: JsonOut = False,
) -> None:
    """Open the breaker: the hot wallet signs nothing until an operator closes it."""
    _run(lambda: _breaker("open", reason, _settings(data_dir, database_url), json_out))


@breaker.command("close")
def close_command(
    reason: Reason = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json_out: JsonOut = False,
) -> None:
    """Close the breaker after review (--reason: what was reviewed): signing resumes."""
    _run(lambda: _breaker("close", reason, _settings(data_dir, database_url), json_out))


@breaker.command("status")
def status_command(
    data_dir: DataDir = None, database_url: DatabaseUrl = None, json_out: JsonOut = False
) -> None:
    """The breaker's state and its last openings and closings."""
    _run(lambda: _breaker("status", None, _settings(data_dir, database_url), json_out))
