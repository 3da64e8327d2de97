"""``openpod cp SRC DST``: files and directories to or from a pod over SFTP (cli/transfer.py).

One side is ``POD:PATH`` (a relative PATH is under the pod's home, /workspace). The way in is
the one ``openpod ssh`` takes: the gateway's fast path where the gateway has one, else the
gateway's SSH port (``-J``), else straight to the pod (``--direct``); the pod's host key is
pinned from the API and AES-GCM is asked for. No prompts; ``--json`` prints a summary; any
failure exits non-zero, and running the same command again resumes.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import asyncssh
import typer

from openpod.cli.client import make_client
from openpod.cli.output import (
    fail,
    handle_api_errors,
    print_json,
    print_line,
    ssh_unavailable_reason,
)
from openpod.cli.ssh import SshTarget
from openpod.cli.ssh_proxy import ProxyError, open_relay
from openpod.cli.transfer import Report, TransferError, download, upload

CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
WINDOW = 16 * 1024 * 1024
MAX_PACKET = 256 * 1024
REMOTE = re.compile(r"^(?P<pod>[a-z0-9][a-z0-9-]{2,63}):(?P<path>.*)$")


def parse(src: str, dst: str) -> tuple[str, str, str, bool]:
    """(pod, remote path, local path, upload?) of `openpod cp SRC DST`."""
    source, target = REMOTE.match(src), REMOTE.match(dst)
    if bool(source) == bool(target):
        raise ValueError("one of SRC and DST must be POD:PATH and the other a local path")
    match = target or source
    assert match is not None
    path = match["path"] or "."
    return match["pod"], path, src if target else dst, target is not None


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


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[int], None]]:
    """Bytes moved, with rate and ETA, on stderr (a terminal only)."""
    if not enabled:
        yield lambda _moved: None
        return
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    columns = (*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("copying", total=None)
        yield lambda moved: bar.advance(task, moved)


async def _copy(
    target: SshTarget, remote: str, local: Path, up: bool, identities: list[Path], direct: bool,
    progress: Callable[[int], None], verify: bool,
) -> Report:  # fmt: skip
    conn = await connect(target, identities, direct=direct)
    try:
        if up:
            return await upload(conn, local, remote, progress, verify=verify)
        return await download(conn, remote, local, progress, verify=verify)
    finally:
        conn.close()
        await conn.wait_closed()


@handle_api_errors
def cp(
    src: Annotated[str, typer.Argument(help="A local path, or POD:PATH.")],
    dst: Annotated[str, typer.Argument(help="A local path, or POD:PATH.")],
    identity: Annotated[
        list[Path] | None, typer.Option("-i", "--identity", help="A key file (else the agent's).")
    ] = None,
    direct: Annotated[
        bool, typer.Option("--direct", help="Straight to the pod's port, not via the gateway.")
    ] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Hash every copied file on both sides at the end.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Copy files or directories to or from a pod (SFTP; run again to resume)."""
    try:
        pod_id, remote, local, up = parse(src, dst)
    except ValueError as error:
        raise fail(str(error), 2) from None
    with make_client() as client:
        pod = client.get_pod(pod_id)
    target = SshTarget.from_pod(pod)
    if target is None:
        raise fail(ssh_unavailable_reason(pod))
    started = time.monotonic()
    try:
        with progress_bar(not as_json and sys.stderr.isatty()) as progress:
            report = asyncio.run(
                _copy(target, remote, Path(local), up, identity or [], direct, progress, verify)
            )
    except (TransferError, ProxyError, asyncssh.Error, OSError) as error:
        raise fail(f"copy failed: {error}") from None
    seconds = time.monotonic() - started
    summary = {
        "files": report.files,
        "bytes": report.bytes_total,
        "bytesSent": report.bytes_sent,
        "skipped": report.skipped,
        "resumed": report.resumed,
        "seconds": round(seconds, 3),
        "mbPerSecond": round(report.bytes_sent / 1e6 / seconds, 1) if seconds else None,
        "sha256": report.sha256,
        "verified": verify,
    }
    if as_json:
        print_json(summary)
        return
    print_line(
        f"{report.files} file(s), {report.bytes_total:,} bytes ({report.bytes_sent:,} sent) in "
        f"{seconds:.1f} s; {len(report.skipped)} already there (verified), "
        f"{len(report.resumed)} resumed" + ("; every file verified" if verify else "")
    )
