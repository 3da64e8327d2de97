"""The messages of a `send`/`receive` transfer, checked on the way in (docs/transfer.md).

A record's plaintext is a type byte and a body: ``J`` + a JSON object (a control message) or
``D`` + file bytes. Everything a peer sends is validated here before the CLI acts on it: a
manifest with an unsafe path, a negative size or a plan that does not fit is refused with an
error naming what is wrong, before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CONTROL = 0x4A  # "J"
DATA = 0x44  # "D"
MAX_PATH_BYTES = 4096
MAX_FILES = 1_000_000
PLAIN_HASH = "sha256"  # the only hash the CLI offers or picks
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class ProtocolError(ValueError):
    """The peer sent something the protocol does not allow; the message says what."""


def control(message: dict[str, Any]) -> bytes:
    """The plaintext of a control record."""
    return b"J" + json.dumps(message, separators=(",", ":")).encode()


def data(chunk: bytes) -> bytes:
    """The plaintext of a data record."""
    return b"D" + chunk


def parse_control(plaintext: bytes) -> dict[str, Any]:
    """The control message in ``plaintext``; a data record here is a protocol error."""
    if not plaintext or plaintext[0] != CONTROL:
        raise ProtocolError("expected a control message, got file data")
    try:
        message = json.loads(plaintext[1:])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"a control message is not JSON: {error}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ProtocolError("a control message has no type")
    if message["t"] == "error":
        raise PeerError(str(message.get("message", "the other side stopped with an error")))
    return message


class PeerError(ProtocolError):
    """The other side stopped and said why."""


def expect(message: dict[str, Any], kind: str) -> dict[str, Any]:
    if message["t"] != kind:
        raise ProtocolError(f"expected {kind!r}, got {message['t']!r}")
    return message


def safe_path(path: object) -> str:
    """``path`` if it is a relative POSIX path that stays inside the target directory."""
    if not isinstance(path, str) or not path:
        raise ProtocolError("a path in the manifest is empty or not text")
    shown = path[:200]
    if len(path.encode()) > MAX_PATH_BYTES:
        raise ProtocolError(
            f"unsafe path in manifest (longer than {MAX_PATH_BYTES} bytes): {shown!r}"
        )
    if "\\" in path or "\x00" in path:
        raise ProtocolError(f"unsafe path in manifest (backslash or NUL): {shown!r}")
    if path.startswith("/"):
        raise ProtocolError(f"unsafe path in manifest (absolute): {shown!r}")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ProtocolError(f"unsafe path in manifest (empty, '.' or '..' part): {shown!r}")
    return path


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    size: int
    mode: int


@dataclass(frozen=True, slots=True)
class Manifest:
    files: tuple[FileEntry, ...]
    dirs: tuple[str, ...]
    credit: bool = True  # the sender keeps to a receiver's window (`go`'s "window", `got`)

    @property
    def total(self) -> int:
        return sum(entry.size for entry in self.files)

    def message(self) -> dict[str, Any]:
        return {
            "t": "manifest",
            "files": [{"path": f.path, "size": f.size, "mode": f.mode} for f in self.files],
            "dirs": list(self.dirs),
            **({"credit": 1} if self.credit else {}),
        }


def _count(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{what} is not a whole number ≥ 0: {value!r}")
    return value


def parse_manifest(message: dict[str, Any]) -> Manifest:
    expect(message, "manifest")
    files, dirs = message.get("files"), message.get("dirs", [])
    if not isinstance(files, list) or not isinstance(dirs, list):
        raise ProtocolError("the manifest's files and dirs must be lists")
    if len(files) + len(dirs) > MAX_FILES:
        raise ProtocolError(f"the manifest lists more than {MAX_FILES} entries")
    entries: list[FileEntry] = []
    seen: set[str] = set()
    for item in files:
        if not isinstance(item, dict):
            raise ProtocolError("a file in the manifest is not an object")
        path = safe_path(item.get("path"))
        if path in seen:
            raise ProtocolError(f"the manifest lists {path!r} twice")
        seen.add(path)
        size = _count(item.get("size"), f"the size of {path!r}")
        mode = _count(item.get("mode", 0o644), f"the mode of {path!r}") & 0o777
        entries.append(FileEntry(path, size, mode))
    folders = tuple(safe_path(path) for path in dirs)
    clash = seen.intersection(folders)
    if clash:
        raise ProtocolError(f"the manifest lists {sorted(clash)[0]!r} as a file and a directory")
    # A file may not be the folder of another path either (`a` and `a/b`): a receiver would
    # make the folder and only find out at the end, with the file `a` written and nowhere to go.
    for path in (*(entry.path for entry in entries), *folders):  # in order: one answer
        parts = path.split("/")
        for depth in range(1, len(parts)):
            above = "/".join(parts[:depth])
            if above in seen:
                raise ProtocolError(
                    f"the manifest lists {above!r} as a file and as the folder of {path!r}"
                )
    return Manifest(tuple(entries), folders, credit=message.get("credit") == 1)


@dataclass(frozen=True, slots=True)
class Have:
    """What the receiver already holds of one file: ``offset`` bytes hashing to ``sha256``."""

    offset: int
    sha256: str


def _hex_digest(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) != 64:
        raise ProtocolError(f"{what} is not a SHA-256 in hex")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise ProtocolError(f"{what} is not a SHA-256 in hex") from None
    return value.lower()


def parse_have(message: dict[str, Any], manifest: Manifest) -> list[Have]:
    expect(message, "have")
    picked = message.get("hash", PLAIN_HASH)
    if picked != PLAIN_HASH:
        # The CLI offers plain SHA-256 only (the one sha256sum prints); the pages' block hash
        # is theirs (docs/transfer.md "Hashes").
        raise ProtocolError(
            f"'have' picks the hash {str(picked)[:40]!r}, which this sender did not offer"
        )
    files = message.get("files")
    if not isinstance(files, list) or len(files) != len(manifest.files):
        raise ProtocolError("'have' does not list one entry per file of the manifest")
    haves = []
    for entry, item in zip(manifest.files, files, strict=True):
        if not isinstance(item, dict):
            raise ProtocolError("an entry of 'have' is not an object")
        offset = _count(item.get("offset"), f"the offset held of {entry.path!r}")
        digest = _hex_digest(item.get("sha256"), f"the hash held of {entry.path!r}")
        haves.append(Have(offset, digest))
    return haves


def parse_plan(message: dict[str, Any], manifest: Manifest) -> list[int]:
    expect(message, "plan")
    offsets = message.get("offsets")
    if not isinstance(offsets, list) or len(offsets) != len(manifest.files):
        raise ProtocolError("the plan does not give one offset per file of the manifest")
    plan = []
    for entry, value in zip(manifest.files, offsets, strict=True):
        offset = _count(value, f"the plan's offset for {entry.path!r}")
        if offset > entry.size:
            raise ProtocolError(f"the plan's offset for {entry.path!r} is past its end")
        plan.append(offset)
    return plan


def parse_end(message: dict[str, Any], index: int) -> str:
    expect(message, "end")
    if message.get("i") != index:
        raise ProtocolError(f"'end' names file {message.get('i')!r}, expected {index}")
    return _hex_digest(message.get("sha256"), "the sender's hash")


WINDOW_MIN = 1 << 20  # more than one data record on every transport
WINDOW_MAX = 1 << 30


def go(window: int | None) -> dict[str, Any]:
    """The receiver's `go`; with `window`, the sender may have at most that many bytes of file
    data sent and not yet reported written by a `got`."""
    return {"t": "go"} if window is None else {"t": "go", "window": window}


def parse_go(message: dict[str, Any]) -> int | None:
    """The window the receiver asks for, or None (no flow control: the transport's own)."""
    expect(message, "go")
    window = message.get("window")
    if window is None:
        return None
    if not isinstance(window, int) or isinstance(window, bool):
        raise ProtocolError(f"'go' asks for a window that is not a whole number: {window!r}")
    if not WINDOW_MIN <= window <= WINDOW_MAX:
        raise ProtocolError(
            f"'go' asks for a window of {window} bytes, outside {WINDOW_MIN}..{WINDOW_MAX}"
        )
    return window


def parse_got(message: dict[str, Any], acked: int, sent: int) -> int:
    """The bytes of file data a `got` says are written: never fewer than before (`acked`),
    never more than were sent."""
    expect(message, "got")
    written = _count(message.get("bytes"), "the bytes a 'got' reports")
    if not acked <= written <= sent:
        raise ProtocolError(f"'got' reports {written} bytes written; {sent} were sent")
    return written
