"""What the gateway asks the platform: whose key is this, and may it reach that pod?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Caller:
    """An account recognised by one of its SSH public keys."""

    account_id: str
    account_name: str
    key_fingerprint: str  # SHA256:... of the key that authenticated


@dataclass(frozen=True)
class PodTarget:
    """Where the pod's own sshd listens, as the gateway dials it."""

    pod_id: str
    host: str
    port: int


class Refused(Exception):
    """The caller may not reach the pod; the message is shown to the caller and logged.

    Messages name the reason in the user's words: `no such pod abc123`,
    `pod abc123 is not running (STOPPED)`, `pod abc123 has no SSH (its image has no sshd)`.
    """


class Directory(Protocol):
    async def caller_for_key(self, public_key_openssh: str) -> Caller | None:
        """The account holding this public key (`ssh-ed25519 AAAA...`), or None."""
        ...

    async def target_for(self, caller: Caller, pod_id: str) -> PodTarget:
        """The pod's sshd if `caller` owns the pod and it is RUNNING with SSH; else Refused.

        Another account's pod is refused exactly like a missing one (`no such pod X`).
        """
        ...
