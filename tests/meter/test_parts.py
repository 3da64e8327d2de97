"""The meter's parts in memory: journal, wire messages, GPU sampler, and what it imports."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from openpod.meter import gpus
from openpod.meter.journal import Journal
from openpod.meter.link import Link
from openpod.meter.wire import Ack, Error, ProtocolError, Unknown, Welcome, parse_reply


def test_journal_appends_acks_and_reloads(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    assert (tmp_path / "j").stat().st_mode & 0o777 == 0o700
    for kind in ("started", "heartbeat", "heartbeat"):
        journal.append(kind, 10.0)
    journal.ack(2)
    assert [e["seq"] for e in journal.pending()] == [3]
    journal.close()
    again = Journal(tmp_path / "j")
    assert (again.acked, again.last) == (2, {"seq": 3, "kind": "heartbeat", "at": 10.0})
    assert [e["seq"] for e in again.pending()] == [3]
    again.append("stopped", 11.0)
    assert again.stopped
    assert not again.delivered
    again.ack(4)
    assert again.delivered
    again.close()


def test_a_line_torn_by_a_crash_is_cut_off(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append("started", 1.0)
    journal.close()
    with open(tmp_path / "events.jsonl", "ab") as out:
        out.write(b'{"seq": 2, "ki')
    again = Journal(tmp_path)
    assert again.append("heartbeat", 2.0)["seq"] == 2
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2]
    again.close()


def test_the_journal_is_compacted_once_acked(tmp_path: Path) -> None:
    journal = Journal(tmp_path, compact_lines=5)
    for _ in range(7):
        journal.append("heartbeat", 1.0)
    journal.ack(6)  # 7 is still pending: nothing is dropped
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 7
    journal.ack(7)
    assert (tmp_path / "events.jsonl").read_text().splitlines() == [
        '{"seq":7,"kind":"heartbeat","at":1.0}'
    ]
    assert journal.append("stopped", 2.0)["seq"] == 8  # the seq carries on
    journal.close()
    again = Journal(tmp_path)
    assert again.last == {"seq": 8, "kind": "stopped", "at": 2.0}
    again.close()


def test_seq_never_goes_below_what_the_plane_holds(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.ack(5)  # a welcome above the journal (it was lost): never reuse those numbers
    assert journal.append("heartbeat", 1.0)["seq"] == 6
    journal.close()


class _Socket:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, message: str) -> None:
        self.sent.append(message)


def test_a_long_backlog_is_sent_in_bounded_messages(tmp_path: Path) -> None:
    journal = Journal(tmp_path, compact_lines=10_000)
    for _ in range(1200):
        journal.append("heartbeat", 1.0)
    journal.ack(100)
    link = Link("ws://127.0.0.1:1/meter/connect", "t", journal)
    socket = _Socket()
    link._ws = socket  # type: ignore[assignment]  # as after a welcome with acked 100
    link._sent = 100
    link.flush()
    batches = [json.loads(m)["events"] for m in socket.sent]
    assert [len(b) for b in batches] == [500, 500, 100]
    assert [e["seq"] for b in batches for e in b] == list(range(101, 1201))
    link.flush()  # nothing new: nothing sent
    assert len(socket.sent) == 3
    journal.close()


@pytest.mark.parametrize(
    ("raw", "reply"),
    [
        ('{"type": "welcome", "acked": 3, "closed": false}', Welcome(3, False)),
        ('{"type": "ack", "acked": 4, "closed": true}', Ack(4, True)),
        ('{"type": "ack", "acked": 4}', Ack(4, False)),
        ('{"type": "error", "error": "bad seq"}', Error("bad seq")),
        ('{"type": "news"}', Unknown("news")),
    ],
)
def test_replies(raw: str, reply: object) -> None:
    assert parse_reply(raw) == reply


@pytest.mark.parametrize(
    "raw",
    [
        "{oops",
        "[]",
        '{"acked": 1}',
        '{"type": "ack", "acked": "1"}',
        '{"type": "ack", "acked": true}',
        '{"type": "welcome", "acked": -1}',
        '{"type": "ack", "acked": 1, "closed": "no"}',
    ],
)
def test_malformed_replies(raw: str) -> None:
    with pytest.raises(ProtocolError):
        parse_reply(raw)


def test_no_pynvml_no_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    sampler = gpus.GpuSampler([0, 1])
    assert sampler.sample() == []
    sampler.close()


class _NVMLError(Exception):
    pass


def _fake_pynvml(init_fails: bool = False) -> types.ModuleType:
    """pynvml's calls the sampler makes, on two GPUs; GPU 3 has no power reading."""
    fake = types.ModuleType("pynvml")

    def init() -> None:
        if init_fails:
            raise _NVMLError("NVML Shared Library Not Found")

    def power(handle: int) -> int:
        if handle == 3:
            raise _NVMLError("Not Supported")
        return 61000

    fake.__dict__.update(
        NVMLError=_NVMLError,
        nvmlInit=init,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda index: index,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=37 + h),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=1234567890),
        nvmlDeviceGetPowerUsage=power,
    )
    return fake


def test_gpu_samples_of_the_pods_own_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml())
    sampler = gpus.GpuSampler([0, 3])
    assert sampler.sample() == [
        {"index": 0, "util": 37, "mem_used": 1234567890, "power_mw": 61000},
        {"index": 3, "util": 40, "mem_used": 1234567890},  # a reading it lacks is left out
    ]
    sampler.close()
    assert gpus.GpuSampler([]).sample() == []  # no GPUs: pynvml is not even asked


def test_no_nvml_library_no_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(init_fails=True))
    assert gpus.GpuSampler([0]).sample() == []


def test_the_meter_imports_nothing_heavy() -> None:
    code = "import sys, openpod.meter.main; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    loaded = set(done.stdout.split())
    heavy = {"pydantic", "typer", "rich", "httpx", "sqlalchemy", "fastapi", "pynvml", "asyncio"}
    assert not heavy & loaded
    assert not {m for m in loaded if m.startswith("openpod.") and not m.startswith("openpod.meter")}


def test_openpod_meter_skips_the_cli() -> None:
    """`openpod meter` runs the meter without loading the CLI (typer, rich, httpx)."""
    code = (
        "import sys; sys.argv = ['openpod', 'meter', '--help']\n"
        "from openpod.entry import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('LOADED', ' '.join(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert "--watch-start-time" in done.stdout
    loaded = set(done.stdout.split("LOADED", 1)[1].split())
    assert not {"typer", "rich", "httpx", "pydantic", "click"} & loaded
