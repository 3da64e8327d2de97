"""``openpod ssh proxy POD --relay HOST:PORT``: the client of the gateway's fast path, run by
OpenSSH as a ProxyCommand (domain/relay.py has the handshake and why).

It connects, signs the gateway's nonce with the user's key (from an agent or an unencrypted
key file), and then, with ``ProxyUseFdpass yes``, hands the connected socket to ssh and exits:
ssh talks to the relay itself, with no process copying bytes between. Without fd passing
it copies stdin/stdout to the socket and back. Its start-up is part of every connection's:
the connection to the gateway and its greeting (a round trip) come while the keys load.

    ssh -o ProxyCommand="openpod ssh proxy %h --relay GW:2223" -o ProxyUseFdpass=yes root@POD
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import sys
import threading
from collections.abc import Sequence

from openpod.cli import ssh_keys
from openpod.cli.ssh_keys import StrPath
from openpod.domain import relay

CHUNK = 256 * 1024


class ProxyError(Exception):
    """The fast path could not be opened; the message says why, in the user's words."""


def _line(sock: socket.socket) -> bytes:
    """One line, and not a byte more: what follows the answer is the pod's SSH banner."""
    data = b""
    while not data.endswith(b"\n"):
        peek = sock.recv(relay.MAX_LINE, socket.MSG_PEEK)
        if not peek:
            raise ProxyError("the gateway closed the connection")
        end = peek.find(b"\n")
        data += sock.recv(end + 1 if end >= 0 else len(peek))
        if len(data) > relay.MAX_LINE:
            raise ProxyError("the gateway's line is too long")
    return data


class _Greeting(threading.Thread):
    """Connects to the gateway and reads its greeting, beside the loading of the keys."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(daemon=True)
        self.address = (host, port)
        self.sock: socket.socket | None = None
        self.line = b""
        self.error: OSError | ProxyError | None = None
        self.start()

    def run(self) -> None:
        try:
            self.sock = socket.create_connection(self.address, timeout=30)
        except OSError as error:
            host, port = self.address
            self.error = ProxyError(
                f"cannot reach the gateway's fast path at {host}:{port}: {error}"
            )
            return
        try:
            self.line = _line(self.sock)
        except (OSError, ProxyError) as error:
            self.error = error

    def result(self) -> tuple[socket.socket, bytes]:
        self.join()
        if self.sock is not None and self.error is None:
            return self.sock, self.line
        self.discard()
        assert self.error is not None
        raise ProxyError(str(self.error))

    def discard(self) -> None:
        self.join()
        if self.sock is not None:
            self.sock.close()


def open_relay(host: str, port: int, pod_id: str, identities: Sequence[StrPath]) -> socket.socket:
    """A socket through which the pod's sshd answers, the handshake done."""
    greeting = _Greeting(host, port)
    try:
        signers = ssh_keys.signers(identities)
    except BaseException:
        greeting.discard()
        raise
    sock, line = greeting.result()
    if not signers:
        sock.close()
        raise ProxyError("no SSH key to sign with: start ssh-agent, or pass -i KEY")
    try:
        nonce = relay.parse_greeting(line)
        payload = relay.signed_payload(nonce, pod_id)
        for signer in signers[: relay.MAX_TRIES]:
            sock.sendall(relay.hello(pod_id, signer.public_line, signer.sign(payload)))
            word, reason = relay.answer(_line(sock))
            if word == "OK":
                sock.settimeout(None)
                return sock
            if word == "ERR":
                raise ProxyError(reason)
        raise ProxyError("none of your SSH keys is registered with openpod")
    except (relay.RelayProtocolError, OSError) as error:
        sock.close()
        raise ProxyError(str(error)) from None
    except ProxyError:
        sock.close()
        raise


def _copy(source: int, sink: int, done: threading.Event) -> None:
    with contextlib.suppress(OSError):
        while data := os.read(source, CHUNK):
            view = memoryview(data)
            while view:
                view = view[os.write(sink, view) :]
    done.set()


def hand_over(sock: socket.socket) -> None:
    """Give ssh the socket (ProxyUseFdpass: stdout is a unix socket), else relay stdio."""
    out = sys.stdout.fileno()
    if stat.S_ISSOCK(os.fstat(out).st_mode):
        with contextlib.suppress(OSError):
            channel = socket.socket(fileno=os.dup(out))
            if channel.family == socket.AF_UNIX:
                socket.send_fds(channel, [b"\0"], [sock.fileno()])
                channel.close()
                return
            channel.close()
    done = threading.Event()
    for source, sink in ((sys.stdin.fileno(), sock.fileno()), (sock.fileno(), out)):
        threading.Thread(target=_copy, args=(source, sink, done), daemon=True).start()
    done.wait()


def run(relay_address: str, ssh_host: str, identities: Sequence[StrPath]) -> None:
    host, _, port = relay_address.rpartition(":")
    if not host or not port.isdigit():
        raise ProxyError(f"--relay {relay_address!r} is not HOST:PORT")
    pod_id = ssh_host.removesuffix(".openpod")
    hand_over(open_relay(host.strip("[]"), int(port), pod_id, identities))


USAGE = "usage: openpod ssh proxy POD --relay HOST:PORT [-i KEY]..."


def parse_args(argv: Sequence[str]) -> tuple[str, str, list[str]]:
    """(pod, relay, key files) of `openpod ssh proxy`'s arguments, read by hand: argparse
    would add ~5 ms to every connection's start. ValueError says what is wrong."""
    pods: list[str] = []
    relays: list[str] = []
    identities: list[str] = []
    words = iter(argv)
    for word in words:
        name, equals, value = word.partition("=")
        if word.startswith("-i") and len(word) > 2:
            identities.append(word[2:])  # -iKEY
        elif name in ("--relay", "-i", "--identity"):
            if not equals:
                value = next(words, "")
                if not value:
                    raise ValueError(f"{name} needs a value")
            (relays if name == "--relay" else identities).append(value)
        elif word.startswith("-"):
            raise ValueError(f"unknown option {word}")
        else:
            pods.append(word)
    if len(pods) != 1:
        raise ValueError("name one pod" if not pods else f"one pod, not {len(pods)}")
    if len(relays) != 1:
        raise ValueError("--relay HOST:PORT is required, once")
    return pods[0], relays[0], identities


def main(argv: Sequence[str]) -> int:
    """`openpod ssh proxy` without the CLI's start-up (typer, rich): ssh runs it per connection."""
    try:
        pod, relay_address, identities = parse_args(argv)
    except ValueError as error:
        print(f"openpod ssh proxy: {error}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        run(relay_address, pod, identities)
    except ProxyError as error:
        print(f"openpod: {error}", file=sys.stderr)
        return 255
    return 0
