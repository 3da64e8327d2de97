"""Providers (accounts that rent out GPUs, with a payout wallet) and their nodes."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from openpod.adapters.store import Account, GpuType, Node, Provider
from openpod.adapters.store.models import utcnow
from openpod.domain import ids
from openpod.protocol import GpuInfo
from openpod.services.accounts import validate_wallet
from openpod.services.errors import Conflict, Forbidden, InvalidInput, Unauthenticated

log = logging.getLogger("openpod.providers")

NODE_TOKEN_PREFIX = "opn"  # noqa: S105 - a prefix, not a secret


def become_provider(session: Session, account: Account, payout_wallet: str) -> Provider:
    validate_wallet(payout_wallet, "payout wallet")
    if provider_of(session, account) is not None:
        raise Conflict("this account is already a provider")
    provider = Provider(id=ids.new_id("prv"), account_id=account.id, payout_wallet=payout_wallet)
    session.add(provider)
    session.flush()
    return provider


def provider_of(session: Session, account: Account) -> Provider | None:
    return session.scalar(select(Provider).where(Provider.account_id == account.id))


def _require_provider(session: Session, account: Account) -> Provider:
    provider = provider_of(session, account)
    if provider is None:
        raise Forbidden(
            "this account is not a provider: POST /providers with a payout wallet first"
        )
    return provider


def register_node(
    session: Session, account: Account, name: str, public_host: str | None
) -> tuple[Node, str]:
    """A new node of the caller's provider; its token is returned once and stored hashed."""
    provider = _require_provider(session, account)
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput("node name must be 1-100 characters")
    token = ids.new_secret(NODE_TOKEN_PREFIX)
    node = Node(
        id=ids.new_id("node"),
        provider_id=provider.id,
        name=name,
        token_hash=ids.hash_secret(token),
        public_host=public_host,
    )
    session.add(node)
    session.flush()
    return node, token


def list_nodes(session: Session, account: Account) -> list[Node]:
    provider = _require_provider(session, account)
    query = select(Node).where(Node.provider_id == provider.id).order_by(Node.created_at)
    return list(session.scalars(query))


def authenticate_node(session: Session, token: str | None) -> Node:
    if not token:
        raise Unauthenticated("missing node token: send 'Authorization: Bearer <node token>'")
    node = session.scalar(select(Node).where(Node.token_hash == ids.hash_secret(token)))
    if node is None:
        raise Unauthenticated("invalid node token")
    return node


def node_connected(
    session: Session, node_id: str, *, runtime: str, public_host: str, gpus: list[GpuInfo]
) -> Node:
    """Record what a node declares on connect: its GPUs, runtime and address."""
    node = session.get(Node, node_id)
    if node is None:
        raise Unauthenticated("node no longer exists")
    indices = [g.index for g in gpus]
    if len(set(indices)) != len(indices):
        raise InvalidInput("node declares the same GPU index twice")
    unknown = sorted({g.type for g in gpus} - set(session.scalars(select(GpuType.id))))
    if unknown:
        # Such GPUs cannot be rented until an admin adds their type to the catalog.
        log.warning("node %s declares GPU types not in the catalog: %s", node_id, unknown)
    node.gpus = [g.model_dump() for g in gpus]
    node.runtime = runtime
    node.public_host = public_host
    node.online = True
    node.last_seen_at = utcnow()
    return node


def node_disconnected(session: Session, node_id: str) -> None:
    node = session.get(Node, node_id)
    if node is not None:
        node.online = False
        node.last_seen_at = utcnow()


def mark_all_offline(session: Session) -> None:
    """At control-plane start nobody is connected yet; nodes come back online with hello."""
    for node in session.scalars(select(Node).where(Node.online.is_(True))):
        node.online = False
