"""``openpod ssh proxy POD --relay HOST:PORT``: the client of the gateway's fast path, run by
OpenSSH as a ProxyCommand (domain/relay.py has the handshake and why).

It connects, signs the gateway's nonce with the user's key (from an agent or an unencrypted
key file), and then, with ``ProxyUseFdpass yes``, hands the connected socket to ssh and exits:
ssh talks to the relay itself, with no process copying bytes between. Without fd passing
it copies stdin/stdout to the socket and back.

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
from pathlib import Path

from openpod.cli import ssh_keys
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


def open_relay(host: str, port: int, pod_id: str, identities: Sequence[Path]) -> socket.socket:
    """A socket through which the pod's sshd answers, the handshake done."""
    signers = ssh_keys.signers(identities)
    if not signers:
        raise ProxyError("no SSH key to sign with: start ssh-agent, or pass -i KEY")
    try:
        sock = socket.create_connection((host, port), timeout=30)
    except OSError as error:
        raise ProxyError(
            f"cannot reach the gateway's fast path at {host}:{port}: {error}"
        ) from None
    try:
        nonce = relay.parse_greeting(_line(sock))
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


def run(relay_address: str, ssh_host: str, identities: Sequence[Path]) -> None:
    host, _, port = relay_address.rpartition(":")
    if not host or not port.isdigit():
        raise ProxyError(f"--relay {relay_address!r} is not HOST:PORT")
    pod_id = ssh_host.removesuffix(".openpod")
    hand_over(open_relay(host.strip("[]"), int(port), pod_id, identities))


def main(argv: Sequence[str]) -> int:
    """`openpod ssh proxy` without the CLI's start-up (typer, rich): ssh runs it per connection."""
    import argparse

    parser = argparse.ArgumentParser(prog="openpod ssh proxy")
    parser.add_argument("pod")
    parser.add_argument("--relay", required=True, help="the gateway's fast path, HOST:PORT")
    parser.add_argument("-i", "--identity", action="append", type=Path, default=[])
    args = parser.parse_args(argv)
    try:
        run(args.relay, args.pod, args.identity)
    except ProxyError as error:
        print(f"openpod: {error}", file=sys.stderr)
        return 255
    return 0
