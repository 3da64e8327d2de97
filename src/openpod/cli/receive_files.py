"""The receiving side of a transfer: check the manifest, offer what is held, write and verify.

Every path is checked before anything is written (docs/transfer.md), and no existing symlink
inside the target directory is written through. Unfinished files live as ``{path}.openpod-part``
so that a second run resumes them; a file reaches its final name only once its SHA-256 equals
the sender's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openpod.adapters.transfer.channel import ChannelClosed
from openpod.cli import local_tree
from openpod.cli.output import amount
from openpod.cli.send_files import PART, READ, Progress, Report, tell_error
from openpod.cli.send_peer import Link, TransferFailed
from openpod.domain import transfer_protocol as proto
from openpod.domain.transfer_keys import IntegrityError

CLOSE_WAIT = 10.0
# File data the sender may have in flight on WebRTC, not yet written here: more than a sending
# page queues in its data channel (12 MiB) plus the W/4 between reports (docs/transfer.md).
WINDOW = 32 << 20


@dataclass
class Held:
    """What is on disk for one file of the manifest."""

    final: Path
    part: Path
    offset: int
    digest: Any  # a sha256 object fed the ``offset`` bytes held
    whole: bool  # the bytes held are the final file, not a part


def _under(target: Path, rel: str) -> Path:
    """``target/rel``, refusing to go through an existing symlink on the way."""
    path = target
    for part in rel.split("/"):
        path = path / part
        if path.is_symlink():
            raise TransferFailed(f"refusing to write through the symlink {path}")
    return path


def _digest_of(path: Path) -> tuple[int, Any]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb", buffering=0) as file:
        while chunk := file.read(READ):
            digest.update(chunk)
            size += len(chunk)
    return size, digest


def _held(target: Path, entry: proto.FileEntry) -> Held:
    final = _under(target, entry.path)
    part = final.with_name(final.name + PART)
    if final.is_file():
        size, digest = _digest_of(final)
        return Held(final, part, size, digest, True)
    if final.exists():
        raise TransferFailed(f"{final} exists and is not a file")
    if part.is_file() and part.stat().st_size <= entry.size:
        size, digest = _digest_of(part)
        return Held(final, part, size, digest, False)
    return Held(final, part, 0, hashlib.sha256(), False)


async def receive_files(link: Link, target: Path, overwrite: bool, progress: Progress) -> Report:
    try:
        return await _receive(link, target, overwrite, progress)
    except IntegrityError:
        await tell_error(link, "data was altered in transit; the receiver stopped")
        raise
    except (TransferFailed, proto.ProtocolError, OSError) as error:
        if not isinstance(error, proto.PeerError):
            await tell_error(link, str(error))
        raise


def _take_stock(target: Path, manifest: proto.Manifest) -> list[Held]:
    """What is already on disk for each file (hashing it); nothing is written."""
    if target.exists() and not target.is_dir():
        raise TransferFailed(f"{target} exists and is not a directory")
    for folder in manifest.dirs:
        path = _under(target, folder)
        if path.exists() and not path.is_dir():
            raise TransferFailed(f"{path} exists and is not a directory")
    return [_held(target, entry) for entry in manifest.files]


def _room_needed(manifest: proto.Manifest, held: list[Held], plan: list[int]) -> int:
    """Bytes the files still to come add on disk: each grows from what it holds now to its
    size (a part resumed or cut back keeps its place; a file replaced whole stays until its
    new copy is verified, so it frees nothing meanwhile)."""
    need = 0
    for entry, h, offset in zip(manifest.files, held, plan, strict=True):
        if offset < entry.size:
            kept = h.offset if not h.whole or offset else 0
            need += max(0, entry.size - kept)
    return need


def _apply_plan(
    target: Path, manifest: proto.Manifest, held: list[Held], plan: list[int], overwrite: bool
) -> Report:
    """Refuse conflicts and what cannot fit, make the directories, finish the files the plan
    says are here."""
    for entry, h, offset in zip(manifest.files, held, plan, strict=True):
        if h.whole and offset != entry.size and not overwrite:
            raise TransferFailed(
                f"{h.final} exists and differs from the file sent (use --overwrite to replace it)"
            )
    there = local_tree.nearest_existing(target)
    need, free = _room_needed(manifest, held, plan), shutil.disk_usage(there).free
    if need > free:
        raise TransferFailed(
            f"not enough space here: the files need {amount(need)} more, {amount(free)} is "
            f"free in {there}; nothing was received"
        )
    target.mkdir(parents=True, exist_ok=True)
    for folder in manifest.dirs:
        _under(target, folder).mkdir(parents=True, exist_ok=True)
    report = Report(files=len(manifest.files), bytes_total=manifest.total)
    for entry, h, offset in zip(manifest.files, held, plan, strict=True):
        h.final.parent.mkdir(parents=True, exist_ok=True)
        if offset == entry.size:  # already here and verified by the sender's prefix hash
            if not h.whole:
                h.part.touch()
                os.replace(h.part, h.final)
                h.final.chmod(entry.mode)
            report.skipped.append(entry.path)
            report.sha256[entry.path] = h.digest.hexdigest()
        elif offset:
            report.resumed.append(entry.path)
            if h.whole:  # --overwrite of a file that is a prefix of the new one
                os.replace(h.final, h.part)
    return report


async def _receive(link: Link, target: Path, overwrite: bool, progress: Progress) -> Report:
    manifest = proto.parse_manifest(proto.parse_control(await link.recv()))
    held = await asyncio.to_thread(_take_stock, target, manifest)
    have = [{"offset": h.offset, "sha256": h.digest.hexdigest()} for h in held]
    await link.send(proto.control({"t": "have", "files": have}))
    plan = proto.parse_plan(proto.parse_control(await link.recv()), manifest)
    report = await asyncio.to_thread(_apply_plan, target, manifest, held, plan, overwrite)
    progress(sum(plan))
    # WebRTC has no back-pressure from here to the sender (aiortc hands every message over as
    # it arrives): a window keeps what is sent and not yet written bounded.
    window = WINDOW if manifest.credit and link.transport == "webrtc" else None
    await link.send(proto.control(proto.go(window)))
    written = Written(link, window, progress)
    coming = [i for i, entry in enumerate(manifest.files) if plan[i] < entry.size]
    for i in coming:
        message = proto.expect(proto.parse_control(await link.recv()), "file")
        if message.get("i") != i:
            raise proto.ProtocolError(f"expected file {i}, the sender started {message.get('i')!r}")
        entry, h = manifest.files[i], held[i]
        digest = h.digest if plan[i] else hashlib.sha256()
        report.bytes_sent += await _write(link, i, h.part, plan[i], entry, digest, written)
        os.replace(h.part, h.final)
        h.final.chmod(entry.mode)
        report.sha256[entry.path] = digest.hexdigest()
        await link.send(proto.control({"t": "ok", "i": i}))
    proto.expect(proto.parse_control(await link.recv()), "done")
    await link.send(proto.control({"t": "done"}))
    await _sender_closes(link)
    return report


async def _sender_closes(link: Link) -> None:
    """Let our ``done`` reach the sender before we close: the sender closes first.

    Closing a WebRTC channel at once can drop what is still buffered; the files are already
    verified and renamed, so a sender that never closes costs at most CLOSE_WAIT seconds.
    """
    with contextlib.suppress(ChannelClosed, TimeoutError, IntegrityError, proto.ProtocolError):
        await asyncio.wait_for(link.recv(), CLOSE_WAIT)


class Written:
    """File data written so far: shown as progress, and reported to the sender by a `got`
    each quarter of the window (when there is one)."""

    def __init__(self, link: Link, window: int | None, progress: Progress) -> None:
        self.link = link
        self.window = window
        self.progress = progress
        self.total = 0
        self.reported = 0

    async def add(self, size: int) -> None:
        self.total += size
        self.progress(size)
        if self.window is not None and self.total - self.reported >= self.window // 4:
            self.reported = self.total
            await self.link.send(proto.control({"t": "got", "bytes": self.total}))


async def _write(
    link: Link,
    index: int,
    part: Path,
    offset: int,
    entry: proto.FileEntry,
    digest: Any,
    written: Written,
) -> int:
    """Write file data records to ``part`` from ``offset`` until ``end``; check the hash."""
    flags = os.O_WRONLY | os.O_CREAT | (0 if offset else os.O_TRUNC)
    fd = os.open(part, flags, 0o600)
    try:
        os.ftruncate(fd, offset)
        os.lseek(fd, offset, os.SEEK_SET)
        size = offset
        while True:
            plaintext = await link.recv()
            if plaintext[:1] != b"D":
                end = proto.parse_end(proto.parse_control(plaintext), index)
                break
            view = memoryview(plaintext)[1:]
            size += len(view)
            if size > entry.size:
                raise TransferFailed(f"the sender sent more of {entry.path} than its size")
            digest.update(view)
            while view:
                view = view[os.write(fd, view) :]
            await written.add(len(plaintext) - 1)
    finally:
        os.close(fd)
    if size != entry.size or digest.hexdigest() != end:
        os.unlink(part)
        raise TransferFailed(
            f"{entry.path} does not match what was sent (SHA-256 differs); the part was removed"
        )
    return size - offset
