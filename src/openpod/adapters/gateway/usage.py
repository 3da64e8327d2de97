"""The session a direct login gets: the gateway has no shell, so it says how to use it.

`ssh -p 2222 openpod@gateway` (with or without a command, or `sftp` against the gateway)
opens a session channel. Refusing it would leave the user with OpenSSH's bare "channel 0:
open failed"; accepting it and printing the usage on stderr, then exiting with status 1,
tells them what to type instead. Nothing the client sends is read.
"""

from __future__ import annotations

import asyncssh

USAGE_EXIT_STATUS = 1


class UsageSession(asyncssh.SSHServerSession[str]):
    """Accepts any shell, command or subsystem request, prints `text`, and exits."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._chan: asyncssh.SSHServerChannel[str] | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[str]) -> None:
        self._chan = chan

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: object
    ) -> bool:
        return True  # an interactive `ssh openpod@gw` asks for one; refusing it adds noise

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return True

    def session_started(self) -> None:
        chan = self._chan
        assert chan is not None
        text = self._text
        if chan.get_terminal_type() is not None:  # the client's terminal is raw: add the CRs
            text = text.replace("\n", "\r\n")
        chan.write_stderr(text)
        chan.exit(USAGE_EXIT_STATUS)
