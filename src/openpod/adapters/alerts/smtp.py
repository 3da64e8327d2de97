"""The e-mail sink: alerts sent through an SMTP server (stdlib smtplib, on a worker thread).

The subject is the alert's summary, the body its detail and facts. One connection per alert:
alerts are rare (the dispatcher rate-limits them) and a fresh connection survives a server
restart. The SMTP password never appears in `repr`, errors or logs.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from openpod.adapters.alerts import SinkError
from openpod.domain.alerts import Alert

log = logging.getLogger("openpod.alerts.smtp")


class SmtpSink:
    """Mails each alert to `recipients`; a refused connection, login or message is a `SinkError`."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout_s: float = 10.0,
        name: str = "email",
    ) -> None:
        if not recipients:
            raise ValueError(f"{name}: at least one recipient is needed")
        if password is not None and username is None:
            raise ValueError(f"{name}: an SMTP password needs a username")
        self._host = host
        self._port = port
        self._sender = sender
        self._recipients = tuple(recipients)
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout_s = timeout_s
        self._name = name

    def __repr__(self) -> str:
        login = f", username={self._username!r}, password=<secret>" if self._username else ""
        return f"SmtpSink({self._host}:{self._port}, to={list(self._recipients)}{login})"

    @property
    def name(self) -> str:
        return self._name

    def message(self, alert: Alert) -> EmailMessage:
        """The e-mail for `alert`."""
        msg = EmailMessage()
        msg["Subject"] = alert.summary()
        msg["From"] = self._sender
        msg["To"] = ", ".join(self._recipients)
        msg["Date"] = format_datetime(alert.at)
        msg["Message-ID"] = make_msgid(domain="openpod.alerts")
        msg["X-OpenPod-Alert-Key"] = alert.key
        msg["X-OpenPod-Severity"] = alert.severity.value
        msg.set_content(alert.body() + "\n")
        return msg

    async def send(self, alert: Alert) -> None:
        await asyncio.to_thread(self._send_blocking, self.message(alert))

    def _send_blocking(self, msg: EmailMessage) -> None:
        where = f"{self._name} via {self._host}:{self._port}"
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout_s) as smtp:
                if self._starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self._username is not None:
                    smtp.login(self._username, self._password or "")
                refused = smtp.send_message(msg, self._sender, list(self._recipients))
        except smtplib.SMTPAuthenticationError as exc:
            raise SinkError(f"{where}: login refused (SMTP {exc.smtp_code})") from None
        except smtplib.SMTPRecipientsRefused:
            raise SinkError(f"{where}: every recipient was refused") from None
        except smtplib.SMTPResponseException as exc:
            raise SinkError(f"{where}: the server answered SMTP {exc.smtp_code}") from None
        except smtplib.SMTPException as exc:
            raise SinkError(f"{where}: {type(exc).__name__}") from None
        except TimeoutError:
            raise SinkError(f"{where}: no answer within {self._timeout_s}s") from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise SinkError(f"{where}: {reason}") from None
        if refused:
            log.warning("%s: %d of the recipients refused the alert", where, len(refused))
