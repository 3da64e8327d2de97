"""`openpod up` (what `make up` runs): the whole platform on one machine until Ctrl-C.

Starts the development chain (anvil, its state kept in the data dir) with openpod's contracts
deployed and a funded demo wallet, the control plane and one local node as child processes,
creates (once) a demo account that is also the node's provider, adds the user's SSH key to it,
links the demo wallet to it (Sign-In with Ethereum), configures the local `openpod` CLI for it
and for its wallet (so that `openpod pod create` signs each run's lease and the pod is paid
on-chain), and prints a quickstart. Ctrl-C stops the node, the pods it runs, the control plane
and the chain, each by the PID this process started; the next `openpod up` resumes the pods on
the same chain.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from openpod.adapters.chain import Anvil, ChainError, Contract, Rpc
from openpod.adapters.runtimes.local import LocalRuntime
from openpod.cli.client import ApiClient, ApiError
from openpod.cli.wallet import WalletError, api_object, link_wallet, record_keystore
from openpod.entry.chain import (
    ChainSetupError,
    Wallet,
    catalog_rates,
    deploy_openpod,
    deployer_wallet,
    dev_top_up,
    hot_wallet,
)
from openpod.settings import ChainConfig, ServerSettings

DEMO_WALLET = "0x00000000000000000000000000000000000d3e70"  # the demo provider's payouts
DEMO_TOKENS = 1_000_000 * 10**18  # DevToken (18 decimals) the demo user's wallet holds
DEMO_CAP = 1_000 * 10**18  # how much more the operator may charge it (its spending cap)
MAX_UINT256 = 2**256 - 1
EDGE_PORT = 8480  # http://{pod}-{port}.proxy.localhost:8480/
GATEWAY_PORT = 2222  # ssh -J openpod@127.0.0.1:2222 root@POD
GATEWAY_FAST_PORT = 2223  # the gateway's fast path, which `openpod ssh` takes


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "openpod", *args], stdout=out, stderr=subprocess.STDOUT, env=env
    )


def _wait_healthy(api: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the control plane exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(f"{api}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the control plane did not answer within 60 s; see {log}")


def _ssh_public_key() -> Path:
    """The user's SSH public key, made with ssh-keygen when the user has none."""
    ssh_dir = Path.home() / ".ssh"
    for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
        if (ssh_dir / f"{name}.pub").exists():
            return ssh_dir / f"{name}.pub"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    key = ssh_dir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    print(f"created an SSH key for you: {key}")
    return key.with_name("id_ed25519.pub")


def _link_cli() -> str:
    """Put `openpod` on PATH (a symlink in /usr/local/bin) so the next terminal has it."""
    target = Path(sys.executable).with_name("openpod")
    link = Path("/usr/local/bin/openpod")
    try:
        if link.is_symlink() and link.resolve() == target.resolve():
            return "openpod"
        if not link.exists() and not link.is_symlink() and os.access(link.parent, os.W_OK):
            link.symlink_to(target)
            return "openpod"
    except OSError:
        pass
    return str(target)


def _demo(api: str, state_file: Path) -> dict[str, str]:
    """The demo account, provider and node (made once, kept in a 0600 file under data_dir)."""
    if state_file.exists():
        demo: dict[str, str] = json.loads(state_file.read_text())
        me = httpx.get(f"{api}/me", headers={"Authorization": f"Bearer {demo['api_key']}"})
        if me.status_code == 200:
            return demo
    key = httpx.post(f"{api}/accounts", json={"name": "demo"}).raise_for_status().json()["apiKey"]
    auth = {"Authorization": f"Bearer {key}"}
    httpx.post(
        f"{api}/providers", json={"payoutWallet": DEMO_WALLET}, headers=auth
    ).raise_for_status()
    node = (
        httpx.post(f"{api}/nodes", json={"name": "local"}, headers=auth).raise_for_status().json()
    )
    demo = {"api_key": key, "node_token": node["token"], "node_id": node["id"]}
    state_file.touch(mode=0o600)
    state_file.write_text(json.dumps(demo))
    return demo


def _add_key(api: str, api_key: str, path: Path) -> None:
    response = httpx.post(
        f"{api}/ssh-keys",
        json={"publicKey": path.read_text(), "name": path.name},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    if response.status_code not in (201, 409):  # 409: already there
        raise SystemExit(f"could not add {path}: {response.json().get('detail')}")


def configure_demo_wallet(api: str, api_key: str, wallet: Wallet) -> bool:
    """Link the demo wallet to the demo account by Sign-In with Ethereum (the CLI's own code;
    only when it is not its proven wallet already, so a restart decrypts nothing) and make it
    the CLI's wallet, with its password file, so that `openpod pod create` signs each run's
    lease without asking. Whether it linked now."""
    with ApiClient(api, api_key) as client:
        current = api_object(client, "GET", "/wallet")
        address = str(current.get("address") or "")
        linked = address.lower() == wallet.address.lower() and bool(current.get("addressProven"))
        if not linked:
            link_wallet(client, "account", lambda: wallet.signer())
    record_keystore(wallet.keystore, wallet.password_file)
    return not linked


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for(path: Path, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit(f"the {what} exited ({proc.returncode}); see {log}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the {what} did not start within 30 s; see {log}")
        time.sleep(0.05)


@dataclass
class DevChain:
    """The development chain `openpod up` runs: anvil, the deployment, the demo user's wallet."""

    anvil: Anvil
    config: ChainConfig
    demo_wallet: Wallet
    deployed: bool  # this start deployed the contracts (first run, or anvil's state was lost)
    seconds: float  # anvil + deployment + demo wallet


def start_dev_chain(data_dir: Path, settings: ServerSettings | None = None) -> DevChain:
    """Start anvil (state in data_dir/anvil-state.json, a block a second so that confirmations
    come), deploy the contracts unless chain.json's are there already, write chain.json with
    this anvil's URL, and fund the hot wallet and the demo wallet. The caller stops anvil."""
    started = time.monotonic()
    settings = settings or ServerSettings(data_dir=data_dir)
    anvil = Anvil(block_time=1, state=data_dir / "anvil-state.json", log=data_dir / "anvil.log")
    anvil.start()
    demo = Wallet(data_dir / "demo-wallet.json", data_dir / "demo-wallet.password", "demo wallet")
    try:
        config, deployed = asyncio.run(_prepare_chain(anvil.url, settings, demo))
    except BaseException:
        anvil.stop()
        raise
    return DevChain(anvil, config, demo, deployed, time.monotonic() - started)


async def _prepare_chain(
    url: str, settings: ServerSettings, demo: Wallet
) -> tuple[ChainConfig, bool]:
    deployer = deployer_wallet(settings)
    hot = hot_wallet(settings)
    async with Rpc(url) as rpc:
        # Set-up transactions are mined at once; then back to a block a second.
        await rpc.request("evm_setAutomine", [True])
        try:
            config = await _deployment_on(rpc, settings)
            # Keys (scrypt, ~1 s each to make or decrypt) and the catalog (the database's
            # migrations on a first run) are made ready side by side.
            keys = [w for w in (deployer, hot, demo) if not w.exists()]
            if config is None:
                keys += [w for w in (deployer, demo) if w not in keys]
            ready = [asyncio.to_thread(w.signer, create=True) for w in keys]
            deployed = config is None
            if config is None:
                rates = asyncio.create_task(asyncio.to_thread(catalog_rates, settings))
                await asyncio.gather(rates, *ready)
                done = await deploy_openpod(
                    settings, url, deployer, rates=rates.result(), force=True
                )
                config = done.config
            else:
                await asyncio.gather(*ready)
            config = dataclasses.replace(config, rpc_url=url)  # anvil's port is new each start
            config.save(settings.chain_path())
            await dev_top_up(rpc, hot.address)
            await prepare_demo_wallet(rpc, config, demo)
        finally:
            await rpc.request("evm_setIntervalMining", [1])
    return config, deployed


async def _deployment_on(rpc: Rpc, settings: ServerSettings) -> ChainConfig | None:
    """chain.json's deployment if this chain has its contracts (anvil's state kept them)."""
    path = settings.chain_path()
    try:
        config = ChainConfig.load(path) if path.exists() else None
    except ValueError:
        return None
    if config is None or config.chain_id != await rpc.chain_id():
        return None
    if not await rpc.code(config.payments) or not await rpc.code(config.token):
        return None
    return config


async def prepare_demo_wallet(rpc: Rpc, config: ChainConfig, demo: Wallet) -> None:
    """ETH for gas, DEMO_TOKENS from the faucet, the payments contract approved, and a spending
    cap DEMO_CAP above what was spent: topped up only where it ran low (a restart is quick)."""
    token = Contract(rpc, "DevToken", config.token)
    payments = Contract(rpc, "OpenPodPayments", config.payments)
    address = demo.address
    await dev_top_up(rpc, address)
    balance = int(await token.read_one("balanceOf", address))
    allowance = int(await token.read_one("allowance", address, config.payments))
    cap, spent = (int(v) for v in await payments.read("budgets", address))
    sends = []
    if balance < DEMO_TOKENS // 2:
        sends.append((token, token.calldata("faucet", address, DEMO_TOKENS - balance)))
    if allowance < DEMO_TOKENS:
        sends.append((token, token.calldata("approve", config.payments, MAX_UINT256)))
    if cap - spent < DEMO_CAP // 2:
        sends.append((payments, payments.calldata("setSpendingCap", spent + DEMO_CAP)))
    if not sends:
        return
    signer = await asyncio.to_thread(demo.signer)
    for contract, data in sends:
        await contract.send(signer, data)


def run_devstack(data_dir: Path, port: int, gpus: str) -> int:
    data_dir.mkdir(parents=True, exist_ok=True)
    api = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logs = {name: data_dir / f"{name}.log" for name in ("server", "node", "edge", "gateway")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    chain: DevChain | None = None
    host_key = data_dir / "gateway_host_key"
    server_env = {
        **env,
        "OPENPOD_EDGE_STATE_DIR": str(data_dir / "edge"),
        "OPENPOD_PROXY_PORT": str(EDGE_PORT),
        "OPENPOD_GATEWAY_HOST": "127.0.0.1",
        "OPENPOD_GATEWAY_PORT": str(GATEWAY_PORT),
        "OPENPOD_GATEWAY_FAST_PORT": str(GATEWAY_FAST_PORT),
        "OPENPOD_GATEWAY_HOST_KEY_FILE": f"{host_key}.pub",
        # The demo account (and any signed up here) starts with 1,000 tokens to spend.
        "OPENPOD_SIGNUP_CREDIT": env.get("OPENPOD_SIGNUP_CREDIT", str(1000 * 10**18)),
    }
    try:
        procs["edge"] = _spawn(
            ["edge", "--data-dir", str(data_dir), "--port", str(EDGE_PORT)], logs["edge"], env
        )
        procs["gateway"] = _spawn(
            ["gateway", "--data-dir", str(data_dir), "--port", str(GATEWAY_PORT),
             "--fast-port", str(GATEWAY_FAST_PORT), "--host-key", str(host_key)],
            logs["gateway"],
            env,
        )  # fmt: skip
        # The chain starts while the edge and the gateway do; the server finds its chain.json.
        try:
            chain = start_dev_chain(data_dir)
        except (ChainError, ChainSetupError) as error:
            raise SystemExit(
                f"the dev chain did not start: {error}; see {data_dir / 'anvil.log'}"
            ) from None
        _wait_for(
            host_key.with_name(host_key.name + ".pub"), procs["gateway"], "gateway", logs["gateway"]
        )
        procs["server"] = _spawn(
            ["server", "--port", str(port), "--data-dir", str(data_dir)], logs["server"], server_env
        )
        _wait_healthy(api, procs["server"], logs["server"])
        demo = _demo(api, data_dir / "demo.json")
        _add_key(api, demo["api_key"], _ssh_public_key())
        configure = [sys.executable, "-m", "openpod", "config", "--api-url", api]
        subprocess.run(
            [*configure, "--api-key", demo["api_key"]], check=True, stdout=subprocess.DEVNULL
        )
        paid = True
        try:
            configure_demo_wallet(api, demo["api_key"], chain.demo_wallet)
        except (ApiError, WalletError, ChainSetupError) as error:
            paid = False
            print(
                f"warning: the demo wallet is not linked to the demo account ({error}):"
                " pods' leases are not signed, so they are not paid on-chain",
                file=sys.stderr,
            )
        procs["node"] = _spawn(
            ["node", "--api-url", api, "--gpus", gpus, "--data-dir", str(data_dir / "node")],
            logs["node"],
            {**env, "OPENPOD_NODE_TOKEN": demo["node_token"]},  # not argv: `ps` shows argv
        )
        print(_quickstart(api, demo["api_key"], data_dir, _link_cli(), chain, paid), flush=True)
        while not stopping and all(proc.poll() is None for proc in procs.values()):
            try:
                time.sleep(0.5)
            except KeyboardInterrupt:
                break
        for name, proc in procs.items():
            if proc.poll() is not None and not stopping:
                print(f"the {name} exited ({proc.returncode}); see {logs[name]}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping: node, pods, control plane, gateway, edge, chain", flush=True)
        _stop(procs.get("node"))
        runtime = LocalRuntime(data_dir / "node")
        for obs in runtime.adopt():
            runtime.stop(obs.pod_id, 5.0)
        for name in ("server", "gateway", "edge"):
            _stop(procs.get(name))
        if chain is not None:
            chain.anvil.stop()  # by its PID; anvil writes its state on the way out
    return 0


def _quickstart(
    api: str, api_key: str, data_dir: Path, cli: str, chain: DevChain, paid: bool
) -> str:
    config, demo = chain.config, chain.demo_wallet
    wallet = (
        "linked to the demo account and the CLI's wallet, so that\n    `pod create` signs each"
        " run's lease"
        if paid
        else "NOT linked to the demo account (see the warning\n    above): pods are not paid"
        " on-chain"
    )
    return f"""
openpod is up: control plane {api} (OpenAPI: {api}/docs), one local node,
  pod URLs at http://POD-PORT.proxy.localhost:{EDGE_PORT}/, SSH gateway on 127.0.0.1:{GATEWAY_PORT}
  (its fast path, which `openpod ssh` takes, on {GATEWAY_FAST_PORT}).
  demo API key (the CLI is already configured with it): {api_key}
  logs and state: {data_dir}

Chain: anvil {config.rpc_url} (chain id {config.chain_id}, a block a second), ready in \
{chain.seconds:.1f} s{" (contracts deployed)" if chain.deployed else ""}
  payments (OpenPodPayments) {config.payments}
  token (DevToken, oUSD)     {config.token}
  demo wallet {demo.address}: {DEMO_TOKENS // 10**18:,} oUSD, payments approved, spending cap
    {DEMO_CAP // 10**18:,} oUSD; {wallet}; keystore {demo.keystore},
    password in {demo.password_file}
  {cli} chain info --data-dir {data_dir} --check
  {cli} wallet status                    # balance, allowance, spending cap and spent

In another terminal:
  {cli} gpu list
  {cli} pod create --name demo --image local --gpu-type "NVIDIA GeForce RTX 4090" --gpu-count 1 \\
      --ports 8888/http,22/tcp --cmd 'python3 -m http.server $OPENPOD_TCP_PORT_8888'
  {cli} pod lease POD_ID                 # its lease: SIGNED, then OPEN, paid on-chain
  {cli} ssh POD_ID                       # through the gateway; or the command `pod create` printed
  {cli} ssh config --write               # then: ssh POD_ID.openpod, scp, sftp, rsync
  {cli} pod stop POD_ID; {cli} pod resume POD_ID; {cli} pod terminate POD_ID

Ctrl-C stops everything this started.
"""
