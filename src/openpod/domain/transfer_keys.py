"""The keys a transfer uses after the PAKE, and the sealing of every message with them.

`SessionKeys.derive` expands CPace's ISK with HKDF-SHA256 (salt = the room id) into one key
per purpose and direction (docs/transfer.md, "Key schedule"): confirmation MACs that tell a
wrong code apart, and AES-256-GCM keys for sealed signaling and for each transport's records.
`Sealer`/`Opener` number the messages of one key from 0 (the nonce is the number, 12 bytes
big-endian), so a record that is altered, dropped, replayed or reordered fails to open.
`ClearSealer`/`ClearOpener` leave records as they are, for WebRTC when both sides agree: its
DTLS already ends at the peer that holds the code (docs/transfer.md, "Records on WebRTC").
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

Role = Literal["sender", "receiver"]
Transport = Literal["direct", "webrtc", "relay"]
ROLES: tuple[Role, ...] = ("sender", "receiver")
TRANSPORTS: tuple[Transport, ...] = ("direct", "webrtc", "relay")
KEY_LEN = 32
TAG_LEN = 16
_INFO = "openpod-transfer/1"
_MAX_SEQ = 2**96 - 1


class IntegrityError(ValueError):
    """A wrong code (confirmation failed) or a message that was altered in transit."""


def key_infos() -> dict[str, bytes]:
    """Every HKDF `info` string of the key schedule, keyed by its name ("data sender relay")."""
    names = [f"confirm {role}" for role in ROLES] + [f"signal {role}" for role in ROLES]
    names += [f"data {role} {transport}" for role in ROLES for transport in TRANSPORTS]
    return {name: f"{_INFO} {name}".encode() for name in names}


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = KEY_LEN) -> bytes:
    """RFC 5869 HKDF with SHA-256."""
    return HKDF(algorithm=SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _role(role: str) -> Role:
    if role not in ROLES:
        raise ValueError(f"role must be sender or receiver, not {role!r}")
    return role


class SessionKeys:
    """All keys of one transfer session, derived from the PAKE's ISK; never shown in a repr."""

    __slots__ = ("_keys", "_ya", "_yb")

    def __init__(self, keys: dict[str, bytes], ya: bytes, yb: bytes) -> None:
        self._keys = keys
        self._ya = ya
        self._yb = yb

    @classmethod
    def derive(cls, isk: bytes, sid: bytes, ya: bytes, yb: bytes) -> SessionKeys:
        """Keys from the ISK, the room id `sid` and the shares (Ya: sender's, Yb: receiver's)."""
        keys = {name: hkdf_sha256(isk, sid, info) for name, info in key_infos().items()}
        return cls(keys, ya, yb)

    def __repr__(self) -> str:
        return "SessionKeys(<hidden>)"

    def key(self, name: str) -> bytes:
        """The raw key named as in the schedule, e.g. "confirm sender" (for test vectors)."""
        return self._keys[name]

    def confirm_tag(self, role: Role) -> bytes:
        """HMAC-SHA256(k_confirm_role, role ‖ Ya ‖ Yb): proves this side derived the same ISK."""
        role = _role(role)
        message = role.encode() + self._ya + self._yb
        return hmac.new(self._keys[f"confirm {role}"], message, hashlib.sha256).digest()

    def check_confirm(self, role: Role, tag: bytes) -> None:
        """Check the peer's tag in constant time; IntegrityError means the codes differ."""
        if not hmac.compare_digest(self.confirm_tag(role), tag):
            raise IntegrityError("the codes do not match (key confirmation failed)")

    def signal_key(self, role: Role) -> bytes:
        """AES-256-GCM key for the sealed signaling messages `role` sends."""
        return self._keys[f"signal {_role(role)}"]

    def data_key(self, role: Role, transport: Transport) -> bytes:
        """AES-256-GCM key for the records `role` sends on `transport`."""
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be direct, webrtc or relay, not {transport!r}")
        return self._keys[f"data {_role(role)} {transport}"]


def _nonce(seq: int) -> bytes:
    if seq > _MAX_SEQ:
        raise IntegrityError("too many messages under one key")
    return seq.to_bytes(12, "big")


class Sealer:
    """Seals the messages one side sends under one key, numbered 0, 1, 2, ..."""

    __slots__ = ("_aead", "_seq")
    overhead = TAG_LEN  # bytes a sealed record has beyond its plaintext

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._seq = 0

    def __repr__(self) -> str:
        return f"Sealer(seq={self._seq})"

    def seal(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """`ciphertext ‖ tag` of the next message (any buffer is accepted, without a copy)."""
        nonce = _nonce(self._seq)
        self._seq += 1
        return self._aead.encrypt(nonce, plaintext, None)


class Opener:
    """Opens the messages the peer sealed under one key, expecting exactly the next number.

    The first failure ends it: every later `open` fails too, since the session is over.
    """

    __slots__ = ("_aead", "_broken", "_seq")

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._seq = 0
        self._broken = False

    def __repr__(self) -> str:
        return f"Opener(seq={self._seq})"

    def open(self, record: bytes | bytearray | memoryview) -> bytes:
        """The plaintext of the next record; IntegrityError if it is not exactly that record."""
        if self._broken:
            raise IntegrityError("data was altered in transit (an earlier record failed)")
        try:
            plaintext = self._aead.decrypt(_nonce(self._seq), record, None)
        except InvalidTag:
            self._broken = True
            raise IntegrityError("data was altered in transit") from None
        self._seq += 1
        return plaintext


class ClearSealer:
    """Records as they are, for a transport that encrypts and authenticates them end to end
    itself: WebRTC, whose DTLS peer is pinned by the certificate fingerprint in an SDP that
    came over sealed signaling (docs/transfer.md, "Records on WebRTC")."""

    __slots__ = ()
    overhead = 0

    def __repr__(self) -> str:
        return "ClearSealer()"

    def seal(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """The record is the plaintext (a copy only when it is not `bytes` already)."""
        return plaintext if isinstance(plaintext, bytes) else bytes(plaintext)


class ClearOpener:
    """The other end of a :class:`ClearSealer`: the record is the plaintext."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ClearOpener()"

    def open(self, record: bytes | bytearray | memoryview) -> bytes:
        return record if isinstance(record, bytes) else bytes(record)
