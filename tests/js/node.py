"""Run one of the /transfer page's Node check scripts (tests/js/*.mjs): they print
"ok: N checks" and exit 0, or name the first failure and exit 1."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_checks(script: Path, *args: str) -> int:
    """The number of checks `script` passed; fails the test with its output otherwise."""
    node = shutil.which("node")
    assert node is not None, "node (20+) is needed to test the /transfer page's modules"
    result = subprocess.run(
        [node, str(script), *args], capture_output=True, text=True, timeout=120, cwd=ROOT,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"ok: (\d+) checks", result.stdout)
    assert found is not None, result.stdout
    return int(found.group(1))
