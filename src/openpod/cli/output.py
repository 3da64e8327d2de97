"""Printing: Rich tables and summaries for people, plain JSON for scripts, errors on stderr.

Human output goes to stdout, progress and errors to stderr. ``--json`` output is plain
``json.dumps`` on stdout, with no Rich markup, so it can be piped into ``jq``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from openpod.cli.client import ApiError, Json

P = ParamSpec("P")
R = TypeVar("R")

_MIN_PIPE_WIDTH = 200


def stdout_console() -> Console:
    """A console on stdout; when piped, wide enough that tables are not wrapped."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, _MIN_PIPE_WIDTH))
    return console


def stderr_console() -> Console:
    """A console on stderr, for progress."""
    return Console(stderr=True, highlight=False)


def amount(size: int) -> str:
    """A byte count for people: `512 bytes`, `17.8 MB` (10^6, as the rates are)."""
    return f"{size:,} bytes" if size < 1_000_000 else f"{size / 1e6:,.1f} MB"


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def print_line(text: str = "") -> None:
    """Print a plain line on stdout (no markup interpretation)."""
    typer.echo(text)


def print_error(detail: str) -> None:
    """Print ``error: <detail>`` on stderr."""
    typer.echo(f"error: {detail}", err=True)


def fail(detail: str, code: int = 1) -> typer.Exit:
    """Print an error and return the ``typer.Exit`` to raise: ``raise fail("...")``."""
    print_error(detail)
    return typer.Exit(code)


def handle_api_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command so an :class:`ApiError` prints ``error: ...`` and exits with its code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            raise fail(exc.detail, int(exc.exit_code)) from None

    return wrapper


def _cell(value: Any) -> Text:
    """A table cell showing ``value`` literally (never as Rich markup)."""
    return Text("-" if value is None or value == "" else str(value))


def print_table(columns: Iterable[str], rows: Iterable[Iterable[Any]], empty: str) -> None:
    """Print a simple table on stdout, or ``empty`` when there are no rows."""
    materialized = [list(row) for row in rows]
    if not materialized:
        print_line(empty)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, no_wrap=column in ("ID", "STATUS", "SSH", "FINGERPRINT"))
    for row in materialized:
        table.add_row(*(_cell(value) for value in row))
    console = stdout_console()
    if console.is_terminal:
        console.print(table)
        return
    with console.capture() as captured:
        console.print(table)
    for line in captured.get().splitlines():
        print_line(line.rstrip())


# --- pods ----------------------------------------------------------------------------------------


def gpu_label(pod: Json) -> str:
    """``1x NVIDIA GeForce RTX 4090``."""
    return f"{pod.get('gpuCount', '?')}x {pod.get('gpuTypeId') or '?'}"


def ssh_command(pod: Json) -> str | None:
    """The pod's SSH command (through the gateway where there is one), or ``None``."""
    ssh = pod.get("ssh")
    if isinstance(ssh, dict):
        for key in ("gatewayCommand", "command"):
            if ssh.get(key):
                return str(ssh[key])
    return None


def _no_ssh_note(pod: Json) -> str:
    """Why a pod has no SSH right now, in a few words."""
    status = pod.get("status", "UNKNOWN")
    if status == "RUNNING" and pod.get("sshAvailable") is False:
        return "none (its image has no sshd)"
    if status in ("STOPPING", "STOPPED", "TERMINATING", "TERMINATED", "FAILED"):
        return "none"
    return "not ready yet"


def ssh_unavailable_reason(pod: Json) -> str:
    """Why a pod has no SSH right now, as a message naming the pod."""
    status = pod.get("status", "UNKNOWN")
    pod_id = pod.get("id", "?")
    if status == "RUNNING" and pod.get("sshAvailable") is False:
        return f"pod {pod_id} has no SSH (its image has no sshd)"
    if _no_ssh_note(pod) == "none":
        return f"pod {pod_id} is {status}: it has no SSH"
    return f"pod {pod_id} is {status}: SSH is not ready yet"


def print_pod_table(pods: list[Json]) -> None:
    """The ``pod list`` table."""
    rows = (
        (
            pod.get("id"),
            pod.get("name"),
            pod.get("status"),
            gpu_label(pod),
            pod.get("imageName"),
            ssh_command(pod),
        )
        for pod in pods
    )
    print_table(("ID", "NAME", "STATUS", "GPU", "IMAGE", "SSH"), rows, "no pods")


def _port_lines(pod: Json) -> Iterator[str]:
    """One ``8888/http -> http://1.2.3.4:40124`` entry per exposed port."""
    mappings = pod.get("portMappings") or {}
    ready = {str(port) for port in pod.get("readyPorts") or []}
    urls = pod.get("urls") or {}
    host = pod.get("publicIp")
    for spec in pod.get("ports") or []:
        port, _, proto = str(spec).partition("/")
        public = mappings.get(port) if isinstance(mappings, dict) else None
        if public is None or not host:
            yield f"{spec}"
            continue
        target = f"{host}:{public}"
        if proto == "http":
            target = str(urls.get(port) or f"http://{host}:{public}")
        note = "" if port in ready else " (not ready)"
        yield f"{spec} -> {target}{note}"


def print_pod_summary(pod: Json) -> None:
    """A human summary of one pod, including how to SSH into it."""
    console = stdout_console()
    title = Text()
    title.append(f"pod {pod.get('id')}", style="bold")
    if pod.get("name"):
        title.append(f" ({pod['name']})")
    title.append(" is ")
    status = str(pod.get("status"))
    title.append(status, style="green" if status == "RUNNING" else "yellow")
    console.print(title)
    fields: list[tuple[str, Any]] = [
        ("reason", pod.get("statusReason")),
        ("image", pod.get("imageName")),
        ("gpu", gpu_label(pod)),
        ("node", pod.get("nodeId")),
        ("ports", ", ".join(_port_lines(pod)) or None),
        ("cost/s", pod.get("costPerSecond")),
        ("ssh", ssh_command(pod) or _no_ssh_note(pod)),
        ("private", "yes: URLs need `openpod pod token`" if pod.get("private") else None),
    ]
    for label, value in fields:
        if value is None or value == "":
            continue
        line = Text("  ")
        line.append(f"{label:<8}", style="dim")
        line.append(str(value))
        console.print(line)


# --- progress ------------------------------------------------------------------------------------


@contextmanager
def progress(message: str) -> Iterator[Callable[[str], None]]:
    """Show ``message`` as a spinner on stderr; yields a function to change the message.

    When stderr is not a terminal, each new message is printed as a plain line instead.
    """
    console = stderr_console()
    if console.is_terminal:
        with console.status(Text(message)) as status:
            yield lambda text: status.update(Text(text))
        return
    last = [message]
    typer.echo(message, err=True)

    def update(text: str) -> None:
        if text != last[0]:
            last[0] = text
            typer.echo(text, err=True)

    yield update
