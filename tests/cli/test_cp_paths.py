"""`openpod cp`'s arguments: which side is the pod, and a path in the pod as SFTP takes it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from openpod.cli.cp import parse
from tests.cli.conftest import FakeApi


@pytest.mark.parametrize(
    ("given", "in_pod"),
    [
        ("~", "."),
        ("~/", "."),
        ("~/a/b.bin", "a/b.bin"),
        ("~/data/", "data/"),
        ("", "."),
        ("/abs/x", "/abs/x"),
        ("a~b", "a~b"),
        ("x/~", "x/~"),
    ],
)
def test_the_pods_home_is_where_sftp_starts(given: str, in_pod: str) -> None:
    assert parse("f.bin", f"pod1:{given}") == ("pod1", in_pod, "f.bin", True)
    assert parse(f"pod1:{given}", "out") == ("pod1", in_pod, "out", False)


def test_another_users_home_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^~bob/x: the home of 'bob' is not known here"):
        parse("f.bin", "pod1:~bob/x")


def test_exactly_one_side_is_a_pod() -> None:
    for src, dst in (("a", "b"), ("pod1:a", "pod2:b")):
        with pytest.raises(ValueError, match="one of SRC and DST must be POD:PATH"):
            parse(src, dst)


def test_a_source_named_as_a_directory_must_be_one(
    fake_api: FakeApi, cli: Callable[..., Any], tmp_path: Path
) -> None:
    """`cp f.txt/ POD:` is refused as scp refuses it (a Path would drop the slash and copy
    the file), before the API is asked anything; a real directory with a slash is let through."""
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / "d").mkdir()
    for given, why in (("f.txt/", "not a directory"), ("gone/", "no such directory")):
        result = cli("cp", f"{tmp_path}/{given}", "k3x9q2m7v1c4:")
        assert result.exit_code == 1
        assert result.stderr == f"error: copy failed: {tmp_path}/{given}: {why}\n"
    assert fake_api.requests == []
    fake_api.error("GET", "/pods/k3x9q2m7v1c4", 404, "no such pod 'k3x9q2m7v1c4'")
    result = cli("cp", f"{tmp_path}/d/", "k3x9q2m7v1c4:")
    assert (result.exit_code, result.stderr) == (3, "error: no such pod 'k3x9q2m7v1c4'\n")
