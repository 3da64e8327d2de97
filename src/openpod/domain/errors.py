"""Domain errors: each message names what is wrong, in words a user can act on."""


class DomainError(ValueError):
    """Base of every rule broken in the domain."""


class InvalidPortSpec(DomainError):
    """A port list such as `8888/http,22/tcp` does not parse."""


class InvalidSSHKey(DomainError):
    """An SSH public key is malformed, of an unsupported type, or too weak."""


class InvalidGpuSpec(DomainError):
    """A GPU declaration such as `NVIDIA GeForce RTX 4090:2` does not parse."""


class InvalidEnv(DomainError):
    """An environment variable name or value is not acceptable."""


class InvalidTransition(DomainError):
    """A pod lifecycle event that is not allowed in the pod's current status."""


class InvalidSettlementTransition(DomainError):
    """A settlement cannot move from its status to the one asked."""
