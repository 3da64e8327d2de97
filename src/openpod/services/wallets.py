"""Wallets proven by Sign-In with Ethereum (EIP-4361), and what the chain says of them.

An account asks for a nonce for a purpose ("account": the wallet its pods are paid from;
"payout": its provider's payout wallet), its wallet signs a SIWE message carrying that nonce
(EIP-191), and `link` checks the message against this control plane (domain, URI, chain id),
the nonce (issued to this account for that purpose, unexpired, unused), the message's times
and the signature, then sets the wallet and spends the nonce in one transaction. Any failure
raises a service error naming what is wrong, and changes nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

from eth_abi.exceptions import DecodingError
from eth_account import Account as EthAccount
from eth_account.messages import encode_defunct
from eth_keys.exceptions import BadSignature
from eth_utils.address import is_checksum_address, to_checksum_address
from eth_utils.exceptions import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from openpod.adapters.chain import DEV_CHAIN_ID, ChainError, Contract, Rpc, RpcUnavailable
from openpod.adapters.store import Account, Provider, WalletLink
from openpod.domain.siwe import SiweError, SiweMessage, format_time, new_nonce
from openpod.services.errors import Conflict, Forbidden, InvalidInput, Unavailable
from openpod.settings import ChainConfig, ServerSettings

Purpose = Literal["account", "payout"]
PURPOSES: tuple[Purpose, ...] = ("account", "payout")
NONCE_TTL = timedelta(minutes=10)
CLOCK_SKEW = timedelta(seconds=60)  # how far ahead a wallet's clock may run (Issued At)
MAX_MESSAGE = 4096
STATEMENT = "Link this wallet to your openpod account."
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


class ChainUnavailable(Unavailable):
    """The chain's RPC cannot be reached or answered nonsense (the API answers 503)."""


@dataclass(frozen=True)
class LinkRules:
    """What a SIWE message must say to link a wallet on this control plane."""

    domains: frozenset[str]  # accepted `domain` (RFC 3986 authority) values
    chain_id: int


def chain_config(settings: ServerSettings) -> ChainConfig | None:
    """The configured deployment, or None when on-chain payments are off."""
    try:
        return settings.chain()
    except ValueError as exc:
        raise ChainUnavailable(str(exc)) from None


def link_rules(settings: ServerSettings) -> LinkRules:
    """`siwe_domain` when the settings have one; else this server's own `host:port` (and its
    loopback aliases when it listens on loopback). Never the request's Host header: whoever
    relays a signature phished on another site chooses that header."""
    configured = getattr(settings, "siwe_domain", None)
    if isinstance(configured, str) and configured.strip():
        domains = frozenset(d.strip() for d in configured.split(",") if d.strip())
    else:
        own = f"{settings.host}:{settings.port}"
        loopback = settings.host in _LOOPBACK or settings.host == "::1"
        domains = frozenset([own, *(f"{h}:{settings.port}" for h in _LOOPBACK if loopback)])
    config = chain_config(settings)
    return LinkRules(domains, config.chain_id if config else DEV_CHAIN_ID)


def _provider(session: Session, account: Account) -> Provider:
    provider = session.scalar(select(Provider).where(Provider.account_id == account.id))
    if provider is None:
        raise Forbidden(
            "this account is not a provider, so it has no payout wallet to link:"
            " POST /providers first"
        )
    return provider


def issue_nonce(session: Session, account: Account, purpose: str, *, now: datetime) -> WalletLink:
    """A fresh single-use nonce for `purpose`, valid for NONCE_TTL; the account's expired
    unused nonces go."""
    if purpose not in PURPOSES:
        raise InvalidInput(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}")
    if purpose == "payout":
        _provider(session, account)
    session.execute(
        delete(WalletLink).where(
            WalletLink.account_id == account.id,
            WalletLink.linked_at.is_(None),
            WalletLink.expires_at < now,
        )
    )
    row = WalletLink(
        nonce=new_nonce(),
        account_id=account.id,
        purpose=purpose,
        created_at=now,
        expires_at=now + NONCE_TTL,
    )
    session.add(row)
    session.flush()
    return row


def _parse(text: str) -> SiweMessage:
    if len(text) > MAX_MESSAGE:
        raise InvalidInput(f"message: longer than {MAX_MESSAGE} characters")
    try:
        return SiweMessage.parse(text)
    except SiweError as exc:
        raise InvalidInput(f"message is no EIP-4361 message: {exc}") from None


def _check_origin(message: SiweMessage, rules: LinkRules) -> None:
    if message.domain not in rules.domains:
        expected = " or ".join(sorted(rules.domains))
        raise InvalidInput(f"domain: {message.domain!r} is not this server's ({expected})")
    parts = urlsplit(message.uri)
    if parts.scheme not in ("http", "https") or parts.netloc != message.domain:
        raise InvalidInput(
            f"URI: {message.uri!r} is not an http(s) URL on the domain {message.domain!r}"
        )
    if message.chain_id != rules.chain_id:
        raise InvalidInput(
            f"Chain ID: {message.chain_id} is not this server's chain ({rules.chain_id})"
        )


def _signature(signature: str) -> bytes:
    raw = signature[2:] if signature.startswith(("0x", "0X")) else signature
    try:
        sig = bytes.fromhex(raw)
    except ValueError:
        sig = b""
    if len(sig) != 65:
        raise InvalidInput("signature: not 65 bytes of hex (r, s, v)")
    return sig


def _signer(text: str, signature: bytes) -> str:
    """The address whose key made this EIP-191 (personal_sign) signature of `text`."""
    try:
        return str(EthAccount.recover_message(encode_defunct(text=text), signature=signature))
    except (BadSignature, ValidationError, ValueError) as exc:
        raise InvalidInput(f"signature: no signer can be recovered from it ({exc})") from None


@dataclass(frozen=True)
class Linked:
    purpose: str
    address: str
    linked_at: datetime


def link(
    session: Session,
    account: Account,
    text: str,
    signature: str,
    *,
    rules: LinkRules,
    now: datetime,
) -> Linked:
    """Check a signed SIWE message and link its wallet for the purpose its nonce was issued."""
    message = _parse(text)
    _check_origin(message, rules)
    if not is_checksum_address(message.address):
        raise InvalidInput(
            f"address: {message.address} is not in EIP-55 checksum form"
            f" ({to_checksum_address(message.address)})"
        )
    row = session.scalar(
        select(WalletLink).where(WalletLink.nonce == message.nonce).with_for_update()
    )
    if row is None or row.account_id != account.id:
        raise InvalidInput(
            f"Nonce: {message.nonce} was not issued to this account (POST /wallet/nonce)"
        )
    if row.linked_at is not None:
        raise Conflict(f"Nonce: {message.nonce} was used already: ask for a new one")
    if row.expires_at <= now:
        raise InvalidInput(
            f"Nonce: {message.nonce} expired at {format_time(row.expires_at)}: ask for a new one"
        )
    try:
        message.check_times(now, CLOCK_SKEW)
    except SiweError as exc:
        raise InvalidInput(str(exc)) from None
    sig = _signature(signature)
    signer = _signer(text, sig)
    if signer != message.address:
        raise InvalidInput(f"signature: signed by {signer}, not by {message.address}")
    if row.purpose == "payout":
        _provider(session, account).payout_wallet = message.address
    else:
        account.wallet_address = message.address
    row.linked_at = now
    row.address = message.address
    row.message = text
    row.signature = "0x" + sig.hex()
    return Linked(row.purpose, message.address, now)


@dataclass(frozen=True)
class Wallets:
    """An account's wallets, and whether each was proven by a signed SIWE message."""

    address: str | None
    address_proven: bool
    payout_wallet: str | None  # None: not a provider
    payout_proven: bool


def _proven(session: Session, account: Account, purpose: str, address: str | None) -> bool:
    if address is None:
        return False
    query = select(WalletLink.address).where(
        WalletLink.account_id == account.id,
        WalletLink.purpose == purpose,
        WalletLink.linked_at.is_not(None),
    )
    return any(a is not None and a.lower() == address.lower() for a in session.scalars(query))


def wallets_of(session: Session, account: Account) -> Wallets:
    provider = session.scalar(select(Provider).where(Provider.account_id == account.id))
    payout = provider.payout_wallet if provider else None
    return Wallets(
        address=account.wallet_address,
        address_proven=_proven(session, account, "account", account.wallet_address),
        payout_wallet=payout,
        payout_proven=_proven(session, account, "payout", payout),
    )


@dataclass(frozen=True)
class Funds:
    """What the chain says of a wallet, in token base units."""

    balance: int  # token.balanceOf(wallet)
    allowance: int  # token.allowance(wallet, payments)
    cap: int  # payments.budgets(wallet).cap
    spent: int  # payments.budgets(wallet).spent


async def read_funds(config: ChainConfig, address: str, *, timeout_s: float = 5.0) -> Funds:
    """Balance, allowance and budget of `address`, read from the chain in parallel."""
    try:
        async with Rpc(config.rpc_url, timeout_s=timeout_s) as rpc:
            token = Contract(rpc, "DevToken", config.token)
            payments = Contract(rpc, "OpenPodPayments", config.payments)
            balance, allowance, budget = await asyncio.gather(
                token.read_one("balanceOf", address),
                token.read_one("allowance", address, payments.address),
                payments.read("budgets", address),
            )
    except RpcUnavailable as exc:
        raise ChainUnavailable(
            f"the chain's RPC at {config.rpc_url} is unavailable: {exc}"
        ) from None
    except (ChainError, DecodingError) as exc:  # DecodingError: no contract at the address
        raise ChainUnavailable(f"reading the wallet from the chain failed: {exc}") from None
    cap, spent = budget
    return Funds(int(balance), int(allowance), int(cap), int(spent))
