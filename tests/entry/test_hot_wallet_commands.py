"""`openpod wallet hot init|show` and `openpod wallet breaker open|close|status`, run as the
operator runs them: `python -m openpod` in a subprocess, with a real SoftHSM2 token of its own
(the PIN in a file or OPENPOD_HSM_PIN, never on the command line), a real anvil for the chain
and the control plane's SQLite database. The PIN appears in no output of any run.

Refusals that come before any key or database is touched run in this process (typer's
CliRunner): a subprocess costs ~2 s of imports."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from openpod.adapters.chain import Anvil, role
from openpod.entry import hot_wallet
from tests.entry.chain_support import keystore_address, rpc
from tests.support.hsm import SoftHsmToken, make_token
from tests.support.net import free_port

ANY_TOKEN = "0x" + "11" * 20
ANY_PAYMENTS = "0x" + "22" * 20


@dataclass
class Plane:
    """A control plane's data dir whose hot wallet key is in a SoftHSM2 token."""

    root: Path
    token: SoftHsmToken
    address: str
    init_stdout: str

    def env(self, **extra: str) -> dict[str, str]:
        pin_file = self.root / "pin"
        return {
            **self.token.env(),
            "OPENPOD_DATA_DIR": str(self.root / "plane"),
            "OPENPOD_HOT_WALLET_SIGNER": "hsm",
            "OPENPOD_HSM_TOKEN_LABEL": self.token.label,
            "OPENPOD_HSM_PIN_FILE": str(pin_file),
            **extra,
        }


def openpod(env: dict[str, str], *args: str, secret: str = "") -> subprocess.CompletedProcess[str]:
    """`openpod ARGS...` with `env` over a clean environment; `secret` must not be printed."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENPOD_", "SOFTHSM"))}
    done = subprocess.run(
        [sys.executable, "-m", "openpod", *args],
        env={**clean, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    if secret:
        assert secret not in done.stdout + done.stderr
    return done


def write_chain(data_dir: Path, rpc_url: str, chain_id: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    chain = {"rpcUrl": rpc_url, "chainId": chain_id, "token": ANY_TOKEN, "payments": ANY_PAYMENTS}
    (data_dir / "chain.json").write_text(json.dumps(chain))


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    with Anvil() as chain:
        yield chain


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Plane:
    """`openpod wallet hot init --hsm` once, the PIN read from a file."""
    root = tmp_path_factory.mktemp("hsm-plane")
    token = make_token(root)
    (root / "pin").write_text(token.pin + "\n")
    made = Plane(root, token, "", "")
    done = openpod(made.env(), "wallet", "hot", "init", "--hsm", secret=token.pin)
    assert done.returncode == 0, done.stderr
    made.init_stdout = done.stdout
    made.address = done.stdout.split()[2].rstrip(":")
    return made


def test_init_makes_the_key_in_the_token_once(plane: Plane) -> None:
    assert plane.address.startswith("0x") and len(plane.address) == 42
    assert "OPENPOD_HOT_WALLET_SIGNER=hsm" in plane.init_stdout
    assert f"--operator {plane.address}" in plane.init_stdout  # how to grant OPERATOR_ROLE
    pin = plane.token.pin
    again = openpod(plane.env(), "wallet", "hot", "init", "--hsm", "--json", secret=pin)
    assert again.returncode == 1
    assert again.stdout == ""
    assert again.stderr.strip().splitlines() == [
        f"error: key 'openpod-hot-wallet' in token '{plane.token.label}' "
        "(/usr/lib/softhsm/libsofthsm2.so) exists already"
    ]
    # The PIN from OPENPOD_HSM_PIN works too and finds the one key made (no chain: no DB).
    env = {k: v for k, v in plane.env(OPENPOD_HSM_PIN=pin).items() if k != "OPENPOD_HSM_PIN_FILE"}
    shown = openpod(env, "wallet", "hot", "show", "--json", secret=pin)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {
        "address": plane.address,
        "signer": "hsm",
        "key": f"key 'openpod-hot-wallet' in token '{plane.token.label}' "
        "(/usr/lib/softhsm/libsofthsm2.so)",
        "chainId": None,
        "problems": [],
    }


def test_show_reads_the_chain_and_the_database(plane: Plane, anvil: Anvil, tmp_path: Path) -> None:
    write_chain(plane.root / "plane", anvil.url, anvil.chain_id)
    rpc(anvil.url, "anvil_setBalance", plane.address, hex(10**16))  # 0.01 ETH: under 0.05
    env = plane.env(OPENPOD_DATABASE_URL=f"sqlite:///{tmp_path / 'show.db'}")
    # And with the RPC down (another database: the two run side by side, ~2 s each).
    down = plane.env(
        OPENPOD_DATABASE_URL=f"sqlite:///{tmp_path / 'down.db'}",
        OPENPOD_CHAIN_RPC_URL=f"http://127.0.0.1:{free_port()}",
    )
    with ThreadPoolExecutor(2) as pool:
        both = pool.map(
            lambda args: openpod(
                args[0], "wallet", "hot", "show", *args[1], secret=plane.token.pin
            ),
            [(env, ["--json", "--check"]), (down, [])],
        )
        done, text = list(both)
    assert done.returncode == 1  # --check: under the floor
    shown = json.loads(done.stdout)
    assert shown["chainId"] == anvil.chain_id
    assert shown["onChain"] == {
        "chainId": anvil.chain_id,
        "balanceWei": str(10**16),
        "balanceEth": "0.01",
        "nonceLatest": 0,
        "noncePending": 0,
    }
    assert (shown["floorWei"], shown["underFloor"]) == (str(5 * 10**16), True)
    assert (shown["gatewayNextNonce"], shown["pendingTransactions"]) == (None, 0)
    assert shown["breaker"] == {"open": False, "reason": None, "actor": None, "since": None}
    assert "warning: the balance is under the floor of 0.05 ETH: fund it" in done.stderr
    # The RPC down: what the database knows, and that the chain could not be read (exit 0).
    assert text.returncode == 0, text.stderr
    assert f"hot wallet   {plane.address}" in text.stdout
    assert "balance      unknown: the chain could not be read" in text.stdout
    assert "breaker      closed" in text.stdout
    assert "warning: could not read the chain at http://127.0.0.1:" in text.stderr


def test_breaker_open_and_close_are_recorded_with_who_and_why(
    plane: Plane, anvil: Anvil, tmp_path: Path
) -> None:
    write_chain(plane.root / "plane", anvil.url, anvil.chain_id)
    env = plane.env(OPENPOD_DATABASE_URL=f"sqlite:///{tmp_path / 'breaker.db'}")
    pin, actor = plane.token.pin, f"cli:{getpass.getuser()}"

    def breaker(*args: str) -> subprocess.CompletedProcess[str]:
        return openpod(env, "wallet", "breaker", *args, secret=pin)

    opened = breaker("open", "--reason", "incident 42: odd transfer", "--json")
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout)["changed"] is True
    status = json.loads(breaker("status", "--json").stdout)
    assert (status["address"], status["chainId"]) == (plane.address, anvil.chain_id)
    assert status["breaker"]["open"] is True
    assert status["breaker"]["reason"] == "incident 42: odd transfer"
    assert status["breaker"]["actor"] == actor
    refused = CliRunner().invoke(hot_wallet.breaker, ["close", "--reason", " "], env=env)
    assert refused.exit_code == 1
    assert refused.stderr == "error: --reason is required to close the breaker (say why)\n"
    closed = breaker("close", "--reason", "reviewed: a planned migration")
    assert closed.returncode == 0, closed.stderr
    lines = closed.stdout.splitlines()
    assert lines[1].startswith("breaker      closed since 20") and lines[1].endswith(f"by {actor}")
    assert lines[2].endswith(f"close  {actor}: reviewed: a planned migration")
    assert lines[3].endswith(f"open   {actor}: incident 42: odd transfer")
    again = breaker("close", "--reason", "twice")
    assert again.returncode == 0
    assert "the breaker was closed already: nothing changed" in again.stdout


def test_keystore_refused_on_a_mainnet_unless_allowed(tmp_path: Path) -> None:
    data_dir = tmp_path / "plane"
    write_chain(data_dir, f"http://127.0.0.1:{free_port()}", 1)  # no RPC is asked
    env = {
        "OPENPOD_HOT_WALLET_SIGNER": "keystore",
        "OPENPOD_HOT_WALLET_KEYSTORE_ON_MAINNET": "false",
    }

    def init(*args: str, **extra: str) -> Any:
        argv = ["init", "--data-dir", str(data_dir), *args]
        return CliRunner().invoke(hot_wallet.hot, argv, env={**env, **extra})

    refused = init()
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: chain 1 is Ethereum: the hot wallet's key belongs")
    assert sorted(p.name for p in data_dir.iterdir()) == ["chain.json"]
    allowed = init("--json", OPENPOD_HOT_WALLET_KEYSTORE_ON_MAINNET="true")
    assert allowed.exit_code == 0, allowed.output
    made = json.loads(allowed.stdout)
    assert made == {"address": keystore_address(data_dir / "hot-wallet.json"), "signer": "keystore"}
    password = (data_dir / "hot-wallet.password").read_text().strip()
    assert password not in allowed.output
    assert (data_dir / "hot-wallet.password").stat().st_mode & 0o777 == 0o600
    again = init(OPENPOD_HOT_WALLET_KEYSTORE_ON_MAINNET="true")
    assert again.exit_code == 1
    assert (
        again.stderr
        == f"error: {data_dir / 'hot-wallet.json'} exists already (address {made['address']})\n"
    )


def test_deploy_makes_the_hsm_key_the_operator(plane: Plane, anvil: Anvil, tmp_path: Path) -> None:
    """`openpod chain deploy` without --operator, the hot wallet in the HSM: the token's key
    gets OPERATOR_ROLE (and `chain info --check` finds it there), no keystore is made."""
    data_dir = tmp_path / "deploy"
    env = plane.env(OPENPOD_DATA_DIR=str(data_dir))
    snapshot = rpc(anvil.url, "evm_snapshot")
    try:
        done = openpod(
            env, "chain", "deploy", "--rpc-url", anvil.url, "--data-dir", str(data_dir),
            secret=plane.token.pin,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert not (data_dir / "hot-wallet.json").exists()
        payments = json.loads((data_dir / "chain.json").read_text())["payments"]
        operator = "0x" + role("OPERATOR_ROLE").hex()
        holder = "0x" + plane.address[2:].lower().rjust(64, "0")
        call = {"to": payments, "data": "0x91d14854" + operator[2:] + holder[2:]}  # hasRole
        assert int(rpc(anvil.url, "eth_call", call, "latest"), 16) == 1
        info = openpod(env, "chain", "info", "--json", "--check", secret=plane.token.pin)
        assert info.returncode == 0, info.stdout + info.stderr
        found = json.loads(info.stdout)["check"]
        assert found["hotWallet"] == plane.address and found["hotWalletIsOperator"] is True
    finally:
        rpc(anvil.url, "evm_revert", snapshot)
