"""`openpod cp`'s arguments: which side is the pod, and a path in the pod as SFTP takes it."""

from __future__ import annotations

import pytest

from openpod.cli.cp import parse


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
