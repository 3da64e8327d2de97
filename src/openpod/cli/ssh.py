"""``openpod ssh POD [SSH_ARGS]...`` and ``openpod ssh info POD``: SSH straight into a pod.

``openpod ssh`` execs OpenSSH with the pod's user, host and port. When the API knows the pod's
host key, it is pinned in ``<config dir>/known_hosts`` and ssh is told to trust only that file,
so there is no trust-on-first-use prompt and no way for another host to pose as the pod.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from openpod.cli import config as cfg
from openpod.cli.client import Json, make_client
from openpod.cli.output import (
    fail,
    handle_api_errors,
    print_json,
    print_line,
    ssh_unavailable_reason,
)

KNOWN_HOSTS_FILE = "known_hosts"

SSH_OPTIONS_WITH_VALUE = frozenset("bceilmopBDEFIJLOPQRSwW")
"""OpenSSH's single-letter options that take a value (from ``ssh``'s getopt string)."""


class _SshGroup(TyperGroup):
    """``openpod ssh POD ...`` runs the ``connect`` command when POD is no subcommand's name."""

    # ``ctx`` is Typer's (vendored) click Context, which Typer does not export under a public name.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Insert ``connect`` before the arguments when the first one is a pod id."""
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["connect", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="ssh",
    cls=_SshGroup,
    help="SSH into a pod: openpod ssh POD [SSH_ARGS]... (or: openpod ssh info POD).",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class Gateway:
    """The SSH gateway: one port for all pods (``ssh -J user@host:port root@POD``)."""

    host: str
    port: int
    user: str
    host_key: str | None = None
    fast_port: int | None = None  # the fast path: `openpod ssh proxy` as ProxyCommand


@dataclass(frozen=True)
class SshTarget:
    """Where a pod's sshd listens, as the API reports it in ``pod.ssh``."""

    user: str
    host: str
    port: int
    command: str
    host_key: str | None = None
    pod_id: str | None = None
    gateway: Gateway | None = None
    gateway_command: str | None = None

    @classmethod
    def from_pod(cls, pod: Json) -> SshTarget | None:
        """The pod's SSH target, or ``None`` while it has none."""
        ssh: Any = pod.get("ssh")
        if not isinstance(ssh, dict) or not ssh.get("host") or not ssh.get("port"):
            return None
        user = str(ssh.get("user") or "root")
        host, port = str(ssh["host"]), int(ssh["port"])
        gateway = None
        gw: Any = ssh.get("gateway")
        if isinstance(gw, dict) and gw.get("host") and gw.get("port"):
            gateway = Gateway(
                host=str(gw["host"]),
                port=int(gw["port"]),
                user=str(gw.get("user") or "openpod"),
                host_key=str(gw["hostKey"]) if gw.get("hostKey") else None,
                fast_port=int(gw["fastPort"]) if gw.get("fastPort") else None,
            )
        return cls(
            user=user,
            host=host,
            port=port,
            command=str(ssh.get("command") or f"ssh {user}@{host} -p {port}"),
            host_key=str(ssh["hostKey"]) if ssh.get("hostKey") else None,
            pod_id=str(pod["id"]) if pod.get("id") else None,
            gateway=gateway,
            gateway_command=str(ssh["gatewayCommand"]) if ssh.get("gatewayCommand") else None,
        )

    def via_gateway(self) -> bool:
        return self.gateway is not None and self.pod_id is not None


def known_hosts_pattern(host: str, port: int) -> str:
    """How OpenSSH names ``host:port`` in ``known_hosts``: ``[host]:port``, or ``host`` for 22."""
    return host if port == 22 else f"[{host}]:{port}"


def pin_host_key(path: Path, host: str, port: int, host_key: str) -> None:
    """Write ``[host]:port <type> <key>`` to ``path``, replacing older lines for that host:port."""
    pattern = known_hosts_pattern(host, port)
    key_type, key_data = host_key.split()[:2]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    kept = [line for line in lines if line.split(maxsplit=1)[:1] != [pattern]]
    kept.append(f"{pattern} {key_type} {key_data}")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    cfg.write_private_file(path, "\n".join(kept) + "\n")


def split_ssh_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split extra args into ssh options (``-L 8888:localhost:8888``) and a remote command.

    Parses like ssh's own getopt: options end at the first word not starting with ``-``, or
    after ``--``.
    """
    options: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        options.append(arg)
        i += 1
        letters = arg[1:]
        for j, letter in enumerate(letters):
            if letter in SSH_OPTIONS_WITH_VALUE:
                if j == len(letters) - 1 and i < len(args):
                    options.append(args[i])
                    i += 1
                break
    return options, list(args[i:])


def _ssh_config_value(value: str) -> str:
    """Escape a path for an ``ssh -o Key=value`` option (``%`` tokens, spaces)."""
    value = value.replace("%", "%%")
    return f'"{value}"' if re.search(r"\s", value) else value


def build_ssh_argv(
    target: SshTarget, known_hosts: Path | None, extra: Sequence[str] = ()
) -> list[str]:
    """The argv to exec OpenSSH with: pins ``known_hosts`` when given, then passes ``extra``."""
    options, remote = split_ssh_args(extra)
    argv = ["ssh", "-p", str(target.port)]
    if known_hosts is not None:
        argv += [
            "-o",
            f"UserKnownHostsFile={_ssh_config_value(str(known_hosts))}",
            "-o",
            "StrictHostKeyChecking=yes",
        ]
    argv += options
    argv.append(f"{target.user}@{target.host}")
    argv += remote
    return argv


def build_gateway_argv(
    target: SshTarget, known_hosts: Path | None, extra: Sequence[str] = ()
) -> list[str]:
    """ssh through the gateway: ``-J`` done as a ProxyCommand, so that the jump hop gets the
    same pinned known_hosts and identity options as the pod (``-J`` would not pass them)."""
    assert target.gateway is not None
    assert target.pod_id is not None
    gateway = target.gateway
    options, remote = split_ssh_args(extra)
    pinning: list[str] = []
    if known_hosts is not None:
        pinning = [
            "-o", f"UserKnownHostsFile={_ssh_config_value(str(known_hosts))}",
            "-o", "StrictHostKeyChecking=yes",
        ]  # fmt: skip
    identities = [
        f"-i {shlex.quote(options[i + 1])}"
        for i, option in enumerate(options[:-1])
        if option == "-i"
    ]
    if gateway.fast_port is not None:
        proxy = fast_path_command(gateway.host, gateway.fast_port, identities)
        argv = ["ssh", "-o", f"ProxyCommand={proxy}", "-o", "ProxyUseFdpass=yes"]
        argv += [*pinning, *options]
        return [*argv, f"{target.user}@{target.pod_id}", *remote]
    jump = " ".join(
        [
            "ssh", "-p", str(gateway.port), *(shlex.quote(p) for p in pinning), *identities,
            "-W", "%h:%p", shlex.quote(f"{gateway.user}@{gateway.host}"),
        ]
    )  # fmt: skip
    argv = ["ssh", "-o", f"ProxyCommand={jump}", *pinning, *options]
    return [*argv, f"{target.user}@{target.pod_id}", *remote]


def fast_path_command(host: str, port: int, identities: Sequence[str] = ()) -> str:
    """The ProxyCommand of the gateway's fast path (`%h` is the pod, or POD.openpod)."""
    relay = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    words = [shlex.quote(sys.executable), "-m", "openpod", "ssh", "proxy", "%h"]
    return " ".join([*words, "--relay", shlex.quote(relay), *identities])


def prepare_ssh(target: SshTarget, extra: Sequence[str] = (), *, direct: bool = False) -> list[str]:
    """Pin the host keys we know and return the ssh argv (through the gateway where there is
    one, unless `direct`)."""
    known_hosts: Path | None = None
    if target.via_gateway() and not direct:
        assert target.gateway is not None
        assert target.pod_id is not None
        gateway = target.gateway
        # The fast path never talks SSH with the gateway: the pod's key is all there is to pin.
        if target.host_key and (gateway.host_key or gateway.fast_port is not None):
            known_hosts = cfg.ensure_config_dir() / KNOWN_HOSTS_FILE
            pin_host_key(known_hosts, target.pod_id, 22, target.host_key)
            if gateway.host_key:
                pin_host_key(known_hosts, gateway.host, gateway.port, gateway.host_key)
        return build_gateway_argv(target, known_hosts, extra)
    if target.host_key:
        known_hosts = cfg.ensure_config_dir() / KNOWN_HOSTS_FILE
        pin_host_key(known_hosts, target.host, target.port, target.host_key)
    return build_ssh_argv(target, known_hosts, extra)


PodArg = Annotated[str, typer.Argument(metavar="POD", help="The pod's id.")]


@app.command("info")
@handle_api_errors
def info(
    pod_id: PodArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Print the ssh commands for a pod: through the gateway, and direct."""
    with make_client() as client:
        pod = client.get_pod(pod_id)
    target = SshTarget.from_pod(pod)
    if target is None:
        raise fail(ssh_unavailable_reason(pod))
    if as_json:
        print_json(
            {
                "ssh_command": target.gateway_command or target.command,
                "gateway_command": target.gateway_command,
                "direct_command": target.command,
                "host": target.host,
                "port": target.port,
                "user": target.user,
                "host_key": target.host_key,
            }
        )
        return
    if target.gateway_command:
        print_line(f"{target.gateway_command}    # through the gateway, from anywhere")
        print_line(f"{target.command}    # direct, where the pod's port is reachable")
    else:
        print_line(target.command)


@app.command("config")
@handle_api_errors
def config(
    write: Annotated[
        bool, typer.Option("--write", help="Write it into ~/.ssh/config (else print it).")
    ] = False,
) -> None:
    """An ~/.ssh/config block: then `ssh POD.openpod`, scp, sftp and rsync use the gateway."""
    from openpod.cli import ssh_config

    with make_client() as client:
        gateway = client.ssh_gateway()
        pods = client.list_pods()
    known_hosts = ssh_config.pin_keys(gateway, pods)
    block = ssh_config.host_block(gateway, known_hosts)
    if not write:
        print_line(block.rstrip("\n"))
        return
    target = Path.home() / ".ssh" / "config"
    target.parent.mkdir(mode=0o700, exist_ok=True)
    existing = target.read_text(encoding="utf-8") if target.exists() else ""
    cfg.write_private_file(target, ssh_config.merged(existing, block))
    print_line(f"wrote the openpod block to {target}: ssh POD{ssh_config.POD_SUFFIX}")


@app.command(
    "connect",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@handle_api_errors
def connect(
    pod_id: PodArg,
    ssh_args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[SSH_ARGS]...",
            help="Passed to ssh: options (e.g. -L 8888:localhost:8888), then a remote command.",
            show_default=False,
        ),
    ] = None,
    direct: Annotated[
        bool, typer.Option("--direct", help="Straight to the pod's port, not via the gateway.")
    ] = False,
) -> None:
    """SSH into a pod (the default: openpod ssh POD [SSH_ARGS]...), via the gateway if any."""
    with make_client() as client:
        pod = client.get_pod(pod_id)
    target = SshTarget.from_pod(pod)
    if target is None:
        raise fail(ssh_unavailable_reason(pod))
    argv = prepare_ssh(target, ssh_args or [], direct=direct)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)  # noqa: S606 - replaces this process with ssh, by design
    except FileNotFoundError:
        raise fail("ssh not found: install the OpenSSH client") from None
    except OSError as exc:
        raise fail(f"cannot run ssh: {exc}") from None


@app.command("proxy", hidden=True)
def proxy(
    pod_id: PodArg,
    relay: Annotated[str, typer.Option("--relay", help="The gateway's fast path, HOST:PORT.")],
    identity: Annotated[
        list[Path] | None,
        typer.Option("-i", "--identity", help="A key file to sign with (default: the agent's)."),
    ] = None,
) -> None:
    """(ProxyCommand) Open the gateway's fast path to POD and hand it to ssh.

    ssh -o ProxyCommand="openpod ssh proxy %h --relay GW:2223" -o ProxyUseFdpass=yes root@POD
    """
    from openpod.cli import ssh_proxy  # `openpod ssh proxy` itself runs it without typer

    args = [pod_id, "--relay", relay]
    for path in identity or []:
        args += ["-i", str(path)]
    raise typer.Exit(ssh_proxy.main(args))
