"""``openpod wallet ...``: your Ethereum wallet: make one, link it to your account by signing in
with Ethereum (EIP-4361), let the payments contract charge it, and see what the chain says.

The key stays in an encrypted keystore on this machine (``wallet.json`` in the CLI's config
directory unless ``--keystore`` says otherwise; the config records where). Messages and
transactions are signed here; transactions go straight to the chain's RPC that ``GET /chain``
names, over a few JSON-RPC calls.

The keystore's password comes from ``--password-file``, else the file named by
``$OPENPOD_WALLET_PASSWORD_FILE``, else the password file ``openpod wallet use`` recorded for
the configured keystore, else a hidden prompt. It is never echoed or stored by the CLI.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import typer
from eth_abi.abi import encode
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address

from openpod.adapters.signers import KeystoreSigner, SignerError
from openpod.cli import config as cfg
from openpod.cli.client import ApiClient, ApiError, Json, make_client
from openpod.cli.output import fail, handle_api_errors, print_json, print_line
from openpod.domain.siwe import SiweError, SiweMessage

app = typer.Typer(
    name="wallet",
    help="Your Ethereum wallet: create it, link it to your account, approve payments.",
    no_args_is_help=True,
)

KEYSTORE_FILE = "wallet.json"
CONFIG_KEY = "wallet_keystore"
PASSWORD_CONFIG_KEY = "wallet_password_file"  # noqa: S105 - a config key, not a secret
ENV_PASSWORD_FILE = "OPENPOD_WALLET_PASSWORD_FILE"  # noqa: S105 - a variable name
STATEMENTS = {
    "account": "Link this wallet to your openpod account.",
    "payout": "Link this wallet as the payout wallet of your openpod provider account.",
}
RECEIPT_TIMEOUT_S = 120.0

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]
KeystoreOption = Annotated[
    Path | None,
    typer.Option("--keystore", help="The keystore file (default: the one `create` recorded)."),
]
PasswordFile = Annotated[
    Path | None,
    typer.Option(
        "--password-file", help="Read the keystore password from this file (else a prompt)."
    ),
]


class WalletError(Exception):
    """Something about the wallet or the chain, in words for the user."""


# --- keystore and password -------------------------------------------------------------------


def _recorded(key: str) -> Path | None:
    try:
        value = cfg.read_file().get(key)
    except cfg.ConfigError as exc:
        raise WalletError(str(exc)) from None
    return Path(value) if isinstance(value, str) and value else None


def keystore_path(explicit: Path | None) -> Path:
    """`--keystore`, else what the config recorded, else wallet.json in the config dir."""
    if explicit is not None:
        return explicit.expanduser()
    return _recorded(CONFIG_KEY) or cfg.config_dir() / KEYSTORE_FILE


def configured_keystore() -> Path | None:
    """The keystore this CLI signs with when no `--keystore` is given, if there is one."""
    path = keystore_path(None)
    return path if path.exists() else None


def password_file_for(keystore: Path, explicit: Path | None) -> Path | None:
    """Where the password of `keystore` is read from: `--password-file`, else
    $OPENPOD_WALLET_PASSWORD_FILE, else the file recorded with the configured keystore (only
    for that keystore); None: ask."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(ENV_PASSWORD_FILE)
    if from_env:
        return Path(from_env)
    recorded = _recorded(PASSWORD_CONFIG_KEY)
    if recorded is not None and _same_file(keystore, keystore_path(None)):
        return recorded
    return None


def _same_file(a: Path, b: Path) -> bool:
    return a.expanduser().resolve() == b.expanduser().resolve()


def record_keystore(path: Path, password_file: Path | None = None) -> Path:
    """Remember the keystore's path in the CLI's config file (kept 0600), and the file holding
    its password if given (else any recorded one is forgotten: it was another key's)."""
    data = cfg.read_file()
    data[CONFIG_KEY] = str(path.resolve())
    if password_file is not None:
        data[PASSWORD_CONFIG_KEY] = str(password_file.expanduser().resolve())
    else:
        data.pop(PASSWORD_CONFIG_KEY, None)
    cfg.ensure_config_dir()
    config = cfg.config_path()
    cfg.write_private_file(config, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return config


def read_password(password_file: Path | None, *, confirm: bool = False) -> str:
    """The password from the file (its first line), else a hidden prompt; never echoed."""
    if password_file is not None:
        try:
            text = password_file.expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise WalletError(f"cannot read the password file {password_file}: {exc}") from None
        password = text.splitlines()[0] if text else ""
    else:
        password = typer.prompt(
            "Keystore password", hide_input=True, confirmation_prompt=confirm, err=True
        )
    if not password:
        raise WalletError("the keystore password is empty")
    return password


def keystore_address(keystore: Path | None) -> str:
    """The address a keystore declares (its `address` field), read without decrypting it."""
    path = keystore_path(keystore)
    if not path.exists():
        raise WalletError(f"no wallet keystore at {path}: run `openpod wallet create` first")
    try:
        found = str(json.loads(path.read_text(encoding="utf-8"))["address"])
        return to_checksum_address(found if found.startswith("0x") else "0x" + found)
    except (OSError, ValueError, KeyError, TypeError):
        raise WalletError(f"{path} is not a readable keystore") from None


def load_signer(keystore: Path | None, password_file: Path | None) -> KeystoreSigner:
    """The key of `keystore` (default: the configured one), decrypted with its password (see
    :func:`password_file_for`). Raises WalletError; typer.Abort if the prompt is cancelled."""
    path = keystore_path(keystore)
    if not path.exists():
        raise WalletError(f"no wallet keystore at {path}: run `openpod wallet create` first")
    try:
        return KeystoreSigner.load(path, read_password(password_file_for(path, password_file)))
    except SignerError as exc:
        raise WalletError(str(exc)) from None


# --- token amounts -------------------------------------------------------------------------


_AMOUNT = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
MAX_UINT256 = 2**256 - 1


def parse_units(text: str, decimals: int) -> int:
    """Whole tokens (`250`, `12.5`) as exact base units; no floats anywhere."""
    match = _AMOUNT.fullmatch(text.strip())
    if match is None:
        raise WalletError(f"{text!r} is no amount of tokens (write it like 250 or 12.5)")
    whole, fraction = match.group(1), (match.group(2) or "").rstrip("0")
    if len(fraction) > decimals:
        raise WalletError(f"{text} has more decimals than the token's {decimals}")
    scale: int = 10**decimals
    units = int(whole) * scale + int(fraction.ljust(decimals, "0") or "0")
    if units > MAX_UINT256:
        raise WalletError(f"{text} tokens is more than a uint256 holds")
    return units


def format_units(units: int, decimals: int) -> str:
    """Base units as whole tokens, exactly: `12.5`, `250`, `0.000001`."""
    whole, fraction = divmod(units, 10**decimals)
    digits = str(fraction).rjust(decimals, "0").rstrip("0") if decimals else ""
    return f"{whole}.{digits}" if digits else str(whole)


# --- JSON-RPC ------------------------------------------------------------------------------


class RpcFailure(WalletError):
    """The node answered a JSON-RPC error."""

    def __init__(self, method: str, message: str) -> None:
        super().__init__(f"{method}: {message}")
        self.message = message


class ChainRpc:
    """The few JSON-RPC calls the CLI makes, over HTTP."""

    def __init__(self, url: str, *, timeout: float = 15.0) -> None:
        self.url = url
        self._http = httpx.Client(timeout=timeout)
        self._ids = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChainRpc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, *params: Any) -> Any:
        self._ids += 1
        body = {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": list(params)}
        try:
            response = self._http.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise WalletError(f"cannot reach the chain's RPC at {self.url}: {exc}") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise WalletError(
                f"the RPC at {self.url} answered {method} with HTTP {response.status_code}"
                " and no JSON-RPC answer"
            )
        error = answer.get("error")
        if isinstance(error, dict):
            raise RpcFailure(method, str(error.get("message", error)))
        if "result" not in answer:
            raise WalletError(f"the RPC at {self.url} answered {method} without a result")
        return answer["result"]

    def number(self, method: str, *params: Any) -> int:
        return int(str(self.call(method, *params)), 16)

    def receipt(self, tx_hash: str, timeout_s: float = RECEIPT_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while True:
            receipt = self.call("eth_getTransactionReceipt", tx_hash)
            if isinstance(receipt, dict):
                return receipt
            if time.monotonic() > deadline:
                raise WalletError(f"transaction {tx_hash} was not mined in {timeout_s:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def calldata(signature: str, types: list[str], args: list[Any]) -> bytes:
    return function_signature_to_4byte_selector(signature) + encode(types, args)


def _explain(what: str, signer: KeystoreSigner, failure: RpcFailure) -> WalletError:
    text = failure.message.lower()
    if "insufficient funds" in text or "funds for gas" in text:
        return WalletError(f"{what}: wallet {signer.address} has not enough ETH to pay for gas")
    if "revert" in text:
        return WalletError(f"{what} would revert: {failure.message}")
    return WalletError(f"{what}: the RPC refused it: {failure.message}")


def transact(
    rpc: ChainRpc, signer: KeystoreSigner, chain_id: int, to: str, data: bytes, what: str
) -> str:
    """Sign one EIP-1559 transaction here, send it, wait for its receipt; its hash."""
    call = {"from": signer.address, "to": to, "data": "0x" + data.hex()}
    try:
        gas = rpc.number("eth_estimateGas", call)
        block = rpc.call("eth_getBlockByNumber", "latest", False)
        base = int(str(block.get("baseFeePerGas", "0x0")), 16) if isinstance(block, dict) else 0
        tip = rpc.number("eth_maxPriorityFeePerGas")
        tx = {
            "type": 2,
            "chainId": chain_id,
            "nonce": rpc.number("eth_getTransactionCount", signer.address, "pending"),
            "to": to,
            "value": 0,
            "data": data,
            "gas": gas * 6 // 5 + 10_000,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": 2 * base + tip,
        }
        tx_hash = str(rpc.call("eth_sendRawTransaction", "0x" + signer.sign_transaction(tx).hex()))
    except RpcFailure as failure:
        raise _explain(what, signer, failure) from None
    receipt = rpc.receipt(tx_hash)
    if int(str(receipt.get("status", "0x0")), 16) != 1:
        raise WalletError(f"{what} reverted in transaction {tx_hash}")
    return tx_hash


# --- the API -------------------------------------------------------------------------------


def api_object(client: ApiClient, method: str, path: str, **kwargs: Any) -> Json:
    """A request whose answer must be a JSON object."""
    data = client.request(method, path, **kwargs)
    if not isinstance(data, dict):
        raise ApiError(200, f"the API answered {method} {path} with no JSON object")
    return data


@dataclass(frozen=True)
class ChainInfo:
    """What `GET /chain` says: where the contracts live and the token's decimals."""

    rpc_url: str
    chain_id: int
    token: str
    payments: str
    decimals: int

    @classmethod
    def fetch(cls, client: ApiClient) -> ChainInfo:
        chain = cls.published(client)
        if chain is None:
            raise WalletError("this control plane has no chain configured (GET /chain)")
        return chain

    @classmethod
    def published(cls, client: ApiClient) -> ChainInfo | None:
        """What `GET /chain` says, or None when payments are off there (404)."""
        try:
            data = api_object(client, "GET", "/chain")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        try:
            return cls(
                rpc_url=str(data["rpcUrl"]),
                chain_id=int(data["chainId"]),
                token=to_checksum_address(str(data["token"])),
                payments=to_checksum_address(str(data["payments"])),
                decimals=int(data["tokenDecimals"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WalletError(f"GET /chain answered something unexpected: {exc!r}") from None


def _expiry(nonce: Json) -> datetime | None:
    try:
        return datetime.fromisoformat(str(nonce["expiresAt"]))
    except (KeyError, ValueError):
        return None


def siwe_message(client: ApiClient, signer: KeystoreSigner, purpose: str, nonce: Json) -> str:
    """The EIP-4361 message for a nonce from `POST /wallet/nonce`, for the API's own host."""
    try:
        message = SiweMessage(
            domain=urlsplit(client.base_url).netloc,
            address=signer.address,
            statement=STATEMENTS[purpose],
            uri=client.base_url,
            chain_id=int(nonce["chainId"]),
            nonce=str(nonce["nonce"]),
            issued_at=datetime.now(UTC),
            expiration_time=_expiry(nonce),
        )
    except (KeyError, TypeError, ValueError, SiweError) as exc:
        raise WalletError(f"cannot build the sign-in message: {exc}") from None
    return message.text()


def link_wallet(client: ApiClient, purpose: str, signer: Callable[[], KeystoreSigner]) -> Json:
    """Sign in with Ethereum: a nonce for `purpose` ("account" or "payout"), the EIP-4361
    message signed by the wallet, `POST /wallet/link`; the API's answer. The nonce comes first,
    so where the API refuses (not a provider) the key is not decrypted (no password asked)."""
    nonce = api_object(client, "POST", "/wallet/nonce", json={"purpose": purpose})
    key = signer()
    message = siwe_message(client, key, purpose, nonce)
    signature = "0x" + key.sign_message(message).hex()
    return api_object(
        client, "POST", "/wallet/link", json={"message": message, "signature": signature}
    )


def _run(fn: Callable[[], None]) -> None:
    """WalletError → `error: ...` and exit 1 (ApiError is handled by handle_api_errors)."""
    try:
        fn()
    except WalletError as exc:
        raise fail(str(exc)) from None


# --- commands ------------------------------------------------------------------------------


@app.command("create")
def create(
    keystore: KeystoreOption = None, password_file: PasswordFile = None, as_json: JsonFlag = False
) -> None:
    """Make a new key in an encrypted keystore (0600) and record it in the config."""

    def work() -> None:
        if keystore is None and keystore_path(None).exists():
            raise WalletError(
                f"you have a wallet already ({keystore_path(None)}):"
                " pass --keystore PATH to make another"
            )
        path = keystore.expanduser() if keystore else cfg.config_dir() / KEYSTORE_FILE
        if path.exists():
            raise WalletError(f"{path} exists already: pass another --keystore")
        if keystore is None:
            cfg.ensure_config_dir()
        password = read_password(password_file, confirm=True)
        try:
            signer = KeystoreSigner.create(path, password)
        except SignerError as exc:
            raise WalletError(str(exc)) from None
        try:
            record_keystore(path)
        except (OSError, cfg.ConfigError) as exc:
            raise WalletError(f"made {path}, but cannot record it in the config: {exc}") from None
        if as_json:
            print_json({"address": signer.address, "keystore": str(path)})
            return
        print_line(f"wallet {signer.address}")
        print_line(f"keystore {path} (encrypted; keep the password safe: it cannot be recovered)")
        print_line("next: fund it, then `openpod wallet link`")

    _run(work)


@app.command("use")
def use(
    keystore: Annotated[
        Path | None,
        typer.Option("--keystore", help="The keystore to sign with (default: the recorded one)."),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            help="Record this file as where its password is (else it is asked when needed).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Record the keystore this CLI signs with (pods' leases, links, approvals), and where its
    password is, so that `pod create` signs leases without asking. The password file is read
    once here to check that it opens the keystore."""

    def work() -> None:
        path = keystore_path(keystore)
        if not path.exists():
            raise WalletError(f"no wallet keystore at {path}")
        if password_file is not None:
            try:
                address = KeystoreSigner.load(path, read_password(password_file)).address
            except SignerError as exc:
                raise WalletError(str(exc)) from None
        else:
            address = keystore_address(path)
        try:
            record_keystore(path, password_file)
        except (OSError, cfg.ConfigError) as exc:
            raise WalletError(f"cannot record it in the config: {exc}") from None
        shown = None if password_file is None else str(password_file.expanduser().resolve())
        if as_json:
            print_json({"address": address, "keystore": str(path.resolve()), "passwordFile": shown})
            return
        print_line(f"wallet {address}: keystore {path.resolve()}")
        print_line(f"password from {shown}" if shown else "password asked when signing")

    _run(work)


@app.command("link")
@handle_api_errors
def link(
    payout: Annotated[
        bool, typer.Option("--payout", help="Link it as your provider payout wallet instead.")
    ] = False,
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Prove the wallet is yours (sign in with Ethereum) and link it to your account."""
    purpose = "payout" if payout else "account"

    def work() -> None:
        with make_client() as client:
            linked = link_wallet(client, purpose, lambda: load_signer(keystore, password_file))
        if as_json:
            print_json(linked)
        else:
            what = "payout wallet" if purpose == "payout" else "account wallet"
            print_line(f"linked {linked.get('address')} as your {what}")

    _run(work)


@app.command("approve")
@handle_api_errors
def approve(
    amount: Annotated[str, typer.Argument(help="Whole tokens, e.g. 250 or 12.5.")],
    keystore: KeystoreOption = None,
    password_file: PasswordFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Let the payments contract charge up to AMOUNT: token approve + spending cap."""

    def work() -> None:
        with make_client() as client:
            chain = ChainInfo.fetch(client)
        units = parse_units(amount, chain.decimals)
        signer = load_signer(keystore, password_file)
        with ChainRpc(chain.rpc_url) as rpc:
            actual = rpc.number("eth_chainId")
            if actual != chain.chain_id:
                raise WalletError(f"the RPC is on chain {actual}, the API says {chain.chain_id}")
            approve_data = calldata(
                "approve(address,uint256)", ["address", "uint256"], [chain.payments, units]
            )
            approved = transact(rpc, signer, actual, chain.token, approve_data, "approve")
            cap_data = calldata("setSpendingCap(uint256)", ["uint256"], [units])
            try:
                capped = transact(rpc, signer, actual, chain.payments, cap_data, "setSpendingCap")
            except WalletError as exc:
                raise WalletError(f"{exc} (the approval went through: {approved})") from None
        if as_json:
            done = {"address": signer.address, "amount": str(units)}
            print_json({**done, "approveTx": approved, "capTx": capped})
            return
        shown = format_units(units, chain.decimals)
        print_line(f"approved the payments contract for {shown} tokens: {approved}")
        print_line(f"spending cap set to {shown} tokens: {capped}")

    _run(work)


@app.command("status")
@handle_api_errors
def status(as_json: JsonFlag = False) -> None:
    """Your linked wallets and, on-chain, balance, allowance, spending cap and spent."""
    with make_client() as client:
        wallet = api_object(client, "GET", "/wallet")
    if as_json:
        print_json(wallet)
        return
    given = wallet.get("tokenDecimals")
    decimals = 18 if given is None else int(given)

    def proven(flag: Any) -> str:
        return "proven" if flag else "not proven: run `openpod wallet link`"

    address = wallet.get("address")
    if address:
        print_line(f"wallet     {address} ({proven(wallet.get('addressProven'))})")
    else:
        print_line("wallet     none (run `openpod wallet link`)")
    if wallet.get("payoutWallet"):
        flag = (
            "proven" if wallet.get("payoutProven") else "not proven: `openpod wallet link --payout`"
        )
        print_line(f"payout     {wallet['payoutWallet']} ({flag})")
    if wallet.get("chainId") is None:
        print_line("chain      none configured")
        return
    print_line(f"chain      {wallet['chainId']}")
    for name in ("balance", "allowance", "cap", "spent"):
        value = wallet.get(name)
        shown = "-" if value is None else f"{format_units(int(value), decimals)} tokens"
        print_line(f"{name:<10} {shown}")
