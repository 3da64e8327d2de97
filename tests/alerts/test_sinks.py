"""The sinks against real servers on 127.0.0.1: an HTTP webhook receiver and an SMTP server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from openpod.adapters.alerts import LogSink, SinkError, SmtpSink, WebhookSink
from openpod.domain.alerts import Alert, Severity
from openpod.services.alerts import Alerts
from tests.support.net import free_port, wait_until

SECRET_PATH = "/services/T000/B000/XyZSecretToken"
PASSWORD = "s3cret-smtp-pass"

ALERT = Alert(
    key="hot-wallet:balance-floor",
    severity=Severity.CRITICAL,
    title="Hot wallet below its balance floor",
    text="The hot wallet holds less than the floor; payouts will stall.",
    fields=(("address", "0xabc"), ("balance", "0.4 ETH")),
)


@dataclass
class HookServer:
    """A minimal HTTP/1.1 receiver: one request per connection, answers `status`."""

    status: int = 200
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    got: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, _ = (await reader.readline()).decode().split(" ", 2)
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, value = line.decode().split(":", 1)
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((method, path, headers, body))
            writer.write(
                f"HTTP/1.1 {self.status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".encode()
            )
            await writer.drain()
            self.got.set()
        finally:
            writer.close()
            await writer.wait_closed()

    def json(self, i: int = 0) -> Any:
        return json.loads(self.requests[i][3])


@dataclass
class Inbox:
    """An aiosmtpd handler keeping every message it accepts."""

    messages: list[tuple[Envelope, Message]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append((envelope, message_from_bytes(envelope.content)))
        return "250 OK"


def check_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        b"alerts",
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=check_login,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


async def test_webhook_posts_slack_compatible_json() -> None:
    hook = HookServer()
    port = free_port()
    server = await asyncio.start_server(hook.handle, "127.0.0.1", port)
    sink = WebhookSink(f"http://127.0.0.1:{port}{SECRET_PATH}")
    try:
        await sink.send(ALERT)
    finally:
        await sink.aclose()
        server.close()
        await server.wait_closed()
    method, path, headers, _ = hook.requests[0]
    assert (method, path, headers["content-type"]) == ("POST", SECRET_PATH, "application/json")
    body = hook.json()
    assert body["text"] == f"[CRITICAL] {ALERT.title}\n{ALERT.text}"
    assert body["attachments"][0]["fields"][1] == {
        "title": "balance",
        "value": "0.4 ETH",
        "short": True,
    }
    assert body["openpod"] == {
        "key": "hot-wallet:balance-floor",
        "severity": "CRITICAL",
        "title": ALERT.title,
        "text": ALERT.text,
        "resolved": False,
        "fields": {"address": "0xabc", "balance": "0.4 ETH"},
        "at": ALERT.at.isoformat(),
    }


async def test_webhook_error_names_the_status_never_the_url() -> None:
    hook = HookServer(status=404)
    port = free_port()
    server = await asyncio.start_server(hook.handle, "127.0.0.1", port)
    sink = WebhookSink(f"http://127.0.0.1:{port}{SECRET_PATH}")
    try:
        with pytest.raises(SinkError, match="HTTP 404") as err:
            await sink.send(ALERT)
    finally:
        await sink.aclose()
        server.close()
        await server.wait_closed()
    assert "XyZSecretToken" not in str(err.value)
    assert "XyZSecretToken" not in repr(sink) and sink.name == "webhook"
    with pytest.raises(ValueError, match="https://") as bad:
        WebhookSink("ftp://example.invalid/XyZSecretToken")
    assert "XyZSecretToken" not in str(bad.value)


async def test_email_delivered_with_subject_recipients_and_facts(
    smtp_server: tuple[Inbox, int],
) -> None:
    inbox, port = smtp_server
    sink = SmtpSink(
        "127.0.0.1",
        port,
        "openpod@localhost",
        ["ops@localhost", "oncall@localhost"],
        username="alerts",
        password=PASSWORD,
    )
    await sink.send(ALERT)
    envelope, msg = inbox.messages[0]
    assert envelope.mail_from == "openpod@localhost"
    assert envelope.rcpt_tos == ["ops@localhost", "oncall@localhost"]
    assert msg["Subject"] == f"[CRITICAL] {ALERT.title}"
    assert msg["X-OpenPod-Alert-Key"] == "hot-wallet:balance-floor"
    body = msg.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert (
        body.decode().replace("\r\n", "\n") == f"{ALERT.text}\naddress: 0xabc\nbalance: 0.4 ETH\n"
    )
    assert PASSWORD not in repr(sink) and sink.name == "email"


async def test_email_errors_never_show_the_password(smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    wrong = "wrong-" + PASSWORD
    sink = SmtpSink(
        "127.0.0.1", port, "a@localhost", ["b@localhost"], username="alerts", password=wrong
    )
    with pytest.raises(SinkError, match="login refused") as err:
        await sink.send(ALERT)
    assert wrong not in str(err.value) and inbox.messages == []
    closed = SmtpSink("127.0.0.1", free_port(), "a@localhost", ["b@localhost"], timeout_s=2)
    with pytest.raises(SinkError, match="refused"):
        await closed.send(ALERT)


async def test_log_sink_levels(caplog: pytest.LogCaptureFixture) -> None:
    sink = LogSink()
    with caplog.at_level(logging.INFO, logger="openpod.alerts"):
        await sink.send(ALERT)
        await sink.send(Alert("k", Severity.WARNING, "warned", "w"))
        await sink.send(Alert("k", Severity.CRITICAL, "over", "fine now", resolved=True))
    levels = [(r.levelno, r.getMessage().split(" (")[0]) for r in caplog.records]
    assert levels == [
        (logging.ERROR, f"[CRITICAL] {ALERT.title}"),
        (logging.WARNING, "[WARNING] warned"),
        (logging.INFO, "[RESOLVED] over"),
    ]
    assert "address=0xabc balance=0.4 ETH" in caplog.records[0].getMessage()


async def test_webhook_down_blocks_nothing_and_is_delivered_by_a_retry(
    smtp_server: tuple[Inbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    inbox, smtp_port = smtp_server
    port = free_port()  # nothing listens here yet
    webhook = WebhookSink(f"http://127.0.0.1:{port}{SECRET_PATH}", timeout_s=2)
    email = SmtpSink("127.0.0.1", smtp_port, "openpod@localhost", ["ops@localhost"])
    alerts = Alerts(
        [webhook, email, LogSink()], retry_first_s=0.05, retry_max_s=0.2, max_attempts=1000
    )
    await alerts.start()
    hook = HookServer()
    with caplog.at_level(logging.INFO, logger="openpod.alerts"):
        assert alerts.submit(ALERT) is True
        await asyncio.to_thread(
            wait_until,
            lambda: len(inbox.messages) == 1 and alerts.metrics.failed["webhook"] >= 2,
            10,
            "e-mail delivered while the webhook keeps failing",
        )
        assert f"[CRITICAL] {ALERT.title}" in caplog.text  # the log sink delivered too
        assert alerts.metrics.sent[("webhook", "CRITICAL")] == 0
        server = await asyncio.start_server(hook.handle, "127.0.0.1", port)
        try:
            await asyncio.wait_for(alerts.idle(), 10)
        finally:
            server.close()
            await server.wait_closed()
    await alerts.stop()
    await webhook.aclose()
    assert hook.json()["openpod"]["key"] == "hot-wallet:balance-floor"
    assert alerts.metrics.sent[("webhook", "CRITICAL")] == 1
    assert alerts.metrics.sent[("email", "CRITICAL")] == 1
    assert alerts.metrics.retried >= 2
    assert "retrying" in caplog.text and "XyZSecretToken" not in caplog.text


async def test_webhook_down_for_good_is_given_up(caplog: pytest.LogCaptureFixture) -> None:
    webhook = WebhookSink(f"http://127.0.0.1:{free_port()}{SECRET_PATH}", timeout_s=2)
    alerts = Alerts([webhook], retry_first_s=0.01, retry_max_s=0.02, max_attempts=3)
    await alerts.start()
    with caplog.at_level(logging.WARNING, logger="openpod.alerts"):
        alerts.submit(ALERT)
        await asyncio.wait_for(alerts.idle(), 10)
    await alerts.stop()
    await webhook.aclose()
    assert alerts.metrics.failed["webhook"] == 3
    assert alerts.metrics.dropped[("webhook", "gave_up")] == 1
    assert 'openpod_alerts_dropped_total{sink="webhook",reason="gave_up"} 1' in alerts.prometheus()
    assert "gave up sending alert hot-wallet:balance-floor to webhook" in caplog.text
    assert "XyZSecretToken" not in caplog.text
