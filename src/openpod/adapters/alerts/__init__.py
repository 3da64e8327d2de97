"""Alert sinks: only this package delivers alerts to the outside (webhook, e-mail, log).

Each sink has a `name` (for metrics and logs) and an async `send(alert)` that raises
`SinkError` when the alert did not get through; the dispatcher in `services.alerts` retries.
Webhook URLs (a Slack incoming-webhook URL is a secret) and SMTP passwords never appear in a
sink's `repr`, its errors or its logs.
"""


class SinkError(Exception):
    """An alert was not delivered; the message names the sink and why, never a secret."""


# The sinks import SinkError from here, so they come after it.
from openpod.adapters.alerts.log import LogSink  # noqa: E402
from openpod.adapters.alerts.smtp import SmtpSink  # noqa: E402
from openpod.adapters.alerts.webhook import WebhookSink  # noqa: E402

__all__ = ["LogSink", "SinkError", "SmtpSink", "WebhookSink"]
