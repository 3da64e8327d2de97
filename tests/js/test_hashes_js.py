"""Which hash two ends of the /transfer page agree on (tests/js/hashes.mjs under Node): a
sending page offers the block hash and uses the receiver's pick, a receiving page picks it
when offered and plain SHA-256 when not, a pick nobody offered stops the sender before any
data, and a file whose block hash differs is an integrity error with the download aborted."""

from __future__ import annotations

from tests.js.node import ROOT, run_checks


def test_the_pages_agree_on_a_hash() -> None:
    assert run_checks(ROOT / "tests" / "js" / "hashes.mjs") >= 22
