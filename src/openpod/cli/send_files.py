"""The files of a `send`/`receive` transfer over a :class:`~openpod.cli.send_peer.Link`.

The sender lists the files, the receiver says what it already holds (part files and whole
ones, each with the SHA-256 of what it holds), the sender keeps a prefix only when its own
bytes hash the same, then streams the rest. The receiver hashes as it writes and renames a
part to its final name only when the whole file's hash matches the sender's. Nothing is
written before the manifest has been checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openpod.adapters.transfer.channel import ChannelClosed
from openpod.cli import local_tree
from openpod.cli.send_peer import Link, TransferFailed
from openpod.domain import transfer_protocol as proto

PART = ".openpod-part"
READ = 1 << 20
REASON_WAIT = 5.0  # seconds a sender whose channel closed waits for the receiver's reason
Progress = Callable[[int], None]


@dataclass
class Report:
    files: int = 0
    bytes_total: int = 0
    bytes_sent: int = 0
    skipped: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict)


def collect(paths: Sequence[Path]) -> tuple[proto.Manifest, list[Path], list[str]]:
    """The manifest for ``paths`` (files and directories), their local paths, and what is left
    out of their directories: links to nothing and what is no regular file (FIFOs, sockets);
    such a path given itself is refused. Symlinks are followed, as scp -r follows them, under
    the link's own name; a link back to a directory it is in raises SymlinkLoop (an
    OSError)."""
    entries: list[proto.FileEntry] = []
    locals_: list[Path] = []
    dirs: list[str] = []
    left_out: list[str] = []
    names: set[str] = set()

    def add_file(local: Path, name: str) -> None:
        info = local.stat()
        entries.append(proto.FileEntry(name, info.st_size, info.st_mode & 0o777))
        locals_.append(local)

    for path in paths:
        # The name it was given by (`.` is this directory's name), a link's own, not its target's.
        name = Path(os.path.abspath(path)).name
        if not name:
            raise TransferFailed(f"{path}: the root itself cannot be sent; name what is in it")
        if name in names:
            raise TransferFailed(f"two paths to send are both named {name!r}")
        names.add(name)
        if path.is_file():
            add_file(path, name)
        elif path.is_dir():
            dirs.append(name)
            for base, subdirs, files in local_tree.walk(path):
                rel = base.relative_to(path)
                prefix = name if rel == Path(".") else f"{name}/{rel.as_posix()}"
                dirs += [f"{prefix}/{sub}" for sub in sorted(subdirs)]
                subdirs.sort()
                for file in sorted(files):
                    local = base / file
                    if local.is_file():
                        add_file(local, f"{prefix}/{file}")
                    else:
                        left_out.append(str(local))
        elif path.is_symlink():
            raise TransferFailed(f"{path}: a symlink to nothing")
        elif path.exists():
            raise TransferFailed(f"{path}: not a regular file or directory")
        else:
            raise TransferFailed(f"{path}: no such file or directory")
    manifest = proto.Manifest(tuple(entries), tuple(dirs))
    proto.parse_manifest(manifest.message())  # the same checks the receiver makes
    return manifest, locals_, left_out


def _hash_prefix(path: Path, length: int) -> Any:
    """A sha256 object fed the first ``length`` bytes of ``path`` (short if the file is)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while length > 0:
            chunk = file.read(min(READ, length))
            if not chunk:
                break
            digest.update(chunk)
            length -= len(chunk)
    return digest


async def _recv(link: Link) -> dict[str, Any]:
    return proto.parse_control(await link.recv())


async def tell_error(link: Link, message: str) -> None:
    """Best effort: the other side learns why we stop (the channel may be gone already)."""
    with contextlib.suppress(ChannelClosed, OSError):
        await link.send(proto.control({"t": "error", "message": message}))


async def send_files(
    link: Link, manifest: proto.Manifest, sources: list[Path], progress: Progress
) -> Report:
    report = Report(files=len(manifest.files), bytes_total=manifest.total)
    await link.send(proto.control(manifest.message()))
    haves = proto.parse_have(await _recv(link), manifest)
    plan, hashers = [], []
    for entry, source, have in zip(manifest.files, sources, haves, strict=True):
        digest = hashlib.sha256()
        offset = 0
        if 0 < have.offset <= entry.size:
            prefix = await asyncio.to_thread(_hash_prefix, source, have.offset)
            if prefix.hexdigest() == have.sha256:
                digest, offset = prefix, have.offset
        plan.append(offset)
        hashers.append(digest)
        if offset == entry.size:
            report.skipped.append(entry.path)
            report.sha256[entry.path] = digest.hexdigest()
            progress(entry.size)
        elif offset:
            report.resumed.append(entry.path)
            progress(offset)
    await link.send(proto.control({"t": "plan", "offsets": plan}))
    credit = Credit(proto.parse_go(await _recv(link)))
    sending = [i for i, entry in enumerate(manifest.files) if plan[i] < entry.size]
    replies = asyncio.ensure_future(_replies(link, sending, credit))
    credit.watch(replies)
    try:
        for i in sending:
            entry = manifest.files[i]
            await link.send(proto.control({"t": "file", "i": i}))
            sent = await _stream(
                link, sources[i], plan[i], entry.size, hashers[i], progress, credit
            )
            report.bytes_sent += sent
            report.sha256[entry.path] = hashers[i].hexdigest()
            await link.send(proto.control({"t": "end", "i": i, "sha256": hashers[i].hexdigest()}))
            if replies.done():
                break  # the receiver stopped: awaiting the replies raises its reason
        await link.send(proto.control({"t": "done"}))
    except ChannelClosed:
        # The receiver's own error says more than a closed channel. It may still sit unread
        # in what arrived before the close, so let the replies reach it (or the close).
        with contextlib.suppress(ChannelClosed, TimeoutError):
            await asyncio.wait_for(asyncio.shield(replies), REASON_WAIT)
        replies.cancel()
        raise
    except BaseException:
        replies.cancel()
        raise
    await replies
    return report


class Credit:
    """The receiver's window (docs/transfer.md): file data sent and not yet reported written
    by a `got` stays within it. None: the transport's own flow control is enough."""

    def __init__(self, window: int | None) -> None:
        self.window = window
        self.sent = 0
        self.acked = 0
        self.replies: asyncio.Future[None] | None = None
        self._moved = asyncio.Event()

    def watch(self, replies: asyncio.Future[None]) -> None:
        """The task reading the receiver's replies: a wait for room ends when it does."""
        self.replies = replies
        replies.add_done_callback(lambda _done: self._moved.set())

    async def room(self, size: int) -> None:
        """Wait until `size` more bytes fit the window, then count them as sent."""
        while self.window is not None and self.sent + size - self.acked > self.window:
            if self.replies is not None and self.replies.done():
                self.replies.result()  # the receiver's reason, if it stopped with one
                raise TransferFailed("the receiver finished before every file was sent")
            self._moved.clear()
            await self._moved.wait()
        self.sent += size

    def got(self, message: dict[str, Any]) -> None:
        self.acked = proto.parse_got(message, self.acked, self.sent)
        self._moved.set()


async def _reply(link: Link, credit: Credit) -> dict[str, Any]:
    """The receiver's next message other than `got` (those move the window)."""
    while (message := await _recv(link)).get("t") == "got":
        credit.got(message)
    return message


async def _replies(link: Link, sending: list[int], credit: Credit) -> None:
    """The receiver's ``ok`` for each file in order, then ``done``; ``got`` between them.

    Once every file is confirmed the transfer is complete: a channel that closes before the
    courtesy ``done`` arrives (a WebRTC peer may drop what it had not flushed) is not a failure.
    """
    for i in sending:
        message = proto.expect(await _reply(link, credit), "ok")
        if message.get("i") != i:
            raise TransferFailed(f"the receiver confirmed file {message.get('i')!r}, not {i}")
    with contextlib.suppress(ChannelClosed):
        proto.expect(await _reply(link, credit), "done")


async def _stream(
    link: Link,
    source: Path,
    offset: int,
    size: int,
    digest: Any,
    progress: Progress,
    credit: Credit,
) -> int:
    """Send ``source`` from ``offset`` to ``size`` as data records; the bytes sent."""
    left = size - offset
    step = link.max_data
    with source.open("rb", buffering=0) as file:
        file.seek(offset)
        while left > 0:
            chunk = file.read(min(step, left))
            if not chunk:
                raise TransferFailed(f"{source} shrank while being sent")
            digest.update(chunk)
            await credit.room(len(chunk))
            await link.send(proto.data(chunk))
            left -= len(chunk)
            progress(len(chunk))
    return size - offset
