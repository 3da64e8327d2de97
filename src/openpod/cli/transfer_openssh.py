"""Large files of `openpod cp` moved by OpenSSH's own `sftp` client.

asyncssh moves ~190 MB/s here where OpenSSH's scp moves ~380 (bench/RESULTS.md): in Python
every 32 KiB SSH packet (the size the pod's sshd accepts) costs an encryption call, a
random padding, an extra SSH_MSG_IGNORE packet asyncssh puts before it and two socket
writes. So the bytes of each large file go through `sftp -b -` (the same way in as
`openpod ssh`: the gateway's fast path, the gateway's SSH port, or straight; the pod's host
key pinned; AES-GCM; 64 requests of 255 KiB in flight), while the asyncssh connection
keeps doing what it does well: sizes, directories, the resume point verified by SHA-256 on
both sides, `--verify`. Files under 2 MiB stay on that connection, several at once: sftp
runs one command at a time, and for a small file its round trips cost more than asyncssh's
slower bytes (a directory of 1 MiB files: 201 MB/s on asyncssh 8 at a time, 185 through
sftp; of 2 MiB files: 206 and 236; of 4 MiB files: 227 and 273).

A directory's large files go two at a time, through two sftp processes (Movers): one sftp
runs its commands one after another and each file costs it round trips of its own (`get`
stats the file twice before it opens it), which a second one hides (through the fast path,
100 files of 4 MiB down: 248 -> 283 MB/s, up: 294 -> 318; 40 of 16 MiB down: 347 -> 404; a
third sftp did no better on 2 cores).

The sftp processes die with us (PR_SET_PDEATHSIG): a killed `openpod cp` leaves no copy
running behind it, only a partial file that the next run verifies and continues (`reput`,
`reget`). Progress is the destination's size, looked at four times a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

BIG = 2 << 20  # bytes: from this many left to move on, a file goes through OpenSSH
REQUESTS = 64  # SFTP requests in flight
BLOCK = 255 * 1024  # OpenSSH's sftp-server refuses 256 KiB
CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com"
POLL_SECONDS = 0.25
MOVERS = 2  # sftp processes for one copy at most

PR_SET_PDEATHSIG = 1


class MoveError(Exception):
    """sftp failed; the message is its own reason."""


def sftp_argv(ssh_argv: Sequence[str]) -> list[str]:
    """The `sftp -b -` argv that goes where `ssh_argv` (cli/ssh.prepare_ssh's, with no remote
    command) goes: its options, `-P` for its `-p`, and the transfer's own options."""
    if not ssh_argv or ssh_argv[0] != "ssh":
        raise ValueError(f"not an ssh command line: {list(ssh_argv)[:1]}")
    *options, destination = ssh_argv[1:]
    options = ["-P" if option == "-p" else option for option in options]
    own = ["-q", "-B", str(BLOCK), "-R", str(REQUESTS), "-o", f"Ciphers={CIPHERS}"]
    return ["sftp", *own, "-o", "Compression=no", *options, "-b", "-", destination]


def quote(path: str) -> str:
    """`path` as one argument of an sftp batch command: double-quoted, with quotes,
    backslashes and glob characters escaped (sftp would expand them), and never read as a
    flag (sftp sees `-x` as one, quoted or not)."""
    if path.startswith("-"):
        path = f"./{path}"
    return '"' + re.sub(r'(["\\*?\[\]])', r"\\\1", path) + '"'


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the process that started us ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Mover:
    """One `sftp -b -` process, fed one command at a time (Movers.lend sees to that: two
    readers of its output at once would each take the other's answer), closed at the end."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self._proc: asyncio.subprocess.Process | None = None
        self._errors: asyncio.Future[bytes] | None = None
        self._killed = False

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        assert self._proc.stderr is not None
        self._errors = asyncio.ensure_future(self._proc.stderr.read())

    async def run(
        self,
        command: str,
        size: Callable[[], Awaitable[int]],
        progress: Callable[[int], None],
        start: int,
        total: int,
    ) -> None:
        """One batch `command` moving a file from `start` to `total` bytes, then `pwd`, whose
        answer on stdout says the command is done; the growth of `size()` reported as
        progress meanwhile, and the rest once done. MoveError with sftp's reason if sftp
        stops (in batch mode it stops at the first failure)."""
        done = await self._send(command)
        moved = start
        try:
            while not done.done():
                await asyncio.wait([done], timeout=POLL_SECONDS)
                if done.done():
                    break  # no last look at the size: a round trip per file, in our turn
                with contextlib.suppress(OSError):
                    now = await size()
                    if now > moved:
                        progress(now - moved)
                        moved = now
        finally:
            done.cancel()
        if not done.result():
            raise MoveError(await self._reason())
        if total > moved:
            progress(total - moved)

    async def ready(self) -> None:
        """Returns once sftp is connected (it answers a `pwd`); MoveError if it ends first."""
        if not await (await self._send(None)):
            raise MoveError(await self._reason())

    async def _send(self, command: str | None) -> asyncio.Future[bool]:
        """Hand sftp `command` (if any) and a `pwd`: the answer to the `pwd`, to come (False
        if sftp ends first)."""
        proc = self._proc
        assert proc is not None
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            proc.stdin.write(("pwd\n" if command is None else f"{command}\npwd\n").encode())
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise MoveError(await self._reason()) from None
        return asyncio.ensure_future(self._answered(proc.stdout))

    @staticmethod
    async def _answered(stdout: asyncio.StreamReader) -> bool:
        while line := await stdout.readline():
            if line.startswith(b"Remote working directory: "):
                return True
        return False  # sftp ended first

    async def _reason(self) -> str:
        assert self._proc is not None
        assert self._errors is not None
        code = await self._proc.wait()
        reason = (await self._errors).decode(errors="replace").strip()
        return reason.splitlines()[-1] if reason else f"sftp exited with {code}"

    async def close(self) -> None:
        """End sftp: at the end of its commands, or killed if a copy is cut short."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:  # stuck: it must not outlive the copy
                self.kill()
                await proc.wait()
            except asyncio.CancelledError:  # the copy is cut short: so is sftp
                self.kill()
                await proc.wait()
                raise
        if self._errors is not None:
            await asyncio.gather(self._errors, return_exceptions=True)

    def kill(self) -> None:
        """SIGKILL, once. Popen.send_signal first polls the pid: a second kill of an sftp that
        died of the first, before asyncio's child watcher saw it die, reaped it behind the
        watcher's back ("Unknown child process pid N" on stderr; Movers.kill, then the
        cancelled _connect, did that in ~1 failed copy of 20)."""
        if self._proc is not None and self._proc.returncode is None and not self._killed:
            self._killed = True
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()


class Movers:
    """The sftp processes of one copy, at most `most`: the first started with the copy, another
    only when a command finds every one busy (it takes whichever is free first: the new one
    once connected, or one that finishes meanwhile). One that cannot connect is left out;
    the others carry on."""

    def __init__(self, argv: Sequence[str], most: int = MOVERS) -> None:
        self.argv = list(argv)
        self.most = most
        self._all: list[Mover] = []
        self._idle: asyncio.Queue[Mover] = asyncio.Queue()
        self._growing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        mover = Mover(self.argv)
        self._all.append(mover)
        await mover.start()  # not waited for: its handshake runs beside asyncssh's
        self._idle.put_nowait(mover)

    @contextlib.asynccontextmanager
    async def lend(self) -> AsyncIterator[Mover]:
        """The first free sftp, for one command (then it goes back to the others)."""
        if self._idle.empty() and len(self._all) < self.most:
            another = Mover(self.argv)
            self._all.append(another)  # now: the commands behind this one count it
            task = asyncio.ensure_future(self._connect(another))
            self._growing.add(task)
            task.add_done_callback(self._growing.discard)
        mover = await self._idle.get()
        try:
            yield mover
        finally:
            self._idle.put_nowait(mover)

    async def _connect(self, mover: Mover) -> None:
        try:
            await mover.start()
            await mover.ready()
        except (MoveError, OSError):
            mover.kill()  # could not connect: the others carry on
            return
        except asyncio.CancelledError:
            mover.kill()  # the copy ended while it connected: it has nothing to do
            raise
        self._idle.put_nowait(mover)

    def kill(self) -> None:
        for task in self._growing:
            task.cancel()
        for mover in self._all:
            mover.kill()

    async def close(self) -> None:
        """End every sftp at the end of its commands; one still connecting has none: killed
        (_connect, cancelled)."""
        for task in list(self._growing):
            task.cancel()
        await asyncio.gather(*self._growing, return_exceptions=True)
        await asyncio.gather(*(mover.close() for mover in self._all))
