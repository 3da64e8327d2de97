"""The hot wallet end to end, as an operator runs it: the key made in a real SoftHSM2 token by
`openpod wallet hot init --hsm`, the control plane paying as it (OPENPOD_HOT_WALLET_SIGNER=hsm)
on a real anvil with a guardian, alerts to a real local webhook receiver and a real SMTP
server. A transaction signed with the token outside the gateway reaches both as CRITICAL,
opens the breaker (seen in /metrics and by `openpod wallet breaker status`), pauses the
contract; `openpod wallet breaker close --reason` resumes. No secret reaches the log."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from eth_account import Account

from openpod.adapters.chain import (
    Anvil,
    Contract,
    Deployment,
    Rpc,
    deploy,
    hex_int,
    wait_receipt,
)
from tests.support.chain import ETH, FEE_BPS, fund, light_keystore, paying_plane_env
from tests.support.hsm import SoftHsmToken, make_token, sign_in_subprocess
from tests.support.net import free_port, wait_until
from tests.support.platform import ControlPlane

HOOK_PATH = "/hooks/T0/B0/secret-webhook-token"


@dataclass
class Inbox:
    messages: list[Message] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


class Hooks(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), HookHandler)


class HookHandler(BaseHTTPRequestHandler):
    server: Hooks

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == HOOK_PATH:
            with self.server.lock:
                self.server.posts.append(json.loads(body))
        self.send_response(200 if self.path == HOOK_PATH else 404)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    return payload.decode() if isinstance(payload, bytes) else ""


@dataclass
class Operator:
    root: Path
    token: SoftHsmToken
    address: str
    anvil: Anvil
    deployment: Deployment
    plane: ControlPlane
    hooks: Hooks
    inbox: Inbox
    env: dict[str, str]

    def openpod(self, *args: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENPOD_", "SOFTHSM"))}
        return subprocess.run(
            [sys.executable, "-m", "openpod", *args],
            env={**clean, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def metric(self, name: str) -> float | None:
        text = httpx.get(f"{self.plane.url}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    root = tmp_path_factory.mktemp("hot")
    token = make_token(root / "hsm")
    (root / "plane").mkdir()
    (root / "pin").write_text(token.pin + "\n")
    hsm_env = {
        **token.env(),
        "OPENPOD_DATA_DIR": str(root / "plane"),
        "OPENPOD_HOT_WALLET_SIGNER": "hsm",
        "OPENPOD_HSM_TOKEN_LABEL": token.label,
        "OPENPOD_HSM_PIN_FILE": str(root / "pin"),
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENPOD_", "SOFTHSM"))}
    made = subprocess.run(
        [sys.executable, "-m", "openpod", "wallet", "hot", "init", "--hsm", "--json"],
        env={**clean, **hsm_env},
        capture_output=True,
        text=True,
        check=True,
    )
    address = json.loads(made.stdout)["address"]
    guardian = light_keystore(root / "guardian.json", "guard")
    (root / "guardian.password").write_text("guard\n")
    hooks = Hooks()
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    (root / "webhook-url").write_text(f"http://127.0.0.1:{hooks.server_address[1]}{HOOK_PATH}\n")
    inbox, smtp_port = Inbox(), free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        with Anvil() as anvil:

            async def setup() -> Deployment:
                async with Rpc(anvil.url) as rpc:
                    for who in (guardian.address, address):
                        await fund(rpc, who, 10 * ETH)
                    # The guardian deploys, so it is the admin and holds GUARDIAN_ROLE.
                    return await deploy(
                        rpc, guardian, rates={}, treasury=guardian.address, fee_bps=FEE_BPS,
                        operator=address,
                    )  # fmt: skip

            deployment = asyncio.run(setup())
            env = paying_plane_env(root, anvil.url, deployment)
            del env["OPENPOD_HOT_WALLET_KEYSTORE"], env["OPENPOD_HOT_WALLET_PASSWORD_FILE"]
            env |= hsm_env | {
                "OPENPOD_GUARDIAN_KEYSTORE": str(root / "guardian.json"),
                "OPENPOD_GUARDIAN_PASSWORD_FILE": str(root / "guardian.password"),
                "OPENPOD_HOT_WALLET_WATCH_POLL": "0.1",
                "OPENPOD_HOT_WALLET_BALANCE_FLOOR": str(ETH),
                "OPENPOD_ALERT_WEBHOOK_URL_FILE": str(root / "webhook-url"),
                "OPENPOD_ALERT_SMTP_HOST": "127.0.0.1",
                "OPENPOD_ALERT_SMTP_PORT": str(smtp_port),
                "OPENPOD_ALERT_SMTP_TO": "ops@example.test",
            }
            plane = ControlPlane(root / "plane", env=env)
            plane.start()
            try:
                yield Operator(root, token, address, anvil, deployment, plane, hooks, inbox, env)
            finally:
                plane.stop()
    finally:
        smtp.stop()
        hooks.shutdown()
        hooks.server_close()


def test_the_plane_pays_as_the_hsm_key_and_watches_it(operator: Operator) -> None:
    shown = operator.openpod("wallet", "hot", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["address"] == operator.address

    def watching() -> bool:
        return operator.metric("openpod_hot_wallet_balance_wei") == 10 * ETH

    wait_until(watching, 30, "the watch to report the hot wallet's balance")
    assert operator.metric("openpod_hot_wallet_breaker_open") == 0
    assert operator.metric("openpod_hot_wallet_nonce") == 0
    assert operator.hooks.posts == [] and operator.inbox.messages == []


def test_a_transaction_outside_the_gateway_alerts_stops_and_pauses(operator: Operator) -> None:
    wait_until(
        lambda: operator.metric("openpod_hot_wallet_last_block") is not None,
        30,
        "the watch to read a block",
    )

    async def steal() -> tuple[str, int]:
        async with Rpc(operator.anvil.url) as rpc:
            tx = {
                "type": 2,
                "chainId": operator.deployment.chain_id,
                "nonce": await rpc.nonce(operator.address),
                "to": Account.create().address,
                "value": ETH,
                "data": b"",
                "gas": 21_000,
                "maxFeePerGas": 10 * 10**9,
                "maxPriorityFeePerGas": 10**9,
            }
            label = "openpod-hot-wallet"  # the default key label `hot init` used
            tx_hash = await rpc.send_raw(sign_in_subprocess(operator.token, label, tx))
            # anvil mines it in a block of its own, but after the send has answered: under
            # load the first receipt query can come before the block (seen in CI).
            receipt = await wait_receipt(rpc, tx_hash)
            return tx_hash, hex_int(receipt["blockNumber"])

    tx_hash, block = asyncio.run(steal())

    def alerted() -> bool:
        with operator.hooks.lock:
            return any(tx_hash in post["text"] for post in operator.hooks.posts)

    wait_until(alerted, 30, "the webhook to get the incident")
    [post] = [p for p in operator.hooks.posts if tx_hash in p["text"]]
    assert post["openpod"]["severity"] == "CRITICAL"
    assert post["text"].startswith("[CRITICAL]")

    def mailed() -> bool:
        return any(tx_hash in body(m) for m in operator.inbox.messages)

    wait_until(mailed, 30, "the email to arrive")
    [mail] = [m for m in operator.inbox.messages if tx_hash in body(m)]
    assert str(mail["Subject"]).startswith("[CRITICAL]") and mail["To"] == "ops@example.test"
    assert operator.metric("openpod_hot_wallet_breaker_open") == 1
    assert operator.metric("openpod_hot_wallet_incidents_total") == 1

    async def paused() -> bool:
        async with Rpc(operator.anvil.url) as rpc:
            payments = Contract(rpc, "OpenPodPayments", operator.deployment.payments)
            return bool(await payments.read_one("paused"))

    wait_until(lambda: asyncio.run(paused()), 30, "the guardian to pause the contract")
    wait_until(
        lambda: any("paused by the guardian" in p["text"] for p in operator.hooks.posts),
        30,
        "the guardian's notice",
    )
    assert block >= 1

    status = operator.openpod("wallet", "breaker", "status", "--json")
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert state["breaker"]["open"] is True and tx_hash in state["breaker"]["reason"]
    closed = operator.openpod("wallet", "breaker", "close", "--reason", "reviewed: the e2e test")
    assert closed.returncode == 0, closed.stderr
    wait_until(
        lambda: operator.metric("openpod_hot_wallet_breaker_open") == 0,
        30,
        "the plane to see the breaker closed",
    )

    log = operator.plane.log.read_text()
    assert "CRITICAL" in log  # the log sink and the breaker's own line
    for secret in (operator.token.pin, HOOK_PATH, "secret-webhook-token"):
        assert secret not in log
