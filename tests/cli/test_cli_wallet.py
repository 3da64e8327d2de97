"""``openpod wallet``: create, link, approve and status against a real control plane and a real
anvil with openpod's contracts (`wallet_stack`, as tests/e2e/test_wallet_link.py uses)."""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from openpod.adapters.chain import Contract, Rpc, hex_int
from openpod.cli.app import app
from openpod.cli.wallet import WalletError, format_units, parse_units
from openpod.settings import ChainConfig
from tests.support.chain import WalletStack, fund, light_keystore, wallet_stack
from tests.support.net import free_port
from tests.support.platform import Api, signup

TOKEN = 10**18
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def stack() -> Iterator[WalletStack]:
    with wallet_stack() as running:
        yield running


@pytest.fixture
async def rpc(stack: WalletStack) -> AsyncIterator[Rpc]:
    async with Rpc(stack.anvil.url) as client:
        snapshot = await client.request("evm_snapshot")
        yield client
        assert await client.request("evm_revert", [snapshot]) is True


@pytest.fixture
def user(stack: WalletStack, config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """A new account; the CLI is configured (by environment) with its API key."""
    with signup(stack.plane.url, "cli-user") as api:
        monkeypatch.setenv("OPENPOD_API_URL", stack.plane.url)
        monkeypatch.setenv("OPENPOD_API_KEY", api.headers["Authorization"].split()[1])
        yield api


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture
def created(
    user: Api, config_dir: Path, password_file: Path, cli: Callable[..., Any]
) -> tuple[str, Path]:
    """`openpod wallet create` with the default keystore path: (address, keystore)."""
    result = cli("wallet", "create", "--password-file", str(password_file), "--json")
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    return made["address"], Path(made["keystore"])


def test_create_writes_an_encrypted_0600_keystore_and_records_it(
    created: tuple[str, Path], config_dir: Path, password_file: Path, cli: Callable[..., Any]
) -> None:
    address, keystore = created
    assert keystore == config_dir / "wallet.json"
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    data = json.loads(keystore.read_text())
    assert "crypto" in data and data["address"].lower() == address[2:].lower()
    assert PASSWORD not in keystore.read_text()
    config = json.loads((config_dir / "config.json").read_text())
    assert config["wallet_keystore"] == str(keystore)
    again = cli("wallet", "create", "--password-file", str(password_file))
    assert again.exit_code == 1 and f"you have a wallet already ({keystore})" in again.stderr
    explicit = cli("wallet", "create", "--keystore", str(keystore))
    assert explicit.exit_code == 1 and "exists already" in explicit.stderr
    assert json.loads(keystore.read_text()) == data


def test_create_prompts_for_the_password_without_echoing_it(
    config_dir: Path, tmp_path: Path
) -> None:
    keystore = tmp_path / "elsewhere" / "w.json"
    runner = CliRunner()
    result = runner.invoke(
        app, ["wallet", "create", "--keystore", str(keystore)], input="s3cret-pw\ns3cret-pw\n"
    )
    assert result.exit_code == 0, result.output
    assert "s3cret-pw" not in result.output
    assert "Keystore password" in result.output
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    recorded = json.loads((config_dir / "config.json").read_text())["wallet_keystore"]
    assert recorded == str(keystore)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    refused = runner.invoke(
        app, ["wallet", "create", "--keystore", str(tmp_path / "x.json"), "--password-file",
              str(empty)],
    )  # fmt: skip
    assert refused.exit_code == 1 and "password is empty" in refused.stderr
    assert not (tmp_path / "x.json").exists()


def test_link_signs_in_with_the_keystore_and_links_the_wallet(
    created: tuple[str, Path], user: Api, password_file: Path, cli: Callable[..., Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    address, _ = created
    other = tmp_path / "other.json"
    light_keystore(other, PASSWORD)
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    bad = cli("wallet", "link", "--keystore", str(other), "--password-file", str(wrong))
    assert bad.exit_code == 1 and "wrong password" in bad.stderr
    assert user.ok("GET", "/me")["walletAddress"] is None
    unlinked = cli("wallet", "status")
    assert unlinked.exit_code == 0, unlinked.output
    assert "wallet     none (run `openpod wallet link`)" in unlinked.stdout.splitlines()
    assert "balance    -" in unlinked.stdout.splitlines()
    result = cli("wallet", "link", "--password-file", str(password_file))
    assert result.exit_code == 0, result.output
    assert f"linked {address} as your account wallet" in result.stdout
    wallet = user.ok("GET", "/wallet")
    assert wallet["address"] == address and wallet["addressProven"] is True
    # Not a provider: no payout wallet to link (403 → exit code 4).
    payout = cli("wallet", "link", "--payout", "--password-file", str(password_file))
    assert payout.exit_code == 4 and "not a provider" in payout.stderr
    missing = cli("wallet", "link", "--keystore", str(tmp_path / "none.json"))
    assert missing.exit_code == 1 and "openpod wallet create" in missing.stderr


def test_a_provider_links_its_payout_wallet(
    stack: WalletStack, user: Api, tmp_path: Path, password_file: Path, cli: Callable[..., Any]
) -> None:
    keystore = tmp_path / "payout.json"
    signer = light_keystore(keystore, PASSWORD)
    user.ok("POST", "/providers", json={"payoutWallet": "0x" + "11" * 20})
    result = cli(
        "wallet", "link", "--payout", "--keystore", str(keystore),
        "--password-file", str(password_file), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["purpose"] == "payout"
    wallet = user.ok("GET", "/wallet")
    assert wallet["payoutWallet"] == signer.address and wallet["payoutProven"] is True
    assert wallet["address"] is None


async def test_approve_sets_allowance_and_cap_and_status_shows_them(
    stack: WalletStack, user: Api, rpc: Rpc, tmp_path: Path, password_file: Path,
    cli: Callable[..., Any],
) -> None:  # fmt: skip
    keystore = tmp_path / "w.json"
    signer = light_keystore(keystore, PASSWORD)
    ks = ("--keystore", str(keystore), "--password-file", str(password_file))
    assert cli("wallet", "link", *ks).exit_code == 0
    d = stack.deployment
    token = Contract(rpc, "DevToken", d.token)
    payments = Contract(rpc, "OpenPodPayments", d.payments)
    await fund(rpc, signer.address)
    await token.send(signer, token.calldata("faucet", signer.address, 1000 * TOKEN))

    result = cli("wallet", "approve", "12.5", *ks, "--json")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["amount"] == str(125 * TOKEN // 10) and done["address"] == signer.address
    for tx_hash, to in ((done["approveTx"], d.token), (done["capTx"], d.payments)):
        receipt = await rpc.receipt(tx_hash)
        assert receipt is not None and hex_int(receipt["status"]) == 1
        assert receipt["to"].lower() == to.lower()
    assert await token.read_one("allowance", signer.address, d.payments) == 125 * TOKEN // 10
    assert await payments.read("budgets", signer.address) == (125 * TOKEN // 10, 0)

    shown = cli("wallet", "status")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert f"wallet     {signer.address} (proven)" in lines
    assert "chain      1337" in lines
    assert "balance    1000 tokens" in lines
    assert "allowance  12.5 tokens" in lines
    assert "cap        12.5 tokens" in lines
    assert "spent      0 tokens" in lines
    as_json = cli("wallet", "status", "--json")
    assert json.loads(as_json.stdout) == user.ok("GET", "/wallet")


async def test_approve_refuses_bad_amounts_and_a_wallet_without_eth(
    stack: WalletStack, user: Api, rpc: Rpc, tmp_path: Path, password_file: Path,
    cli: Callable[..., Any],
) -> None:  # fmt: skip
    keystore = tmp_path / "poor.json"
    signer = light_keystore(keystore, PASSWORD)
    ks = ("--keystore", str(keystore), "--password-file", str(password_file))
    for amount, words in (
        ("12.5.1", "no amount"),
        ("1e3", "no amount"),
        ("0." + "0" * 18 + "1", "more decimals than the token's 18"),
    ):
        result = cli("wallet", "approve", amount, *ks)
        assert result.exit_code in (1, 2), result.output
        assert words in result.stderr, result.stderr
    poor = cli("wallet", "approve", "5", *ks)
    assert poor.exit_code == 1
    assert f"wallet {signer.address} has not enough ETH" in poor.stderr
    assert await rpc.nonce(signer.address) == 0
    d = stack.deployment
    token = Contract(rpc, "DevToken", d.token)
    assert await token.read_one("allowance", signer.address, d.payments) == 0
    # The RPC that GET /chain names is down: said so, with its URL.
    dead = f"http://127.0.0.1:{free_port()}"
    ChainConfig(dead, d.chain_id, d.token, d.payments).save(stack.chain_file)
    try:
        down = cli("wallet", "approve", "5", *ks)
    finally:
        stack.config.save(stack.chain_file)
    assert down.exit_code == 1 and f"cannot reach the chain's RPC at {dead}" in down.stderr


def test_token_amounts_convert_exactly() -> None:
    assert parse_units("250", 18) == 250 * TOKEN
    assert parse_units("12.5", 18) == 125 * TOKEN // 10
    assert parse_units("0.000000000000000001", 18) == 1
    assert parse_units("1.10", 1) == 11  # trailing zeros are no extra decimals
    assert parse_units("7", 0) == 7
    assert parse_units("123456789012345678901234567890.123456789012345678", 18) == (
        123456789012345678901234567890123456789012345678
    )
    for bad in ("", ".5", "5.", "1,5", " ", "-1", "0x10", "nan"):
        with pytest.raises(WalletError, match="no amount"):
            parse_units(bad, 18)
    with pytest.raises(WalletError, match="uint256"):
        parse_units(str(2**256), 0)
    assert format_units(125 * TOKEN // 10, 18) == "12.5"
    assert format_units(1, 18) == "0.000000000000000001"
    assert format_units(0, 18) == "0" and format_units(42, 0) == "42"
