"""The webhook sink: alerts POSTed as JSON to a Slack-compatible incoming webhook.

The body carries Slack's `text` (summary and detail) and, when the alert has extra facts,
one attachment listing them; chat tools that take Slack's format show it as is. The same
alert, structured, is under `openpod` for anything that wants to parse it. The URL is a
secret (whoever has it can post to the channel): it never appears in `repr`, errors or logs.
"""

from __future__ import annotations

from typing import Any

import httpx

from openpod.adapters.alerts import SinkError
from openpod.domain.alerts import Alert, Severity

_COLOURS = {Severity.CRITICAL: "#d62728", Severity.WARNING: "#ff9900", Severity.INFO: "#1f77b4"}
_RESOLVED_COLOUR = "#2ca02c"


def payload(alert: Alert) -> dict[str, Any]:
    """The JSON body for `alert`."""
    body: dict[str, Any] = {"text": f"{alert.summary()}\n{alert.text}".rstrip("\n")}
    if alert.fields:
        body["attachments"] = [
            {
                "color": _RESOLVED_COLOUR if alert.resolved else _COLOURS[alert.severity],
                "fields": [
                    {"title": name, "value": value, "short": len(value) <= 40}
                    for name, value in alert.fields
                ],
            }
        ]
    body["openpod"] = {
        "key": alert.key,
        "severity": alert.severity.value,
        "title": alert.title,
        "text": alert.text,
        "resolved": alert.resolved,
        "fields": alert.fields_dict(),
        "at": alert.at.isoformat(),
    }
    return body


class WebhookSink:
    """POSTs each alert to one webhook URL; a non-2xx answer or no answer is a `SinkError`."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
        name: str = "webhook",
    ) -> None:
        try:
            scheme = httpx.URL(url).scheme
        except httpx.InvalidURL:
            raise ValueError(f"{name}: the webhook URL does not parse") from None
        if scheme not in ("http", "https"):
            raise ValueError(f"{name}: the webhook URL must start with https:// or http://")
        self._url = url
        self._timeout_s = timeout_s
        self._name = name
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout_s)

    def __repr__(self) -> str:
        return f"WebhookSink(name={self._name!r}, url=<secret>)"

    @property
    def name(self) -> str:
        return self._name

    async def send(self, alert: Alert) -> None:
        try:
            response = await self._client.post(
                self._url, json=payload(alert), timeout=self._timeout_s
            )
        except httpx.TimeoutException:
            raise SinkError(f"{self._name}: no answer within {self._timeout_s}s") from None
        except httpx.HTTPError as exc:
            # httpx messages may quote the URL: name the kind of failure only.
            raise SinkError(f"{self._name}: request failed ({type(exc).__name__})") from None
        if not response.is_success:
            raise SinkError(f"{self._name}: the webhook answered HTTP {response.status_code}")

    async def aclose(self) -> None:
        """Closes the HTTP client if this sink created it."""
        if self._owns_client:
            await self._client.aclose()
