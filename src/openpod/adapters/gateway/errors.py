"""The gateway's own failures, so that no asyncssh exception crosses into callers' code."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every gateway failure; the message is safe to show to an operator."""


class HostKeyError(GatewayError):
    """The gateway's host key file exists but cannot be read as a private key."""


class BadDestination(GatewayError):
    """A forwarding request names something other than a pod's SSH port.

    The message is sent to the user as the channel-open failure reason, so it says what to
    type instead.
    """
