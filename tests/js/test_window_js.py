"""The /transfer page's sender keeps to a receiver's window (tests/js/window.mjs under Node):
never more than the window sent and not reported written, a wait only with the window full,
no waiting for a receiver that asked for none, and an out-of-bounds window refused."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "js" / "window.mjs"


def test_the_pages_sender_keeps_to_the_window() -> None:
    node = shutil.which("node")
    assert node is not None, "node (20+) is needed to test the /transfer page's files.js"
    result = subprocess.run(
        [node, str(SCRIPT)], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"ok: (\d+) checks", result.stdout)
    assert found is not None, result.stdout
    assert int(found.group(1)) >= 90
