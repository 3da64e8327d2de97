"""Sign-In with Ethereum (EIP-4361) messages, built and parsed exactly as the spec's ABNF says.

    [scheme "://"] domain " wants you to sign in with your Ethereum account:" LF
    address LF
    LF
    [statement LF]
    LF
    "URI: " uri LF
    "Version: 1" LF
    "Chain ID: " chain-id LF
    "Nonce: " nonce LF
    "Issued At: " date-time
    [LF "Expiration Time: " date-time]
    [LF "Not Before: " date-time]
    [LF "Request ID: " request-id]
    [LF "Resources:" *(LF "- " uri)]

Pure: no I/O and no crypto. The EIP-55 checksum of the address needs keccak, so whoever checks
the signature (services.wallets) checks it too; here the address is only `0x` + 40 hex digits.
Every error names the field that is wrong (`SiweError.field`).
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

HEADER_SUFFIX = " wants you to sign in with your Ethereum account:"
VERSION = "1"
NONCE_LENGTH = 17  # ~101 bits of [A-Za-z0-9]; the spec asks for at least 8

_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_GEN_DELIMS = r":/?#\[\]@"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# RFC 3986 authority: [userinfo "@"] host [":" port]; host a reg-name, IPv4 or [IP-literal].
_AUTHORITY = re.compile(
    rf"(?:[{_UNRESERVED}{_SUB_DELIMS}%:]*@)?"
    rf"(?:\[[0-9A-Fa-f:.vV{_UNRESERVED}{_SUB_DELIMS}]+\]|[{_UNRESERVED}{_SUB_DELIMS}%]+)"
    r"(?::[0-9]*)?"
)
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_STATEMENT = re.compile(rf"[{_UNRESERVED}{_GEN_DELIMS}{_SUB_DELIMS} ]+")
_URI = re.compile(rf"[A-Za-z][A-Za-z0-9+\-.]*:[{_UNRESERVED}{_GEN_DELIMS}{_SUB_DELIMS}%]*")
_NONCE = re.compile(r"[A-Za-z0-9]{8,}")
_CHAIN_ID = re.compile(r"[0-9]+")
_REQUEST_ID = re.compile(rf"[{_UNRESERVED}{_SUB_DELIMS}%:@]*")
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})"
)


class SiweError(ValueError):
    """A message (or a field given to build one) breaks EIP-4361; `field` names which."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def new_nonce(length: int = NONCE_LENGTH) -> str:
    """A random nonce of letters and digits (EIP-4361: at least 8 of them)."""
    if length < 8:
        raise ValueError("a SIWE nonce has at least 8 characters")
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with `Z`: `2026-11-26T10:00:00Z`, or `.123Z` / `.123456Z` when needed."""
    value = value.astimezone(UTC)
    spec = "seconds"
    if value.microsecond:
        spec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
    return value.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def parse_time(field: str, text: str) -> datetime:
    """An RFC 3339 date-time (fractions past microseconds are cut), as an aware datetime."""
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise SiweError(field, f"{text!r} is not an RFC 3339 date-time")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if offset in ("Z", "z"):
        zone = UTC
    else:
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 23 or minutes > 59:
            raise SiweError(field, f"{text!r} has an impossible UTC offset")
        sign = 1 if offset[0] == "+" else -1
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, zone
        )
    except ValueError as exc:
        raise SiweError(field, f"{text!r} is no real date-time ({exc})") from None


@dataclass(frozen=True)
class SiweMessage:
    """One EIP-4361 message. Building one checks every field as parsing would."""

    domain: str
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: datetime
    statement: str | None = None
    version: str = VERSION
    expiration_time: datetime | None = None
    not_before: datetime | None = None
    request_id: str | None = None
    resources: tuple[str, ...] | None = None  # None: no Resources section at all
    scheme: str | None = None

    def __post_init__(self) -> None:
        if self.scheme is not None and not _SCHEME.fullmatch(self.scheme):
            raise SiweError("scheme", f"{self.scheme!r} is not an RFC 3986 scheme")
        if not _AUTHORITY.fullmatch(self.domain):
            raise SiweError("domain", f"{self.domain!r} is not an RFC 3986 authority")
        if not _ADDRESS.fullmatch(self.address):
            raise SiweError("address", f"{self.address!r} is not 0x and 40 hex digits")
        if self.statement is not None and not _STATEMENT.fullmatch(self.statement):
            raise SiweError(
                "statement",
                "must be one non-empty line of URI characters and spaces"
                f" (no line breaks, quotes or non-ASCII): {self.statement!r}",
            )
        if not _URI.fullmatch(self.uri):
            raise SiweError("URI", f"{self.uri!r} is not an RFC 3986 URI")
        if self.version != VERSION:
            raise SiweError("Version", f"{self.version!r} is not {VERSION!r}")
        if isinstance(self.chain_id, bool) or not isinstance(self.chain_id, int):
            raise SiweError("Chain ID", f"{self.chain_id!r} is not an integer")
        if self.chain_id < 0:
            raise SiweError("Chain ID", f"{self.chain_id} is negative")
        if not _NONCE.fullmatch(self.nonce):
            raise SiweError("Nonce", f"{self.nonce!r} is not 8 or more letters and digits")
        for field, value in (
            ("Issued At", self.issued_at),
            ("Expiration Time", self.expiration_time),
            ("Not Before", self.not_before),
        ):
            if value is not None and value.tzinfo is None:
                raise SiweError(field, "needs a time zone (an aware datetime)")
        if self.request_id is not None and not _REQUEST_ID.fullmatch(self.request_id):
            raise SiweError("Request ID", f"{self.request_id!r} has characters a pchar cannot")
        for resource in self.resources or ():
            if not _URI.fullmatch(resource):
                raise SiweError("Resources", f"{resource!r} is not an RFC 3986 URI")

    def text(self) -> str:
        """The message as the wallet signs it (EIP-191 personal_sign of these bytes)."""
        origin = f"{self.scheme}://{self.domain}" if self.scheme else self.domain
        lines = [origin + HEADER_SUFFIX, self.address, ""]
        if self.statement is not None:
            lines.append(self.statement)
        lines += [
            "",
            f"URI: {self.uri}",
            f"Version: {self.version}",
            f"Chain ID: {self.chain_id}",
            f"Nonce: {self.nonce}",
            f"Issued At: {format_time(self.issued_at)}",
        ]
        if self.expiration_time is not None:
            lines.append(f"Expiration Time: {format_time(self.expiration_time)}")
        if self.not_before is not None:
            lines.append(f"Not Before: {format_time(self.not_before)}")
        if self.request_id is not None:
            lines.append(f"Request ID: {self.request_id}")
        if self.resources is not None:
            lines.append("Resources:")
            lines += [f"- {resource}" for resource in self.resources]
        return "\n".join(lines)

    @classmethod
    def parse(cls, text: str) -> SiweMessage:
        """The message in `text`; raises `SiweError` naming the first field that is wrong."""
        return _Parser(text).message()

    def check_times(self, now: datetime, skew: timedelta = timedelta(seconds=60)) -> None:
        """Raise `SiweError` unless the message is valid at `now` (clocks may differ by `skew`):
        issued no later than now, not expired, and past its Not Before."""
        if self.issued_at > now + skew:
            raise SiweError("Issued At", f"{format_time(self.issued_at)} is in the future")
        if self.expiration_time is not None and self.expiration_time <= now:
            raise SiweError("Expiration Time", f"{format_time(self.expiration_time)} has passed")
        if self.not_before is not None and self.not_before > now + skew:
            raise SiweError("Not Before", f"not valid before {format_time(self.not_before)}")


_OPTIONAL_TAGS = ("Expiration Time: ", "Not Before: ", "Request ID: ", "Resources:")
_ORDER = "Issued At, Expiration Time, Not Before, Request ID, Resources"


class _Parser:
    """Reads a message line by line, in the fixed order the ABNF gives."""

    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.at = 0

    def _next(self, field: str) -> str:
        if self.at >= len(self.lines):
            raise SiweError(field, "missing (the message ends early)")
        line = self.lines[self.at]
        self.at += 1
        return line

    def _blank(self, after: str) -> None:
        line = self._next(after)
        if line != "":
            raise SiweError(after, f"an empty line must follow it, found {line!r}")

    def _tagged(self, field: str) -> str:
        line = self._next(field)
        prefix = f"{field}: "
        if not line.startswith(prefix):
            raise SiweError(field, f"expected a line starting {prefix!r}, found {line!r}")
        return line[len(prefix) :]

    def _optional(self, field: str) -> str | None:
        if self.at < len(self.lines) and self.lines[self.at].startswith(f"{field}: "):
            return self._tagged(field)
        return None

    def message(self) -> SiweMessage:
        if "\r" in "\n".join(self.lines):
            raise SiweError("message", "lines end with LF only (found a CR)")
        header = self._next("domain")
        if not header.endswith(HEADER_SUFFIX):
            raise SiweError("domain", f"the first line must end {HEADER_SUFFIX!r}")
        origin = header[: -len(HEADER_SUFFIX)]
        scheme, sep, domain = origin.partition("://")
        if not sep:
            scheme, domain = "", origin
        address = self._next("address")
        self._blank("address")
        statement: str | None = None
        line = self._next("URI")
        if line != "":
            statement = line
            self._blank("statement")
        uri = self._tagged("URI")
        version = self._tagged("Version")
        chain_id = self._tagged("Chain ID")
        if not _CHAIN_ID.fullmatch(chain_id):
            raise SiweError("Chain ID", f"{chain_id!r} is not a decimal integer")
        nonce = self._tagged("Nonce")
        issued_at = parse_time("Issued At", self._tagged("Issued At"))
        expiration = self._optional("Expiration Time")
        not_before = self._optional("Not Before")
        request_id = self._optional("Request ID")
        resources: tuple[str, ...] | None = None
        if self.at < len(self.lines) and self.lines[self.at] == "Resources:":
            self.at += 1
            found = []
            while self.at < len(self.lines) and self.lines[self.at].startswith("- "):
                found.append(self.lines[self.at][2:])
                self.at += 1
            resources = tuple(found)
        if self.at < len(self.lines):
            line = self.lines[self.at]
            tag = next((t for t in _OPTIONAL_TAGS if line.startswith(t)), None)
            if tag is not None:
                raise SiweError(tag.rstrip(": "), f"out of place (the order is {_ORDER})")
            raise SiweError(
                "message", f"unexpected line {self.at + 1} after the last field: {line!r}"
            )
        return SiweMessage(
            scheme=scheme if sep else None,
            domain=domain,
            address=address,
            statement=statement,
            uri=uri,
            version=version,
            chain_id=int(chain_id),
            nonce=nonce,
            issued_at=issued_at,
            expiration_time=None
            if expiration is None
            else parse_time("Expiration Time", expiration),
            not_before=None if not_before is None else parse_time("Not Before", not_before),
            request_id=request_id,
            resources=resources,
        )
