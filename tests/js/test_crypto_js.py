"""The browser's crypto.js (run under Node) against the vectors the Python side generated: the
same CPace, keys, tags, sealed records, SHA-256, base64 and code parsing, plus its own
failure cases (wrong code, flipped byte, replay, low-order share)."""

from __future__ import annotations

from tests.js.node import ROOT, run_checks

SCRIPT = ROOT / "tests" / "js" / "crypto_vectors.mjs"
VECTORS = ROOT / "tests" / "vectors" / "transfer_crypto.json"


def test_crypto_js_reproduces_every_vector() -> None:
    assert run_checks(SCRIPT, str(VECTORS)) >= 156
