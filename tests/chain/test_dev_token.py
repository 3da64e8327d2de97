"""DevToken on a real anvil: a faucet on development chains only, with a limit per call, and
EIP-2612 permits (a user approves by signature; anyone submits it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from openpod.adapters.chain import ZERO_ADDRESS, Anvil, Contract, Reverted, Rpc
from openpod.adapters.chain.contracts import deploy_contract
from openpod.adapters.signers import KeystoreSigner
from tests.support.chain import H100, RATES, Chain, MakeUser, err, fund, new_signer

LIMIT = 1_000_000_000 * 10**18  # FAUCET_LIMIT


def permit_data(
    chain_id: int, token: str, owner: str, spender: str, value: int, nonce: int, deadline: int
) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "Permit",
        "domain": {
            "name": "openpod Dev USD",
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": token,
        },
        "message": {
            "owner": owner,
            "spender": spender,
            "value": value,
            "nonce": nonce,
            "deadline": deadline,
        },
    }


async def permit(
    chain: Chain, signer: KeystoreSigner, owner: str, spender: str, value: int, deadline: int
) -> dict[str, Any]:
    """`signer` signs a permit for `owner`'s tokens; the operator submits it."""
    nonce = await chain.token.read_one("nonces", owner)
    data = permit_data(
        chain.deployment.chain_id, chain.token.address, owner, spender, value, nonce, deadline
    )
    sig = signer.sign_typed_data(data)
    r, s, v = sig[:32], sig[32:64], sig[64]
    call = chain.token.calldata("permit", owner, spender, value, deadline, v, r, s)
    return await chain.token.send(chain.operator, call)


async def test_the_faucet_mints_on_the_dev_chain_up_to_its_limit(chain: Chain) -> None:
    taker = await chain.stranger()
    receipt = await chain.token.send(taker, chain.token.calldata("faucet", taker.address, LIMIT))
    [minted] = chain.token.events(receipt)
    assert (minted.name, minted.args) == (
        "Transfer",
        {"from": ZERO_ADDRESS, "to": taker.address, "value": LIMIT},
    )
    assert await chain.balance(taker.address) == LIMIT
    assert await chain.token.read_one("totalSupply") >= LIMIT
    assert await chain.reverts(
        chain.token.send(taker, chain.token.calldata("faucet", taker.address, LIMIT + 1))
    ) == err("FaucetLimitExceeded", requested=LIMIT + 1, limit=LIMIT)
    assert await chain.balance(taker.address) == LIMIT


@asynccontextmanager
async def token_on(chain_id: int) -> AsyncIterator[tuple[Contract, KeystoreSigner]]:
    """A DevToken on an anvil of its own with `chain_id`, and its funded deployer."""
    with Anvil(chain_id=chain_id) as other:
        async with Rpc(other.url) as rpc:
            assert await rpc.chain_id() == chain_id
            deployer = new_signer()
            await fund(rpc, deployer.address)
            yield (
                Contract(rpc, "DevToken", await deploy_contract(rpc, deployer, "DevToken")),
                deployer,
            )


async def test_the_faucet_is_disabled_on_any_other_chain() -> None:
    async with token_on(5151) as (token, taker):
        with pytest.raises(Reverted) as caught:
            await token.send(taker, token.calldata("faucet", taker.address, 10**18))
        assert caught.value.error == err("FaucetDisabled", chainId=5151)
        assert await token.read_one("balanceOf", taker.address) == 0
        assert await token.read_one("totalSupply") == 0


async def test_the_faucet_also_mints_on_chain_1337() -> None:
    async with token_on(1337) as (token, taker):
        await token.send(taker, token.calldata("faucet", taker.address, 10**18))
        assert await token.read_one("balanceOf", taker.address) == 10**18


async def test_a_permit_signed_by_the_owner_sets_the_allowance(
    chain: Chain, make_user: MakeUser
) -> None:
    user = await make_user(allowance=0, lease=False)
    spender = chain.payments.address
    deadline = await chain.now() + 3600
    receipt = await permit(chain, user.signer, user.address, spender, 12345, deadline)
    [approval] = chain.token.events(receipt)
    assert approval.args == {"owner": user.address, "spender": spender, "value": 12345}
    assert await chain.token.read_one("allowance", user.address, spender) == 12345
    assert await chain.token.read_one("nonces", user.address) == 1


async def test_a_permit_lets_the_platform_bill_a_user_who_never_sent_an_approval(
    chain: Chain, make_user: MakeUser
) -> None:
    user = await make_user(allowance=0)
    minute = 60 * RATES[H100]
    await permit(chain, user.signer, user.address, chain.payments.address, minute, 2**256 - 1)
    await chain.pay(user.charge(1, 60))
    assert await chain.balance(user.address) == 10**24 - minute
    assert await chain.token.read_one("allowance", user.address, chain.payments.address) == 0


async def test_a_permit_signed_by_anyone_else_expired_or_replayed_is_refused(
    chain: Chain, make_user: MakeUser
) -> None:
    user = await make_user(allowance=0, lease=False)
    thief = new_signer()
    spender = thief.address
    deadline = await chain.now() + 3600
    assert await chain.reverts(
        permit(chain, thief, user.address, spender, 10**24, deadline)
    ) == err("ERC2612InvalidSigner", signer=thief.address, owner=user.address)
    past = await chain.now() - 1
    assert await chain.reverts(permit(chain, user.signer, user.address, spender, 1, past)) == err(
        "ERC2612ExpiredSignature", deadline=past
    )
    # A permit used once cannot be used again: the nonce moved on.
    nonce = await chain.token.read_one("nonces", user.address)
    data = permit_data(
        chain.deployment.chain_id, chain.token.address, user.address, spender, 5, nonce, deadline
    )
    sig = user.signer.sign_typed_data(data)
    call = chain.token.calldata(
        "permit", user.address, spender, 5, deadline, sig[64], sig[:32], sig[32:64]
    )
    await chain.token.send(chain.operator, call)
    replayed = await chain.reverts(chain.token.send(chain.operator, call))
    assert replayed.name == "ERC2612InvalidSigner"
    assert replayed.args["owner"] == user.address and replayed.args["signer"] != user.address
    assert await chain.token.read_one("allowance", user.address, spender) == 5
