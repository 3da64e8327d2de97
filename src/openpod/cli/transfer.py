"""Files to and from a pod over SFTP (asyncssh), for `openpod cp`: many requests in flight,
blocks of 255 KiB (OpenSSH's sftp-server refuses 256 KiB), directories recursively, and
resume: a file already there whole is verified and skipped, one there in part is verified up
to where it stops and continued from there, anything else is sent again (verified: SHA-256
on both sides, `sha256sum` in the pod). With `verify` every copied file is hashed on both
sides at the end too; SSH's AEAD already guards every byte on the way, and the pod's
sha256sum costs ~5 s a GiB here, so it is asked for, not done by default.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

BLOCK = 255 * 1024
IN_FLIGHT = 64


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
    try:
        return (await asyncio.to_thread(os.stat, path)).st_size
    except FileNotFoundError:
        return None


async def _local_kind(path: Path) -> str | None:
    def kind() -> str | None:
        return "dir" if path.is_dir() else "file" if path.is_file() else None

    return await asyncio.to_thread(kind)


async def _same(conn: asyncssh.SSHClientConnection, remote: str, local: Path, length: int) -> bool:
    """Whether the first `length` bytes of both are the same (hashed on each side)."""
    theirs = await _remote_sha256(conn, remote, length)
    return theirs == await asyncio.to_thread(_sha256, local, length)


async def _stat_size(sftp: asyncssh.SFTPClient, path: str) -> int | None:
    try:
        attrs = await sftp.stat(path)
    except asyncssh.SFTPNoSuchFile:
        return None
    return attrs.size


async def _pump(
    reader: Callable[[int, int], object], total: int, start: int, progress: Progress
) -> None:
    """Blocks from `start` to `total` through `reader(offset, size)` (an awaitable that moves
    one block), `IN_FLIGHT` at a time."""
    pending: set[asyncio.Task[None]] = set()

    async def one(offset: int, size: int) -> None:
        await reader(offset, size)  # type: ignore[misc]
        progress(size)

    offset = start
    try:
        while offset < total or pending:
            while offset < total and len(pending) < IN_FLIGHT:
                size = min(BLOCK, total - offset)
                pending.add(asyncio.create_task(one(offset, size)))
                offset += size
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
    finally:
        for task in pending:
            task.cancel()


async def upload_file(
    conn: asyncssh.SSHClientConnection,
    sftp: asyncssh.SFTPClient,
    local: Path,
    remote: str,
    report: Report,
    progress: Progress,
    verify: bool = False,
) -> None:
    total = await _local_size(local)
    assert total is not None
    there = await _stat_size(sftp, remote)
    start = 0
    if there is not None and 0 < there <= total and await _same(conn, remote, local, there):
        start = there
    if start == total and there == total:
        report.skipped.append(remote)
    else:
        if start:
            report.resumed.append(remote)
        with local.open("rb") as source:
            async with sftp.open(remote, "r+b" if start else "wb") as target:

                async def send(offset: int, size: int) -> None:
                    data = os.pread(source.fileno(), size, offset)
                    await target.write(data, offset)

                await _pump(send, total, start, progress)
    digest = await asyncio.to_thread(_sha256, local)
    if verify and await _remote_sha256(conn, remote) != digest:
        raise TransferError(f"{remote} in the pod does not match {local} after the copy")
    report.files += 1
    report.bytes_sent += total - start
    report.bytes_total += total
    report.sha256[remote] = digest


async def download_file(
    conn: asyncssh.SSHClientConnection,
    sftp: asyncssh.SFTPClient,
    remote: str,
    local: Path,
    report: Report,
    progress: Progress,
    verify: bool = False,
) -> None:
    total = await _stat_size(sftp, remote)
    if total is None:
        raise TransferError(f"no such file in the pod: {remote}")
    there = await _local_size(local)
    start = 0
    if there is not None and 0 < there <= total and await _same(conn, remote, local, there):
        start = there
    if start == total and there is not None:
        report.skipped.append(str(local))
    elif start:
        report.resumed.append(str(local))
    local.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(local, os.O_WRONLY | os.O_CREAT | (0 if start else os.O_TRUNC), 0o644)
    try:
        async with sftp.open(remote, "rb") as source:

            async def receive(offset: int, size: int) -> None:
                data = await source.read(size, offset)
                assert isinstance(data, bytes)  # opened "rb": bytes
                if len(data) != size:
                    raise TransferError(f"{remote} changed while it was read")
                os.pwrite(fd, data, offset)

            await _pump(receive, total, start, progress)
    finally:
        os.close(fd)
    digest = await asyncio.to_thread(_sha256, local)
    if verify and await _remote_sha256(conn, remote) != digest:
        raise TransferError(f"{local} does not match {remote} in the pod after the copy")
    report.files += 1
    report.bytes_sent += total - start
    report.bytes_total += total
    report.sha256[str(local)] = digest


async def upload(
    conn: asyncssh.SSHClientConnection,
    local: Path,
    remote: str,
    progress: Progress,
    *,
    verify: bool = False,
) -> Report:
    """`local` (a file or a directory, recursively) to `remote` in the pod."""
    report = Report()
    async with conn.start_sftp_client() as sftp:
        kind = await _local_kind(local)
        if kind == "dir":
            for root, _dirs, files in await asyncio.to_thread(lambda: list(os.walk(local))):
                relative = Path(root).relative_to(local).as_posix()
                target = posixpath.normpath(posixpath.join(remote, relative))
                await sftp.makedirs(target, exist_ok=True)
                for name in sorted(files):
                    await upload_file(
                        conn,
                        sftp,
                        Path(root) / name,
                        posixpath.join(target, name),
                        report,
                        progress,
                        verify,
                    )
        elif kind == "file":
            if await sftp.isdir(remote):
                remote = posixpath.join(remote, local.name)
            await upload_file(conn, sftp, local, remote, report, progress, verify)
        else:
            raise TransferError(f"no such file or directory: {local}")
    return report


async def download(
    conn: asyncssh.SSHClientConnection,
    remote: str,
    local: Path,
    progress: Progress,
    *,
    verify: bool = False,
) -> Report:
    """`remote` in the pod (a file or a directory, recursively) to `local`."""
    report = Report()
    async with conn.start_sftp_client() as sftp:
        if await sftp.isdir(remote):
            for root, _dirs, files in await _walk(sftp, remote):
                relative = posixpath.relpath(root, remote)
                target = local / relative if relative != "." else local
                target.mkdir(parents=True, exist_ok=True)
                for name in sorted(files):
                    await download_file(
                        conn,
                        sftp,
                        posixpath.join(root, name),
                        target / name,
                        report,
                        progress,
                        verify,
                    )
        else:
            if await _local_kind(local) == "dir":
                local = local / posixpath.basename(remote)
            await download_file(conn, sftp, remote, local, report, progress, verify)
    return report


async def _walk(sftp: asyncssh.SFTPClient, top: str) -> list[tuple[str, list[str], list[str]]]:
    found = []
    stack = [top]
    while stack:
        root = stack.pop()
        dirs, files = [], []
        for entry in await sftp.readdir(root):
            name = entry.filename if isinstance(entry.filename, str) else entry.filename.decode()
            if name in (".", ".."):
                continue
            if entry.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                dirs.append(name)
                stack.append(posixpath.join(root, name))
            elif entry.attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
                files.append(name)
        found.append((root, dirs, files))
    return found
