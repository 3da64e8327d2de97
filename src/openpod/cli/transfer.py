"""Files to and from a pod over SFTP (asyncssh), for `openpod cp`: many requests in flight,
blocks of 255 KiB (OpenSSH's sftp-server refuses 256 KiB), directories recursively, and
resume: a file already there whole is verified and skipped, one there in part is verified up
to where it stops and continued from there, anything else is sent again (verified: SHA-256
on both sides, `sha256sum` in the pod). With `verify` every copied file is hashed on both
sides at the end too; SSH's AEAD already guards every byte on the way, and the pod's
sha256sum costs ~5 s a GiB here, so it is asked for, not done by default.

`copy` opens the connection the way `openpod ssh` goes (`connect`) and runs one copy. The
bytes of every file from 2 MiB on go through OpenSSH's sftp instead (about 1.6x asyncssh's
rate here), started beside that connection and fed one command per file, a second sftp for
a directory's large files at once (cli/transfer_openssh.py); OPENPOD_CP_ENGINE=asyncssh, or
a client without `sftp`, keeps every byte on asyncssh.
A directory's files are copied 8 at a time (FILES_IN_FLIGHT), the blocks in flight shared
among them: each file costs round trips of its own (its size, opening, closing), and one
after the other a directory of 1,000 files of 64 KiB went at 25-30 MB/s here, 8 at a time
at 46-48 (scp -r: 38-46).
Before a byte is written the copy makes sure it fits where it goes (statvfs@openssh.com in
the pod, statvfs here): each file needs its size less what is there already. A write that
fails on a disk that filled meanwhile says so (OpenSSH's sftp-server answers ENOSPC with a
bare `Failure`).
This module loads asyncssh, so `openpod cp` imports it only when it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import posixpath
import shlex
import shutil
import stat
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from openpod.cli import local_tree
from openpod.cli import transfer_openssh as bulk
from openpod.cli.output import amount
from openpod.cli.ssh import SshTarget, prepare_ssh
from openpod.cli.ssh_proxy import open_relay

BLOCK = 255 * 1024
IN_FLIGHT = 64
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
WINDOW = 16 * 1024 * 1024
MAX_PACKET = 256 * 1024
FILES_IN_FLIGHT = 8  # files of a directory copied at once (each costs round trips of its own)


class TransferError(Exception):
    """A copy failed; the message names the file and why."""


@dataclass
class Report:
    files: int = 0
    bytes_sent: int = 0  # moved over the wire (resumed files: only the rest)
    bytes_total: int = 0  # the size of everything copied or found there
    skipped: list[str] = field(default_factory=list)  # there already, verified
    resumed: list[str] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict)  # destination path -> digest
    # Hash every copied file (for the summary): without it, only resume checks and
    # --verify hash anything (SSH's AEAD already guards every byte on the way).
    digests: bool = True

    def in_order(self) -> Report:
        """The lists and digests in path order (files are copied several at once, and end in
        any order): the same copy reports the same way every time."""
        self.skipped.sort()
        self.resumed.sort()
        self.sha256 = dict(sorted(self.sha256.items()))
        return self


Progress = Callable[[int], None]  # bytes moved since the last call


def _sha256(path: Path, length: int | None = None) -> str:
    digest, left = hashlib.sha256(), length
    with path.open("rb") as data:
        while left is None or left > 0:
            chunk = data.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            digest.update(chunk)
            if left is not None:
                left -= len(chunk)
    return digest.hexdigest()


async def _remote_sha256(
    conn: asyncssh.SSHClientConnection, path: str, length: int | None = None
) -> str:
    quoted = shlex.quote(path)
    command = (
        f"sha256sum -- {quoted}" if length is None else f"head -c {length} -- {quoted} | sha256sum"
    )
    done = await conn.run(command, check=False)
    out = str(done.stdout or "").split()
    if done.exit_status != 0 or not out:
        raise TransferError(f"cannot hash {path} in the pod: {str(done.stderr or '').strip()}")
    return out[0]


async def _local_size(path: Path) -> int | None:
    """The size of the file at `path`, None if there is nothing; a directory there (where a
    file goes) is a TransferError: sftp would write the file inside it."""
    try:
        found = await asyncio.to_thread(os.stat, path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(found.st_mode):
        raise TransferError(f"{path}: is a directory here, not a file")
    return found.st_size


def _readable_size(path: Path) -> int:
    """The size of a file of a directory being sent; one that cannot be read, or is no
    regular file (a FIFO would block the copy), stops the copy before anything is written,
    named."""
    try:
        found = os.stat(path)
        if stat.S_ISREG(found.st_mode):
            os.close(os.open(path, os.O_RDONLY))  # readable by us?
    except FileNotFoundError:
        what = "a symlink to nothing" if path.is_symlink() else "is gone"
        raise TransferError(f"{path}: {what}") from None
    except OSError as exc:
        raise TransferError(f"{path}: {exc.strerror}") from None
    if not stat.S_ISREG(found.st_mode):
        raise TransferError(f"{path}: not a regular file")
    return found.st_size


async def _local_kind(path: Path) -> str | None:
    def kind() -> str | None:
        return "dir" if path.is_dir() else "file" if path.is_file() else None

    return await asyncio.to_thread(kind)


async def _same(conn: asyncssh.SSHClientConnection, remote: str, local: Path, length: int) -> bool:
    """Whether the first `length` bytes of both are the same (hashed on each side)."""
    theirs = await _remote_sha256(conn, remote, length)
    return theirs == await asyncio.to_thread(_sha256, local, length)


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
    """An SFTP error says what went wrong (`Failure`, `Permission denied`) but not with which
    file, and several are copied at once: it leaves here as a TransferError naming `path`."""
    try:
        yield
    except asyncssh.SFTPError as exc:
        raise TransferError(f"{path}: {exc.reason}") from None


async def _stat_size(sftp: asyncssh.SFTPClient, path: str) -> int | None:
    """The size of the file at `path` in the pod, None if there is nothing; a directory there
    is a TransferError (as _local_size)."""
    with _naming(path):
        try:
            attrs = await sftp.stat(path)
        except asyncssh.SFTPNoSuchFile:
            return None
    if attrs.permissions is not None and stat.S_ISDIR(attrs.permissions):
        raise TransferError(f"{path}: is a directory in the pod, not a file")
    return attrs.size


async def _room_in_pod(sftp: asyncssh.SFTPClient, path: str) -> tuple[int, str] | None:
    """Bytes free (what `df` calls available) on the pod's filesystem that holds `path`, or
    its nearest existing parent, and that directory; None where the server cannot say (no
    statvfs@openssh.com)."""
    here = path or "."
    while True:
        try:
            found = await sftp.statvfs(here)
        except asyncssh.SFTPNoSuchFile:
            parent = posixpath.dirname(here.rstrip("/")) or "."
            if parent == here:
                return None
            here = parent
            continue
        except asyncssh.SFTPError:
            return None
        return found.bavail * found.frsize, "~" if here == "." else here  # "." is the home


async def _room_here(path: Path) -> tuple[int, str]:
    """What _room_in_pod says, for this machine's filesystem."""

    def look() -> tuple[int, str]:
        here = local_tree.nearest_existing(path.absolute())
        return shutil.disk_usage(here).free, str(here)

    return await asyncio.to_thread(look)


def _too_big(need: int, room: tuple[int, str], where: str) -> TransferError:
    free, place = room
    return TransferError(
        f"not enough space {where}: the copy needs {amount(need)} more, "
        f"{amount(free)} is free in {place}; nothing was copied"
    )


async def _fits_here(files: list[tuple[int, Path]], top: Path) -> None:
    """TransferError, before a byte is written, if files (size, where here) coming down do
    not fit at `top`: each needs its size less what is there already (resumed: kept; sent
    again: truncated first)."""

    def need() -> int:
        return sum(
            max(0, size - (os.stat(path).st_size if path.is_file() else 0)) for size, path in files
        )

    wanted = await asyncio.to_thread(need)
    if wanted <= 0:
        return
    room = await _room_here(top)
    if wanted > room[0]:
        raise _too_big(wanted, room, "here")


async def _fits_in_pod(sftp: asyncssh.SFTPClient, files: list[tuple[int, str]], top: str) -> None:
    """TransferError, before a byte is written, if files (size, where in the pod) do not fit
    on the pod's filesystem at `top`: each needs its size less what is there already (as
    _fits_here). What is there is looked at only when the sizes alone do not fit; nothing is
    said where the server cannot tell."""
    room = await _room_in_pod(sftp, top)
    if room is None or sum(size for size, _ in files) <= room[0]:
        return
    there: dict[str, int] = {}

    async def look(remote: str) -> None:
        there[remote] = await _stat_size(sftp, remote) or 0

    await _bounded((functools.partial(look, remote) for _, remote in files), FILES_IN_FLIGHT)
    need = sum(max(0, size - there[remote]) for size, remote in files)
    if need > room[0]:
        raise _too_big(need, room, "in the pod")


async def _out_of_room(
    sftp: asyncssh.SFTPClient, remote: str, need: int, error: TransferError
) -> TransferError:
    """A write into the pod that failed: OpenSSH's sftp-server answers a full disk with a
    bare `Failure`. Where less is free there than the copy still needed, say so instead."""
    try:
        room = await _room_in_pod(sftp, posixpath.dirname(remote))
    except (asyncssh.Error, OSError):
        return error
    if room is None or room[0] >= need:
        return error
    return TransferError(
        f"{remote}: no space left in the pod ({amount(room[0])} free in {room[1]})"
    )


async def _bounded(jobs: Iterable[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run `jobs`, `limit` at a time; the first failure cancels the others and is raised."""
    pending: set[asyncio.Future[None]] = set()

    async def settle_one() -> None:
        nonlocal pending
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        errors = [error for task in done if (error := task.exception()) is not None]
        if errors:
            raise errors[0]

    try:
        for job in jobs:
            pending.add(asyncio.ensure_future(job()))
            if len(pending) >= limit:
                await settle_one()
        while pending:
            await settle_one()
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _pump(
    reader: Callable[[int, int], Awaitable[None]],
    total: int,
    start: int,
    progress: Progress,
    blocks: asyncio.Semaphore | None,
) -> None:
    """Blocks from `start` to `total` through `reader(offset, size)` (an awaitable that moves
    one block), `IN_FLIGHT` at a time, and no more than `blocks` lets the files copied at
    once have in flight together."""
    shared = blocks or asyncio.Semaphore(IN_FLIGHT)

    async def one(offset: int, size: int) -> None:
        async with shared:
            await reader(offset, size)
        progress(size)

    jobs = (
        functools.partial(one, offset, min(BLOCK, total - offset))
        for offset in range(start, total, BLOCK)
    )
    await _bounded(jobs, IN_FLIGHT)


async def _resume_point(
    conn: asyncssh.SSHClientConnection,
    remote: str,
    local: Path,
    there: int | None,
    total: int,
    destination: str,
    report: Report,
) -> int:
    """Where the copy starts: the size of what is at the destination (`there`) when that is a
    verified prefix of the source, else 0; records the file as skipped or resumed."""
    start = 0
    if there is not None and 0 < there <= total and await _same(conn, remote, local, there):
        start = there
    if start == total and there == total:
        report.skipped.append(destination)
    elif start:
        report.resumed.append(destination)
    return start


async def _finish(
    conn: asyncssh.SSHClientConnection,
    remote: str,
    local: Path,
    sizes: tuple[int, int],
    destination: str,
    report: Report,
    verify: bool,
    digest: str | None = None,
) -> None:
    """Hash the local side (unless hashed already: `digest`; with `verify` the pod's too)
    and count the file."""
    total, start = sizes
    if digest is None and (report.digests or verify):
        digest = await asyncio.to_thread(_sha256, local)
    if verify and await _remote_sha256(conn, remote) != digest:
        raise TransferError(f"{destination} does not match its source after the copy")
    report.files += 1
    report.bytes_sent += total - start
    report.bytes_total += total
    if digest is not None:
        report.sha256[destination] = digest


async def upload_file(
    conn: asyncssh.SSHClientConnection,
    sftp: asyncssh.SFTPClient,
    local: Path,
    remote: str,
    report: Report,
    progress: Progress,
    verify: bool = False,
    mover: bulk.Movers | None = None,
    blocks: asyncio.Semaphore | None = None,
    room_checked: bool = False,
) -> None:
    """One file up; `room_checked`: its directory's copy made sure it fits (else this does)."""
    total = await _local_size(local)
    if total is None:
        raise TransferError(f"{local}: is gone (it was there when the copy began)")
    there = await _stat_size(sftp, remote)
    if not room_checked:
        await _fits_in_pod(sftp, [(total, remote)], posixpath.dirname(remote))
    start = await _resume_point(conn, remote, local, there, total, remote, report)
    digest: str | None = None
    if not (start == total and there == total):
        try:
            digest = await _put(
                sftp, mover, local, remote, report, progress, verify, blocks, (total, start)
            )
        except TransferError as error:
            raise await _out_of_room(sftp, remote, total - start, error) from None
    await _finish(conn, remote, local, (total, start), remote, report, verify, digest)


async def _put(
    sftp: asyncssh.SFTPClient,
    mover: bulk.Movers | None,
    local: Path,
    remote: str,
    report: Report,
    progress: Progress,
    verify: bool,
    blocks: asyncio.Semaphore | None,
    sizes: tuple[int, int],
) -> str | None:
    """The bytes of one file from `start` on; its SHA-256 where it was hashed on the way."""
    total, start = sizes
    if mover is not None and total - start >= bulk.BIG:

        async def remote_size() -> int:
            try:
                return (await sftp.stat(remote)).size or 0
            except asyncssh.SFTPError:  # not created yet
                return 0

        verb = "reput" if start else "put"  # reput: on from the remote file's size
        command = f"{verb} {bulk.quote(str(local))} {bulk.quote(remote)}"
        # The source is hashed while it goes (from the page cache), not after.
        hashing = None
        if report.digests or verify:
            hashing = asyncio.ensure_future(asyncio.to_thread(_sha256, local))
        try:
            await _bulk(mover, command, remote_size, progress, (total, start), remote)
        finally:
            if hashing is not None:
                await asyncio.gather(hashing, return_exceptions=True)
        return None if hashing is None else hashing.result()
    with local.open("rb") as source, _naming(remote):
        # block_size=0: each block one SFTP request, awaited here. asyncssh's own split runs
        # the requests as tasks of its own, which go on (and fail unheard) when a copy stops.
        async with sftp.open(remote, "r+b" if start else "wb", block_size=0) as target:

            async def send(offset: int, size: int) -> None:
                data = os.pread(source.fileno(), size, offset)
                await target.write(data, offset)

            await _pump(send, total, start, progress, blocks)
    return None


async def _bulk(
    mover: bulk.Movers,
    command: str,
    size: Callable[[], Awaitable[int]],
    progress: Progress,
    sizes: tuple[int, int],
    name: str,
) -> None:
    total, start = sizes
    try:
        async with mover.lend() as sftp:
            await sftp.run(command, size, progress, start, total)
    except bulk.MoveError as exc:
        raise TransferError(f"{name}: {exc}") from None


async def download_file(
    conn: asyncssh.SSHClientConnection,
    sftp: asyncssh.SFTPClient,
    remote: str,
    local: Path,
    report: Report,
    progress: Progress,
    verify: bool = False,
    mover: bulk.Movers | None = None,
    blocks: asyncio.Semaphore | None = None,
    room_checked: bool = False,
) -> None:
    """One file down; `room_checked`: its directory's copy made sure it fits (else this does)."""
    total = await _stat_size(sftp, remote)
    if total is None:
        raise TransferError(f"no such file in the pod: {remote}")
    if not room_checked:
        await _fits_here([(total, local)], local.parent)
    there = await _local_size(local)
    start = await _resume_point(conn, remote, local, there, total, str(local), report)
    local.parent.mkdir(parents=True, exist_ok=True)
    if mover is not None and total - start >= bulk.BIG:
        verb = "reget" if start else "get"  # reget: on from the local file's size
        command = f"{verb} {bulk.quote(remote)} {bulk.quote(str(local))}"

        async def local_size() -> int:
            return await _local_size(local) or 0

        await _bulk(mover, command, local_size, progress, (total, start), remote)
        await _finish(conn, remote, local, (total, start), str(local), report, verify)
        return
    fd = os.open(local, os.O_WRONLY | os.O_CREAT | (0 if start else os.O_TRUNC), 0o644)
    try:
        with _naming(remote):
            # block_size=0: one SFTP request a call (see _put); a short answer is asked on.
            async with sftp.open(remote, "rb", block_size=0) as source:

                async def receive(offset: int, size: int) -> None:
                    data = await source.read(size, offset)
                    assert isinstance(data, bytes)  # opened "rb": bytes
                    while len(data) < size:  # a server may answer with less; EOF reads b""
                        more = await source.read(size - len(data), offset + len(data))
                        if not more:
                            raise TransferError(f"{remote} changed while it was read")
                        data += more
                    try:
                        os.pwrite(fd, data, offset)
                    except OSError as exc:
                        raise TransferError(f"{local}: {exc.strerror}") from None

                await _pump(receive, total, start, progress, blocks)
    finally:
        os.close(fd)
    await _finish(conn, remote, local, (total, start), str(local), report, verify)


async def _every_file(
    one: Callable[..., Awaitable[None]],
    conn: asyncssh.SSHClientConnection,
    sftp: asyncssh.SFTPClient,
    pairs: Iterable[tuple[Any, Any]],
    report: Report,
    progress: Progress,
    verify: bool,
    mover: bulk.Movers | None,
) -> None:
    """`one` (upload_file or download_file) for each (source, target) of a directory whose
    copy made sure it fits: FILES_IN_FLIGHT files at once, sharing IN_FLIGHT blocks."""
    blocks = asyncio.Semaphore(IN_FLIGHT)
    await _bounded(
        (
            functools.partial(
                one,
                conn,
                sftp,
                source,
                target,
                report,
                progress,
                verify,
                mover,
                blocks,
                room_checked=True,
            )
            for source, target in pairs
        ),
        FILES_IN_FLIGHT,
    )


async def upload(
    conn: asyncssh.SSHClientConnection,
    local: Path,
    remote: str,
    progress: Progress,
    *,
    verify: bool = False,
    mover: bulk.Movers | None = None,
    digests: bool = True,
) -> Report:
    """`local` (a file or a directory, recursively) to `remote` in the pod; large files'
    bytes through `mover` (OpenSSH's sftp) where given."""
    report = Report(digests=digests)
    async with conn.start_sftp_client() as sftp:
        kind = await _local_kind(local)
        if kind == "dir":
            pairs: list[tuple[Path, str]] = []  # every file, then where it goes
            folders: list[str] = []
            for root, _dirs, files in await asyncio.to_thread(lambda: list(local_tree.walk(local))):
                relative = Path(root).relative_to(local).as_posix()
                folders.append(posixpath.normpath(posixpath.join(remote, relative)))
                pairs += [
                    (Path(root) / name, posixpath.join(folders[-1], name)) for name in sorted(files)
                ]
            sizes = await asyncio.to_thread(lambda: [_readable_size(source) for source, _ in pairs])
            await _fits_in_pod(sftp, list(zip(sizes, (to for _, to in pairs), strict=True)), remote)
            await _no_file_in_the_way(sftp, folders)
            for folder in folders:
                await sftp.makedirs(folder, exist_ok=True)
            await _every_file(upload_file, conn, sftp, pairs, report, progress, verify, mover)
        elif kind == "file":
            if await sftp.isdir(remote):
                remote = posixpath.join(remote, local.name)
            elif remote.endswith("/"):  # into a directory, which is not there
                raise TransferError(f"{remote}: no such directory in the pod")
            await upload_file(conn, sftp, local, remote, report, progress, verify, mover)
        else:
            raise TransferError(f"no such file or directory: {local}")
    return report.in_order()


async def download(
    conn: asyncssh.SSHClientConnection,
    remote: str,
    local: Path,
    progress: Progress,
    *,
    verify: bool = False,
    mover: bulk.Movers | None = None,
    digests: bool = True,
    into_dir: bool = False,
) -> Report:
    """`remote` in the pod (a file or a directory, recursively) to `local`; large files'
    bytes through `mover` (OpenSSH's sftp) where given. `into_dir`: `local` was given as a
    directory (`out/`): a file goes into it, and it must be there."""
    report = Report(digests=digests)
    async with conn.start_sftp_client() as sftp:
        if await sftp.isdir(remote):
            pairs: list[tuple[str, Path]] = []
            sizes: list[int] = []
            folders: list[Path] = []
            for root, _dirs, files in await _walk(sftp, remote):
                relative = posixpath.relpath(root, remote)
                folders.append(local / relative if relative != "." else local)
                for name, size in sorted(files):
                    pairs.append((posixpath.join(root, name), folders[-1] / name))
                    sizes.append(size)
            await _fits_here(list(zip(sizes, (to for _, to in pairs), strict=True)), local)
            await asyncio.to_thread(_no_file_in_the_way_here, folders)
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
            await _every_file(download_file, conn, sftp, pairs, report, progress, verify, mover)
        else:
            if remote.endswith("/"):  # named as a directory (`POD:f.txt/`), and it is not one
                there = await sftp.exists(remote.rstrip("/"))
                raise TransferError(
                    f"{remote}: {'not a directory' if there else 'no such directory'} in the pod"
                )
            if await _local_kind(local) == "dir":
                local = local / posixpath.basename(remote)
            elif into_dir:
                raise TransferError(f"{local}/: no such directory here")
            await download_file(conn, sftp, remote, local, report, progress, verify, mover)
    return report.in_order()


async def _no_file_in_the_way(sftp: asyncssh.SFTPClient, folders: list[str]) -> None:
    """Each folder a directory copy makes in the pod is a directory there or not there yet
    (asked all at once), so none of them is made when one cannot be."""

    async def is_file(folder: str) -> bool:
        try:
            attrs = await sftp.stat(folder)
        except asyncssh.SFTPError:  # not there, or a file above it (found in its turn)
            return False
        return attrs.type != asyncssh.FILEXFER_TYPE_DIRECTORY

    found = await asyncio.gather(*map(is_file, folders))
    for folder, in_the_way in zip(folders, found, strict=True):
        if in_the_way:
            raise TransferError(f"{folder}: is a file in the pod, not a directory")


def _no_file_in_the_way_here(folders: list[Path]) -> None:
    """As _no_file_in_the_way, here: the folder, or the nearest part of its path that is
    there, must be a directory."""
    for folder in folders:
        there = next((p for p in (folder, *folder.parents) if p.exists() or p.is_symlink()), None)
        if there is not None and not there.is_dir():
            raise TransferError(f"{there}: is a file here, not a directory")


async def _walk(
    sftp: asyncssh.SFTPClient, top: str
) -> list[tuple[str, list[str], list[tuple[str, int]]]]:
    """os.walk in the pod: each directory, its directories, its files (name, size). Symlinks
    are followed as scp -r follows them (a Hugging Face snapshot is all links into its
    blobs), under the link's name; a link to nothing, or back to a directory it is in, or a
    FIFO or socket, stops the copy before anything is written."""
    found = []
    # Each directory to visit, with the real paths of it and the directories above it.
    stack: list[tuple[str, tuple[str, ...]]] = [(top, (await sftp.realpath(top),))]
    while stack:
        root, chain = stack.pop()
        entries: dict[str, asyncssh.SFTPAttrs] = {}
        for entry in await sftp.readdir(root):
            name = entry.filename if isinstance(entry.filename, str) else entry.filename.decode()
            if name not in (".", ".."):
                entries[name] = entry.attrs
        # What the links in it point to, asked all at once (one round trip, not one a link).
        links = [n for n, attrs in entries.items() if attrs.type == asyncssh.FILEXFER_TYPE_SYMLINK]
        targets = await asyncio.gather(
            *(_followed(sftp, posixpath.join(root, name)) for name in links)
        )
        entries.update(zip(links, targets, strict=True))
        linked = set(links)
        dirs: list[str] = []
        files: list[tuple[str, int]] = []
        for name, attrs in sorted(entries.items()):
            path = posixpath.join(root, name)
            if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                real = posixpath.join(chain[-1], name)
                if name in linked:
                    real = await sftp.realpath(path)
                    where = local_tree.leads_back(real, chain)
                    if where is not None:
                        raise TransferError(
                            f"{path}: a symlink loop in the pod (it leads back to {where})"
                        )
                dirs.append(name)
                stack.append((path, (*chain, real)))
            elif attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
                files.append((name, attrs.size or 0))
            else:  # as an upload has it: a directory copied whole or not at all
                raise TransferError(f"{path}: not a regular file in the pod")
        found.append((root, dirs, files))
    return found


async def _followed(sftp: asyncssh.SFTPClient, link: str) -> asyncssh.SFTPAttrs:
    """What the symlink `link` in the pod points to."""
    try:
        return await sftp.stat(link)
    except asyncssh.SFTPNoSuchFile:
        raise TransferError(f"{link}: a symlink to nothing in the pod") from None


# ---- the connection (the way `openpod ssh` takes) --------------------------------------


async def connect(
    target: SshTarget, identities: list[Path], *, direct: bool
) -> asyncssh.SSHClientConnection:
    if not target.host_key:
        raise TransferError("the API does not know the pod's host key yet: try again in a moment")
    keys = [str(path) for path in identities] or ()
    options = asyncssh.SSHClientConnectionOptions(
        username=target.user,
        known_hosts=([asyncssh.import_public_key(target.host_key)], [], []),
        encryption_algs=list(CIPHERS),
        compression_algs=["none"],
        client_keys=keys,
        # What the pod may have in flight to us: asyncssh's defaults (2 MiB, 32 KiB packets)
        # held downloads to ~47 MB/s here; these let them run at ~200.
        window=WINDOW,
        max_pktsize=MAX_PACKET,
    )
    gateway = None if direct else target.gateway
    if gateway is not None and gateway.fast_port is not None:
        assert target.pod_id is not None
        sock = await asyncio.to_thread(
            open_relay, gateway.host, gateway.fast_port, target.pod_id, identities
        )
        return await asyncssh.connect(sock=sock, options=options)
    if gateway is not None and target.pod_id is not None:
        trusted = [asyncssh.import_public_key(gateway.host_key)] if gateway.host_key else []
        hop = await asyncssh.connect(
            gateway.host,
            gateway.port,
            username=gateway.user,
            known_hosts=(trusted, [], []) if trusted else None,
            encryption_algs=list(CIPHERS),
            client_keys=keys,
        )
        return await asyncssh.connect(target.pod_id, 22, tunnel=hop, options=options)
    return await asyncssh.connect(target.host, target.port, options=options)


def openssh_argv(target: SshTarget, identities: list[Path], direct: bool) -> list[str] | None:
    """The `sftp` argv large files go through (cli/transfer_openssh.py): the way `openpod
    ssh` goes. None where OpenSSH's sftp is not installed, or OPENPOD_CP_ENGINE=asyncssh
    asks for everything on the asyncssh connection."""
    engine = os.environ.get("OPENPOD_CP_ENGINE", "openssh")
    if engine not in ("openssh", "asyncssh"):
        raise TransferError(f"OPENPOD_CP_ENGINE must be openssh or asyncssh, not {engine!r}")
    if engine == "asyncssh" or shutil.which("sftp") is None:
        return None
    extra = [word for path in identities for word in ("-i", str(path))]
    return bulk.sftp_argv(prepare_ssh(target, extra, direct=direct))


async def copy(
    target: SshTarget, remote: str, local: Path, up: bool, identities: list[Path], direct: bool,
    progress: Callable[[int], None], verify: bool, digests: bool = True, into_dir: bool = False,
) -> Report:  # fmt: skip
    """One `openpod cp`; `digests`: hash every copied file for the report (resume checks and
    `verify` hash what they need either way); `into_dir`: see `download`."""
    argv = openssh_argv(target, identities, direct)
    mover = None if argv is None else bulk.Movers(argv)
    # sftp's SSH handshake runs beside asyncssh's.
    starting = asyncio.ensure_future(mover.start() if mover else asyncio.sleep(0))
    try:
        conn = await connect(target, identities, direct=direct)
        try:
            await starting
            if up:
                report = await upload(
                    conn, local, remote, progress, verify=verify, mover=mover, digests=digests
                )
            else:
                report = await download(
                    conn,
                    remote,
                    local,
                    progress,
                    verify=verify,
                    mover=mover,
                    digests=digests,
                    into_dir=into_dir,
                )
        finally:
            conn.close()
            await conn.wait_closed()
    except BaseException:
        await asyncio.gather(starting, return_exceptions=True)
        if mover is not None:
            mover.kill()
            await mover.close()
        raise
    if mover is not None:
        await mover.close()
    return report
