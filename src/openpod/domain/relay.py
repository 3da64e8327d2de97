"""The SSH gateway's fast path: its handshake, as bytes (no I/O here).

`ssh -J` through the gateway wraps the pod's SSH session, already end-to-end encrypted and
authenticated by the pod's pinned host key, in a second SSH session with the gateway: every
byte is encrypted twice and decrypted twice. The fast path keeps what the outer session is
for (the gateway learns who asks and relays only to their own running pods) without the
second encryption: a short handshake on a TCP connection, then the inner SSH bytes as they are.

    gateway -> client   OPENPOD-RELAY/1 <nonce, 32 bytes hex>\\n
    client  -> gateway  {"pod": POD_ID, "key": "ssh-ed25519 AAAA...", "sig": BASE64}\\n
    gateway -> client   OK\\n                 relaying from the next byte on
                        NO <reason>\\n        that key is not an account's: try another
                        ERR <reason>\\n       refused (no such pod, not running...): closed

`sig` is the client's SSH signature (as `ssh-keygen -Y`/agents make them: the key's own
algorithm) over `signed_payload(nonce, pod)`: a fresh nonce per connection, so a signature
seen on the wire opens nothing else. Up to `MAX_TRIES` keys per connection.

What it gives up against `ssh -J`: the hello travels in clear, so an observer of the network
sees which pod a public key asked for (the session itself is SSH's own, encrypted end to end
and bound to the pod's pinned host key, as it is through `-J`); and the client does not
authenticate the gateway, so a fake one could at most pass the connection on to the real one,
where the pod's sshd still wants the user's key. `ssh -J` stays for whoever prefers it.
"""

from __future__ import annotations

import base64
import binascii
import json

VERSION = b"OPENPOD-RELAY/1"
NONCE_BYTES = 32
MAX_LINE = 16 * 1024  # a hello with an RSA-4096 key and signature is ~2 KiB
MAX_TRIES = 5
OK = b"OK\n"


class RelayProtocolError(Exception):
    """A handshake line that does not parse; the message says what was wrong."""


class Hello:
    """A client's hello. A plain class (no dataclass or typing): `openpod ssh proxy` imports
    this module for every ssh connection."""

    __slots__ = ("key", "pod_id", "signature")

    def __init__(self, pod_id: str, key: str, signature: bytes) -> None:
        self.pod_id = pod_id
        self.key = key  # the public key, OpenSSH line ("ssh-ed25519 AAAA...")
        self.signature = signature


def greeting(nonce: bytes) -> bytes:
    return VERSION + b" " + nonce.hex().encode() + b"\n"


def parse_greeting(line: bytes) -> bytes:
    """The nonce of the gateway's first line."""
    parts = line.rstrip(b"\n").split(b" ")
    if len(parts) != 2 or parts[0] != VERSION:
        raise RelayProtocolError(f"not an openpod relay (it said {line[:40]!r})")
    try:
        nonce = bytes.fromhex(parts[1].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise RelayProtocolError("the relay's nonce is not hex") from None
    if len(nonce) != NONCE_BYTES:
        raise RelayProtocolError(f"the relay's nonce is {len(nonce)} bytes, not {NONCE_BYTES}")
    return nonce


def signed_payload(nonce: bytes, pod_id: str) -> bytes:
    return b"openpod-relay-v1\0" + nonce + b"\0" + pod_id.encode()


def hello(pod_id: str, key: str, signature: bytes) -> bytes:
    text = json.dumps({"pod": pod_id, "key": key, "sig": base64.b64encode(signature).decode()})
    return text.encode() + b"\n"


def parse_hello(line: bytes) -> Hello:
    try:
        data = json.loads(line)
        pod, key, sig = data["pod"], data["key"], data["sig"]
    except (ValueError, TypeError, KeyError):
        raise RelayProtocolError("the hello is not {pod, key, sig} JSON") from None
    if not all(isinstance(value, str) for value in (pod, key, sig)):
        raise RelayProtocolError("pod, key and sig are strings")
    try:
        signature = base64.b64decode(sig, validate=True)
    except binascii.Error:
        raise RelayProtocolError("sig is not base64") from None
    return Hello(pod, key, signature)


def answer(line: bytes) -> tuple[str, str]:
    """("OK" | "NO" | "ERR", reason) of the gateway's answer."""
    word, _, reason = line.rstrip(b"\n").decode("utf-8", "replace").partition(" ")
    if word not in ("OK", "NO", "ERR"):
        raise RelayProtocolError(f"not an answer of the relay: {line[:40]!r}")
    return word, reason


def no(reason: str) -> bytes:
    return f"NO {reason}\n".encode()


def refuse(reason: str) -> bytes:
    return f"ERR {reason}\n".encode()
