"""The `openpod` command: the user CLI plus the server-side commands (composition root).

`server`, `node`, `admin` and `up` import the server code lazily, so user commands start fast.
`openpod meter` (one per running pod) skips the CLI altogether: it loads no typer or rich; so
does `openpod ssh proxy`, which ssh runs for every connection through the gateway's fast path.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["meter"]:
        from openpod.meter.main import main as meter

        raise SystemExit(meter(sys.argv[2:]))
    if sys.argv[1:3] == ["ssh", "proxy"] and "--help" not in sys.argv:
        from openpod.cli.ssh_proxy import main as proxy  # per ssh connection: start fast

        raise SystemExit(proxy(sys.argv[3:]))
    from openpod.cli.app import app
    from openpod.entry import commands

    commands.register(app)
    app()
