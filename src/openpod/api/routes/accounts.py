"""Accounts, the caller's own profile, and SSH keys."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy.orm import Session

from openpod.adapters.store import Account, SSHKey
from openpod.api import schemas
from openpod.api.deps import Key, State, as_account
from openpod.services import accounts, funds, providers
from openpod.services.errors import Forbidden

router = APIRouter(tags=["accounts"])


@router.post("/accounts", status_code=status.HTTP_201_CREATED)
async def create_account(body: schemas.AccountCreate, state: State) -> schemas.AccountCreated:
    """Sign up: a new account and its API key (shown once, stored hashed)."""
    if not state.settings.open_signup:
        raise Forbidden("sign-up is closed on this control plane: ask an admin for an account")
    credit = state.settings.signup_credit

    def create(session: Session) -> tuple[Account, str]:
        account, key = accounts.create_account(session, body.name)
        if credit > 0:
            funds.credit(session, account.id, credit)
        return account, key

    account, key = await state.hub.run_db(create)
    return schemas.AccountCreated(id=account.id, name=account.name, api_key=key)


def _account_out(session: Session, account: Account) -> schemas.AccountOut:
    return schemas.AccountOut(
        id=account.id,
        name=account.name,
        is_admin=account.is_admin,
        is_provider=providers.provider_of(session, account) is not None,
        wallet_address=account.wallet_address,
    )


@router.get("/me")
async def me(state: State, key: Key) -> schemas.AccountOut:
    return await as_account(state, key, _account_out, readonly=True)


@router.patch("/me")
async def update_me(body: schemas.AccountUpdate, state: State, key: Key) -> schemas.AccountOut:
    """Set (or clear, with null) the account's wallet address; it is verified by SIWE later."""

    def update(session: Session, account: Account) -> schemas.AccountOut:
        return _account_out(session, accounts.set_wallet(session, account, body.wallet_address))

    return await as_account(state, key, update)


@router.get("/api-keys", tags=["api-keys"])
async def list_api_keys(state: State, key: Key) -> list[schemas.ApiKeyOut]:
    """The account's API keys: ids and hints only (a key is shown once, at creation)."""
    rows = await as_account(state, key, accounts.list_api_keys, readonly=True)
    return [schemas.ApiKeyOut(id=r.id, hint=r.hint, created_at=r.created_at) for r in rows]


@router.post("/api-keys", tags=["api-keys"], status_code=status.HTTP_201_CREATED)
async def create_api_key(state: State, key: Key) -> schemas.ApiKeyCreated:
    """Another API key (shown once, stored hashed)."""
    row, new = await as_account(state, key, accounts.issue_api_key)
    return schemas.ApiKeyCreated(id=row.id, hint=row.hint, created_at=row.created_at, api_key=new)


@router.delete("/api-keys/{key_id}", tags=["api-keys"], status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(key_id: str, state: State, key: Key) -> Response:
    """Revoke a key at once (the account's last key cannot be revoked)."""
    await as_account(state, key, lambda s, a: accounts.revoke_api_key(s, a, key_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _key_out(row: SSHKey) -> schemas.SSHKeyOut:
    return schemas.SSHKeyOut(
        id=row.id,
        name=row.name,
        type=row.key_type,
        bits=row.bits,
        fingerprint=row.fingerprint,
        public_key=row.public_key,
        created_at=row.created_at,
    )


@router.get("/ssh-keys", tags=["ssh-keys"])
async def list_ssh_keys(state: State, key: Key) -> list[schemas.SSHKeyOut]:
    rows = await as_account(state, key, accounts.list_ssh_keys, readonly=True)
    return [_key_out(r) for r in rows]


@router.post("/ssh-keys", tags=["ssh-keys"], status_code=status.HTTP_201_CREATED)
async def add_ssh_key(body: schemas.SSHKeyCreate, state: State, key: Key) -> schemas.SSHKeyOut:
    """Add a public key (ed25519, ecdsa, or rsa of 2048 bits or more); new pods get it."""
    row = await as_account(
        state, key, lambda s, a: accounts.add_ssh_key(s, a, body.public_key, body.name)
    )
    return _key_out(row)


@router.delete("/ssh-keys/{key_id}", tags=["ssh-keys"], status_code=status.HTTP_204_NO_CONTENT)
async def remove_ssh_key(key_id: str, state: State, key: Key) -> Response:
    await as_account(state, key, lambda s, a: accounts.remove_ssh_key(s, a, key_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
