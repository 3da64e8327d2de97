"""Where payments are made: the chain, the token and the payments contract (public)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, status

from openpod.api.deps import State
from openpod.api.schemas import Wire
from openpod.services.errors import NotFound

router = APIRouter(tags=["chain"])
log = logging.getLogger("openpod.api")


class ChainOut(Wire):
    """What a wallet needs to pay here: sign leases for `payments` on `chainId`, approve it for
    `token` and set a spending cap, all through `rpcUrl`."""

    rpc_url: str
    chain_id: int
    token: str
    payments: str
    token_decimals: int


@router.get("/chain")
async def chain(state: State) -> ChainOut:
    """The deployment settlements are paid through (no authentication: it is public on-chain
    anyway). 404 when this control plane does not pay on-chain."""
    try:
        config = state.settings.chain()
    except ValueError as error:
        log.error("%s", error)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "this control plane's chain config is unreadable"
        ) from None
    if config is None:
        raise NotFound(
            "on-chain payments are off: this control plane has no chain deployment "
            "(its operator runs `openpod chain deploy`)"
        )
    return ChainOut(
        rpc_url=config.rpc_url,
        chain_id=config.chain_id,
        token=config.token,
        payments=config.payments,
        token_decimals=state.settings.token_decimals,
    )
