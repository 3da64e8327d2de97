"""`make up`'s chain: anvil started with its state in the data dir, the contracts deployed
once, the demo wallet funded, approved and capped, and a restart that reuses all of it; the
demo wallet linked to the demo account and made the CLI's wallet."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from openpod.adapters.chain import role
from openpod.cli.wallet import load_signer
from openpod.entry.chain import Wallet
from openpod.entry.devstack import (
    DEMO_CAP,
    DEMO_TOKENS,
    MAX_UINT256,
    DevChain,
    _demo,
    configure_demo_wallet,
    start_dev_chain,
)
from tests.entry.chain_support import has_code, keystore_address, read, rpc
from tests.support.platform import Api, ControlPlane


def demo_funds(chain: DevChain) -> tuple[int, int, int, tuple[int, int]]:
    """The demo wallet's ETH, token balance, allowance of payments, (spending cap, spent)."""
    url, config = chain.config.rpc_url, chain.config
    demo = chain.demo_wallet.address
    return (
        int(rpc(url, "eth_getBalance", demo, "latest"), 16),
        read(url, "DevToken", config.token, "balanceOf", demo),
        read(url, "DevToken", config.token, "allowance", demo, config.payments),
        read(url, "OpenPodPayments", config.payments, "budgets", demo),
    )


def nonces(chain: DevChain, data_dir: Path) -> dict[str, int]:
    """How many transactions the deployer and the demo wallet have sent."""
    return {
        name: int(
            rpc(
                chain.anvil.url,
                "eth_getTransactionCount",
                keystore_address(data_dir / f"{name}.json"),
                "latest",
            ),
            16,
        )
        for name in ("deployer", "demo-wallet")
    }


def check_ready(chain: DevChain, data_dir: Path) -> None:
    url, config = chain.anvil.url, chain.config
    assert config.rpc_url == url and config.chain_id == 31337
    assert json.loads((data_dir / "chain.json").read_text())["rpcUrl"] == url
    assert has_code(url, config.payments) and has_code(url, config.token)
    eth, tokens, allowance, cap = demo_funds(chain)
    assert eth > 0 and tokens == DEMO_TOKENS and allowance == MAX_UINT256 and cap == (DEMO_CAP, 0)
    hot = keystore_address(data_dir / "hot-wallet.json")
    assert read(url, "OpenPodPayments", config.payments, "hasRole", role("OPERATOR_ROLE"), hot)
    assert int(rpc(url, "eth_getBalance", hot, "latest"), 16) > 0
    # Set-up mined at once; afterwards anvil is back to a block a second (confirmations come).
    assert rpc(url, "anvil_getAutomine") is False
    assert rpc(url, "anvil_getIntervalMining") == 1


def test_dev_chain_deploys_once_reuses_its_state_and_redeploys_if_lost(tmp_path: Path) -> None:
    first = start_dev_chain(tmp_path)
    try:
        assert first.deployed
        check_ready(first, tmp_path)
        demo = tmp_path / "demo-wallet.json"
        assert keystore_address(demo) == first.demo_wallet.address
        for name in ("demo-wallet", "hot-wallet", "deployer"):
            assert (tmp_path / f"{name}.password").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "anvil.log").stat().st_size > 0
        sent = nonces(first, tmp_path)
        assert sent["deployer"] == 4 and sent["demo-wallet"] == 3  # 2 deploys + 2; 3 set-ups
    finally:
        first.anvil.stop()
    assert first.anvil.pid is None
    assert (tmp_path / "anvil-state.json").exists()  # written by anvil as it stopped

    # A restart finds the contracts in anvil's state: no deployment, only a new URL.
    again = start_dev_chain(tmp_path)
    try:
        assert not again.deployed
        assert again.config == dataclasses.replace(first.config, rpc_url=again.anvil.url)
        check_ready(again, tmp_path)
        assert nonces(again, tmp_path) == sent  # nobody sent anything
    finally:
        again.anvil.stop()

    # Without the state, chain.json names contracts this anvil does not have: deployed again,
    # by the same keys, and the same demo wallet funded again.
    (tmp_path / "anvil-state.json").unlink()
    fresh = start_dev_chain(tmp_path)
    try:
        assert fresh.deployed
        check_ready(fresh, tmp_path)
        assert fresh.demo_wallet.address == first.demo_wallet.address
    finally:
        fresh.anvil.stop()


def test_make_up_links_the_demo_wallet_and_the_cli_signs_leases_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_config = tmp_path / "cli"
    monkeypatch.setenv("OPENPOD_CONFIG_DIR", str(cli_config))
    monkeypatch.delenv("OPENPOD_WALLET_PASSWORD_FILE", raising=False)
    chain = start_dev_chain(tmp_path)
    plane = ControlPlane(tmp_path)  # the data dir `make up` gives it: chain.json, hot wallet
    try:
        plane.start()
        demo = _demo(plane.url, tmp_path / "demo.json")
        assert configure_demo_wallet(plane.url, demo["api_key"], chain.demo_wallet) is True
        with Api(plane.url, demo["api_key"]) as api:
            wallet = api.ok("GET", "/wallet")
        address = chain.demo_wallet.address
        assert wallet["address"] == address and wallet["addressProven"] is True
        assert int(wallet["cap"]) == DEMO_CAP and int(wallet["allowance"]) == MAX_UINT256
        config = json.loads((cli_config / "config.json").read_text())
        assert config["wallet_keystore"] == str(chain.demo_wallet.keystore.resolve())
        assert config["wallet_password_file"] == str(chain.demo_wallet.password_file.resolve())
        # What `openpod pod create` signs leases with: the demo key, its password from the
        # recorded file (a prompt would fail here: there is no terminal).
        assert load_signer(None, None).address == address
        # The next `make up` finds it linked: no sign-in again (the key is not decrypted).
        unreadable = Wallet(chain.demo_wallet.keystore, tmp_path / "missing", "demo wallet")
        assert configure_demo_wallet(plane.url, demo["api_key"], unreadable) is False
    finally:
        plane.stop()
        chain.anvil.stop()
