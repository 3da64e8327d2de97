"""Fixtures for the gateway tests."""

from __future__ import annotations

import pytest

from tests.gateway.fakes import Keys, make_key


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    home = tmp_path_factory.mktemp("keys")
    return Keys(*(make_key(home / f"id_{name}") for name in ("alice", "bob", "stranger")))
