"""`openpod send` / `openpod receive` between two real CLI processes through a real control plane.

Each test runs both commands as a user would (`python -m openpod ...`, configured by the
environment), on 127.0.0.1 only (`--loopback`), and checks the received bytes by SHA-256.
The control plane logs at debug level so the last test can show that no code's secret words
ever reached it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cp import sha256, small_disk, write_random
from tests.support.net import wait_until
from tests.support.platform import ControlPlane
from tests.support.tamper import TamperingProxy

MIB = 1 << 20
GIB = 1 << 30
SECRETS: list[str] = []  # every code's secret words, checked against the server's log at the end


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root = tmp_path_factory.mktemp("plane")
    server = ControlPlane(root)
    server.args[server.args.index("warning")] = "debug"
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("src") / "big.bin"
    return path, write_random(path, GIB)


class Sender:
    """`openpod send` in the background; `code` is read from its first JSON line."""

    def __init__(self, url: str, home: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openpod", "send", "--json", "--loopback", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(url, home),
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        assert first, f"send printed no code: {self.proc.stderr.read() if self.proc.stderr else ''}"
        self.code = json.loads(first)["code"]
        SECRETS.append(self.code.split("-", 1)[1])

    def finish(self, timeout: float = 300) -> tuple[int, dict[str, Any] | None, str]:
        out, err = self.proc.communicate(timeout=timeout)
        lines = [line for line in out.splitlines() if line.strip()]
        return self.proc.returncode, json.loads(lines[-1]) if lines else None, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def _env(url: str, home: Path) -> dict[str, str]:
    return {**os.environ, "OPENPOD_API_URL": url, "OPENPOD_CONFIG_DIR": str(home / "config")}


def receive(
    url: str, home: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openpod", "receive", "--json", "--loopback", *args],
        capture_output=True,
        text=True,
        env=_env(url, home),
        timeout=timeout,
    )


def exchange(
    url: str, home: Path, source: Path, *receive_args: str, transport: str = "direct",
    timeout: float = 60,
) -> tuple[subprocess.CompletedProcess[str], int, dict[str, Any] | None, str]:  # fmt: skip
    """`openpod send SOURCE` over `transport`, then `openpod receive` of its code with
    `receive_args`: what receive did, and the sender's exit code, summary and stderr (a sender
    still running at the end is killed)."""
    sender = Sender(url, home, str(source), "--transport", transport)
    try:
        got = receive(url, home, sender.code, *receive_args)
        code, sent, err = sender.finish(timeout)
    finally:
        sender.kill()
    return got, code, sent, err


@pytest.mark.parametrize("transport", ["direct", "webrtc", "relay"])
def test_a_big_file_over_each_transport(
    plane: ControlPlane, big: tuple[Path, str], tmp_path: Path, transport: str
) -> None:
    """1 GiB over each: direct, WebRTC (aiortc's SCTP is pure Python: ~60 s here) and the
    relay."""
    source, digest = big
    size = GIB
    got, code, sent, err = exchange(
        plane.url, tmp_path, source, "--dir", str(tmp_path / "in"), transport=transport,
        timeout=300,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert code == 0, err
    summary = json.loads(got.stdout.splitlines()[-1])
    assert summary["transport"] == transport
    assert summary["bytesSent"] == size
    assert summary["sha256"] == {source.name: digest}
    assert sent is not None and sent["transport"] == transport
    assert sha256(tmp_path / "in" / source.name) == digest
    assert not list((tmp_path / "in").glob("*.openpod-part"))


def test_an_interrupted_receive_resumes_with_the_same_code(
    plane: ControlPlane, big: tuple[Path, str], tmp_path: Path
) -> None:
    source, digest = big
    into = tmp_path / "in"
    part = into / "big.bin.openpod-part"
    sender = Sender(plane.url, tmp_path, str(source), "--transport", "direct")
    try:
        argv = [sys.executable, "-m", "openpod", "receive", sender.code, "--loopback"]
        first = subprocess.Popen(
            [*argv, "--dir", str(into)], env=_env(plane.url, tmp_path), stdout=subprocess.DEVNULL
        )
        try:
            wait_until(
                lambda: part.exists() and part.stat().st_size > 200 * MIB, 60, "half a transfer"
            )
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        kept = part.stat().st_size
        assert 0 < kept < GIB
        again = receive(plane.url, tmp_path, sender.code, "--dir", str(into))
        code, _sent, err = sender.finish()
    finally:
        sender.kill()
    assert again.returncode == 0, again.stderr
    assert code == 0, err
    summary = json.loads(again.stdout.splitlines()[-1])
    assert summary["resumed"] == ["big.bin"]
    assert summary["bytesSent"] <= GIB - kept
    assert sha256(into / "big.bin") == digest


def test_a_wrong_code_fails_cleanly_and_ends_the_code(plane: ControlPlane, tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_text("hello")
    sender = Sender(plane.url, tmp_path, str(tmp_path / "note.txt"))
    try:
        nameplate, words = sender.code.split("-", 1)
        wrong = "-".join([nameplate, *reversed(words.split("-"))])
        if wrong == sender.code:
            wrong = f"{nameplate}-zebra-zebra-zebra"
        guessed = receive(plane.url, tmp_path, wrong, "--dir", str(tmp_path / "in"))
        code, _sent, err = sender.finish(60)
        late = receive(plane.url, tmp_path, sender.code, "--dir", str(tmp_path / "in"))
    finally:
        sender.kill()
    assert guessed.returncode == 4
    assert "wrong code" in guessed.stderr
    assert code == 4
    assert "a wrong code was tried" in err
    assert late.returncode == 3, late.stderr
    assert not (tmp_path / "in" / "note.txt").exists()


def test_a_relay_that_flips_a_byte_is_caught(plane: ControlPlane, tmp_path: Path) -> None:
    payload = tmp_path / "data.bin"
    write_random(payload, 8 * MIB)
    with TamperingProxy(plane.url, flip_after_bytes=2 * MIB) as proxy:
        got, code, _sent, _err = exchange(
            proxy.url, tmp_path, payload, "--dir", str(tmp_path / "in"), transport="relay"
        )
        assert proxy.flipped == 1
    assert got.returncode != 0
    assert "altered in transit" in got.stderr
    assert code != 0
    assert not (tmp_path / "in" / "data.bin").exists()


def test_directories_and_conflicts(plane: ControlPlane, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "empty").mkdir()
    (tree / "a.txt").write_text("alpha")
    (tree / "sub" / "b.bin").write_bytes(os.urandom(3 * MIB + 7))
    (tree / "sub" / "deeper" / "c.txt").write_text("")
    (tree / "run.sh").write_text("#!/bin/sh\n")
    (tree / "run.sh").chmod(0o755)
    into = tmp_path / "in"
    got, code, _sent, _err = exchange(plane.url, tmp_path, tree, "--dir", str(into))
    assert code == 0
    assert got.returncode == 0, got.stderr
    for rel in ("a.txt", "sub/b.bin", "sub/deeper/c.txt", "run.sh"):
        assert sha256(into / "tree" / rel) == sha256(tree / rel), rel
    assert (into / "tree" / "empty").is_dir()
    assert (into / "tree" / "run.sh").stat().st_mode & 0o777 == 0o755

    (tree / "a.txt").write_text("changed")
    refused, code, _sent, err = exchange(plane.url, tmp_path, tree, "--dir", str(into))
    assert refused.returncode == 1
    assert "a.txt exists and differs" in refused.stderr
    assert "--overwrite" in refused.stderr
    assert code == 1 and "a.txt exists and differs" in err
    assert (into / "tree" / "a.txt").read_text() == "alpha"

    replaced, code, _sent, _err = exchange(
        plane.url, tmp_path, tree, "--dir", str(into), "--overwrite"
    )
    assert code == 0
    assert replaced.returncode == 0, replaced.stderr
    summary = json.loads(replaced.stdout.splitlines()[-1])
    assert (into / "tree" / "a.txt").read_text() == "changed"
    assert sorted(summary["skipped"]) == ["tree/run.sh", "tree/sub/b.bin", "tree/sub/deeper/c.txt"]


def test_what_cannot_fit_is_refused_before_a_byte_is_written(
    plane: ControlPlane, tmp_path: Path
) -> None:
    """`receive` into a disk with less free than the files need: both sides stop with the
    receiver's reason, and nothing lands (a 4 MiB tmpfs, 2 MiB of it taken)."""
    source = tmp_path / "three.bin"
    write_random(source, 3 * MIB)
    small = tmp_path / "small"
    small.mkdir()
    with small_disk([], str(small), 4 * MIB):
        (small / "filler").write_bytes(bytes(2 * MIB))
        refused, code, _sent, err = exchange(plane.url, tmp_path, source, "--dir", str(small))
        reason = (
            f"not enough space here: the files need 3.1 MB more, 2.1 MB is free in {small}; "
            "nothing was received"
        )
        assert refused.returncode == 1
        assert reason in refused.stderr
        assert code == 1 and reason in err
        assert sorted(path.name for path in small.iterdir()) == ["filler"]


def test_a_dir_that_is_no_directory_is_refused_before_the_code_is_used(
    plane: ControlPlane, tmp_path: Path
) -> None:
    """`--dir` naming a file (or a link to nothing) stops `receive` before it connects: the
    code keeps its one try, and the same code then works with a proper directory."""
    source = tmp_path / "one.bin"
    digest = write_random(source, MIB)
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    sender = Sender(plane.url, tmp_path, str(source), "--transport", "direct")
    try:
        for given, why in (("a-file", "not a directory"), ("dangling", "a symlink to nothing")):
            refused = receive(plane.url, tmp_path, sender.code, "--dir", str(tmp_path / given))
            assert (refused.returncode, refused.stderr) == (
                2,
                f"error: --dir {tmp_path / given}: {why}\n",
            )
        got = receive(plane.url, tmp_path, sender.code, "--dir", str(tmp_path / "in"))
        assert got.returncode == 0, got.stderr
        assert sender.finish(60)[0] == 0
    finally:
        sender.kill()
    assert sha256(tmp_path / "in" / "one.bin") == digest
    assert (tmp_path / "a-file").read_text() == "x"


def test_no_secret_words_reached_the_server_log(plane: ControlPlane) -> None:
    """Runs last in this module: every code used above, none of their secrets in the log."""
    log = plane.log.read_text()
    assert "transfer" in log.lower() or "signal" in log.lower(), "the server logged nothing of it"
    assert len(SECRETS) >= 5
    for secret in SECRETS:
        words = secret.split("-")
        assert secret not in log
        assert " ".join(words) not in log
        assert f"{words[0]}-{words[1]}" not in log and f"{words[1]}-{words[2]}" not in log
