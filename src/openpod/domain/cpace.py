"""CPace over X25519 (draft-irtf-cfrg-cpace, suite CPACE-X25519-SHA512), initiator-responder.

Turns the transfer code into a strong shared key without letting the server, a relay or an
eavesdropper test guesses offline: each side derives a secret generator from the code
(`calculate_generator`: the draft's generator string, SHA-512, Elligator 2), sends
`Y = X25519(y, g)`, and hashes `K = X25519(y, Y_peer)` with the transcript into the 64-byte
intermediate session key `ISK`. A share that gives the neutral element (a low-order point)
aborts with PakeError. Reproduces the draft's Appendix B.1 test vectors.

The Elligator 2 map uses Python integers (not constant time; it only sees the hash of the
code, the draft's zero padding makes the first hash block independent of its length); the
secret scalar multiplications are `cryptography`'s X25519.
"""

from __future__ import annotations

import hashlib
import secrets

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

DSI = b"CPace255"
_HASH_BLOCK = 128  # SHA-512's input block size, H.s_in_bytes
_P = 2**255 - 19
_A = 486662
_Z = 2  # Elligator 2's non-square for Curve25519
SHARE_LEN = 32
NEUTRAL = bytes(32)


class PakeError(ValueError):
    """The key exchange cannot go on: a malformed or low-order share from the peer."""


def prepend_len(data: bytes) -> bytes:
    """`data` with its length in front, LEB128 encoded (the draft's prepend_len)."""
    length = len(data)
    encoded = bytearray()
    while True:
        if length < 128:
            encoded.append(length)
        else:
            encoded.append((length & 0x7F) | 0x80)
        length >>= 7
        if length == 0:
            return bytes(encoded) + data


def prefix_free_cat(*parts: bytes) -> bytes:
    """The draft's lv_cat: every part with its length prepended, concatenated."""
    return b"".join(prepend_len(part) for part in parts)


def generator_string(prs: bytes, ci: bytes, sid: bytes) -> bytes:
    """DSI, PRS, zero padding to fill SHA-512's first block, CI and sid, length-prefixed."""
    zpad = max(0, _HASH_BLOCK - 1 - len(prepend_len(prs)) - len(prepend_len(DSI)))
    return prefix_free_cat(DSI, prs, bytes(zpad), ci, sid)


def elligator2(r: int) -> int:
    """Map a field element to the u-coordinate of a Curve25519 point (hash-to-curve's map)."""
    denominator = (1 + _Z * r * r) % _P  # never 0: -1/Z is not a square mod p
    v = (-_A * pow(denominator, _P - 2, _P)) % _P
    gv = (v * v * v + _A * v * v + v) % _P
    if pow(gv, (_P - 1) // 2, _P) == 1:
        return v
    return (-v - _A) % _P


def calculate_generator(prs: bytes, ci: bytes, sid: bytes) -> bytes:
    """The secret generator g for this code and session, as a 32-byte u-coordinate."""
    digest = hashlib.sha512(generator_string(prs, ci, sid)).digest()[:32]
    r = int.from_bytes(digest, "little") & ((1 << 255) - 1)  # decodeUCoordinate, 255 bits
    return elligator2(r % _P).to_bytes(32, "little")


def scalar_mult_vfy(scalar: bytes, point: bytes) -> bytes:
    """X25519(scalar, point), or NEUTRAL when the result is the neutral element."""
    if len(scalar) != 32 or len(point) != 32:
        raise PakeError("a CPace scalar and share are 32 bytes")
    private = X25519PrivateKey.from_private_bytes(scalar)
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(point))
    except ValueError:  # OpenSSL refuses an all-zero shared secret
        return NEUTRAL


class CPace:
    """One side of a CPace exchange: read `share`, send it, then `finish` with the peer's.

    The initiator's message comes first in the transcript: MSGa = lv_cat(Ya, ADa),
    MSGb = lv_cat(Yb, ADb), ISK = SHA-512(lv_cat(DSI‖"_ISK", sid, K) ‖ MSGa ‖ MSGb).
    `scalar` is for test vectors only; by default a fresh random one is drawn.
    """

    def __init__(
        self,
        *,
        prs: bytes,
        sid: bytes,
        ci: bytes,
        initiator: bool,
        ad: bytes,
        scalar: bytes | None = None,
    ) -> None:
        self._sid = sid
        self._initiator = initiator
        self._ad = ad
        self._scalar = secrets.token_bytes(32) if scalar is None else scalar
        generator = calculate_generator(prs, ci, sid)
        share = scalar_mult_vfy(self._scalar, generator)
        if share == NEUTRAL:  # cannot happen for a point from Elligator 2 and a clamped scalar
            raise PakeError("the generator gave the neutral element")
        self._share = share

    def __repr__(self) -> str:
        role = "initiator" if self._initiator else "responder"
        return f"CPace({role}, share={self._share.hex()})"

    @property
    def share(self) -> bytes:
        """This side's public share Y (32 bytes), sent to the peer."""
        return self._share

    def finish(self, peer_share: bytes, peer_ad: bytes) -> bytes:
        """The 64-byte ISK from the peer's share and associated data; PakeError on a bad share."""
        if len(peer_share) != SHARE_LEN:
            raise PakeError(f"the peer's share is {len(peer_share)} bytes, not {SHARE_LEN}")
        k = scalar_mult_vfy(self._scalar, peer_share)
        if k == NEUTRAL:
            raise PakeError("the peer's share is a low-order point")
        own = prefix_free_cat(self._share, self._ad)
        peer = prefix_free_cat(peer_share, peer_ad)
        transcript = own + peer if self._initiator else peer + own
        prefix = prefix_free_cat(DSI + b"_ISK", self._sid, k)
        return hashlib.sha512(prefix + transcript).digest()
