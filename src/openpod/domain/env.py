"""Environment variables users give their pods."""

import re
from collections.abc import Mapping

from openpod.domain.errors import InvalidEnv

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_PREFIXES = ("OPENPOD_",)
RESERVED_NAMES = frozenset({"PUBLIC_KEY", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"})
MAX_VALUE_BYTES = 32 * 1024


def validate_env(env: Mapping[str, str]) -> dict[str, str]:
    """Names are shell identifiers and not ours; values have no NUL and stay under 32 KiB."""
    for name, value in env.items():
        if not _NAME.match(name):
            raise InvalidEnv(f"env name {name!r} is not a valid variable name")
        if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
            raise InvalidEnv(f"env name {name!r} is reserved by openpod")
        if "\x00" in value or "\n" in value:
            raise InvalidEnv(f"env {name}: the value holds a NUL or newline character")
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise InvalidEnv(f"env {name}: the value is longer than 32 KiB")
    return dict(env)
