"""Identifiers and secrets: random, URL- and DNS-label-safe."""

import hashlib
import secrets
import string

_POD_ALPHABET = string.ascii_lowercase + string.digits
POD_ID_LENGTH = 12
# `ssh POD.openpod` (the ~/.ssh/config block `openpod ssh config` writes): the gateway is
# asked for this name and strips the suffix.
POD_HOST_SUFFIX = ".openpod"


def new_pod_id() -> str:
    """A pod id: 12 lowercase letters and digits, starting with a letter (a DNS label)."""
    first = secrets.choice(string.ascii_lowercase)
    return first + "".join(secrets.choice(_POD_ALPHABET) for _ in range(POD_ID_LENGTH - 1))


def new_id(prefix: str) -> str:
    """An id for other records: `acc_...`, `node_...`, `key_...`."""
    return f"{prefix}_{secrets.token_hex(8)}"


def new_secret(prefix: str) -> str:
    """A bearer secret (API key, node token): prefix plus 256 random bits."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_secret(secret: str) -> str:
    """The stored form of a bearer secret.

    Secrets carry 256 random bits, so one SHA-256 is enough (no password stretching needed) and
    lets the store look a key up by its hash.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_hint(secret: str) -> str:
    """What may be shown of a secret after creation: its prefix and four characters."""
    head, _, rest = secret.partition("_")
    return f"{head}_{rest[:4]}…"
