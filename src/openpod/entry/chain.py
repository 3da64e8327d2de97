"""`openpod chain ...`: put openpod's contracts on a chain and say where they are.

`deploy` deploys OpenPodPayments (and DevToken on a development chain) with the GPU catalog's
rates, grants the operator role to the hot wallet and writes chain.json, the file the control
plane reads to pay settlements on-chain; `info` shows (and `--check` verifies) that file;
`new-wallet` makes an encrypted keystore. `make up` deploys through `deploy_openpod` too.

The chain and signer adapters import slowly (eth-account), asyncio not fast: they are imported
in the functions that use them, so that every `openpod` command starts fast.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer

if TYPE_CHECKING:
    from openpod.adapters.chain import Rpc
    from openpod.adapters.signers import KeystoreSigner
    from openpod.settings import ChainConfig, ServerSettings

DEV_CHAIN_IDS = (31337, 1337)  # where DevToken's faucet mints (and anvil_setBalance exists)
MAX_FEE_BPS = 2_000  # the contract's MAX_FEE_BPS: 20 %
DEFAULT_FEE_BPS = 500
DEV_ETH = 1_000 * 10**18  # what a development chain gives an account that has too little
DEV_ETH_FLOOR = 10 * 10**18

app = typer.Typer(help="The payments contract: deploy it, show where it is.", no_args_is_help=True)


class ChainSetupError(Exception):
    """A deployment that cannot go on, said so that the operator knows what to do.

    Messages never hold keys or passwords, and name an RPC URL by its host only (an RPC
    provider's URL often carries an API key in its path)."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.exit_code = 2 if usage else 1


def show_url(url: str) -> str:
    """An RPC URL without what may be a secret: `https://host/…` for `https://host/v2/KEY`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{rest}" if parts.scheme else "(an RPC URL)"


def _checksum(value: str, option: str) -> str:
    from eth_utils.address import is_address, to_checksum_address

    if not is_address(value):
        raise ChainSetupError(
            f"{option} {value!r} is not an address (0x and 40 hex digits)", usage=True
        )
    return str(to_checksum_address(value))


class Wallet:
    """A key in an encrypted keystore, its password in a file (0600): the deployer, the hot
    wallet, the demo user. Decrypted (scrypt, ~1 s) only when something must be signed."""

    def __init__(self, keystore: Path, password_file: Path, role: str) -> None:
        self.keystore = keystore
        self.password_file = password_file
        self.role = role
        self._signer: KeystoreSigner | None = None

    def exists(self) -> bool:
        return self.keystore.exists()

    @property
    def address(self) -> str:
        """From the keystore's own `address` field: no decryption needed."""
        if self._signer is not None:
            return self._signer.address
        if not self.keystore.exists():
            raise self._missing()
        try:
            found = json.loads(self.keystore.read_text())["address"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ChainSetupError(f"cannot read the {self.role} keystore {self.keystore}") from None
        return _checksum(str(found) if str(found).startswith("0x") else f"0x{found}", "keystore")

    def signer(self, *, create: bool = False) -> KeystoreSigner:
        """The key, decrypted once; with `create`, a new key (and password file) if none."""
        from openpod.adapters.signers import KeystoreSigner, SignerError

        if self._signer is not None:
            return self._signer
        try:
            if self.keystore.exists():
                self._signer = KeystoreSigner.load(self.keystore, self._password())
            elif create:
                self._signer = KeystoreSigner.create(self.keystore, self._password(create=True))
            else:
                raise self._missing()
        except SignerError as error:  # its messages name the file, never the password
            raise ChainSetupError(f"{self.role}: {error}") from None
        return self._signer

    def _missing(self) -> ChainSetupError:
        return ChainSetupError(
            f"the {self.role} keystore {self.keystore} does not exist: make one with "
            f"`openpod chain new-wallet --keystore {self.keystore} "
            f"--password-file {self.password_file}` and fund it"
        )

    def _password(self, *, create: bool = False) -> str:
        if create and not self.password_file.exists():
            self.password_file.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # made meanwhile by someone else: read theirs
            else:
                with os.fdopen(fd, "w") as out:
                    out.write(secrets.token_urlsafe(24) + "\n")
        try:
            return self.password_file.read_text().strip()  # as the control plane reads it
        except OSError:
            raise ChainSetupError(
                f"cannot read the {self.role} password file {self.password_file}"
            ) from None


def hot_wallet(settings: ServerSettings) -> Wallet:
    keystore, password_file = settings.hot_wallet_paths()
    return Wallet(keystore, password_file, "hot wallet")


def hsm_hot_wallet(settings: ServerSettings) -> tuple[str, str]:
    """The address of the hot wallet's key in the HSM and where it is (the token is opened
    with the configured PIN; nothing is signed)."""
    from openpod.adapters.signers import SignerError
    from openpod.adapters.signers.pkcs11 import HsmSigner
    from openpod.api.hot_wallet import HotWalletSetupError, hsm_config

    try:
        config = hsm_config(settings)
        signer = HsmSigner(config)
    except (HotWalletSetupError, SignerError) as error:
        raise ChainSetupError(f"hot wallet: {error}") from None
    try:
        return signer.address, config.where()
    finally:
        signer.close()


def deployer_wallet(
    settings: ServerSettings, keystore: Path | None = None, password_file: Path | None = None
) -> Wallet:
    """The contracts' admin; by default data_dir/deployer.json (made on development chains)."""
    return Wallet(
        keystore or settings.data_dir / "deployer.json",
        password_file or settings.data_dir / "deployer.password",
        "deployer",
    )


def catalog_rates(settings: ServerSettings) -> dict[str, int]:
    """Every GPU type's rate (base units per GPU-second) from the control plane's catalog."""
    from openpod.adapters.store import Database, StoreError, migrate
    from openpod.services import catalog

    try:
        migrate(settings.db_url())
        db = Database(settings.db_url())
        try:
            with db.transaction(readonly=True) as session:
                rows = catalog.list_gpu_types(session)
                return {row.gpu_type.id: int(row.gpu_type.rate_per_second) for row in rows}
        finally:
            db.dispose()
    except StoreError as error:
        raise ChainSetupError(f"cannot read the GPU catalog: {error}") from None


async def dev_top_up(rpc: Rpc, address: str) -> bool:
    """On a development chain, give `address` ETH for gas if it has little (anvil_setBalance).
    False where the node has no such method."""
    from openpod.adapters.chain import RpcError

    if await rpc.balance(address) >= DEV_ETH_FLOOR:
        return True
    try:
        await rpc.request("anvil_setBalance", [address, hex(DEV_ETH)])
    except RpcError:
        return False
    return True


@dataclass(frozen=True)
class Deployed:
    """What `deploy_openpod` did: the config to save and what to tell the operator."""

    config: ChainConfig
    deployer: str
    operator: str
    treasury: str
    fee_bps: int
    rates: dict[str, int]
    token_deployed: bool
    token_decimals: int | None
    notes: list[str] = field(default_factory=list)


async def deploy_openpod(
    settings: ServerSettings,
    rpc_url: str,
    deployer: Wallet,
    *,
    token: str | None = None,
    treasury: str | None = None,
    fee_bps: int = DEFAULT_FEE_BPS,
    operator: str | None = None,
    force: bool = False,
    rates: dict[str, int] | None = None,
) -> Deployed:
    """Deploy openpod's contracts on the chain at `rpc_url`; the caller saves the config.

    Everything that can be checked is checked before the first transaction: the fee, the
    addresses, the chain (reachable; a development chain or a `token`), the token's code, an
    existing deployment in chain.json, the deployer's ETH. On a development chain missing
    keystores are made and empty accounts get ETH; elsewhere nothing is made up. `rates`
    default to the GPU catalog's."""
    import asyncio

    from openpod.adapters.chain import ChainError, Rpc, RpcUnavailable

    if not 0 <= fee_bps <= MAX_FEE_BPS:
        raise ChainSetupError(
            f"--fee-bps {fee_bps} is out of range: the contract allows 0 to {MAX_FEE_BPS} "
            f"({MAX_FEE_BPS // 100} %)",
            usage=True,
        )
    token = _checksum(token, "--token") if token else None
    treasury = _checksum(treasury, "--treasury") if treasury else None
    operator = _checksum(operator, "--operator") if operator else None
    where = show_url(rpc_url)
    notes: list[str] = []
    try:
        async with Rpc(rpc_url) as rpc:
            try:
                chain_id = await rpc.chain_id()
            except RpcUnavailable as error:
                raise ChainSetupError(f"cannot reach the chain's RPC at {where}: {error}") from None
            if token is None and chain_id not in DEV_CHAIN_IDS:
                raise ChainSetupError(
                    f"chain {chain_id} is not a development chain (31337 or 1337): "
                    "--token ADDRESS of the ERC-20 payments are made in is required there "
                    "(DevToken is deployed on development chains only)",
                    usage=True,
                )
            await _refuse_replacing(rpc, settings, chain_id, force)
            decimals = await _token_decimals(rpc, token, chain_id, settings, notes)
            admin, operator = await _accounts(rpc, chain_id, settings, deployer, operator, notes)
            # Decrypting the key (scrypt) and reading the catalog (migrations) take about a
            # second each: side by side.
            signer, gpu_rates = await asyncio.gather(
                asyncio.to_thread(deployer.signer),
                asyncio.to_thread(catalog_rates, settings) if rates is None else _given(rates),
            )
            config = await _deploy(
                rpc, chain_id, signer, gpu_rates, token, treasury or admin, fee_bps, operator
            )
    except ChainError as error:
        raise ChainSetupError(f"talking to the chain at {where} failed: {error}") from None
    return Deployed(
        config=config,
        deployer=admin,
        operator=operator,
        treasury=treasury or admin,
        fee_bps=fee_bps,
        rates=gpu_rates,
        token_deployed=token is None,
        token_decimals=18 if token is None else decimals,
        notes=notes,
    )


async def _given(rates: dict[str, int]) -> dict[str, int]:
    return rates


async def _accounts(
    rpc: Rpc,
    chain_id: int,
    settings: ServerSettings,
    deployer: Wallet,
    operator: str | None,
    notes: list[str],
) -> tuple[str, str]:
    """The deployer (with ETH for gas) and the operator (by default the hot wallet). On a dev
    chain missing keystores are made (side by side: ~1 s of scrypt each) and funded."""
    import asyncio

    dev = chain_id in DEV_CHAIN_IDS
    if operator is None and settings.hot_wallet_signer == "hsm":
        operator = hsm_hot_wallet(settings)[0]  # its key is made by `wallet hot init --hsm`
    hot = hot_wallet(settings) if operator is None else None
    if not dev:
        _ = deployer.address  # off development chains nothing is made: it must exist
    if hot is not None and not hot.exists() and not dev:
        raise ChainSetupError(
            f"no --operator given and no hot wallet keystore at {hot.keystore}: "
            "make one with `openpod chain new-wallet` or pass --operator ADDRESS",
            usage=True,
        )
    missing = [w for w in (deployer, hot) if dev and w is not None and not w.exists()]
    await asyncio.gather(*(asyncio.to_thread(w.signer, create=True) for w in missing))
    admin = deployer.address
    operator = operator or (hot.address if hot else "")
    if dev:
        await dev_top_up(rpc, admin)
        await dev_top_up(rpc, operator)
    if await rpc.balance(admin) == 0:
        raise ChainSetupError(
            f"the deployer {admin} has no ETH on chain {chain_id} to pay gas: "
            "send it some (a faucet on a testnet) and run again"
        )
    if await rpc.balance(operator) == 0:
        notes.append(
            f"warning: the operator {operator} has no ETH on chain {chain_id}: it pays "
            "the gas of every payment; fund it before settlements are due"
        )
    return admin, operator


async def _deploy(
    rpc: Rpc,
    chain_id: int,
    signer: KeystoreSigner,
    rates: dict[str, int],
    token: str | None,
    treasury: str,
    fee_bps: int,
    operator: str,
) -> ChainConfig:
    """Send the deployment, read back the operator role, find the block it was made in."""
    from openpod.adapters.chain import ChainError, Contract, deploy, role
    from openpod.settings import ChainConfig

    first_block = await rpc.block_number()
    try:
        deployment = await deploy(
            rpc,
            signer,
            rates=rates,
            treasury=treasury,
            fee_bps=fee_bps,
            operator=operator,
            token=token,
        )
    except ChainError as error:
        raise ChainSetupError(
            f"the deployment on chain {chain_id} failed: {error} (nothing was written)"
        ) from None
    payments = Contract(rpc, "OpenPodPayments", deployment.payments)
    if not await payments.read_one("hasRole", role("OPERATOR_ROLE"), operator):
        raise ChainSetupError(f"the operator {operator} did not get OPERATOR_ROLE")
    # The constructor's RoleGranted events mark the block the contract was created in.
    logs = await rpc.logs(deployment.payments, [], first_block)
    from_block = min((int(str(log["blockNumber"]), 16) for log in logs), default=first_block)
    return ChainConfig(rpc.url, chain_id, deployment.token, deployment.payments, from_block)


async def _refuse_replacing(rpc: Rpc, settings: ServerSettings, chain_id: int, force: bool) -> None:
    """A live deployment in chain.json is replaced only with --force: its leases and the
    settlements paid through it would be left behind."""
    if force:
        return
    try:
        existing = settings.chain()
    except ValueError:
        return  # unreadable: nothing worth keeping
    if existing is None or existing.chain_id != chain_id or not await rpc.code(existing.payments):
        return
    raise ChainSetupError(
        f"{settings.chain_path()} names a live deployment on chain {chain_id} "
        f"(payments {existing.payments}): pass --force to deploy a new one in its place",
        usage=True,
    )


async def _token_decimals(
    rpc: Rpc, token: str | None, chain_id: int, settings: ServerSettings, notes: list[str]
) -> int | None:
    """An existing token must have code, and count in the decimals the control plane's rates
    and prices count in: a 6-decimal token paid with 18-decimal rates would charge 10**12
    times the price."""
    from openpod.adapters.chain import ChainError, Contract

    if token is None:
        return None
    if not await rpc.code(token):
        raise ChainSetupError(
            f"--token {token} has no contract code on chain {chain_id}", usage=True
        )
    try:
        decimals = int(await Contract(rpc, "DevToken", token).read_one("decimals"))
    except ChainError:
        notes.append(f"warning: could not read decimals() of the token {token}")
        return None
    if decimals != settings.token_decimals:
        raise ChainSetupError(
            f"the token {token} has {decimals} decimals, the control plane counts in "
            f"{settings.token_decimals} (OPENPOD_TOKEN_DECIMALS): set OPENPOD_TOKEN_DECIMALS="
            f"{decimals} and price the GPU catalog in this token's base units first",
            usage=True,
        )
    return decimals


async def check_deployment(config: ChainConfig, settings: ServerSettings) -> dict[str, Any]:
    """Ask the chain whether the deployment in `config` is there: the chain id, code at both
    addresses, the fee and treasury, and whether the hot wallet (keystore or HSM) may pay."""
    from openpod.adapters.chain import ChainError, Contract, Rpc, role

    problems: list[str] = []
    found: dict[str, Any] = {"problems": problems}
    try:
        async with Rpc(config.rpc_url) as rpc:
            chain_id = found["chainId"] = await rpc.chain_id()
            if chain_id != config.chain_id:
                problems.append(
                    f"the RPC is on chain {chain_id}, the config says {config.chain_id}"
                )
                return found
            for name in ("token", "payments"):
                address = getattr(config, name)
                has_code = found[f"{name}HasCode"] = bool(await rpc.code(address))
                if not has_code:
                    problems.append(f"no contract code at the {name} address {address}")
            if not found["paymentsHasCode"]:
                return found
            payments = Contract(rpc, "OpenPodPayments", config.payments)
            found["tokenOfPayments"] = str(await payments.read_one("token"))
            if found["tokenOfPayments"].lower() != config.token.lower():
                problems.append(
                    f"the payments contract pays in {found['tokenOfPayments']}, "
                    f"the config says {config.token}"
                )
            found["feeBps"] = int(await payments.read_one("feeBps"))
            found["treasury"] = str(await payments.read_one("treasury"))
            hot = hot_wallet(settings)
            address = None
            if settings.hot_wallet_signer == "hsm":
                address = hsm_hot_wallet(settings)[0]
            elif hot.exists():
                address = hot.address
            if address is not None:
                found["hotWallet"] = address
                found["hotWalletBalance"] = str(await rpc.balance(address))
                operator = bool(await payments.read_one("hasRole", role("OPERATOR_ROLE"), address))
                found["hotWalletIsOperator"] = operator
                if not operator:
                    problems.append(f"the hot wallet {address} does not hold OPERATOR_ROLE")
    except ChainError as error:
        problems.append(f"cannot ask the chain at {show_url(config.rpc_url)}: {error}")
    return found


def _fail(error: ChainSetupError) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(error.exit_code)


def _settings(data_dir: Path | None, database_url: str | None = None) -> ServerSettings:
    from openpod.settings import ServerSettings

    given: dict[str, Any] = {"data_dir": data_dir, "database_url": database_url}
    return ServerSettings(**{k: v for k, v in given.items() if v is not None})


@app.command("deploy")
def deploy_command(
    rpc_url: Annotated[str, typer.Option(help="The chain's JSON-RPC URL.")],
    data_dir: Annotated[
        Path | None, typer.Option(help="The control plane's data dir (chain.json goes there).")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="The control plane's database (its GPU rates).")
    ] = None,
    deployer_keystore: Annotated[
        Path | None,
        typer.Option(help="The admin's keystore (default DATA_DIR/deployer.json; made on dev)."),
    ] = None,
    deployer_password_file: Annotated[
        Path | None, typer.Option(help="Its password (default DATA_DIR/deployer.password).")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="The ERC-20 to pay in; required except on dev chains 31337/1337."),
    ] = None,
    treasury: Annotated[
        str | None, typer.Option(help="Where platform fees go (default: the deployer).")
    ] = None,
    fee_bps: Annotated[
        int, typer.Option(help=f"Platform fee in basis points, at most {MAX_FEE_BPS}.")
    ] = DEFAULT_FEE_BPS,
    operator: Annotated[
        str | None,
        typer.Option(help="Who may pay settlements (default: the hot wallet's address)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a live deployment named in chain.json.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print chain.json's content.")] = False,
) -> None:
    """Deploy the payments contract and write chain.json for the control plane.

    DevToken is deployed too on a development chain; the rates are the GPU catalog's, and the
    operator (the hot wallet) gets OPERATOR_ROLE."""
    import asyncio

    settings = _settings(data_dir, database_url)
    deployer = deployer_wallet(settings, deployer_keystore, deployer_password_file)
    try:
        done = asyncio.run(
            deploy_openpod(
                settings,
                rpc_url,
                deployer,
                token=token,
                treasury=treasury,
                fee_bps=fee_bps,
                operator=operator,
                force=force,
            )
        )
    except ChainSetupError as error:
        raise _fail(error) from None
    path = settings.chain_path()
    done.config.save(path)
    for note in done.notes:
        typer.echo(note, err=True)
    if json_out:
        typer.echo(json.dumps(config_json(done.config), indent=2))
        return
    config = done.config
    kind = "development chain" if config.chain_id in DEV_CHAIN_IDS else "chain"
    typer.echo(f"{kind} {config.chain_id} at {show_url(config.rpc_url)}")
    typer.echo(f"  admin (deployer)  {done.deployer}")
    typer.echo(
        f"  token             {config.token}" + (" (DevToken, deployed)" * done.token_deployed)
    )
    typer.echo(f"  payments          {config.payments} (block {config.from_block})")
    typer.echo(f"  operator          {done.operator}")
    typer.echo(f"  treasury          {done.treasury}, fee {done.fee_bps} bps")
    typer.echo(f"  rates             {len(done.rates)} GPU types from the catalog")
    typer.echo(f"wrote {path}")


def config_json(config: ChainConfig) -> dict[str, Any]:
    return {
        "rpcUrl": config.rpc_url,
        "chainId": config.chain_id,
        "token": config.token,
        "payments": config.payments,
        "fromBlock": config.from_block,
    }


@app.command("info")
def info_command(
    data_dir: Annotated[Path | None, typer.Option(help="The control plane's data dir.")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Ask the chain whether the deployment is there.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the deployment the control plane pays through (chain.json)."""
    import asyncio

    settings = _settings(data_dir)
    try:
        config = settings.chain()
    except ValueError as error:
        raise _fail(ChainSetupError(str(error))) from None
    if config is None:
        raise _fail(
            ChainSetupError(
                f"no chain deployment: {settings.chain_path()} does not exist "
                "(run `openpod chain deploy --rpc-url URL`)"
            )
        )
    shown = config_json(config)
    found = asyncio.run(check_deployment(config, settings)) if check else None
    if json_out:
        typer.echo(json.dumps({**shown, "check": found} if found else shown, indent=2))
    else:
        for key, value in shown.items():
            typer.echo(f"{key:<10} {value}")
        if found is not None:
            typer.echo("on the chain:")
            for key, value in found.items():
                if key != "problems":
                    typer.echo(f"  {key:<20} {value}")
            for problem in found["problems"]:
                typer.echo(f"mismatch: {problem}", err=True)
            if not found["problems"]:
                typer.echo("ok: the chain holds this deployment")
    if found and found["problems"]:
        raise typer.Exit(1)


@app.command("new-wallet")
def new_wallet_command(
    keystore: Annotated[Path, typer.Option(help="Where to write the encrypted keystore.")],
    password_file: Annotated[
        Path, typer.Option(help="Its password; a random one is written (0600) if missing.")
    ],
) -> None:
    """Make a key in an encrypted keystore and print its address.

    For a deployer or a hot wallet, to fund before `openpod chain deploy`."""
    wallet = Wallet(keystore, password_file, "new")
    if wallet.exists():
        raise _fail(ChainSetupError(f"{keystore} exists already (address {wallet.address})"))
    try:
        signer = wallet.signer(create=True)
    except ChainSetupError as error:
        raise _fail(error) from None
    typer.echo(signer.address)
