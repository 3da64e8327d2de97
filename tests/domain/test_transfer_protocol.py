"""What a peer may send in a transfer: every refusal names what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from openpod.domain import transfer_protocol as proto


def manifest(*files: dict[str, Any], dirs: list[str] | None = None) -> proto.Manifest:
    return proto.parse_manifest({"t": "manifest", "files": list(files), "dirs": dirs or []})


def test_round_trip_of_records() -> None:
    assert proto.parse_control(proto.control({"t": "go"})) == {"t": "go"}
    assert proto.data(b"xy") == b"Dxy"
    with pytest.raises(proto.ProtocolError, match="got file data"):
        proto.parse_control(b"Dxy")
    with pytest.raises(proto.ProtocolError, match="not JSON"):
        proto.parse_control(b"J{")
    with pytest.raises(proto.ProtocolError, match="no type"):
        proto.parse_control(b"J[]")
    with pytest.raises(proto.PeerError, match="disk full"):
        proto.parse_control(proto.control({"t": "error", "message": "disk full"}))


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/abs", "absolute"),
        ("a/../b", "'..'"),
        ("./a", "'.'"),
        ("a\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("x" * 5000, "longer than"),
        ("a/", "empty"),
    ],
)
def test_unsafe_paths(path: str, why: str) -> None:
    with pytest.raises(proto.ProtocolError, match=why):
        proto.safe_path(path)


def test_manifest_checks() -> None:
    good = manifest({"path": "a", "size": 3, "mode": 0o100755}, dirs=["d"])
    assert good.files[0].mode == 0o755 and good.total == 3 and good.dirs == ("d",)
    with pytest.raises(proto.ProtocolError, match="twice"):
        manifest({"path": "a", "size": 1}, {"path": "a", "size": 2})
    with pytest.raises(proto.ProtocolError, match="size of 'a'"):
        manifest({"path": "a", "size": -1})
    with pytest.raises(proto.ProtocolError, match="size of 'a'"):
        manifest({"path": "a", "size": True})
    with pytest.raises(proto.ProtocolError, match="as a file and a directory"):
        manifest({"path": "a", "size": 1}, dirs=["a"])
    for other in ({"path": "a/b/c", "size": 1}, {"path": "a/b", "size": 1}):
        with pytest.raises(proto.ProtocolError, match=r"lists 'a' as a file and as the folder of"):
            manifest({"path": "a", "size": 1}, other)
    with pytest.raises(
        proto.ProtocolError, match=r"lists 'x/y' as a file and as the folder of 'x/y/z'"
    ):
        manifest({"path": "x/y", "size": 1}, dirs=["x", "x/y/z"])
    assert len(manifest({"path": "ab", "size": 1}, {"path": "a/b", "size": 1}).files) == 2
    with pytest.raises(proto.ProtocolError, match="expected 'manifest'"):
        proto.parse_manifest({"t": "plan"})


def test_have_plan_and_end_checks() -> None:
    m = manifest({"path": "a", "size": 10})
    have = proto.parse_have({"t": "have", "files": [{"offset": 4, "sha256": "AB" * 32}]}, m)
    assert have == [proto.Have(4, "ab" * 32)]
    with pytest.raises(proto.ProtocolError, match="one entry per file"):
        proto.parse_have({"t": "have", "files": []}, m)
    with pytest.raises(proto.ProtocolError, match="not a SHA-256"):
        proto.parse_have({"t": "have", "files": [{"offset": 0, "sha256": "zz" * 32}]}, m)
    # A receiver may name the hash it picked; the CLI offers plain SHA-256 alone.
    held = [{"offset": 0, "sha256": proto.EMPTY_SHA256}]
    assert proto.parse_have({"t": "have", "files": held, "hash": "sha256"}, m) == [
        proto.Have(0, proto.EMPTY_SHA256)
    ]
    for picked in ("sha256-4m", "md5", 7):
        with pytest.raises(proto.ProtocolError, match="which this sender did not offer"):
            proto.parse_have({"t": "have", "files": held, "hash": picked}, m)
    assert proto.parse_plan({"t": "plan", "offsets": [10]}, m) == [10]
    with pytest.raises(proto.ProtocolError, match="past its end"):
        proto.parse_plan({"t": "plan", "offsets": [11]}, m)
    assert proto.parse_end({"t": "end", "i": 0, "sha256": "ab" * 32}, 0) == "ab" * 32
    with pytest.raises(proto.ProtocolError, match="names file 1, expected 0"):
        proto.parse_end({"t": "end", "i": 1, "sha256": "ab" * 32}, 0)
