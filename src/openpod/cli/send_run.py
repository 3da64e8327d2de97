"""The two sides of a transfer from start to end, and what each failure means to the user.

The sender keeps its room open after a receiver goes away mid-transfer, so running the same
``openpod receive CODE`` again resumes; a wrong code ends the room for good (one guess per
code). Failures come back as :class:`Failed` with the exit code scripts can trust.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from openpod.adapters.transfer.channel import ChannelClosed
from openpod.adapters.transfer.signal import PeerLeft, SignalClient, SignalError
from openpod.cli.errors import ExitCode
from openpod.cli.output import stderr_console
from openpod.cli.receive_files import receive_files
from openpod.cli.send_connect import Options, receiver_connect, sender_connect
from openpod.cli.send_files import Progress, Report, send_files
from openpod.cli.send_peer import TransferFailed, WrongCode, key_exchange
from openpod.domain import transfer_protocol as proto
from openpod.domain.transfer_code import TransferCode
from openpod.domain.transfer_keys import IntegrityError

SIGNAL_EXITS = {
    "no-such-code": ExitCode.NOT_FOUND,
    "burned": ExitCode.NOT_FOUND,
    "expired": ExitCode.NOT_FOUND,
    "code-in-use": ExitCode.CONFLICT,
    "unreachable": ExitCode.UNREACHABLE,
}
SIGNAL_MESSAGES = {
    "no-such-code": "no transfer has this code (it ended, expired or was never made)",
    "burned": "this code is no longer valid: a wrong code was tried with it",
    "expired": "the code expired; run `openpod send` again for a new one",
    "code-in-use": "someone is already receiving with this code",
}


@dataclass(frozen=True)
class Failed:
    message: str
    exit_code: int = ExitCode.API_ERROR


def _failure(error: BaseException, api_url: str, role: str) -> Failed:
    if isinstance(error, WrongCode):
        if role == "sender":
            return Failed(
                "a wrong code was tried, so this code no longer works: "
                "run `openpod send` again for a new one",
                ExitCode.AUTH,
            )
        return Failed(f"{error}; ask the sender for a new code", ExitCode.AUTH)
    if isinstance(error, ChannelClosed | PeerLeft):
        return Failed(f"the connection to the other side was lost ({role}); run again to resume")
    if isinstance(error, SignalError):
        message = SIGNAL_MESSAGES.get(error.code, error.message)
        return Failed(message, SIGNAL_EXITS.get(error.code, ExitCode.API_ERROR))
    if isinstance(error, IntegrityError):
        return Failed("data was altered in transit; the transfer stopped", ExitCode.API_ERROR)
    if isinstance(error, proto.PeerError):
        return Failed(f"the other side stopped: {error}")
    if isinstance(error, OSError) and not isinstance(error, TimeoutError):
        return Failed(f"cannot reach the openpod API at {api_url}: {error}", ExitCode.UNREACHABLE)
    return Failed(str(error) or type(error).__name__)


ERRORS = (
    TransferFailed,
    SignalError,
    IntegrityError,
    proto.ProtocolError,
    ChannelClosed,
    PeerLeft,
    OSError,
)


def run_sender(
    options: Options,
    manifest: proto.Manifest,
    sources: list[Path],
    show_code: Callable[[str], None],
    progress: Progress,
) -> tuple[Report, str] | Failed:
    try:
        return asyncio.run(_sender(options, manifest, sources, show_code, progress))
    except ERRORS as error:
        return _failure(error, options.api_url, "sender")


async def _sender(
    options: Options,
    manifest: proto.Manifest,
    sources: list[Path],
    show_code: Callable[[str], None],
    progress: Progress,
) -> tuple[Report, str]:
    signal = await SignalClient.connect(options.api_url)
    try:
        nameplate, room, _expires = await signal.allocate()
        code = TransferCode.new(nameplate)
        show_code(code.text)
        while True:
            await signal.wait_peer()
            try:
                session = await key_exchange(signal, code, room, "sender")
            except WrongCode:
                await signal.burn()
                raise
            except PeerLeft:
                continue
            try:
                link = await sender_connect(session, options)
                try:
                    return await send_files(link, manifest, sources, progress), link.transport
                finally:
                    await link.close()
            except (ChannelClosed, PeerLeft):
                stderr_console().print(
                    "the receiver went away; waiting for it to come back with the same code",
                    markup=False,
                )
    finally:
        await signal.close()


def run_receiver(
    options: Options, code: TransferCode, into: Path, overwrite: bool, progress: Progress
) -> tuple[Report, str] | Failed:
    try:
        return asyncio.run(_receiver(options, code, into, overwrite, progress))
    except ERRORS as error:
        return _failure(error, options.api_url, "receiver")


async def _receiver(
    options: Options, code: TransferCode, into: Path, overwrite: bool, progress: Progress
) -> tuple[Report, str]:
    signal = await SignalClient.connect(options.api_url)
    try:
        room, _expires = await signal.claim(code.nameplate)
        session = await key_exchange(signal, code, room, "receiver")
        link = await receiver_connect(session, options)
        try:
            return await receive_files(link, into, overwrite, progress), link.transport
        finally:
            await link.close()
    finally:
        await signal.close()
