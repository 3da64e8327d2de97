"""The `openpod` command: the user CLI plus the server-side commands (composition root).

`server`, `node`, `admin` and `up` import the server code lazily, so user commands start fast.
"""

from __future__ import annotations

from openpod.cli.app import app
from openpod.entry import commands

commands.register(app)


def main() -> None:
    app()
