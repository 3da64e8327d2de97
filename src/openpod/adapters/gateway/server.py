"""The SSH gateway: one public SSH port through which users reach every pod they own.

Users type `ssh -J openpod@GATEWAY:2222 root@POD_ID`. Their client authenticates to the
gateway with the account's key, then asks it for a `direct-tcpip` channel to `POD_ID:22`;
the gateway relays that channel's bytes to the pod's own sshd. The inner SSH session runs
end to end between the user's client and the pod (the gateway never holds a key that could
read it), so scp, sftp, rsync, port forwarding and agent forwarding to the pod work as with
a direct connection.

Usage::

    gateway = SSHGateway(directory, data_dir / "gateway_host_key", host="0.0.0.0")
    await gateway.start()   # listens; creates an ed25519 host key at the path if missing
    ...                     # gateway.port, gateway.host_public_key for users' known_hosts
    await gateway.stop()    # stops listening and drops every connection
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import asyncssh

from openpod.adapters.gateway import rules
from openpod.adapters.gateway.connection import GatewayConnection, GatewayLimits, GatewayShared
from openpod.adapters.gateway.directory import Directory
from openpod.adapters.gateway.errors import GatewayError, HostKeyError

__all__ = ["GatewayLimits", "SSHGateway", "load_or_create_host_key"]

log = logging.getLogger("openpod.gateway")

# The outer session carries the inner one, already encrypted, so the gateway's cost is one
# decrypt and one encrypt of every byte. AES-GCM is the fastest AEAD asyncssh has (AES-NI
# through OpenSSL; chacha20 is about half as fast there). Clients pick the first cipher of
# their own list that the server offers, and OpenSSH lists chacha20 and the CTR modes before
# GCM, so offering GCM alone is what makes clients use it (every OpenSSH since 6.2 has it).
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


class SSHGateway:
    """An asyncssh listener that relays `ssh -J` connections to pods' sshd."""

    def __init__(
        self,
        directory: Directory,
        host_key_path: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 2222,
        login_user: str = "openpod",
        limits: GatewayLimits | None = None,
        public_address: str | None = None,
    ) -> None:
        """`port` 0 picks a free port (read `port` after start). `public_address` is the
        `host:port` shown in the usage message; None shows the address the client reached."""
        self.host_key_path = Path(host_key_path)
        self.host = host
        self._requested_port = port
        self._shared = GatewayShared(
            directory=directory,
            login_user=login_user,
            limits=limits or GatewayLimits(),
            public_address=public_address,
        )
        self._host_key: asyncssh.SSHKey | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None

    @property
    def port(self) -> int:
        """The port the gateway listens on (the bound one when it was asked for 0)."""
        if self._acceptor is None:
            raise GatewayError("the gateway is not started")
        return self._acceptor.get_port()

    @property
    def host_public_key(self) -> str:
        """The host key's public line (`ssh-ed25519 AAAA...`) for users' known_hosts."""
        if self._host_key is None:
            self._host_key = load_or_create_host_key(self.host_key_path)
        return self._host_key.export_public_key("openssh").decode("ascii").strip()

    @property
    def connection_count(self) -> int:
        """SSH connections held now (accepted and under the limit)."""
        return len(self._shared.connections)

    async def start(self) -> None:
        """Load (or create) the host key and start listening."""
        if self._acceptor is not None:
            return
        if self._host_key is None:
            self._host_key = load_or_create_host_key(self.host_key_path)
        limits = self._shared.limits
        shared = self._shared
        try:
            self._acceptor = await asyncssh.listen(
                self.host,
                self._requested_port,
                server_factory=lambda: GatewayConnection(shared),
                server_host_keys=[self._host_key],
                encryption_algs=list(CIPHERS),
                compression_algs=["none"],  # the payload is already-encrypted SSH
                public_key_auth=True,
                password_auth=False,
                kbdint_auth=False,
                host_based_auth=False,
                gss_host=None,
                agent_forwarding=False,
                x11_forwarding=False,
                allow_pty=True,  # only for the usage message of an interactive login
                line_editor=False,
                login_timeout=limits.login_timeout,
                keepalive_interval=limits.keepalive_interval,
                keepalive_count_max=limits.keepalive_count_max,
                server_version="openpod-gateway",
            )
        except OSError as exc:
            raise GatewayError(
                f"cannot listen on {self.host}:{self._requested_port}: {exc}"
            ) from exc
        log.info("SSH gateway listening on %s", rules.format_address(self.host, self.port))

    async def stop(self) -> None:
        """Stop listening, then drop every connection (their relays close with them)."""
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is None:
            return
        acceptor.close()
        await acceptor.wait_closed()
        connections = list(self._shared.connections)
        for connection in connections:
            connection.close()
        for connection in connections:
            await connection.wait_closed()


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The gateway's private host key, created (ed25519, mode 0600) if the file is missing.

    A new key is written to a temporary file in the same directory and renamed into place,
    so a crash never leaves a half-written key that a restart would fail on.
    """
    path = Path(path)
    try:
        return asyncssh.read_private_key(path)
    except FileNotFoundError:
        pass
    except (OSError, asyncssh.KeyImportError) as exc:
        raise HostKeyError(f"cannot read the gateway host key {path}: {exc}") from exc
    key = asyncssh.generate_private_key("ssh-ed25519", comment="openpod-gateway")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key("openssh"))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    log.info("created SSH gateway host key %s (%s)", path, key.get_fingerprint("sha256"))
    return key
