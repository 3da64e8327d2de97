"""Alerts: what the operator must hear about, such as the hot wallet below its balance floor.

An alert is a plain value: what it is about (`key`, also the de-duplication key), how bad it is,
a one-line title, the detail, and extra facts (address, transaction hash, balance...). A
`resolved` alert says that the condition behind earlier alerts of the same key has cleared.
Delivering alerts (webhook, e-mail, log) is the adapters' business; this module does no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime

from openpod.domain.errors import DomainError


class InvalidAlert(DomainError):
    """An alert without a key, with a title on several lines, or with a naive timestamp."""


class Severity(enum.StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


@dataclass(frozen=True)
class Alert:
    """One notice to the operator; equal alerts of one key within a while are sent once."""

    key: str  # what it is about, the de-duplication key, e.g. "hot-wallet:balance-floor"
    severity: Severity
    title: str  # one line
    text: str  # the detail
    resolved: bool = False  # the condition behind earlier alerts of this key has cleared
    fields: tuple[tuple[str, str], ...] = ()  # extra facts: (name, value)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if not self.key.strip():
            raise InvalidAlert("an alert needs a key saying what it is about")
        if not self.title.strip() or "\n" in self.title or "\r" in self.title:
            raise InvalidAlert(f"alert {self.key}: the title must be one non-empty line")
        if self.at.tzinfo is None:
            raise InvalidAlert(f"alert {self.key}: the time must carry a time zone")

    def summary(self) -> str:
        """The title with its severity, e.g. "[CRITICAL] Hot wallet below its floor"."""
        tag = "RESOLVED" if self.resolved else self.severity.value
        return f"[{tag}] {self.title}"

    def fields_dict(self) -> dict[str, str]:
        return dict(self.fields)

    def body(self) -> str:
        """The detail followed by one "name: value" line per extra fact."""
        lines = [self.text] if self.text else []
        lines += [f"{name}: {value}" for name, value in self.fields]
        return "\n".join(lines)
