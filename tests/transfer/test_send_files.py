"""The file layer of send/receive, the two sides paired in memory over a queue channel.

The channel is a fake (this is a unit test of one layer); the records are really sealed and
the files really written. Transports and the whole CLI are tested in tests/e2e.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from openpod.adapters.transfer.channel import ChannelClosed
from openpod.cli.receive_files import receive_files
from openpod.cli.send_files import PART, collect, send_files
from openpod.cli.send_peer import Link, TransferFailed
from openpod.domain import transfer_protocol as proto
from openpod.domain.transfer_keys import IntegrityError, Opener, Sealer


class QueueChannel:
    max_record = 64 * 1024 + 64

    def __init__(self, inbox: asyncio.Queue[bytes | None], outbox: asyncio.Queue[bytes | None]):
        self.inbox, self.outbox = inbox, outbox

    async def send(self, record: bytes) -> None:
        await self.outbox.put(record)

    async def recv(self) -> bytes:
        record = await self.inbox.get()
        if record is None:
            raise ChannelClosed("closed")
        return record

    async def close(self) -> None:
        await self.outbox.put(None)


def pair() -> tuple[Link, Link]:
    a: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)
    b: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)
    ks, kr = os.urandom(32), os.urandom(32)
    sender = Link(QueueChannel(a, b), "relay", Sealer(ks), Opener(kr))
    receiver = Link(QueueChannel(b, a), "relay", Sealer(kr), Opener(ks))
    return sender, receiver


async def run(sources: list[Path], into: Path, overwrite: bool = False) -> tuple[Any, Any]:
    manifest, locals_, _links = collect(sources)
    sender, receiver = pair()

    async def send() -> Any:
        try:
            return await send_files(sender, manifest, locals_, lambda _n: None)
        finally:
            await sender.close()  # as send_run does: the receiver waits for this after `done`

    return await asyncio.gather(send(), receive_files(receiver, into, overwrite, lambda _n: None))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_files_and_a_tree_arrive_whole(tmp_path: Path) -> None:
    (tmp_path / "tree" / "x" / "empty").mkdir(parents=True)
    (tmp_path / "tree" / "x" / "a.bin").write_bytes(os.urandom(300_000))
    (tmp_path / "one.txt").write_text("one")
    (tmp_path / "zero").write_bytes(b"")
    sent, got = await run(
        [tmp_path / "tree", tmp_path / "one.txt", tmp_path / "zero"], tmp_path / "in"
    )
    assert got.sha256 == sent.sha256
    assert digest(tmp_path / "in" / "tree" / "x" / "a.bin") == digest(tmp_path / "tree/x/a.bin")
    assert (tmp_path / "in" / "one.txt").read_text() == "one"
    assert (tmp_path / "in" / "zero").read_bytes() == b""
    assert (tmp_path / "in" / "tree" / "x" / "empty").is_dir()
    assert got.bytes_sent == 300_003


async def test_a_part_file_is_resumed_and_a_wrong_one_is_sent_again(tmp_path: Path) -> None:
    data = os.urandom(500_000)
    (tmp_path / "f.bin").write_bytes(data)
    (tmp_path / "g.bin").write_bytes(data)
    into = tmp_path / "in"
    into.mkdir()
    (into / f"f.bin{PART}").write_bytes(data[:200_000])
    (into / f"g.bin{PART}").write_bytes(b"x" + data[1:200_000])
    sent, got = await run([tmp_path / "f.bin", tmp_path / "g.bin"], into)
    assert got.resumed == ["f.bin"] and sent.resumed == ["f.bin"]
    assert got.bytes_sent == 300_000 + 500_000
    assert (into / "f.bin").read_bytes() == data
    assert (into / "g.bin").read_bytes() == data
    assert not list(into.glob(f"*{PART}"))
    again_sent, again = await run([tmp_path / "f.bin"], into)
    assert again.skipped == ["f.bin"] and again.bytes_sent == 0 == again_sent.bytes_sent


async def test_an_existing_different_file_is_refused_unless_overwrite(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("new")
    into = tmp_path / "in"
    into.mkdir()
    (into / "f.txt").write_text("old")
    with pytest.raises(TransferFailed, match=r"f.txt exists and differs .*--overwrite"):
        await run([tmp_path / "f.txt"], into)
    assert (into / "f.txt").read_text() == "old"
    await run([tmp_path / "f.txt"], into, overwrite=True)
    assert (into / "f.txt").read_text() == "new"


async def receiver_against(records: list[dict[str, Any] | bytes], into: Path) -> Exception:
    """Run a receiver against a scripted sender; the error it stops with."""
    sender, receiver = pair()
    task = asyncio.ensure_future(receive_files(receiver, into, False, lambda _n: None))
    for item in records:
        await sender.send(proto.control(item) if isinstance(item, dict) else proto.data(item))
        if isinstance(item, dict) and item["t"] in ("manifest", "plan"):
            await sender.recv()  # have / go
    with pytest.raises((TransferFailed, proto.ProtocolError)) as caught:
        await task
    return caught.value


@pytest.mark.parametrize("path", ["../evil", "/etc/passwd", "a/../../b", "a\\b", "", "a//b"])
async def test_an_unsafe_path_is_refused_before_anything_is_written(
    tmp_path: Path, path: str
) -> None:
    manifest = {"t": "manifest", "files": [{"path": path, "size": 1, "mode": 420}], "dirs": []}
    error = await receiver_against([manifest], tmp_path / "in")
    assert "unsafe path" in str(error) or "empty" in str(error)
    assert not (tmp_path / "in").exists() or not any((tmp_path / "in").iterdir())


async def test_a_wrong_hash_or_too_much_data_removes_the_part(tmp_path: Path) -> None:
    manifest = {"t": "manifest", "files": [{"path": "f", "size": 3, "mode": 420}], "dirs": []}
    plan = {"t": "plan", "offsets": [0]}
    wrong = {"t": "end", "i": 0, "sha256": "00" * 32}
    error = await receiver_against([manifest, plan, {"t": "file", "i": 0}, b"abc", wrong], tmp_path)
    assert "SHA-256 differs" in str(error)
    assert not (tmp_path / "f").exists() and not (tmp_path / f"f{PART}").exists()
    error = await receiver_against([manifest, plan, {"t": "file", "i": 0}, b"abcd"], tmp_path)
    assert "more of f than its size" in str(error)
    assert not (tmp_path / "f").exists()


async def test_a_flipped_record_is_an_integrity_error(tmp_path: Path) -> None:
    sender, receiver = pair()
    record = sender.sealer.seal(proto.control({"t": "hello"}))
    await sender.channel.send(record[:-1] + bytes([record[-1] ^ 1]))
    with pytest.raises(IntegrityError):
        await receiver.recv()


class ClosingChannel(QueueChannel):
    """The sender's end: once the receiver's ``error`` is queued, every send finds it closed."""

    closed = False

    async def send(self, record: bytes) -> None:
        if self.closed:
            raise ChannelClosed("closed")
        await super().send(record)


async def test_a_receivers_reason_beats_the_closed_channel(tmp_path: Path) -> None:
    """The receiver sends ``error`` and closes; the sender, mid-send, reports the reason."""
    (tmp_path / "big").write_bytes(os.urandom(2 * 1024 * 1024))
    manifest, locals_, _links = collect([tmp_path / "big"])
    to_receiver: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)
    to_sender: asyncio.Queue[bytes | None] = asyncio.Queue()
    ks, kr = os.urandom(32), os.urandom(32)
    channel = ClosingChannel(to_sender, to_receiver)
    sender = Link(channel, "relay", Sealer(ks), Opener(kr))
    receiver = Link(QueueChannel(to_receiver, to_sender), "relay", Sealer(kr), Opener(ks))

    async def receiver_stops() -> None:
        await receiver.recv()  # manifest
        await receiver.send(
            proto.control({"t": "have", "files": [{"offset": 0, "sha256": "00" * 32}]})
        )
        await receiver.recv()  # plan
        await receiver.send(proto.control({"t": "go"}))
        await receiver.recv()  # file
        await receiver.recv()  # the first data record
        await receiver.send(proto.control({"t": "error", "message": "altered in transit"}))
        await to_sender.put(None)
        channel.closed = True  # the close reaches the sender's sends before its reads

    stopping = asyncio.ensure_future(receiver_stops())
    with pytest.raises(proto.PeerError, match="altered in transit"):
        await send_files(sender, manifest, locals_, lambda _n: None)
    await stopping


def test_symlinks_are_left_out_and_name_clashes_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "real").write_text("x")
    (tmp_path / "d" / "link").symlink_to(tmp_path / "d" / "real")
    manifest, _locals, links = collect([tmp_path / "d"])
    assert [f.path for f in manifest.files] == ["d/real"]
    assert links == [str(tmp_path / "d" / "link")]
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "d").mkdir()
    with pytest.raises(TransferFailed, match="both named 'd'"):
        collect([tmp_path / "d", tmp_path / "e" / "d"])
    with pytest.raises(TransferFailed, match="no such file"):
        collect([tmp_path / "missing"])


def test_loopback_only_offers_keep_no_other_candidate() -> None:
    from openpod.cli.send_connect import only_loopback

    sdp = "\r\n".join(
        [
            "v=0",
            "a=candidate:1 1 UDP 2122260223 127.0.0.1 50000 typ host",
            "a=candidate:2 1 UDP 2122194687 192.0.2.2 50001 typ host",
            "a=candidate:3 1 UDP 2122194687 fd00::2 50002 typ host",
            "a=end-of-candidates",
        ]
    )
    kept = only_loopback(sdp)
    assert "127.0.0.1 50000" in kept
    assert "192.0.2.2" not in kept and "fd00::2" not in kept
    assert kept.startswith("v=0\r\n") and kept.endswith("a=end-of-candidates")
