"""``openpod cp SRC DST``: files and directories to or from a pod over SFTP (cli/transfer.py).

One side is ``POD:PATH``: a relative PATH, or one starting ``~/``, is under the pod's home
(/workspace); a file copied to a PATH ending in ``/`` (either side) goes into that
directory, which must be there, and a SRC ending in ``/`` must be a directory. The way in is
the one ``openpod ssh`` takes: the gateway's fast path where the gateway has one, else the
gateway's SSH port (``-J``), else straight to the pod (``--direct``); the pod's host key is
pinned from the API and AES-GCM is asked for. No prompts; ``--json`` prints a summary; any
failure exits non-zero, and running the same command again resumes.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

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

REMOTE = re.compile(r"^(?P<pod>[a-z0-9][a-z0-9-]{2,63}):(?P<path>.*)$")


def parse(src: str, dst: str) -> tuple[str, str, str, bool]:
    """(pod, remote path, local path, upload?) of `openpod cp SRC DST`."""
    source, target = REMOTE.match(src), REMOTE.match(dst)
    if bool(source) == bool(target):
        raise ValueError("one of SRC and DST must be POD:PATH and the other a local path")
    match = target or source
    assert match is not None
    return match["pod"], _in_pod(match["path"]), src if target else dst, target is not None


def _in_pod(path: str) -> str:
    """A path in the pod as SFTP takes it: `~` and `~/...` are the pod's home, where SFTP
    starts (scp and sftp read them so; SFTP itself would take `~` as a name), as is an empty
    path. Another user's `~name` is refused: its home is not known here."""
    if path in ("", "~"):
        return "."
    if path.startswith("~/"):
        return path[2:] or "."
    if path.startswith("~"):
        user = path[1:].split("/", 1)[0]
        raise ValueError(f"{path}: the home of {user!r} is not known here; give its full path")
    return path


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
    if up and local.endswith(("/", os.sep)) and not os.path.isdir(local):
        # A source named as a directory (`f.txt/`) that is not one: Path would drop the slash
        # and copy the file; scp and cp refuse it. Checked before anything is asked of the API.
        what = (
            "not a directory"
            if os.path.lexists(local.rstrip("/" + os.sep))
            else "no such directory"
        )
        raise fail(f"copy failed: {local}: {what}")
    with make_client() as client:
        pod = client.get_pod(pod_id)
    target = SshTarget.from_pod(pod)
    if target is None:
        raise fail(ssh_unavailable_reason(pod))
    # asyncssh takes ~0.25 s to import: only this command pays for it, not every `openpod`.
    import asyncssh

    from openpod.cli import transfer
    from openpod.cli.ssh_proxy import ProxyError

    started = time.monotonic()
    try:
        with progress_bar(not as_json and sys.stderr.isatty()) as progress:
            report = asyncio.run(
                transfer.copy(
                    target,
                    remote,
                    Path(local),
                    up,
                    identity or [],
                    direct,
                    progress,
                    verify,
                    digests=as_json,  # only the JSON summary shows every file's SHA-256
                    into_dir=not up and local.endswith(("/", os.sep)),
                )
            )
    except (transfer.TransferError, ProxyError, asyncssh.Error, OSError) as error:
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
