"""local_tree.walk: os.walk into symlinked directories, never round a loop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from openpod.cli.local_tree import SymlinkLoop, leads_back, nearest_existing, walk


def listing(top: Path) -> list[str]:
    return [
        (root / name).relative_to(top).as_posix()
        for root, dirs, files in walk(top)
        for name in sorted(dirs + files)
    ]


def test_linked_directories_are_walked_under_the_links_name(tmp_path: Path) -> None:
    (tmp_path / "data" / "deep").mkdir(parents=True)
    (tmp_path / "data" / "deep" / "f").write_text("x")
    top = tmp_path / "top"
    top.mkdir()
    (top / "a").symlink_to(tmp_path / "data")
    (top / "b").symlink_to("../data")  # the same directory twice, not a loop
    assert sorted(listing(top)) == [
        "a", "a/deep", "a/deep/f", "b", "b/deep", "b/deep/f",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("link", "target", "back_to"),
    [
        ("top/self", "top", "top"),
        ("top/x/up", "top", "top"),
        ("top/x/root", "/", "top"),  # everything holds top: walking / would never end well
        ("top/x/parent", ".", "top"),  # tmp_path, which holds top
    ],
)
def test_a_link_to_a_directory_that_holds_it_is_a_loop(
    tmp_path: Path, link: str, target: str, back_to: str
) -> None:
    (tmp_path / "top" / "x").mkdir(parents=True)
    (tmp_path / link).symlink_to(target if target == "/" else tmp_path / target)
    with pytest.raises(SymlinkLoop) as caught:
        list(walk(tmp_path / "top"))
    assert str(caught.value) == (
        f"{tmp_path / link}: a symlink loop (it leads back to {os.path.realpath(tmp_path / back_to)})"
    )


def test_two_links_to_each_other_are_a_loop(tmp_path: Path) -> None:
    for name in ("p", "q"):
        (tmp_path / name).mkdir()
    (tmp_path / "p" / "to-q").symlink_to(tmp_path / "q")
    (tmp_path / "q" / "to-p").symlink_to(tmp_path / "p")
    with pytest.raises(SymlinkLoop, match=r"/p/to-q/to-p: a symlink loop \(it leads back to "):
        list(walk(tmp_path / "p"))


def test_a_link_to_nothing_is_listed_as_a_file_for_the_caller_to_name(tmp_path: Path) -> None:
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "gone").symlink_to(tmp_path / "nowhere")
    assert [files for _root, _dirs, files in walk(tmp_path / "top")] == [["gone"]]


def test_a_directory_that_cannot_be_listed_is_an_error_not_skipped(tmp_path: Path) -> None:
    """os.walk alone yields nothing for it (root reads every directory, so the test takes
    one that is not there)."""
    assert list(os.walk(tmp_path / "missing")) == []
    with pytest.raises(FileNotFoundError):
        list(walk(tmp_path / "missing"))


def test_leads_back_compares_whole_path_parts() -> None:
    assert leads_back("/a/b", ("/a/b",)) == "/a/b"
    assert leads_back("/a", ("/x", "/a/b/c")) == "/a/b/c"
    assert leads_back("/", ("/a",)) == "/a"
    assert leads_back("/a/b", ("/a/bc",)) is None
    assert leads_back("/a/b/c", ("/a/b",)) is None


def test_nearest_existing_is_the_path_or_the_directory_it_would_land_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()
    assert nearest_existing(Path("here")) == Path("here")  # as given
    assert nearest_existing(Path("here/new/deeper")) == tmp_path / "here"
