"""``openpod ssh POD [SSH_ARGS]...`` and ``openpod ssh info POD``: SSH straight into a pod.

``openpod ssh`` execs OpenSSH with the pod's user, host and port. When the API knows the pod's
host key, it is pinned in ``<config dir>/known_hosts`` and ssh is told to trust only that file,
so there is no trust-on-first-use prompt and no way for another host to pose as the pod.
"""

from __future__ import annotations

import os
import re
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
class SshTarget:
    """Where a pod's sshd listens, as the API reports it in ``pod.ssh``."""

    user: str
    host: str
    port: int
    command: str
    host_key: str | None = None

    @classmethod
    def from_pod(cls, pod: Json) -> SshTarget | None:
        """The pod's SSH target, or ``None`` while it has none."""
        ssh: Any = pod.get("ssh")
        if not isinstance(ssh, dict) or not ssh.get("host") or not ssh.get("port"):
            return None
        user = str(ssh.get("user") or "root")
        host, port = str(ssh["host"]), int(ssh["port"])
        return cls(
            user=user,
            host=host,
            port=port,
            command=str(ssh.get("command") or f"ssh {user}@{host} -p {port}"),
            host_key=str(ssh["hostKey"]) if ssh.get("hostKey") else None,
        )


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


def prepare_ssh(target: SshTarget, extra: Sequence[str] = ()) -> list[str]:
    """Pin the pod's host key (if known) and return the ssh argv for it."""
    known_hosts: Path | None = None
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
    """Print the ssh command for a pod."""
    with make_client() as client:
        pod = client.get_pod(pod_id)
    target = SshTarget.from_pod(pod)
    if target is None:
        raise fail(ssh_unavailable_reason(pod))
    if as_json:
        print_json(
            {
                "ssh_command": target.command,
                "host": target.host,
                "port": target.port,
                "user": target.user,
                "host_key": target.host_key,
            }
        )
    else:
        print_line(target.command)


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
) -> None:
    """SSH into a pod (the default: openpod ssh POD [SSH_ARGS]...)."""
    with make_client() as client:
        pod = client.get_pod(pod_id)
    target = SshTarget.from_pod(pod)
    if target is None:
        raise fail(ssh_unavailable_reason(pod))
    argv = prepare_ssh(target, ssh_args or [])
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)  # noqa: S606 - replaces this process with ssh, by design
    except FileNotFoundError:
        raise fail("ssh not found: install the OpenSSH client") from None
    except OSError as exc:
        raise fail(f"cannot run ssh: {exc}") from None
