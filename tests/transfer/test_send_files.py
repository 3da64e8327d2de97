"""The file layer of send/receive, the two sides paired in memory over a queue channel.

The channel is a fake (this is a unit test of one layer); the records are really sealed and
the files really written. Transports and the whole CLI are tested in tests/e2e.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from openpod.adapters.transfer.channel import ChannelClosed
from openpod.cli.local_tree import SymlinkLoop
from openpod.cli.receive_files import WINDOW, Held, _room_needed, receive_files
from openpod.cli.send_files import PART, collect, send_files
from openpod.cli.send_peer import Link, TransferFailed
from openpod.domain import transfer_protocol as proto
from openpod.domain.transfer_keys import IntegrityError, Opener, Sealer

EMPTY = hashlib.sha256().hexdigest()


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


def pair(transport: str = "relay", depth: int = 8) -> tuple[Link, Link]:
    a: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=depth)
    b: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=depth)
    ks, kr = os.urandom(32), os.urandom(32)
    sender = Link(QueueChannel(a, b), transport, Sealer(ks), Opener(kr))
    receiver = Link(QueueChannel(b, a), transport, Sealer(kr), Opener(ks))
    return sender, receiver


async def run(
    sources: list[Path], into: Path, overwrite: bool = False, transport: str = "relay"
) -> tuple[Any, Any]:
    manifest, locals_, _links = collect(sources)
    sender, receiver = pair(transport)
    return await asyncio.gather(
        send_then_close(sender, manifest, locals_),
        receive_files(receiver, into, overwrite, lambda _n: None),
    )


async def send_then_close(sender: Link, manifest: proto.Manifest, sources: list[Path]) -> Any:
    try:
        return await send_files(sender, manifest, sources, lambda _n: None)
    finally:
        await sender.close()  # as send_run does: the receiver waits for this after `done`


async def answer_as_receiver(receiver: Link, go: dict[str, Any]) -> tuple[Any, Any]:
    """A scripted receiver's side up to `go` (holding nothing of any file): the manifest and
    the plan it was sent."""
    manifest = proto.parse_manifest(proto.parse_control(await receiver.recv()))
    have = [{"offset": 0, "sha256": EMPTY} for _ in manifest.files]
    await receiver.send(proto.control({"t": "have", "files": have}))
    plan = proto.parse_plan(proto.parse_control(await receiver.recv()), manifest)
    await receiver.send(proto.control(go))
    return manifest, plan


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


def test_the_room_needed_counts_what_each_file_holds_now(tmp_path: Path) -> None:
    """Each file still to come grows from what it holds on disk to its size: a part resumed
    (or cut back) keeps its place; a file replaced whole stays until its new copy is
    verified; a file already here adds nothing."""
    sizes = {"resumed": 1000, "cut": 1000, "replaced": 1000, "grown": 1000, "here": 1000}
    manifest = proto.Manifest(
        tuple(proto.FileEntry(name, size, 0o644) for name, size in sizes.items()), ()
    )

    def held(offset: int, whole: bool) -> Held:
        return Held(tmp_path / "f", tmp_path / "f.part", offset, hashlib.sha256(), whole)

    holding = [
        held(400, False),
        held(400, False),
        held(600, True),
        held(300, True),
        held(1000, True),
    ]
    plan = [400, 100, 0, 300, 1000]  # resumed, cut back to 100, replaced, --overwrite prefix, here
    assert _room_needed(manifest, holding, plan) == 600 + 600 + 1000 + 700 + 0


async def test_what_cannot_fit_is_refused_before_a_byte_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f.bin").write_bytes(os.urandom(5000))
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "g.bin").write_bytes(os.urandom(10))
    into = tmp_path / "in"
    real = shutil.disk_usage

    def small(path: Any) -> Any:
        return real(path)._replace(free=4999)  # one byte short

    monkeypatch.setattr(shutil, "disk_usage", small)
    with pytest.raises(
        TransferFailed,
        match=r"not enough space here: the files need 5,010 bytes more, 4,999 bytes is free in .*; nothing was received",
    ):
        await run([tmp_path / "f.bin", tmp_path / "tree"], into)
    assert not into.exists()  # not even the directory asked for: no folder, no part


async def test_a_target_that_is_a_file_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    (tmp_path / "f.bin").write_bytes(b"x")
    into = tmp_path / "in"
    into.write_bytes(b"a file")
    with pytest.raises(TransferFailed, match=f"^{into} exists and is not a directory$"):
        await run([tmp_path / "f.bin"], into)
    assert into.read_bytes() == b"a file"


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


def test_symlinks_are_followed_and_name_clashes_refused(tmp_path: Path) -> None:
    """As scp -r: a Hugging Face snapshot (links into ../../blobs) sends its files under the
    links' names; a link to nothing and a FIFO in a directory are left out, named; given
    themselves they are refused, as is a link back to a directory it is in."""
    hub = tmp_path / "models--x"
    (hub / "blobs").mkdir(parents=True)
    (hub / "blobs" / "b1").write_bytes(b"weights")
    (hub / "blobs" / "b2").write_bytes(b"{}")
    snap = hub / "snapshots" / "abc"
    (snap / "sub").mkdir(parents=True)
    (snap / "model.bin").symlink_to("../../blobs/b1")
    (snap / "sub" / "config.json").symlink_to("../../../blobs/b2")
    (snap / "more").symlink_to("../../blobs")  # a directory, by a link
    (snap / "gone").symlink_to(tmp_path / "nowhere")
    os.mkfifo(snap / "pipe")
    manifest, locals_, left_out = collect([snap])
    assert [(f.path, f.size) for f in manifest.files] == [
        ("abc/model.bin", 7),
        ("abc/more/b1", 7),
        ("abc/more/b2", 2),
        ("abc/sub/config.json", 2),
    ]
    assert list(manifest.dirs) == ["abc", "abc/more", "abc/sub"]
    assert [p.read_bytes() for p in locals_] == [b"weights", b"weights", b"{}", b"{}"]
    assert left_out == [str(snap / "gone"), str(snap / "pipe")]
    # Given by itself, a link is sent under its own name; `.` is this directory's name.
    manifest, _locals, _left = collect([snap / "model.bin"])
    assert [(f.path, f.size) for f in manifest.files] == [("model.bin", 7)]
    for path, why in ((snap / "gone", "a symlink to nothing"), (snap / "pipe", "not a regular")):
        with pytest.raises(TransferFailed, match=f"^{path}: {why}"):
            collect([path])
    (snap / "sub" / "up").symlink_to("..")
    with pytest.raises(SymlinkLoop, match=f"^{snap}/sub/up: a symlink loop .*{snap}\\)$"):
        collect([snap])
    (tmp_path / "d").mkdir()
    (tmp_path / "e" / "d").mkdir(parents=True)
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


async def test_on_webrtc_the_receiver_reports_what_it_wrote(tmp_path: Path) -> None:
    """Over WebRTC the receiver asks for a window and reports with `got` as it writes; a
    sender that keeps to it gets every file through."""
    data = os.urandom(WINDOW + 5 * 1024 * 1024)
    (tmp_path / "f.bin").write_bytes(data)
    manifest, locals_, _links = collect([tmp_path / "f.bin"])
    sender, receiver = pair("webrtc")
    said: list[dict[str, Any]] = []
    send = receiver.send

    async def noted(plaintext: bytes) -> None:
        if plaintext[:1] == b"J":
            said.append(proto.parse_control(plaintext))
        await send(plaintext)

    receiver.send = noted  # type: ignore[method-assign]
    sent, got = await asyncio.gather(
        send_then_close(sender, manifest, locals_),
        receive_files(receiver, tmp_path / "in", False, lambda _n: None),
    )
    assert (tmp_path / "in" / "f.bin").read_bytes() == data
    assert got.sha256 == sent.sha256
    assert [m for m in said if m["t"] == "go"] == [{"t": "go", "window": WINDOW}]
    reports = [m["bytes"] for m in said if m["t"] == "got"]
    steps = [b - a for a, b in zip([0, *reports], reports, strict=False)]
    assert all(WINDOW // 4 <= step < WINDOW // 4 + sender.max_data for step in steps), steps
    assert len(reports) >= len(data) // (WINDOW // 4 + sender.max_data)


async def test_the_sender_stops_at_the_window_until_the_receiver_reports(tmp_path: Path) -> None:
    """A receiver that saves nothing (a paused download) holds the sender at its window: the
    sender never has more than the window sent and unreported. The scripted receiver reports
    only once no more data comes and the window is nearly full, so a sender that ran past the
    window would be caught by the count."""
    window = proto.WINDOW_MIN
    size = 5 * window + 12345
    (tmp_path / "f.bin").write_bytes(os.urandom(size))
    manifest, locals_, _links = collect([tmp_path / "f.bin"])
    sender, receiver = pair("webrtc", depth=10_000)
    sending = asyncio.ensure_future(send_files(sender, manifest, locals_, lambda _n: None))
    try:
        told, plan = await answer_as_receiver(receiver, proto.go(window))
        assert told.credit
        assert plan == [0]
        assert proto.parse_control(await receiver.recv()) == {"t": "file", "i": 0}
        received, reported, reports = 0, 0, 0
        largest = sender.max_data
        while True:
            try:
                plaintext = await asyncio.wait_for(receiver.recv(), 0.5)
            except TimeoutError:  # nothing more comes: the sender waits (or is slow)
                if received - reported > window - largest:
                    reported, reports = received, reports + 1
                    await receiver.send(proto.control({"t": "got", "bytes": received}))
                continue
            if plaintext[:1] != b"D":
                proto.parse_end(proto.parse_control(plaintext), 0)
                break
            received += len(plaintext) - 1
            assert received - reported <= window
        assert received == size
        assert reports >= size // window - 1
        await receiver.send(proto.control({"t": "ok", "i": 0}))
        assert proto.parse_control(await receiver.recv()) == {"t": "done"}
        await receiver.send(proto.control({"t": "done"}))
        report = await sending
        assert report.bytes_sent == size
    finally:
        sending.cancel()


async def test_a_sender_without_credit_gets_no_window(tmp_path: Path) -> None:
    """An older sender (no "credit" in its manifest) is sent a plain `go`, as before."""
    for credit, expected in ((False, {"t": "go"}), (True, {"t": "go", "window": WINDOW})):
        sender, receiver = pair("webrtc")
        task = asyncio.ensure_future(
            receive_files(receiver, tmp_path / "in", False, lambda _n: None)
        )
        files = [{"path": "f", "size": 1, "mode": 420}]
        manifest = {
            "t": "manifest",
            "files": files,
            "dirs": [],
            **({"credit": 1} if credit else {}),
        }
        await sender.send(proto.control(manifest))
        await sender.recv()  # have
        await sender.send(proto.control({"t": "plan", "offsets": [0]}))
        assert proto.parse_control(await sender.recv()) == expected
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_bad_window_or_report_stops_the_sender(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    manifest, locals_, _links = collect([tmp_path / "f.bin"])
    for go, got, said in (
        ({"t": "go", "window": 100}, None, "window of 100 bytes, outside"),
        (proto.go(proto.WINDOW_MIN), 10**12, "reports 1000000000000 bytes written"),
    ):
        sender, receiver = pair("webrtc", depth=10_000)
        sending = asyncio.ensure_future(send_files(sender, manifest, locals_, lambda _n: None))
        await answer_as_receiver(receiver, go)
        if got is not None:
            await receiver.recv()  # file
            await receiver.send(proto.control({"t": "got", "bytes": got}))
        with pytest.raises(proto.ProtocolError, match=said):
            await sending
