"""The hot wallet's tests: a real SoftHSM2 token for this test process, a real anvil with
openpod's contracts (tests/payments' fixtures: chain, rpc, db)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.payments.conftest import chain, db, rpc
from tests.support.hsm import SoftHsmToken, make_token

__all__ = ["chain", "db", "rpc"]


@pytest.fixture(scope="session")
def token() -> Iterator[SoftHsmToken]:
    """One token per test process (the PKCS#11 module reads its config once); every test
    makes keys of its own in it."""
    root = Path(tempfile.mkdtemp(prefix="openpod-softhsm-"))
    made = make_token(root)
    before = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(made.conf)
    try:
        yield made
    finally:
        if before is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = before
        shutil.rmtree(root, ignore_errors=True)
