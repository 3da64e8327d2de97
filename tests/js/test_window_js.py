"""The /transfer page's sender keeps to a receiver's window (tests/js/window.mjs under Node):
never more than the window sent and not reported written, a wait only with the window full
and with no time limit, no waiting for a receiver that asked for none, and an out-of-bounds
window refused."""

from __future__ import annotations

from tests.js.node import ROOT, run_checks


def test_the_pages_sender_keeps_to_the_window() -> None:
    assert run_checks(ROOT / "tests" / "js" / "window.mjs") >= 90
