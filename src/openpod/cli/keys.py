"""``openpod ssh-key ...``: the SSH public keys installed in your pods."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from openpod.cli.client import make_client
from openpod.cli.output import handle_api_errors, print_json, print_line, print_table

app = typer.Typer(
    name="ssh-key", help="Manage the SSH public keys put into your pods.", no_args_is_help=True
)

DEFAULT_KEY_FILES = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")
"""Tried in order in ``~/.ssh`` when no key is given."""


class PublicKeyError(ValueError):
    """A file does not hold a usable SSH public key."""


def default_public_key_path() -> Path | None:
    """The first of ``~/.ssh/id_ed25519.pub``, ``id_ecdsa.pub``, ``id_rsa.pub`` that exists."""
    ssh_dir = Path.home() / ".ssh"
    for name in DEFAULT_KEY_FILES:
        candidate = ssh_dir / name
        if candidate.is_file():
            return candidate
    return None


def read_public_key(path: Path) -> str:
    """The public key line in ``path``; refuses private keys and empty files."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PublicKeyError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PublicKeyError(f"cannot read {path}: {exc}") from None
    if "PRIVATE KEY" in text:
        raise PublicKeyError(f"{path} is a private key: pass the public one ({path}.pub)")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("#")]
    if not lines:
        raise PublicKeyError(f"{path} holds no public key")
    if len(lines[0].split()) < 2:
        raise PublicKeyError(f"{path} does not look like an SSH public key")
    return lines[0]


@app.command("add")
@handle_api_errors
def add(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="A public key file (default: ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A name for the key.")] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="The public key itself, instead of a file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Add an SSH public key to your account; it is put into pods created after."""
    if key is not None and path is not None:
        raise typer.BadParameter("give a key file or --key, not both", param_hint="'--key'")
    if key is not None:
        public_key = key.strip()
        if not public_key:
            raise typer.BadParameter("the key is empty", param_hint="'--key'")
    else:
        source = path or default_public_key_path()
        if source is None:
            raise typer.BadParameter(
                "no key found in ~/.ssh (id_ed25519.pub, id_ecdsa.pub, id_rsa.pub):"
                " pass a file or --key (create one with ssh-keygen -t ed25519)",
                param_hint="'PATH'",
            )
        try:
            public_key = read_public_key(source)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'PATH'") from None
    with make_client() as client:
        added = client.add_ssh_key(public_key, name)
    if as_json:
        print_json(added)
    else:
        print_line(
            f"added SSH key {added.get('id')} ({added.get('name') or added.get('type')}, "
            f"{added.get('fingerprint')})"
        )


@app.command("list")
@handle_api_errors
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """List your SSH public keys."""
    with make_client() as client:
        keys = client.list_ssh_keys()
    if as_json:
        print_json(keys)
        return
    rows = (
        (k.get("id"), k.get("name"), k.get("type"), k.get("fingerprint"), k.get("createdAt"))
        for k in keys
    )
    print_table(
        ("ID", "NAME", "TYPE", "FINGERPRINT", "CREATED"),
        rows,
        "no SSH keys (add one with: openpod ssh-key add)",
    )


@app.command("remove")
@handle_api_errors
def remove(key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id.")]) -> None:
    """Remove an SSH public key from your account (running pods keep it)."""
    with make_client() as client:
        client.remove_ssh_key(key_id)
    print_line(f"removed SSH key {key_id}")
