"""SSH public keys: parsed from the OpenSSH wire format, not guessed from text.

Accepted: ssh-ed25519, ecdsa-sha2-nistp256/384/521, and ssh-rsa of at least 2048 bits.
"""

import base64
import binascii
import hashlib
from dataclasses import dataclass

from openpod.domain.errors import InvalidSSHKey

MIN_RSA_BITS = 2048
_ECDSA_POINT_BYTES = {"nistp256": 65, "nistp384": 97, "nistp521": 133}
_ECDSA_BITS = {"nistp256": 256, "nistp384": 384, "nistp521": 521}


@dataclass(frozen=True)
class SSHPublicKey:
    type: str
    bits: int
    blob: bytes
    comment: str

    @property
    def fingerprint(self) -> str:
        """`SHA256:...` exactly as `ssh-keygen -lf` prints it."""
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")
        return f"SHA256:{digest}"

    @property
    def openssh(self) -> str:
        """The normalised authorized_keys line (type, base64 and comment)."""
        line = f"{self.type} {base64.b64encode(self.blob).decode()}"
        return f"{line} {self.comment}" if self.comment else line


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def string(self) -> bytes:
        if self._pos + 4 > len(self._data):
            raise InvalidSSHKey("SSH public key is malformed: its data is truncated")
        size = int.from_bytes(self._data[self._pos : self._pos + 4], "big")
        start = self._pos + 4
        if start + size > len(self._data):
            raise InvalidSSHKey("SSH public key is malformed: its data is truncated")
        self._pos = start + size
        return self._data[start : self._pos]

    def done(self) -> bool:
        return self._pos == len(self._data)


def parse_public_key(text: str) -> SSHPublicKey:
    """Parse one `TYPE BASE64 [COMMENT]` line, checking that the blob matches its type."""
    line = text.strip()
    if not line:
        raise InvalidSSHKey("SSH public key is empty")
    if "\n" in line or "\r" in line:
        raise InvalidSSHKey("SSH public key must be a single line")
    parts = line.split(None, 2)
    if len(parts) < 2:
        raise InvalidSSHKey("SSH public key must look like 'ssh-ed25519 AAAA... comment'")
    key_type, data, comment = parts[0], parts[1], parts[2] if len(parts) > 2 else ""
    if key_type.startswith("-----") or "PRIVATE" in line:
        raise InvalidSSHKey("this looks like a private key: give the public key (the .pub file)")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSSHKey(f"SSH public key: the data after {key_type!r} is not base64") from None
    reader = _Reader(blob)
    inner_type = reader.string().decode(errors="replace")
    if inner_type != key_type:
        raise InvalidSSHKey(f"SSH public key says {key_type!r} but its data holds {inner_type!r}")
    bits = _check_body(key_type, reader)
    if not reader.done():
        raise InvalidSSHKey("SSH public key has trailing data")
    return SSHPublicKey(type=key_type, bits=bits, blob=blob, comment=comment.strip())


def _check_body(key_type: str, reader: _Reader) -> int:
    if key_type == "ssh-ed25519":
        if len(reader.string()) != 32:
            raise InvalidSSHKey("ssh-ed25519 key must be 32 bytes")
        return 256
    if key_type.startswith("ecdsa-sha2-"):
        curve = key_type.removeprefix("ecdsa-sha2-")
        if curve not in _ECDSA_POINT_BYTES:
            raise InvalidSSHKey(f"unsupported ECDSA curve {curve!r}")
        if reader.string().decode(errors="replace") != curve:
            raise InvalidSSHKey(f"{key_type} key names another curve in its data")
        point = reader.string()
        if len(point) != _ECDSA_POINT_BYTES[curve] or point[0] != 4:
            raise InvalidSSHKey(f"{key_type} key holds a malformed curve point")
        return _ECDSA_BITS[curve]
    if key_type == "ssh-rsa":
        exponent = int.from_bytes(reader.string(), "big")
        modulus = int.from_bytes(reader.string(), "big")
        if exponent < 3 or exponent % 2 == 0:
            raise InvalidSSHKey("ssh-rsa key has an invalid public exponent")
        bits = modulus.bit_length()
        if bits < MIN_RSA_BITS:
            raise InvalidSSHKey(f"ssh-rsa key is {bits} bits: at least {MIN_RSA_BITS} are required")
        return bits
    raise InvalidSSHKey(
        f"unsupported SSH key type {key_type!r}: use ssh-ed25519, ecdsa-sha2-nistp256/384/521 "
        "or ssh-rsa (2048 bits or more)"
    )
