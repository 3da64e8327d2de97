"""The log sink: alerts written to the service's own log, at a level matching their severity.

It always works, so it is the last resort when the webhook and e-mail are down, and it puts
every alert in the same place as the events that led to it.
"""

from __future__ import annotations

import logging

from openpod.domain.alerts import Alert, Severity

_LEVELS = {
    Severity.CRITICAL: logging.ERROR,
    Severity.WARNING: logging.WARNING,
    Severity.INFO: logging.INFO,
}


class LogSink:
    """Logs CRITICAL at ERROR, WARNING at WARNING, INFO and resolved notices at INFO."""

    def __init__(self, logger_name: str = "openpod.alerts", *, name: str = "log") -> None:
        self._logger = logging.getLogger(logger_name)
        self._name = name

    def __repr__(self) -> str:
        return f"LogSink({self._logger.name!r})"

    @property
    def name(self) -> str:
        return self._name

    async def send(self, alert: Alert) -> None:
        level = logging.INFO if alert.resolved else _LEVELS[alert.severity]
        facts = "".join(f" {name}={value}" for name, value in alert.fields)
        self._logger.log(level, "%s (%s): %s%s", alert.summary(), alert.key, alert.text, facts)
