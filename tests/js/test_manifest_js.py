"""The /transfer page refuses the manifests the CLI refuses (tests/js/manifest.mjs under
Node): unsafe paths, duplicates, bad sizes, a file that is also a directory or the folder of
another path."""

from __future__ import annotations

from tests.js.node import ROOT, run_checks


def test_the_pages_receiver_refuses_a_bad_manifest() -> None:
    assert run_checks(ROOT / "tests" / "js" / "manifest.mjs") == 9
