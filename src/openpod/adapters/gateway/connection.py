"""One SSH connection to the gateway: who it is, and which relays it may open.

asyncssh creates one `GatewayConnection` per TCP connection and calls it at each step: the
user name (`begin_auth`), each offered key (`validate_public_key`), then each channel. The
policy is short: public keys only, checked with the platform's `Directory`; `direct-tcpip`
to `POD_ID:22` of a pod the account may reach becomes a relay to that pod's sshd; a session
prints how to use the gateway and ends; everything else is refused by asyncssh's defaults
(remote and UNIX-socket forwarding, TUN/TAP) or by the listener's options (agent, X11).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import cast

import asyncssh

from openpod.adapters.gateway import rules
from openpod.adapters.gateway.directory import Caller, Directory, Refused
from openpod.adapters.gateway.errors import BadDestination
from openpod.adapters.gateway.relay import PodRelay, PodUnreachable, dial_pod
from openpod.adapters.gateway.usage import UsageSession

log = logging.getLogger("openpod.gateway")


@dataclass(frozen=True)
class GatewayLimits:
    """Bounds on what one gateway process holds open; the defaults suit one public gateway."""

    max_connections: int = 2000  # SSH connections at once, authenticated or not
    max_channels_per_connection: int = 16  # relays one connection may hold (ControlMaster)
    login_timeout: float = 30.0  # seconds from TCP accept to successful authentication
    keepalive_interval: float = 30.0  # seconds of silence before the gateway pings the client
    keepalive_count_max: int = 3  # unanswered pings before the connection is dropped
    dial_timeout: float = 10.0  # seconds to wait for a pod's sshd to accept a TCP connection
    channel_window: int = 8 * 1024 * 1024  # bytes in flight per relay, client to gateway
    channel_max_packet: int = 32 * 1024  # bytes per SSH data message, client to gateway


@dataclass
class GatewayShared:
    """What every connection of one gateway reads, and the set of live connections."""

    directory: Directory
    login_user: str
    limits: GatewayLimits
    public_address: str | None  # `host:port` users type; None: the address they reached
    connections: set[GatewayConnection] = field(default_factory=set)


class GatewayConnection(asyncssh.SSHServer):
    """The gateway's policy for one client connection."""

    def __init__(self, shared: GatewayShared) -> None:
        self._shared = shared
        self._conn: asyncssh.SSHServerConnection | None = None
        self._peer = "?"
        self._caller: Caller | None = None  # set by the key that passed the latest check
        self._relays: set[PodRelay] = set()
        self._opening = 0  # channel opens still asking the directory or dialing the pod
        self._over_limit = False  # refused at the first auth request, with a message

    # -- connection and authentication -------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        self._peer = rules.format_address(peer[0], peer[1]) if peer else "?"
        connections = self._shared.connections
        self._over_limit = len(connections) >= self._shared.limits.max_connections
        if not self._over_limit:
            connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._shared.connections.discard(self)
        for relay in list(self._relays):  # a relay whose channel never opened still holds a socket
            relay.close()

    def begin_auth(self, username: str) -> bool:
        """Every login needs a key; a wrong user name is told the right one, then refused.

        A connection over the limit is dropped here rather than at accept: asyncssh can only
        send a disconnect reason once keys are exchanged, and OpenSSH prints that reason.
        The login timeout bounds how long such a connection lives.
        """
        assert self._conn is not None
        if self._over_limit:
            limit = self._shared.limits.max_connections
            log.warning("connection from %s refused: at the limit of %d", self._peer, limit)
            reason = "the openpod gateway is at its connection limit, try again shortly"
            self._conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, reason)
            return True
        if username != self._shared.login_user:
            self._conn.send_auth_banner(rules.wrong_user(username, self._shared.login_user))
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """Ask the directory whose key this is; asyncssh checks the signature afterwards.

        asyncssh handles one auth request at a time (a new one cancels the last), and sends
        success right after the signature check of the key validated last, so the caller
        kept here is the one the connection authenticated as.
        """
        self._caller = None
        if username != self._shared.login_user:
            return False
        line = key.export_public_key("openssh").decode("ascii").strip()
        try:
            caller = await self._shared.directory.caller_for_key(line)
        except Exception:
            log.exception("directory failed to look up key %s", key.get_fingerprint("sha256"))
            return False
        if caller is None:
            log.info("unknown key %s from %s", key.get_fingerprint("sha256"), self._peer)
            return False
        self._caller = caller
        return True

    def auth_completed(self) -> None:
        log.info("%s logged in from %s", _who(self._caller), self._peer)

    # -- channels ----------------------------------------------------------------------

    def session_requested(self) -> asyncssh.SSHServerSession[str]:
        """A shell, command or subsystem: print how to use the gateway, then end."""
        address = self._shared.public_address or self._reached_address()
        log.info("%s opened a session: shown the usage", _who(self._caller))
        return UsageSession(rules.usage(address, self._shared.login_user))

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> tuple[asyncssh.SSHTCPChannel[bytes], Awaitable[asyncssh.SSHTCPSession[bytes]]]:
        """`ssh -J` (or `-W`): check the destination, then relay to the pod's sshd."""
        assert self._conn is not None
        limits = self._shared.limits
        chan = self._conn.create_tcp_channel(
            window=limits.channel_window, max_pktsize=limits.channel_max_packet
        )
        return chan, self._open_relay(dest_host, dest_port)

    async def _open_relay(self, dest_host: str, dest_port: int) -> asyncssh.SSHTCPSession[bytes]:
        caller = self._caller
        assert caller is not None  # channels open only after authentication
        try:
            pod_id = rules.pod_id_for(dest_host, dest_port)
        except BadDestination as exc:
            raise self._refuse(caller, dest_host, str(exc)) from None
        limit = self._shared.limits.max_channels_per_connection
        if len(self._relays) + self._opening >= limit:
            message = f"too many open channels on this connection (limit {limit})"
            raise self._refuse(caller, pod_id, message, asyncssh.OPEN_RESOURCE_SHORTAGE)
        self._opening += 1
        try:
            try:
                target = await self._shared.directory.target_for(caller, pod_id)
            except Refused as exc:
                raise self._refuse(caller, pod_id, str(exc)) from None
            except Exception:
                log.exception("directory failed to look up pod %s for %s", pod_id, _who(caller))
                message = f"the gateway could not look up pod {pod_id}; try again"
                raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, message) from None
            opened = time.monotonic()

            def closed(relay: PodRelay) -> None:
                self._relays.discard(relay)
                seconds = time.monotonic() - opened
                log.info("relay %s -> pod %s closed after %.1f s", _who(caller), pod_id, seconds)

            try:
                relay = await dial_pod(target, self._shared.limits.dial_timeout, closed)
            except PodUnreachable as exc:
                raise self._refuse(caller, pod_id, str(exc), asyncssh.OPEN_CONNECT_FAILED) from None
            self._relays.add(relay)
            log.info(
                "relay %s -> pod %s (%s:%d) opened", _who(caller), pod_id, target.host, target.port
            )
            return cast(asyncssh.SSHTCPSession[bytes], relay)
        finally:
            self._opening -= 1

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        """Remote forwarding (`ssh -R`) would open listeners on the gateway: never."""
        log.info("%s asked for remote forwarding: refused", _who(self._caller))
        return False

    # -- helpers -----------------------------------------------------------------------

    def close(self) -> None:
        """Drop the connection (the gateway is stopping); its relays close with it."""
        if self._conn is not None:
            self._conn.close()

    async def wait_closed(self) -> None:
        if self._conn is not None:
            await self._conn.wait_closed()

    def _refuse(
        self,
        caller: Caller,
        pod: str,
        message: str,
        code: int = asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
    ) -> asyncssh.ChannelOpenError:
        """Log who was refused what, and build the failure OpenSSH prints to the user."""
        shown = pod[:64].encode("ascii", "backslashreplace").decode()
        log.info("refused %s -> pod %s: %s", _who(caller), shown, message)
        return asyncssh.ChannelOpenError(code, message)

    def _reached_address(self) -> str:
        sockname = self._conn.get_extra_info("sockname") if self._conn is not None else None
        return rules.format_address(sockname[0], sockname[1]) if sockname else "GATEWAY:PORT"


def _who(caller: Caller | None) -> str:
    """The account and key fingerprint, never the key itself."""
    if caller is None:
        return "unauthenticated client"
    return f"account {caller.account_id} (key {caller.key_fingerprint})"
