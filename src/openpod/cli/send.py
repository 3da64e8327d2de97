"""``openpod send PATH...`` and ``openpod receive CODE``: files between two machines by code.

No account is needed. The sender prints a code such as ``7-amber-falcon-orbit``; the
receiver types it (or opens ``/transfer`` in a browser). The code becomes a key by CPace,
so neither the control plane nor its relay can read the files; each file is SHA-256
verified end to end, and running ``receive`` again resumes what was cut (docs/transfer.md).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from openpod.cli import config as cfg
from openpod.cli.cp import progress_bar
from openpod.cli.errors import ExitCode
from openpod.cli.output import fail, print_line, stderr_console

TRANSPORT_HELP = "auto (direct, then WebRTC, then the relay), or one of direct, webrtc, relay."
TransportOpt = Annotated[str, typer.Option("--transport", help=TRANSPORT_HELP)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON lines (code, then summary).")]
LoopbackOpt = Annotated[
    bool,
    typer.Option(
        "--loopback", help="Offer only 127.0.0.1 (both ends on this machine: tests, benchmarks)."
    ),
]


def _transports(choice: str) -> tuple[str, ...]:
    from openpod.cli.send_peer import TRANSPORTS

    if choice == "auto":
        return TRANSPORTS
    if choice not in TRANSPORTS:
        raise fail(f"--transport must be auto, direct, webrtc or relay, not {choice!r}", 2)
    return (choice,)


def _ice_servers(api_url: str, transports: tuple[str, ...]) -> list[dict[str, Any]]:
    """STUN/TURN servers the platform advertises (only needed when WebRTC may be used)."""
    if "webrtc" not in transports:
        return []
    import httpx

    try:
        answer = httpx.get(f"{api_url}/transfer/config", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return []
    servers = answer.get("iceServers") if isinstance(answer, dict) else None
    return [s for s in servers if isinstance(s, dict)] if isinstance(servers, list) else []


def _json_line(data: dict[str, Any]) -> None:
    """One JSON object per line, so scripts can read the code before the transfer ends."""
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def _summary(report: Any, transport: str, seconds: float) -> dict[str, Any]:
    return {
        "files": report.files,
        "bytes": report.bytes_total,
        "bytesSent": report.bytes_sent,
        "skipped": report.skipped,
        "resumed": report.resumed,
        "transport": transport,
        "seconds": round(seconds, 3),
        "mbPerSecond": round(report.bytes_sent / 1e6 / seconds, 1) if seconds else None,
        "sha256": report.sha256,
    }


def _done(report: Any, transport: str, seconds: float, as_json: bool) -> None:
    if as_json:
        _json_line(_summary(report, transport, seconds))
        return
    rate = report.bytes_sent / 1e6 / seconds if seconds else 0.0
    print_line(
        f"{report.files} file(s), {report.bytes_total:,} bytes ({report.bytes_sent:,} moved, "
        f"{rate:.0f} MB/s over {transport}); {len(report.skipped)} already there, "
        f"{len(report.resumed)} resumed; every file SHA-256 verified"
    )


def send(
    paths: Annotated[list[Path], typer.Argument(help="Files and directories to send.")],
    transport: TransportOpt = "auto",
    listen: Annotated[
        str, typer.Option("--listen", help="Address to accept direct connections on.")
    ] = "0.0.0.0",
    port: Annotated[int, typer.Option("--port", help="Port for direct connections (0: any).")] = 0,
    loopback: LoopbackOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Send files or directories; prints the code the receiver needs."""
    from openpod.cli import send_run
    from openpod.cli.send_connect import Options
    from openpod.cli.send_files import collect
    from openpod.cli.send_peer import TransferFailed

    try:
        manifest, sources, left_out = collect(paths)
    except (TransferFailed, OSError) as error:
        raise fail(str(error), ExitCode.USAGE) from None
    for path in left_out:
        stderr_console().print(
            f"not sent (a symlink to nothing, or not a regular file): {path}", markup=False
        )
    api_url = cfg.load().api_url
    kinds = _transports(transport)
    host = "127.0.0.1" if loopback else listen
    options = Options(api_url, kinds, host, port, _ice_servers(api_url, kinds), loopback)

    def show_code(code: str) -> None:
        if as_json:
            _json_line({"code": code, "files": len(manifest.files), "bytes": manifest.total})
        else:
            print_line(f"Code: {code}")
            print_line(f"On the other side: openpod receive {code}")
            print_line(f"or in a browser:   {api_url}/transfer#{code}")
        sys.stdout.flush()

    started = time.monotonic()
    with progress_bar(not as_json and sys.stderr.isatty()) as progress:
        outcome = send_run.run_sender(options, manifest, sources, show_code, progress)
    report, used = _finish(outcome)
    _done(report, used, time.monotonic() - started, as_json)


def receive(
    code: Annotated[str, typer.Argument(help="The code the sender printed.")],
    into: Annotated[Path, typer.Option("--dir", help="Where to put the files.")] = Path("."),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing files that differ.")
    ] = False,
    transport: TransportOpt = "auto",
    loopback: LoopbackOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Receive files sent with ``openpod send`` (run again to resume)."""
    from openpod.cli import send_run
    from openpod.cli.send_connect import Options
    from openpod.domain.transfer_code import CodeError, parse_code

    try:
        parsed = parse_code(code)
    except CodeError as error:
        raise fail(f"bad code: {error}", ExitCode.USAGE) from None
    # Before the code is used: the key exchange gives a code one try.
    if into.is_symlink() and not into.exists():
        raise fail(f"--dir {into}: a symlink to nothing", ExitCode.USAGE)
    if into.exists() and not into.is_dir():
        raise fail(f"--dir {into}: not a directory", ExitCode.USAGE)
    api_url = cfg.load().api_url
    kinds = _transports(transport)
    options = Options(
        api_url, kinds, ice_servers=_ice_servers(api_url, kinds), loopback_only=loopback
    )
    started = time.monotonic()
    with progress_bar(not as_json and sys.stderr.isatty()) as progress:
        outcome = send_run.run_receiver(options, parsed, into, overwrite, progress)
    report, used = _finish(outcome)
    _done(report, used, time.monotonic() - started, as_json)


def _finish(outcome: Any) -> tuple[Any, str]:
    """The report and transport of a finished run, or the exit with its reason and code."""
    from openpod.cli.send_run import Failed

    if isinstance(outcome, Failed):
        raise fail(outcome.message, outcome.exit_code)
    report, used = outcome
    return report, used
