"""`openpod chain deploy | info | new-wallet` against real anvil chains: a development one
(31337, DevToken deployed) and one with another chain id (5151), where a token must be named.

One deployment per module; every test runs between an evm_snapshot and an evm_revert."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from sqlalchemy import select
from typer.testing import CliRunner

from openpod.adapters.chain import Anvil, Rpc, role, short_bytes32
from openpod.adapters.chain.contracts import deploy_contract
from openpod.adapters.signers import KeystoreSigner
from openpod.adapters.store import Database, GpuType, migrate
from openpod.entry import chain
from tests.entry.chain_support import fast_keystore, has_code, keystore_address, read, rpc
from tests.support.net import free_port
from tests.support.platform import ControlPlane

LONG_GPU = "NVIDIA RTX PRO 6000 Blackwell Server Edition"  # > 32 bytes: keccak256 on-chain
LONG_GPU_RATE = 123_456_789_012


def invoke(*args: str | Path) -> Any:
    """`openpod chain ARGS...` (stdout and stderr kept apart)."""
    return CliRunner().invoke(chain.app, [str(a) for a in args])


def catalog(data_dir: Path) -> dict[str, int]:
    db = Database(f"sqlite:///{data_dir / 'openpod.db'}")
    try:
        with db.transaction(readonly=True) as session:
            return {t.id: int(t.rate_per_second) for t in session.scalars(select(GpuType))}
    finally:
        db.dispose()


@dataclass
class Deployed:
    url: str
    data_dir: Path
    config: dict[str, Any]
    stdout: str


@pytest.fixture(scope="module")
def dev() -> Iterator[Anvil]:
    with Anvil() as anvil:
        yield anvil


@pytest.fixture(scope="module")
def other() -> Iterator[Anvil]:
    with Anvil(chain_id=5151) as anvil:
        yield anvil


@pytest.fixture(scope="module")
def other_token(other: Anvil) -> str:
    """An ERC-20 already on chain 5151 (a DevToken, deployed by someone else)."""
    someone = KeystoreSigner(bytes(Account.create().key))
    rpc(other.url, "anvil_setBalance", someone.address, hex(10**20))

    async def go() -> str:
        async with Rpc(other.url) as client:
            return await deploy_contract(client, someone, "DevToken")

    return asyncio.run(go())


@pytest.fixture(scope="module")
def deployed(dev: Anvil, tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    """`openpod chain deploy` on the dev chain with keystores made for it, a fee of 750 bps and
    one GPU type added to the catalog whose name does not fit a bytes32."""
    data_dir = tmp_path_factory.mktemp("plane")
    url = f"sqlite:///{data_dir / 'openpod.db'}"
    migrate(url)
    db = Database(url)
    with db.transaction() as session:
        session.add(
            GpuType(
                id=LONG_GPU,
                display_name="RTX PRO 6000",
                memory_gb=96,
                rate_per_second=LONG_GPU_RATE,
            )
        )
    db.dispose()
    result = invoke("deploy", "--rpc-url", dev.url, "--data-dir", data_dir, "--fee-bps", "750")
    assert result.exit_code == 0, result.output
    config = json.loads((data_dir / "chain.json").read_text())
    return Deployed(dev.url, data_dir, config, result.stdout)


@pytest.fixture(autouse=True)
def fresh_chains(dev: Anvil, other: Anvil, other_token: str, deployed: Deployed) -> Iterator[None]:
    snapshots = [(anvil.url, rpc(anvil.url, "evm_snapshot")) for anvil in (dev, other)]
    yield
    for url, snapshot in snapshots:
        assert rpc(url, "evm_revert", snapshot) is True


def nothing_written(data_dir: Path) -> None:
    assert not (data_dir / "chain.json").exists()


# ---- deploy ---------------------------------------------------------------------------------


def test_deploy_writes_chain_json_whose_contracts_have_code(deployed: Deployed) -> None:
    config, url = deployed.config, deployed.url
    assert config["rpcUrl"] == url
    assert config["chainId"] == 31337
    assert has_code(url, config["token"]) and has_code(url, config["payments"])
    assert read(url, "OpenPodPayments", config["payments"], "token") == config["token"]
    assert read(url, "DevToken", config["token"], "symbol") == "oUSD"
    # fromBlock is the block the payments contract was created in: no code the block before.
    block = config["fromBlock"]
    assert has_code(url, config["payments"], hex(block))
    assert not has_code(url, config["payments"], hex(block - 1))
    assert config["payments"] in deployed.stdout


def test_deploy_sets_every_catalog_rate(deployed: Deployed) -> None:
    rates = catalog(deployed.data_dir)
    assert rates[LONG_GPU] == LONG_GPU_RATE and len(rates) > 5
    payments = deployed.config["payments"]
    on_chain = {
        gpu: read(deployed.url, "OpenPodPayments", payments, "rates", short_bytes32(gpu))
        for gpu in rates
    }
    assert on_chain == rates


def test_deploy_grants_roles_and_sets_fee_and_treasury(deployed: Deployed) -> None:
    url, payments, data_dir = deployed.url, deployed.config["payments"], deployed.data_dir
    hot = keystore_address(data_dir / "hot-wallet.json")
    admin = keystore_address(data_dir / "deployer.json")
    assert read(url, "OpenPodPayments", payments, "hasRole", role("OPERATOR_ROLE"), hot)
    assert read(url, "OpenPodPayments", payments, "hasRole", role("DEFAULT_ADMIN_ROLE"), admin)
    assert not read(url, "OpenPodPayments", payments, "hasRole", role("OPERATOR_ROLE"), admin)
    assert read(url, "OpenPodPayments", payments, "feeBps") == 750
    assert read(url, "OpenPodPayments", payments, "treasury") == admin
    # On a dev chain the keystores were made, each with a 0600 password file, and funded.
    for name in ("hot-wallet", "deployer"):
        assert (data_dir / f"{name}.json").stat().st_mode & 0o777 == 0o600
        password_file = data_dir / f"{name}.password"
        assert password_file.stat().st_mode & 0o777 == 0o600
        assert password_file.read_text().strip() not in deployed.stdout
    assert int(rpc(url, "eth_getBalance", hot, "latest"), 16) > 0


def test_deploy_refuses_to_replace_a_live_deployment(deployed: Deployed, tmp_path: Path) -> None:
    data_dir = tmp_path / "copy"
    shutil.copytree(deployed.data_dir, data_dir)
    before = (data_dir / "chain.json").read_text()
    refused = invoke("deploy", "--rpc-url", deployed.url, "--data-dir", data_dir)
    assert refused.exit_code == 2
    assert "names a live deployment on chain 31337" in refused.stderr
    assert "--force" in refused.stderr
    assert (data_dir / "chain.json").read_text() == before

    forced = invoke(
        "deploy", "--rpc-url", deployed.url, "--data-dir", data_dir, "--force", "--json"
    )
    assert forced.exit_code == 0, forced.output
    config = json.loads(forced.stdout)
    assert config == json.loads((data_dir / "chain.json").read_text())
    assert config["payments"] != deployed.config["payments"]
    assert has_code(deployed.url, config["payments"])


def test_unreachable_rpc_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "openpod", "chain", "deploy", "--rpc-url", url,
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"error: cannot reach the chain's RPC at {url}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert list(tmp_path.iterdir()) == []  # no keystore, no database, no chain.json


def test_rpc_url_secrets_stay_out_of_errors(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v2/my-api-key"
    result = invoke("deploy", "--rpc-url", url, "--data-dir", tmp_path)
    assert result.exit_code == 1
    assert "my-api-key" not in result.output
    assert "cannot reach the chain's RPC at http://127.0.0.1:" in result.stderr


def test_fee_above_the_contracts_maximum_fails_before_any_rpc(tmp_path: Path) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    result = invoke("deploy", "--rpc-url", unreachable, "--data-dir", tmp_path, "--fee-bps", "2001")
    assert result.exit_code == 2
    assert "--fee-bps 2001 is out of range: the contract allows 0 to 2000" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_addresses_are_usage_errors(dev: Anvil, tmp_path: Path) -> None:
    result = invoke("deploy", "--rpc-url", dev.url, "--data-dir", tmp_path, "--treasury", "0x12")
    assert result.exit_code == 2
    assert "--treasury '0x12' is not an address" in result.stderr
    nothing_written(tmp_path)


def test_non_dev_chain_without_token_says_token_is_required(other: Anvil, tmp_path: Path) -> None:
    result = invoke("deploy", "--rpc-url", other.url, "--data-dir", tmp_path)
    assert result.exit_code == 2
    assert "chain 5151 is not a development chain" in result.stderr
    assert "--token ADDRESS" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_token_without_code_is_refused(other: Anvil, tmp_path: Path) -> None:
    nowhere = "0x" + "de" * 20
    result = invoke("deploy", "--rpc-url", other.url, "--data-dir", tmp_path, "--token", nowhere)
    assert result.exit_code == 2
    assert "has no contract code on chain 5151" in result.stderr
    nothing_written(tmp_path)


def test_token_decimals_must_be_the_control_planes(
    other: Anvil, other_token: str, tmp_path: Path
) -> None:
    args = ["deploy", "--rpc-url", other.url, "--data-dir", str(tmp_path), "--token", other_token]
    result = CliRunner().invoke(chain.app, args, env={"OPENPOD_TOKEN_DECIMALS": "6"})
    assert result.exit_code == 2
    assert (
        f"the token {other_token} has 18 decimals, the control plane counts in 6" in result.stderr
    )
    assert list(tmp_path.iterdir()) == []


def test_empty_deployer_is_named_and_nothing_is_sent(
    other: Anvil, other_token: str, tmp_path: Path
) -> None:
    keystore, password_file, address, _ = fast_keystore(tmp_path, "deployer")
    operator = Account.create().address
    result = invoke(
        "deploy", "--rpc-url", other.url, "--data-dir", tmp_path, "--token", other_token,
        "--deployer-keystore", keystore, "--deployer-password-file", password_file,
        "--operator", operator,
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"the deployer {address} has no ETH on chain 5151" in result.stderr
    assert rpc(other.url, "eth_getTransactionCount", address, "latest") == "0x0"
    nothing_written(tmp_path)


def test_missing_deployer_keystore_off_dev_chains_is_not_made(
    other: Anvil, other_token: str, tmp_path: Path
) -> None:
    result = invoke(
        "deploy", "--rpc-url", other.url, "--data-dir", tmp_path, "--token", other_token
    )
    assert result.exit_code == 1
    assert f"the deployer keystore {tmp_path / 'deployer.json'} does not exist" in result.stderr
    assert "openpod chain new-wallet" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_wrong_deployer_password_is_clear_and_not_shown(
    other: Anvil, other_token: str, tmp_path: Path
) -> None:
    keystore, password_file, address, _ = fast_keystore(tmp_path, "deployer")
    rpc(other.url, "anvil_setBalance", address, hex(10**19))
    password_file.write_text("not-the-password\n")
    result = invoke(
        "deploy", "--rpc-url", other.url, "--data-dir", tmp_path, "--token", other_token,
        "--deployer-keystore", keystore, "--deployer-password-file", password_file,
        "--operator", Account.create().address,
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"wrong password for keystore {keystore}" in result.stderr
    assert "not-the-password" not in result.output
    nothing_written(tmp_path)


def test_deploy_on_a_non_dev_chain_uses_the_given_token(
    other: Anvil, other_token: str, tmp_path: Path
) -> None:
    keystore, password_file, address, key = fast_keystore(tmp_path, "deployer")
    rpc(other.url, "anvil_setBalance", address, hex(10**19))
    _, _, hot_address, _ = fast_keystore(tmp_path, "hot-wallet")  # the default operator
    treasury = Account.create().address
    result = invoke(
        "deploy", "--rpc-url", other.url, "--data-dir", tmp_path, "--token", other_token,
        "--deployer-keystore", keystore, "--deployer-password-file", password_file,
        "--treasury", treasury, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "chain.json").read_text())
    assert json.loads(result.stdout) == config
    assert config["chainId"] == 5151 and config["token"] == other_token
    payments = config["payments"]
    assert read(other.url, "OpenPodPayments", payments, "token") == other_token
    assert read(other.url, "OpenPodPayments", payments, "treasury") == treasury
    assert read(other.url, "OpenPodPayments", payments, "feeBps") == 500
    assert read(
        other.url, "OpenPodPayments", payments, "hasRole", role("OPERATOR_ROLE"), hot_address
    )
    # Nobody funds anything off dev chains: an operator without gas is a warning.
    assert f"warning: the operator {hot_address} has no ETH on chain 5151" in result.stderr
    assert int(rpc(other.url, "eth_getBalance", hot_address, "latest"), 16) == 0
    for secret in (password_file.read_text().strip(), key.hex()):
        assert secret not in result.output


# ---- info -----------------------------------------------------------------------------------


def test_info_json_prints_the_deployment(deployed: Deployed) -> None:
    result = invoke("info", "--data-dir", deployed.data_dir, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == deployed.config
    human = invoke("info", "--data-dir", deployed.data_dir)
    assert human.exit_code == 0
    assert deployed.config["payments"] in human.stdout and deployed.url in human.stdout


def test_info_check_finds_the_contracts(deployed: Deployed) -> None:
    result = invoke("info", "--data-dir", deployed.data_dir, "--check", "--json")
    assert result.exit_code == 0, result.output
    check = json.loads(result.stdout)["check"]
    assert check["problems"] == []
    assert check["chainId"] == 31337
    assert check["tokenHasCode"] and check["paymentsHasCode"]
    assert check["feeBps"] == 750
    assert check["hotWalletIsOperator"] is True


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"payments": "0x" + "ab" * 20}, "no contract code at the payments address"),
        ({"chainId": 1}, "the RPC is on chain 31337, the config says 1"),
        ({"rpcUrl": f"http://127.0.0.1:{free_port()}/k"}, "cannot ask the chain at http://127"),
    ],
)
def test_info_check_reports_a_mismatch(
    deployed: Deployed, tmp_path: Path, change: dict[str, Any], problem: str
) -> None:
    (tmp_path / "chain.json").write_text(json.dumps({**deployed.config, **change}))
    result = invoke("info", "--data-dir", tmp_path, "--check")
    assert result.exit_code == 1
    assert f"mismatch: {problem}" in result.stderr


def test_info_without_a_deployment_fails_clearly(tmp_path: Path) -> None:
    result = invoke("info", "--data-dir", tmp_path)
    assert result.exit_code == 1
    assert f"no chain deployment: {tmp_path / 'chain.json'} does not exist" in result.stderr
    (tmp_path / "chain.json").write_text("{not json")
    broken = invoke("info", "--data-dir", tmp_path, "--json")
    assert broken.exit_code == 1
    assert "is unreadable" in broken.stderr and broken.stdout == ""


def test_new_wallet_makes_a_keystore_once(tmp_path: Path) -> None:
    keystore, password_file = tmp_path / "w.json", tmp_path / "w.password"
    result = invoke("new-wallet", "--keystore", keystore, "--password-file", password_file)
    assert result.exit_code == 0, result.output
    address = result.stdout.strip()
    assert keystore_address(keystore) == address
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert keystore.stat().st_mode & 0o777 == 0o600
    assert password_file.read_text().strip() not in result.output
    again = invoke("new-wallet", "--keystore", keystore, "--password-file", password_file)
    assert again.exit_code == 1
    assert f"exists already (address {address})" in again.stderr


# ---- GET /chain -----------------------------------------------------------------------------


def test_get_chain_answers_the_deployment_or_404(deployed: Deployed, tmp_path: Path) -> None:
    paying = ControlPlane(deployed.data_dir)  # finds chain.json and the hot wallet there
    not_paying = ControlPlane(tmp_path)
    planes = (paying, not_paying)
    try:
        with ThreadPoolExecutor(2) as pool:  # each takes seconds to start: side by side
            list(pool.map(ControlPlane.start, planes))
        answer, off = (httpx.get(f"{plane.url}/chain") for plane in planes)  # no API key
    finally:
        for plane in planes:
            plane.stop()
    assert answer.status_code == 200, answer.text
    config = deployed.config
    assert answer.json() == {
        "rpcUrl": config["rpcUrl"],
        "chainId": 31337,
        "token": config["token"],
        "payments": config["payments"],
        "tokenDecimals": 18,
    }
    assert off.status_code == 404
    assert "on-chain payments are off" in off.json()["detail"]
