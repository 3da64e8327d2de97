"""Accounts, API keys, wallets and SSH keys."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from openpod.adapters.store import Account, ApiKey, SSHKey
from openpod.domain import ids
from openpod.domain.errors import InvalidSSHKey
from openpod.domain.sshkeys import parse_public_key
from openpod.services.errors import Conflict, InvalidInput, NotFound, Unauthenticated

API_KEY_PREFIX = "op"
_WALLET = re.compile(r"^0x[0-9a-fA-F]{40}$")


def create_account(session: Session, name: str, *, is_admin: bool = False) -> tuple[Account, str]:
    """A new account and its first API key; the key is returned once and stored hashed."""
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput("account name must be 1-100 characters")
    account = Account(id=ids.new_id("acc"), name=name, is_admin=is_admin)
    session.add(account)
    session.flush()
    return account, new_api_key(session, account)


def new_api_key(session: Session, account: Account) -> str:
    """Another API key for the account; returned once, stored as a hash and a short hint."""
    return issue_api_key(session, account)[1]


def issue_api_key(session: Session, account: Account) -> tuple[ApiKey, str]:
    key = ids.new_secret(API_KEY_PREFIX)
    row = ApiKey(
        id=ids.new_id("key"),
        account_id=account.id,
        key_hash=ids.hash_secret(key),
        hint=ids.secret_hint(key),
    )
    session.add(row)
    session.flush()
    return row, key


def list_api_keys(session: Session, account: Account) -> list[ApiKey]:
    query = select(ApiKey).where(ApiKey.account_id == account.id).order_by(ApiKey.created_at)
    return list(session.scalars(query))


def revoke_api_key(session: Session, account: Account, key_id: str) -> None:
    """Revoke one key at once; the last key is kept so that the account stays reachable."""
    keys = list_api_keys(session, account)
    row = next((k for k in keys if k.id == key_id), None)
    if row is None:
        raise NotFound(f"no API key {key_id!r}")
    if len(keys) == 1:
        raise Conflict("cannot revoke the account's last API key: create another one first")
    session.delete(row)


def authenticate(session: Session, api_key: str | None) -> Account:
    if not api_key:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
    query = select(Account).join(ApiKey, ApiKey.account_id == Account.id)
    account = session.scalar(query.where(ApiKey.key_hash == ids.hash_secret(api_key)))
    if account is None:
        raise Unauthenticated("invalid API key")
    return account


def validate_wallet(address: str, what: str = "wallet address") -> str:
    if not _WALLET.match(address):
        raise InvalidInput(f"{what} {address!r} is not a 0x-prefixed 20-byte hex address")
    return address


def set_wallet(session: Session, account: Account, address: str | None) -> Account:
    row = session.get(Account, account.id)
    assert row is not None
    row.wallet_address = None if address is None else validate_wallet(address)
    return row


def add_ssh_key(session: Session, account: Account, public_key: str, name: str | None) -> SSHKey:
    try:
        key = parse_public_key(public_key)
    except InvalidSSHKey as error:
        raise InvalidInput(str(error)) from None
    existing = session.scalar(select(SSHKey).where(SSHKey.fingerprint == key.fingerprint))
    if existing is not None and existing.account_id == account.id:
        raise Conflict(f"SSH key {key.fingerprint} is already on this account ({existing.id})")
    if existing is not None:
        # The SSH gateway knows an account by its key: one key, one account (as on GitHub).
        raise Conflict(f"SSH key {key.fingerprint} is already in use by another account")
    row = SSHKey(
        id=ids.new_id("ssh"),
        account_id=account.id,
        name=(name or key.comment or key.type)[:100],
        key_type=key.type,
        bits=key.bits,
        fingerprint=key.fingerprint,
        public_key=key.openssh,
    )
    session.add(row)
    session.flush()
    return row


def list_ssh_keys(session: Session, account: Account) -> list[SSHKey]:
    query = select(SSHKey).where(SSHKey.account_id == account.id).order_by(SSHKey.created_at)
    return list(session.scalars(query))


def remove_ssh_key(session: Session, account: Account, key_id: str) -> None:
    row = session.get(SSHKey, key_id)
    if row is None or row.account_id != account.id:
        raise NotFound(f"no SSH key {key_id!r}")
    session.delete(row)


def public_keys(session: Session, account_id: str) -> list[str]:
    query = select(SSHKey.public_key).where(SSHKey.account_id == account_id)
    return list(session.scalars(query.order_by(SSHKey.created_at)))
