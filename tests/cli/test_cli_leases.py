"""The CLI signs its pods' leases: `pod create` / `pod resume` where the control plane pays
on-chain and the CLI has a wallet, `pod lease POD [--sign]` later.

Against a real control plane, node and anvil: the lease `pod create` signs is the wallet's and
the run is paid on-chain; `--no-lease` then `pod lease --sign`; a wrong password leaves the pod.
Against a fake API (an httpx.MockTransport) only what a real control plane never sends: typed
data tampered with field by field, which the CLI must refuse before asking for a password."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account as EthAccount
from eth_account.messages import encode_typed_data
from typer.testing import CliRunner

from openpod.adapters.chain import (
    Anvil,
    Contract,
    Deployment,
    LeaseTerms,
    Rpc,
    deploy,
    short_bytes32,
)
from openpod.adapters.signers import KeystoreSigner
from openpod.cli.app import app
from openpod.cli.client import ApiClient
from openpod.cli.leases import START_SKEW_S, LeaseRefused, PodRun, check_lease
from openpod.cli.wallet import ChainInfo, link_wallet, password_file_for
from openpod.domain.lease import LEASE_TYPES
from tests.cli.conftest import FakeApi
from tests.e2e.conftest import Platform, running_platform
from tests.support.chain import fund, light_keystore, paying_plane_env
from tests.support.net import wait_until

GPU = "NVIDIA GeForce RTX 4090"
PASSWORD = "lease password"
TOKENS = 10**24
PAYMENTS = "0x" + "9f" * 20
CHAIN: dict[str, Any] = {"rpcUrl": "http://127.0.0.1:1", "chainId": 31337,
                         "token": "0x" + "e7" * 20, "payments": PAYMENTS, "tokenDecimals": 18}  # fmt: skip
PROVIDER = "0x" + "11" * 20


@dataclass
class Wallet:
    signer: KeystoreSigner
    keystore: Path
    password_file: Path


def make_wallet(directory: Path) -> Wallet:
    directory.mkdir(parents=True, exist_ok=True)
    signer = light_keystore(directory / "wallet.json", PASSWORD)
    (directory / "password").write_text(PASSWORD + "\n")
    return Wallet(signer, directory / "wallet.json", directory / "password")


def use(cli: Callable[..., Any], wallet: Wallet, *, with_password: bool = True) -> None:
    args = ["wallet", "use", "--keystore", str(wallet.keystore)]
    if with_password:
        args += ["--password-file", str(wallet.password_file)]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert wallet.signer.address in result.stdout


def recovered(typed: dict[str, Any], signature: str) -> str:
    message = encode_typed_data(full_message=typed)
    return str(EthAccount.recover_message(message, signature=bytes.fromhex(signature[2:])))


# --- against a fake API: what is signed is checked ------------------------------------------


def offer(pod: dict[str, Any], user: str, /, **changes: Any) -> dict[str, Any]:
    """The lease a control plane offers for `pod` (the server's own encoding), with `changes`
    to its message or domain."""
    terms = LeaseTerms(
        pod_id=pod["id"], generation=1, user=user, provider=PROVIDER, gpu_type=pod["gpuTypeId"],
        gpu_count=pod["gpuCount"], max_rate=int(pod["costPerSecond"]) // pod["gpuCount"],
        start=PodRun.of(pod, generation=1).placed - 60,
    )  # fmt: skip
    typed = terms.typed_data(CHAIN["chainId"], PAYMENTS)
    for key, value in changes.items():
        part = "domain" if key in typed["domain"] else "message" if key in typed["message"] else ""
        if part:
            typed[part][key] = value
        else:
            typed[key] = value
    return {"podId": pod["id"], "generation": typed["message"]["generation"],
            "leaseId": "0x" + terms.lease_id.hex(), "status": None, "reason": None,
            "typedData": typed}  # fmt: skip


@pytest.fixture
def wallet(tmp_path: Path) -> Wallet:
    return make_wallet(tmp_path / "wallet")


@pytest.fixture
def signing_api(fake_api: FakeApi, make_pod: Callable[..., dict[str, Any]]) -> FakeApi:
    """POST /pods, GET /chain and PUT /pods/{id}/lease answered; GET .../lease left to the test."""
    pod = make_pod(status="PENDING", ssh=None)
    fake_api.on("POST", "/pods", pod, status=201)
    fake_api.on("GET", "/chain", CHAIN)

    def put(request: httpx.Request) -> httpx.Response:
        lease = fake_api.routes[("GET", f"/pods/{pod['id']}/lease")][0](request).json()
        return httpx.Response(200, json={**lease, "status": "SIGNED"})

    fake_api.on("PUT", f"/pods/{pod['id']}/lease", put)
    return fake_api


CREATE = ("pod", "create", "--name", "train", "--image", "img", "--gpu-type", GPU, "--no-wait")
OTHER = "0x" + "42" * 20


def tampered(pod: dict[str, Any], user: str) -> dict[str, dict[str, Any]]:
    """Each field a control plane might change, and a value that must be refused."""
    cost = int(pod["costPerSecond"])
    start = PodRun.of(pod, generation=1).placed - START_SKEW_S - 1
    return {
        "verifyingContract": offer(pod, user, verifyingContract=OTHER),
        "chainId": offer(pod, user, chainId=1),
        "user": offer(pod, user, user=OTHER),
        "pod": offer(pod, user, pod="0x" + short_bytes32("k3x9q2m7v1c5").hex()),
        "generation": offer(pod, user, generation=2),
        "maxRate": offer(pod, user, maxRate=cost + 1),
        "gpuType": offer(pod, user, gpuType="0x" + short_bytes32("NVIDIA H100 80GB HBM3").hex()),
        "gpuCount": offer(pod, user, gpuCount=2),
        "start": offer(pod, user, start=start),
        "primaryType": offer(pod, user, primaryType="Permit"),
        "types": offer(pod, user, types={**LEASE_TYPES, "Lease": LEASE_TYPES["Lease"][:-1]}),
        "domain": offer(pod, user, name="openpod payments v2"),
        "provider": offer(pod, user, provider="0x1234"),
    }


FIELDS = ["verifyingContract", "chainId", "user", "pod", "generation", "maxRate", "gpuType",
          "gpuCount", "start", "primaryType", "types", "domain", "provider"]  # fmt: skip


def test_every_field_is_tampered_with(make_pod: Callable[..., dict[str, Any]]) -> None:
    assert sorted(tampered(make_pod(), OTHER)) == sorted(FIELDS)


@pytest.mark.parametrize("field", FIELDS)
def test_a_tampered_lease_is_refused_before_any_password_and_the_pod_stays(
    field: str,
    signing_api: FakeApi,
    wallet: Wallet,
    make_pod: Callable[..., dict[str, Any]],
    cli: Callable[..., Any],
) -> None:
    use(cli, wallet, with_password=False)  # a prompt would find no input: "no password given"
    pod = make_pod(status="PENDING", ssh=None)
    signing_api.on("GET", f"/pods/{pod['id']}/lease", tampered(pod, wallet.signer.address)[field])
    result = cli(*CREATE)
    assert result.exit_code == 0, result.output
    assert f"refusing to sign the lease of pod {pod['id']}: its {field} is" in result.stderr
    assert f"openpod pod lease {pod['id']} --sign" in result.stderr
    assert "Keystore password" not in result.output
    assert signing_api.sent("PUT", f"/pods/{pod['id']}/lease") == []
    assert f"pod {pod['id']}" in result.stdout  # the pod is shown as created


def test_check_lease_accepts_the_servers_own_lease_and_bounds_its_start(
    wallet: Wallet, make_pod: Callable[..., dict[str, Any]]
) -> None:
    pod = make_pod()
    chain = ChainInfo(CHAIN["rpcUrl"], 31337, CHAIN["token"], PAYMENTS, 18)
    user = wallet.signer.address
    run = PodRun.of(pod, generation=1)
    check_lease(offer(pod, user)["typedData"], chain, user, run)
    check_lease(offer(pod, user, start=run.placed - START_SKEW_S)["typedData"], chain, user, run)
    with pytest.raises(LeaseRefused, match="its start is"):
        check_lease(
            offer(pod, user, start=run.placed - START_SKEW_S - 1)["typedData"], chain, user, run
        )
    with pytest.raises(LeaseRefused, match="its maxRate is"):  # a string is not the rate
        check_lease(
            offer(pod, user, maxRate=str(run.cost_per_second))["typedData"], chain, user, run
        )
    extra = offer(pod, user)["typedData"]
    extra["message"]["memo"] = "x"
    with pytest.raises(LeaseRefused, match="its message is"):
        check_lease(extra, chain, user, run)
    # Where the pod's answer says its generation, the lease must be for that run.
    with pytest.raises(LeaseRefused, match="its generation is 1, expected 3"):
        check_lease(
            offer(pod, user)["typedData"],
            chain,
            user,
            PodRun.of({**pod, "generation": 3}, generation=None),
        )


def test_create_signs_with_the_password_from_a_hidden_prompt(
    signing_api: FakeApi, wallet: Wallet, make_pod: Callable[..., dict[str, Any]], config_dir: Path
) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["wallet", "use", "--keystore", str(wallet.keystore)]).exit_code == 0
    pod = make_pod(status="PENDING", ssh=None)
    lease = offer(pod, wallet.signer.address)
    signing_api.on("GET", f"/pods/{pod['id']}/lease", lease)
    result = runner.invoke(app, list(CREATE), input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "Keystore password" in result.output and PASSWORD not in result.output
    assert f"lease {lease['leaseId']} of pod {pod['id']} run 1: SIGNED" in result.stderr
    assert "lease" not in result.stdout  # stdout is the pod's, as before
    signature = signing_api.body("PUT", f"/pods/{pod['id']}/lease")["signature"]
    assert recovered(lease["typedData"], signature) == wallet.signer.address
    # Signed right after POST /pods, before any wait (the gateway can open it at once).
    paths = [(r.method, r.url.path) for r in signing_api.requests]
    assert paths == [("POST", "/pods"), ("GET", "/chain"), ("GET", f"/pods/{pod['id']}/lease"),
                     ("PUT", f"/pods/{pod['id']}/lease")]  # fmt: skip


def test_json_output_stays_json_and_resume_signs_the_new_run(
    signing_api: FakeApi, wallet: Wallet, make_pod: Callable[..., dict[str, Any]],
    cli: Callable[..., Any],
) -> None:  # fmt: skip
    use(cli, wallet)
    pod = make_pod(status="STARTING", lastStartedAt="2025-01-02T00:00:00Z", ssh=None)
    signing_api.on("POST", f"/pods/{pod['id']}/start", pod)
    lease = offer(pod, wallet.signer.address, generation=2)
    signing_api.on("GET", f"/pods/{pod['id']}/lease", lease)
    result = cli("pod", "resume", pod["id"], "--no-wait", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == pod["id"]
    assert f"lease {lease['leaseId']} of pod {pod['id']} run 2: SIGNED" in result.stderr
    signature = signing_api.body("PUT", f"/pods/{pod['id']}/lease")["signature"]
    assert recovered(lease["typedData"], signature) == wallet.signer.address
    # A lease that starts before this run was placed (the last run's) is refused.
    signing_api.requests.clear()
    signing_api.on("GET", f"/pods/{pod['id']}/lease", offer(make_pod(), wallet.signer.address))
    stale = cli("pod", "resume", pod["id"], "--no-wait")
    assert stale.exit_code == 0 and "its start is" in stale.stderr
    assert signing_api.sent("PUT", f"/pods/{pod['id']}/lease") == []


def test_nothing_is_asked_when_payments_are_off_or_there_is_no_wallet(
    signing_api: FakeApi, wallet: Wallet, cli: Callable[..., Any]
) -> None:
    without = cli(*CREATE)  # no wallet configured: GET /chain is not even asked
    assert without.exit_code == 0 and without.stderr == ""
    assert [r.url.path for r in signing_api.requests] == ["/pods"]
    use(cli, wallet)
    signing_api.requests.clear()
    signing_api.error("GET", "/chain", 404, "on-chain payments are off")
    off = cli(*CREATE)
    assert off.exit_code == 0 and off.stderr == "" and off.stdout == without.stdout
    assert [r.url.path for r in signing_api.requests] == ["/pods", "/chain"]
    signing_api.requests.clear()
    opted_out = cli(*CREATE, "--no-lease")
    assert opted_out.exit_code == 0 and opted_out.stdout == without.stdout
    assert [r.url.path for r in signing_api.requests] == ["/pods"]


# --- against a real control plane, node and anvil ---------------------------------------------


@dataclass
class Paying:
    platform: Platform
    anvil_url: str
    deployment: Deployment
    wallet: Wallet  # the user's: ETH, tokens, payments approved and capped, linked by SIWE


@pytest.fixture(autouse=True)
def _no_password_file_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENPOD_WALLET_PASSWORD_FILE", raising=False)


@pytest.fixture(scope="module")
def paying(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paying]:
    files = tmp_path_factory.mktemp("chain")
    with Anvil() as anvil:
        admin = KeystoreSigner(bytes(EthAccount.create().key))
        hot = light_keystore(files / "hot-wallet.json", "hot")
        (files / "hot-wallet.password").write_text("hot\n")
        wallet = make_wallet(files / "user")

        async def setup() -> Deployment:
            async with Rpc(anvil.url) as rpc:
                for address in (admin.address, hot.address, wallet.signer.address):
                    await fund(rpc, address)
                deployment = await deploy(
                    rpc, admin, rates={}, treasury=admin.address, fee_bps=500,
                    operator=hot.address,
                )  # fmt: skip
                token = Contract(rpc, "DevToken", deployment.token)
                payments = Contract(rpc, "OpenPodPayments", deployment.payments)
                user = wallet.signer
                await token.send(user, token.calldata("faucet", user.address, TOKENS))
                await token.send(user, token.calldata("approve", deployment.payments, TOKENS))
                await payments.send(user, payments.calldata("setSpendingCap", TOKENS))
                return deployment

        deployment = asyncio.run(setup())
        env = paying_plane_env(files, anvil.url, deployment)
        with running_platform(env) as platform:
            types = platform.user.ok("GET", "/gpu-types")
            rate = int(next(g for g in types if g["id"] == GPU)["ratePerSecond"])

            async def set_rate() -> None:
                async with Rpc(anvil.url) as rpc:
                    payments = Contract(rpc, "OpenPodPayments", deployment.payments)
                    await payments.send(
                        admin, payments.calldata("setRate", short_bytes32(GPU), rate)
                    )

            asyncio.run(set_rate())
            with ApiClient(platform.plane.url, _key(platform)) as client:
                link_wallet(client, "account", lambda: wallet.signer)
            yield Paying(platform, anvil.url, deployment, wallet)


def _key(platform: Platform) -> str:
    return str(platform.user.headers["Authorization"]).split()[1]


@pytest.fixture
def user_cli(
    paying: Paying, config_dir: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable[..., Any]
) -> Callable[..., Any]:
    """The CLI as the paying user, with their wallet and its password file recorded."""
    monkeypatch.setenv("OPENPOD_API_URL", paying.platform.plane.url)
    monkeypatch.setenv("OPENPOD_API_KEY", _key(paying.platform))
    use(cli, paying.wallet)
    return cli


def _lease_row(p: Paying, pod_id: str) -> tuple[Any, ...] | None:
    db = sqlite3.connect(f"file:{p.platform.root / 'plane' / 'openpod.db'}?mode=ro", uri=True)
    try:
        row: tuple[Any, ...] | None = db.execute(
            "SELECT generation, user_wallet, signature, status FROM pod_leases WHERE pod_id = ?",
            (pod_id,),
        ).fetchone()
        return row
    finally:
        db.close()


def _confirmed(p: Paying, pod_id: str) -> int:
    db = sqlite3.connect(f"file:{p.platform.root / 'plane' / 'openpod.db'}?mode=ro", uri=True)
    try:
        query = "SELECT count(*) FROM settlements WHERE pod_id = ? AND status = 'CONFIRMED'"
        return int(db.execute(query, (pod_id,)).fetchone()[0])
    finally:
        db.close()


def _pod_id(summary: str) -> str:
    """The id in `pod ID (NAME) is STATUS`, the first line of a pod's summary."""
    first = summary.splitlines()[0].split()
    assert first[0] == "pod", summary
    return first[1]


def _create(cli: Callable[..., Any], *extra: str) -> Any:
    return cli("pod", "create", "--name", "paid", "--image", "local", "--gpu-type", GPU,
               "--ports", "22/tcp", *extra)  # fmt: skip


def test_pod_create_signs_the_runs_lease_and_the_run_is_paid_on_chain(
    paying: Paying, user_cli: Callable[..., Any]
) -> None:
    result = _create(user_cli, "--json")
    assert result.exit_code == 0, result.output
    pod = json.loads(result.stdout)
    assert pod["status"] == "RUNNING"
    api, pod_id = paying.platform.user, pod["id"]
    lease = api.ok("GET", f"/pods/{pod_id}/lease")
    assert f"lease {lease['leaseId']} of pod {pod_id} run 1: SIGNED" in result.stderr
    row = _lease_row(paying, pod_id)
    assert row is not None and row[0] == 1
    assert row[1].lower() == paying.wallet.signer.address.lower()
    assert recovered(lease["typedData"], row[2]) == paying.wallet.signer.address
    wait_until(lambda: _confirmed(paying, pod_id) >= 1, 60, "a settlement paid on-chain", step=0.2)
    assert api.ok("GET", f"/pods/{pod_id}/lease")["status"] == "OPEN"
    api.ok("DELETE", f"/pods/{pod_id}")


def test_no_lease_then_pod_lease_sign_signs_it_later(
    paying: Paying, user_cli: Callable[..., Any]
) -> None:
    result = _create(user_cli, "--no-lease", "--no-wait")
    assert result.exit_code == 0, result.output
    pod_id = _pod_id(result.stdout)
    assert "lease" not in result.output and _lease_row(paying, pod_id) is None
    shown = user_cli("pod", "lease", pod_id)
    assert shown.exit_code == 0, shown.output
    assert f"run 1: not signed (sign it: openpod pod lease {pod_id} --sign)" in shown.stdout
    signed = user_cli("pod", "lease", pod_id, "--sign")
    assert signed.exit_code == 0, signed.output
    assert f"of pod {pod_id} run 1: SIGNED" in signed.stdout
    row = _lease_row(paying, pod_id)
    assert row is not None and row[1].lower() == paying.wallet.signer.address.lower()
    again = user_cli("pod", "lease", pod_id, "--sign", "--json")  # nothing more to sign
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["status"] in ("SIGNED", "OPENING", "OPEN")
    assert _lease_row(paying, pod_id) is not None
    assert (_lease_row(paying, pod_id) or ())[2] == row[2]
    paying.platform.user.ok("DELETE", f"/pods/{pod_id}")


def test_a_wrong_password_is_a_warning_and_the_pod_stays(
    paying: Paying, user_cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    monkeypatch.setenv("OPENPOD_WALLET_PASSWORD_FILE", str(wrong))  # before the recorded one
    result = _create(user_cli, "--no-wait")
    assert result.exit_code == 0, result.output
    pod_id = _pod_id(result.stdout)
    assert f"warning: the lease of pod {pod_id} is not signed: wrong password" in result.stderr
    assert f"sign it with: openpod pod lease {pod_id} --sign" in result.stderr
    assert "not the password" not in result.output
    api = paying.platform.user
    assert api.ok("GET", f"/pods/{pod_id}")["status"] in ("PENDING", "STARTING", "RUNNING")
    assert api.ok("GET", f"/pods/{pod_id}/lease")["status"] is None
    refused = user_cli("pod", "lease", pod_id, "--sign")
    assert refused.exit_code == 1 and "wrong password" in refused.stderr
    api.ok("DELETE", f"/pods/{pod_id}")


def test_wallet_use_checks_the_password_file_and_which_password_is_used(
    wallet: Wallet, config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., Any],
) -> None:  # fmt: skip
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    refused = cli(
        "wallet", "use", "--keystore", str(wallet.keystore), "--password-file", str(wrong)
    )
    assert refused.exit_code == 1 and "wrong password" in refused.stderr
    assert not (config_dir / "config.json").exists()  # nothing recorded
    use(cli, wallet)
    keystore = wallet.keystore.resolve()
    assert password_file_for(keystore, None) == wallet.password_file.resolve()
    other = tmp_path / "other.json"
    assert password_file_for(other, None) is None  # the recorded one is that keystore's only
    monkeypatch.setenv("OPENPOD_WALLET_PASSWORD_FILE", str(wrong))
    assert password_file_for(keystore, None) == wrong  # the environment before the config
    assert password_file_for(keystore, tmp_path / "given") == tmp_path / "given"
