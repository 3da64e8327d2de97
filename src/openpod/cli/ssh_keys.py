"""The user's SSH keys as signers, for the gateway's fast path: an ssh-agent's (its protocol,
draft-miller-ssh-agent: list identities, sign) and unencrypted OpenSSH key files (through
`cryptography`). Signatures come in SSH wire format, as sshd and asyncssh verify them.

Kept small on purpose: ssh runs `openpod ssh proxy` for every connection, so nothing here
is imported before it is needed. asyncssh alone takes ~0.4 s to import; `cryptography`
(~25 ms) is imported only to read a key file, never for an agent's keys; no dataclasses
(~6 ms with `inspect`), typing or pathlib.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
from collections.abc import Callable, Sequence

StrPath = str | os.PathLike[str]

AGENT_REQUEST_IDENTITIES, AGENT_IDENTITIES_ANSWER = 11, 12
AGENT_SIGN_REQUEST, AGENT_SIGN_RESPONSE = 13, 14
AGENT_RSA_SHA2_256 = 2
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return _string(raw)


def _read_string(data: bytes, at: int) -> tuple[bytes, int]:
    (size,) = struct.unpack_from(">I", data, at)
    end = at + 4 + size
    if end > len(data):
        raise ValueError("truncated SSH string")
    return data[at + 4 : end], end


class KeySigner:
    """One key: its public line (`ssh-ed25519 AAAA...`) and how to sign with it."""

    __slots__ = ("public_line", "sign")

    def __init__(self, public_line: str, sign: Callable[[bytes], bytes]) -> None:
        self.public_line = public_line
        self.sign = sign  # data -> SSH signature (string alg, string blob)


def line_of(blob: bytes) -> str:
    kind, _ = _read_string(blob, 0)
    return f"{kind.decode('ascii')} {base64.b64encode(blob).decode()}"


# ---- ssh-agent ----------------------------------------------------------------------------


def _agent_call(path: str, message: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(_string(message))
        head = b""
        while len(head) < 4:
            chunk = sock.recv(4 - len(head))
            if not chunk:
                raise OSError("the agent closed the connection")
            head += chunk
        (size,) = struct.unpack(">I", head)
        body = b""
        while len(body) < size:
            chunk = sock.recv(size - len(body))
            if not chunk:
                raise OSError("the agent closed the connection")
            body += chunk
        return body


def agent_signers(path: str) -> list[KeySigner]:
    """The agent's keys; none if it cannot be reached or answers oddly."""
    try:
        answer = _agent_call(path, bytes([AGENT_REQUEST_IDENTITIES]))
        if not answer or answer[0] != AGENT_IDENTITIES_ANSWER:
            return []
        (count,) = struct.unpack_from(">I", answer, 1)
        at, blobs = 5, []
        for _ in range(count):
            blob, at = _read_string(answer, at)
            _comment, at = _read_string(answer, at)
            blobs.append(blob)
    except (OSError, ValueError, struct.error):
        return []

    def signer(blob: bytes) -> KeySigner:
        flags = AGENT_RSA_SHA2_256 if blob.startswith(_string(b"ssh-rsa")) else 0

        def sign(data: bytes) -> bytes:
            request = bytes([AGENT_SIGN_REQUEST]) + _string(blob) + _string(data)
            reply = _agent_call(path, request + struct.pack(">I", flags))
            if not reply or reply[0] != AGENT_SIGN_RESPONSE:
                raise OSError("the agent refused to sign")
            signature, _ = _read_string(reply, 1)
            return signature

        return KeySigner(line_of(blob), sign)

    return [signer(blob) for blob in blobs]


# ---- key files ----------------------------------------------------------------------------


def file_signer(path: StrPath) -> KeySigner | None:
    """An unencrypted private key file (OpenSSH or PEM); None if it is missing, has a
    passphrase or is of a kind this does not sign with."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError:
        return None
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    for load in (serialization.load_ssh_private_key, serialization.load_pem_private_key):
        with contextlib.suppress(ValueError, TypeError, UnsupportedAlgorithm):
            return _signer_for(load(data, password=None))
    return None


def _signer_for(key: object) -> KeySigner | None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    if isinstance(key, ed25519.Ed25519PrivateKey):
        ed_key = key
        return KeySigner(
            _public_line(ed_key.public_key()),
            lambda data: _string(b"ssh-ed25519") + _string(ed_key.sign(data)),
        )
    if isinstance(key, ec.EllipticCurvePrivateKey):
        ec_key = key
        size = ec_key.curve.key_size
        digest = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}.get(size)
        if digest is None:
            return None
        name = f"ecdsa-sha2-nistp{size}".encode()

        def sign_ec(data: bytes) -> bytes:
            r, s = decode_dss_signature(ec_key.sign(data, ec.ECDSA(digest)))
            return _string(name) + _string(_mpint(r) + _mpint(s))

        return KeySigner(_public_line(ec_key.public_key()), sign_ec)
    if isinstance(key, rsa.RSAPrivateKey):
        rsa_key = key

        def sign_rsa(data: bytes) -> bytes:
            blob = rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
            return _string(b"rsa-sha2-256") + _string(blob)

        return KeySigner(_public_line(rsa_key.public_key()), sign_rsa)
    return None


def _public_line(public: object) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    assert isinstance(
        public, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)
    )
    raw = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return " ".join(raw.decode("ascii").split()[:2])


def signers(identities: Sequence[StrPath]) -> list[KeySigner]:
    """The keys to try: the given key files; else the agent's (SSH_AUTH_SOCK), then ~/.ssh's
    usual names. Files with a passphrase are skipped (load them into the agent). ssh does not
    tell a ProxyCommand its IdentityFile: keys named only there need the agent or `-i`."""
    found: list[KeySigner] = []
    agent = os.environ.get("SSH_AUTH_SOCK")
    if agent and not identities:
        found += agent_signers(agent)
    home = os.path.expanduser("~")
    paths = list(identities) or [os.path.join(home, ".ssh", name) for name in DEFAULT_KEYS]
    for path in paths:
        signer = file_signer(path)
        if signer is not None:
            found.append(signer)
    return found
