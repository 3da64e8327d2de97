"""How `openpod cp` runs work side by side (cli/transfer.py): a directory's files several at
once, each file's blocks many at once, and one sftp command at a time
(cli/transfer_openssh.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from openpod.cli import transfer
from openpod.cli import transfer_openssh as bulk
from tests.cli.test_cp_openssh import ANSWERS, fake_sftp, put


class Jobs:
    """Jobs that wait until released, recording how many ran at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.started: list[int] = []
        self.cancelled: list[int] = []
        self.gates: dict[int, asyncio.Future[None]] = {}
        self.changed = asyncio.Event()

    def job(self, number: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            self.started.append(number)
            self.changed.set()
            self.running += 1
            self.most = max(self.most, self.running)
            try:
                await self.gate(number)
            except asyncio.CancelledError:
                self.cancelled.append(number)
                raise
            finally:
                self.running -= 1

        return run

    def gate(self, number: int) -> asyncio.Future[None]:
        """What job `number` waits for (made by whichever of it and its release comes first)."""
        if number not in self.gates:
            self.gates[number] = asyncio.get_running_loop().create_future()
        return self.gates[number]

    def release(self, number: int, error: Exception | None = None) -> None:
        if error is None:
            self.gate(number).set_result(None)
        else:
            self.gate(number).set_exception(error)

    async def until_started(self, count: int) -> None:
        while len(self.started) < count:
            self.changed.clear()
            await self.changed.wait()


def test_every_job_runs_and_never_more_than_the_limit_at_once() -> None:
    async def go() -> Jobs:
        jobs = Jobs()
        runner = asyncio.ensure_future(transfer._bounded((jobs.job(n) for n in range(20)), 3))
        await jobs.until_started(3)
        for number in range(17):
            assert (jobs.started, jobs.running) == (list(range(number + 3)), 3)
            jobs.release(number)
            await jobs.until_started(number + 4)  # the next one, once that one ended
        for number in range(17, 20):
            jobs.release(number)
        await runner
        return jobs

    jobs = asyncio.run(go())
    assert jobs.started == list(range(20))
    assert (jobs.most, jobs.running, jobs.cancelled) == (3, 0, [])


def test_the_first_failure_is_raised_and_the_rest_cancelled() -> None:
    async def go() -> Jobs:
        jobs = Jobs()
        runner = asyncio.ensure_future(transfer._bounded((jobs.job(n) for n in range(20)), 4))
        await jobs.until_started(4)
        jobs.release(0)
        await jobs.until_started(5)
        jobs.release(2, transfer.TransferError("f2.bin: refused"))
        with pytest.raises(transfer.TransferError, match=r"^f2\.bin: refused$"):
            await runner
        return jobs

    jobs = asyncio.run(go())
    # 0 done, 2 failed; 1, 3 and 4 (started when 0 ended) were running: cancelled, awaited;
    # none started after the failure.
    assert jobs.started == [0, 1, 2, 3, 4]
    assert sorted(jobs.cancelled) == [1, 3, 4]
    assert jobs.running == 0


def test_sftp_commands_take_turns(tmp_path: Path) -> None:
    """Files copied at once hand one sftp their commands one at a time: each waits for the
    answer to its own `pwd` (two readers of sftp's output at once would each take the
    other's)."""

    async def go() -> list[int]:
        movers = bulk.Movers(fake_sftp(tmp_path, ANSWERS), most=1)
        await movers.start()
        moved: list[int] = []
        await asyncio.gather(*(put(movers, f"f{n}.bin", moved, n + 1) for n in range(6)))
        await movers.close()
        return moved

    assert sorted(asyncio.run(go())) == [1, 2, 3, 4, 5, 6]  # each file's bytes, once done
