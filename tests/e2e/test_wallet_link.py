"""Wallets linked by Sign-In with Ethereum, through a real control plane whose chain is a real
anvil with openpod's contracts: every way a link must fail, payout wallets, and GET /wallet
against what the chain itself says.

The anvil runs chain id 1337 (a dev chain: the token's faucet works), not the 31337 that a
control plane without a chain expects, so the tests see that the configured chain counts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from openpod.adapters.chain import Charge, Contract, LeaseTerms, Rpc, hex_int
from openpod.adapters.signers import KeystoreSigner
from openpod.adapters.store import Database, WalletLink
from openpod.domain.siwe import SiweMessage
from openpod.settings import ChainConfig
from tests.support.chain import CATALOG_H100_RATE as RATE
from tests.support.chain import H100, WalletStack, fund, new_signer, wallet_stack
from tests.support.net import free_port
from tests.support.platform import Api, signup

CHAIN_ID = 1337
TOKEN = 10**18


def siwe(
    stack: WalletStack, signer: KeystoreSigner, issued: dict[str, Any], **changes: Any
) -> SiweMessage:
    """The message a well-behaved client signs for the `issued` nonce; `changes` break it."""
    fields: dict[str, Any] = {
        "domain": stack.domain,
        "address": signer.address,
        "statement": issued["statement"],
        "uri": f"http://{stack.domain}",
        "chain_id": issued["chainId"],
        "nonce": issued["nonce"],
        "issued_at": datetime.now(UTC),
    }
    fields.update(changes)
    return SiweMessage(**fields)


def signed(message: SiweMessage | str, signer: KeystoreSigner) -> dict[str, str]:
    text = message if isinstance(message, str) else message.text()
    return {"message": text, "signature": "0x" + signer.sign_message(text).hex()}


def new_nonce(api: Api, purpose: str = "account") -> dict[str, Any]:
    created: dict[str, Any] = api.ok("POST", "/wallet/nonce", json={"purpose": purpose})
    return created


def refused(api: Api, body: dict[str, str], status: int, *words: str) -> str:
    """POST /wallet/link fails with `status`, its detail naming every one of `words`."""
    response = api.post("/wallet/link", json=body)
    assert response.status_code == status, response.text
    detail: str = response.json()["detail"]
    for word in words:
        assert word in detail, detail
    return detail


@pytest.fixture(scope="module")
def stack() -> Iterator[WalletStack]:
    with wallet_stack(CHAIN_ID) as running:
        yield running


@pytest.fixture
async def rpc(stack: WalletStack) -> AsyncIterator[Rpc]:
    """The chain as this test leaves it is reverted after it."""
    async with Rpc(stack.anvil.url) as client:
        snapshot = await client.request("evm_snapshot")
        yield client
        assert await client.request("evm_revert", [snapshot]) is True


@pytest.fixture
def user(stack: WalletStack) -> Iterator[Api]:
    with signup(stack.plane.url, "user") as api:
        yield api


def wallet_of(api: Api) -> str | None:
    address: str | None = api.ok("GET", "/me")["walletAddress"]
    return address


def test_a_signed_message_links_the_wallet_once(stack: WalletStack, user: Api) -> None:
    nonce = new_nonce(user)
    assert nonce["purpose"] == "account" and nonce["chainId"] == CHAIN_ID
    assert stack.domain in nonce["domains"]
    assert len(nonce["nonce"]) >= 8 and nonce["nonce"].isalnum()
    lifetime = datetime.fromisoformat(nonce["expiresAt"]) - datetime.fromisoformat(
        nonce["issuedAt"]
    )
    assert lifetime == timedelta(minutes=10)
    signer = new_signer()
    body = signed(siwe(stack, signer, nonce), signer)
    linked = user.ok("POST", "/wallet/link", json=body)
    assert linked["address"] == signer.address and linked["purpose"] == "account"
    assert wallet_of(user) == signer.address
    wallet = user.ok("GET", "/wallet")
    assert wallet["address"] == signer.address and wallet["addressProven"] is True
    assert wallet["payoutWallet"] is None
    # The same signed message again is a replay: refused, and the wallet stays.
    refused(user, body, 409, "Nonce", nonce["nonce"], "used already")
    other = new_signer()
    refused(user, signed(siwe(stack, other, nonce), other), 409, "used already")
    assert wallet_of(user) == signer.address


def test_a_wallet_set_without_proof_is_shown_as_not_proven(user: Api) -> None:
    address = new_signer().address
    user.ok("PATCH", "/me", json={"walletAddress": address})
    wallet = user.ok("GET", "/wallet")
    assert wallet["address"] == address and wallet["addressProven"] is False


def test_a_message_signed_by_another_key_links_nothing(stack: WalletStack, user: Api) -> None:
    nonce = new_nonce(user)
    owner, impostor = new_signer(), new_signer()
    message = siwe(stack, owner, nonce)
    refused(user, signed(message, impostor), 400, "signature", impostor.address, owner.address)
    assert wallet_of(user) is None
    # Nothing changed: the nonce is still good for the wallet's real owner.
    user.ok("POST", "/wallet/link", json=signed(message, owner))
    assert wallet_of(user) == owner.address


def test_a_nonce_issued_to_another_account_is_refused(stack: WalletStack, user: Api) -> None:
    with signup(stack.plane.url, "mallory") as mallory:
        nonce = new_nonce(user)
        signer = new_signer()
        body = signed(siwe(stack, signer, nonce), signer)
        refused(mallory, body, 400, "Nonce", "not issued to this account")
        assert wallet_of(mallory) is None
        user.ok("POST", "/wallet/link", json=body)
        assert wallet_of(user) == signer.address
        assert wallet_of(mallory) is None


def test_expired_nonces_and_messages_are_refused(stack: WalletStack, user: Api) -> None:
    signer = new_signer()
    nonce = new_nonce(user)
    past = datetime.now(UTC) - timedelta(seconds=1)
    refused(
        user,
        signed(siwe(stack, signer, nonce, expiration_time=past), signer),
        400,
        "Expiration Time",
        "has passed",
    )
    future = datetime.now(UTC) + timedelta(minutes=10)
    refused(
        user,
        signed(siwe(stack, signer, nonce, issued_at=future), signer),
        400,
        "Issued At",
        "in the future",
    )
    refused(
        user,
        signed(siwe(stack, signer, nonce, not_before=future), signer),
        400,
        "Not Before",
    )
    # The nonce's own ten minutes: the row's expiry is moved into the past in the store.
    db = Database(f"sqlite:///{stack.root / 'openpod.db'}")
    try:
        with db.transaction() as session:
            session.execute(
                update(WalletLink)
                .where(WalletLink.nonce == nonce["nonce"])
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
    finally:
        db.dispose()
    refused(user, signed(siwe(stack, signer, nonce), signer), 400, "Nonce", "expired")
    assert wallet_of(user) is None


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"chain_id": 31337}, ("Chain ID", "31337", str(CHAIN_ID))),
        ({"chain_id": 1}, ("Chain ID",)),
        ({"domain": "evil.example", "uri": "https://evil.example"}, ("domain", "evil.example")),
        ({"domain": "127.0.0.1:1"}, ("domain",)),
        ({"uri": "https://evil.example/"}, ("URI", "evil.example")),
        ({"uri": "ftp://DOMAIN/"}, ("URI",)),
    ],
)
def test_a_message_for_another_chain_or_site_is_refused(
    stack: WalletStack, user: Api, changes: dict[str, Any], words: tuple[str, ...]
) -> None:
    changes = {k: v.replace("DOMAIN", stack.domain) if isinstance(v, str) else v
               for k, v in changes.items()}  # fmt: skip
    signer = new_signer()
    nonce = new_nonce(user)
    refused(user, signed(siwe(stack, signer, nonce, **changes), signer), 400, *words)
    assert wallet_of(user) is None


def test_loopback_aliases_of_the_servers_own_address_are_its_domain(
    stack: WalletStack, user: Api
) -> None:
    signer = new_signer()
    alias = f"localhost:{stack.plane.port}"
    message = siwe(stack, signer, new_nonce(user), domain=alias, uri=f"http://{alias}/")
    user.ok("POST", "/wallet/link", json=signed(message, signer))
    assert wallet_of(user) == signer.address


def test_malformed_requests_name_what_is_wrong(stack: WalletStack, user: Api) -> None:
    signer = new_signer()
    nonce = new_nonce(user)
    text = siwe(stack, signer, nonce).text()
    refused(user, signed(text.replace("Version: 1", "Version: 2"), signer), 400, "Version")
    refused(user, signed(text.replace("\nNonce:", "\nNonse:"), signer), 400, "Nonce")
    lower = text.replace(signer.address, signer.address.lower())
    refused(user, signed(lower, signer), 400, "address", "EIP-55", signer.address)
    refused(user, {"message": text, "signature": "0x1234"}, 400, "signature", "65 bytes")
    refused(user, {"message": text, "signature": "0x" + "00" * 65}, 400, "signature")
    unknown = siwe(stack, signer, nonce, nonce="NeverIssued123")
    refused(user, signed(unknown, signer), 400, "not issued to this account")
    response = user.post("/wallet/nonce", json={"purpose": "savings"})
    assert response.status_code == 422 and "purpose" in response.text
    anonymous = Api(stack.plane.url)
    with anonymous:
        assert anonymous.post("/wallet/nonce", json={}).status_code == 401
        assert anonymous.post("/wallet/link", json=signed(text, signer)).status_code == 401
        assert anonymous.get("/wallet").status_code == 401
    # After all that the nonce is unspent and the wallet unlinked until a good message comes.
    assert wallet_of(user) is None
    user.ok("POST", "/wallet/link", json=signed(text, signer))
    assert wallet_of(user) == signer.address


def test_a_provider_links_its_payout_wallet_and_others_cannot(
    stack: WalletStack, user: Api
) -> None:
    response = user.post("/wallet/nonce", json={"purpose": "payout"})
    assert response.status_code == 403 and "not a provider" in response.json()["detail"]
    with signup(stack.plane.url, "provider") as provider:
        unproven = new_signer().address
        provider.ok("POST", "/providers", json={"payoutWallet": unproven})
        assert provider.ok("GET", "/wallet")["payoutProven"] is False
        signer = new_signer()
        nonce = new_nonce(provider, "payout")
        assert nonce["purpose"] == "payout"
        provider.ok("POST", "/wallet/link", json=signed(siwe(stack, signer, nonce), signer))
        wallet = provider.ok("GET", "/wallet")
        assert wallet["payoutWallet"] == signer.address and wallet["payoutProven"] is True
        assert wallet["address"] is None  # the account wallet is another purpose
        # A nonce for the account wallet never sets the payout wallet.
        other = new_signer()
        provider.ok(
            "POST", "/wallet/link", json=signed(siwe(stack, other, new_nonce(provider)), other)
        )
        wallet = provider.ok("GET", "/wallet")
        assert wallet["address"] == other.address and wallet["payoutWallet"] == signer.address


async def test_get_wallet_reads_balance_allowance_cap_and_spent_from_the_chain(
    stack: WalletStack, user: Api, rpc: Rpc
) -> None:
    empty = user.ok("GET", "/wallet")
    assert empty["chainId"] == CHAIN_ID and empty["address"] is None
    assert empty["balance"] is None and empty["cap"] is None
    signer = new_signer()
    user.ok("POST", "/wallet/link", json=signed(siwe(stack, signer, new_nonce(user)), signer))
    fresh = user.ok("GET", "/wallet")
    assert (fresh["balance"], fresh["allowance"], fresh["cap"], fresh["spent"]) == ("0",) * 4

    d = stack.deployment
    token = Contract(rpc, "DevToken", d.token)
    payments = Contract(rpc, "OpenPodPayments", d.payments)
    await fund(rpc, signer.address)
    await token.send(signer, token.calldata("faucet", signer.address, 1000 * TOKEN))
    await token.send(signer, token.calldata("approve", d.payments, 250 * TOKEN))
    await payments.send(signer, payments.calldata("setSpendingCap", 200 * TOKEN))
    # Something is spent: a lease the user signs, and one minute of it paid by the operator.
    now = hex_int((await rpc.block("latest") or {})["timestamp"])
    provider = new_signer().address
    lease = LeaseTerms("podwallet0001", 1, signer.address, provider, H100, 1, RATE, now - 3600)
    signature = signer.sign_typed_data(lease.typed_data(d.chain_id, d.payments))
    await payments.send(stack.admin, payments.calldata("openLease", lease.as_tuple(), signature))
    charge = Charge(1, lease.lease_id, signer.address, provider, 60, H100, 1)
    await payments.send(stack.admin, payments.calldata("payment", *charge.as_tuple()))

    wallet = user.ok("GET", "/wallet")
    cap, spent = await payments.read("budgets", signer.address)
    on_chain = {
        "balance": await token.read_one("balanceOf", signer.address),
        "allowance": await token.read_one("allowance", signer.address, d.payments),
        "cap": cap,
        "spent": spent,
    }
    assert {k: int(wallet[k]) for k in on_chain} == on_chain
    assert on_chain == {
        "balance": 1000 * TOKEN - 60 * RATE,
        "allowance": 250 * TOKEN - 60 * RATE,
        "cap": 200 * TOKEN,
        "spent": 60 * RATE,
    }
    assert wallet["chainId"] == CHAIN_ID and wallet["tokenDecimals"] == 18


def test_get_wallet_answers_503_while_the_rpc_is_down(stack: WalletStack, user: Api) -> None:
    signer = new_signer()
    user.ok("POST", "/wallet/link", json=signed(siwe(stack, signer, new_nonce(user)), signer))
    dead = f"http://127.0.0.1:{free_port()}"
    ChainConfig(dead, CHAIN_ID, stack.deployment.token, stack.deployment.payments).save(
        stack.chain_file
    )
    try:
        response = user.get("/wallet")
        assert response.status_code == 503, response.text
        assert "RPC" in response.json()["detail"] and dead in response.json()["detail"]
    finally:
        stack.config.save(stack.chain_file)
    assert user.ok("GET", "/wallet")["balance"] == "0"
