"""Service errors: what went wrong, in words for the user; the API maps each kind to a status."""


class ServiceError(Exception):
    """Base of every use-case failure."""


class InvalidInput(ServiceError):
    """The request is malformed or breaks a rule (unknown GPU type, bad port list...)."""


class Unauthenticated(ServiceError):
    """No credential, or one that matches nothing."""


class Forbidden(ServiceError):
    """Authenticated, but not allowed (not an admin, not a provider)."""


class NotFound(ServiceError):
    """No such thing visible to the caller (another user's pod is 'not found' too)."""


class Conflict(ServiceError):
    """The request cannot be done in the current state (pod status, free GPUs)."""


class NoCapacity(Conflict):
    """No node has the GPUs asked for."""


class PaymentRequired(ServiceError):
    """The account's funds cannot pay for what it asks (an hour of a new pod)."""


class Unavailable(ServiceError):
    """Something the answer depends on cannot be reached now (the chain's RPC); retry later."""
