"""The browser's crypto.js (run under Node) against the vectors the Python side generated: the
same CPace, keys, tags, sealed records, SHA-256, base64 and code parsing, plus its own
failure cases (wrong code, flipped byte, replay, low-order share)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "js" / "crypto_vectors.mjs"
VECTORS = ROOT / "tests" / "vectors" / "transfer_crypto.json"


def test_crypto_js_reproduces_every_vector() -> None:
    node = shutil.which("node")
    assert node is not None, "node (20+) is needed to test the /transfer page's crypto.js"
    result = subprocess.run(
        [node, str(SCRIPT), str(VECTORS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"ok: (\d+) checks", result.stdout)
    assert found is not None, result.stdout
    assert int(found.group(1)) >= 120
