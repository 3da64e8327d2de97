"""The root ``openpod`` Typer app: ``config`` and ``usage`` plus the ``gpu``, ``pod``, ``ssh-key``
and ``ssh`` command groups. It talks to the openpod API over HTTP only.

``openpod.entry`` imports :data:`app` and registers the server-side commands on it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from openpod import __version__
from openpod.cli import config as cfg
from openpod.cli import cp, gpus, keys, pods, provider, send, ssh, usage, wallet
from openpod.cli.errors import EXIT_CODES_HELP, ExitCode
from openpod.cli.output import fail, print_line

__all__ = ["EXIT_CODES", "app"]

EXIT_CODES = ExitCode
"""The exit codes scripts can trust (see :class:`openpod.cli.client.ExitCode`)."""

app = typer.Typer(
    name="openpod",
    help="openpod: GPU pods you can SSH into, billed per second.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
)


def _version(value: bool) -> None:
    if value:
        print_line(f"openpod {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """openpod: GPU pods you can SSH into, billed per second."""


@app.command("config")
def config_cmd(
    api_url: Annotated[
        str | None, typer.Option("--api-url", help='The API\'s URL ("" resets to the default).')
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help='Your API key ("" removes it).')
    ] = None,
) -> None:
    """Save the API URL and key, or show the current settings (the key masked).

    OPENPOD_API_URL and OPENPOD_API_KEY override the file; OPENPOD_CONFIG_DIR moves it.
    """
    try:
        if api_url is not None or api_key is not None:
            if api_url and not api_url.startswith(("http://", "https://")):
                raise typer.BadParameter(
                    f"{api_url!r} is no http:// or https:// URL", param_hint="'--api-url'"
                )
            path = cfg.save(api_url=api_url, api_key=api_key)
            print_line(f"saved {path}")
        current = cfg.load()
    except cfg.ConfigError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write the config: {exc}") from None
    print_line(f"config file: {cfg.config_path()}")
    print_line(f"api url:     {current.api_url} ({current.api_url_source})")
    print_line(f"api key:     {cfg.mask_key(current.api_key)} ({current.api_key_source})")


app.command("usage")(usage.usage)
app.command("cp")(cp.cp)
app.command("send")(send.send)
app.command("receive")(send.receive)
app.add_typer(gpus.app, name="gpu")
app.add_typer(pods.app, name="pod")
app.add_typer(keys.app, name="ssh-key")
app.add_typer(ssh.app, name="ssh")
app.add_typer(provider.account_app, name="account")
app.add_typer(provider.app, name="provider")
app.add_typer(wallet.app, name="wallet")
