"""The OpenSSH side of `openpod cp` (cli/transfer_openssh.py): the sftp command line made
from the ssh one, batch quoting, the engine switch, and an sftp that fails or is cut short.
The copies themselves, through a real pod's sshd and the gateway, are in tests/e2e/test_cp.py."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from openpod.cli import transfer
from openpod.cli import transfer_openssh as bulk
from openpod.cli.ssh import Gateway, SshTarget
from tests.support.net import wait_until


def test_the_sftp_command_goes_where_ssh_goes() -> None:
    ssh = ["ssh", "-p", "2200", "-o", "UserKnownHostsFile=/k", "-i", "/id", "root@127.0.0.1"]
    argv = bulk.sftp_argv(ssh)
    assert argv[0] == "sftp"
    assert argv[-3:] == ["-b", "-", "root@127.0.0.1"]
    assert argv[argv.index("-P") + 1] == "2200" and "-p" not in argv
    assert argv[argv.index("-i") + 1] == "/id"
    assert "UserKnownHostsFile=/k" in argv
    assert argv[argv.index("-B") + 1] == str(255 * 1024)
    assert argv[argv.index("-R") + 1] == "64"
    assert f"Ciphers={bulk.CIPHERS}" in argv
    with pytest.raises(ValueError, match="not an ssh command line"):
        bulk.sftp_argv(["scp", "x"])


@pytest.mark.parametrize(
    ("path", "quoted"),
    [
        ("plain.bin", '"plain.bin"'),
        ('with space/and "quote"', '"with space/and \\"quote\\""'),
        ("glob*?[x].bin", '"glob\\*\\?\\[x\\].bin"'),
        ("back\\slash", '"back\\\\slash"'),
        ("-looks-like-a-flag", '"./-looks-like-a-flag"'),
    ],
)
def test_batch_arguments_are_quoted(path: str, quoted: str) -> None:
    assert bulk.quote(path) == quoted


def test_the_engine_is_chosen_by_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENPOD_CONFIG_DIR", str(tmp_path))
    target = SshTarget(
        user="root", host="127.0.0.1", port=2200, command="", host_key="ssh-ed25519 AAAA",
        pod_id="pod1", gateway=Gateway("127.0.0.1", 2222, "openpod", None, fast_port=2223),
    )  # fmt: skip
    argv = transfer.openssh_argv(target, [tmp_path / "id"], direct=False)
    assert argv is not None and argv[0] == "sftp" and argv[-1] == "root@pod1"
    assert any("ProxyCommand=" in word and "--relay 127.0.0.1:2223" in word for word in argv)
    assert "pod1 ssh-ed25519 AAAA" in (tmp_path / "known_hosts").read_text()
    monkeypatch.setenv("OPENPOD_CP_ENGINE", "asyncssh")
    assert transfer.openssh_argv(target, [], direct=False) is None
    monkeypatch.setenv("OPENPOD_CP_ENGINE", "scp")
    with pytest.raises(transfer.TransferError, match="must be openssh or asyncssh, not 'scp'"):
        transfer.openssh_argv(target, [], direct=False)


def fake_sftp(tmp_path: Path, script: str) -> list[str]:
    """A stand-in `sftp -b -`: a Python script reading batch commands from stdin."""
    path = tmp_path / "fake_sftp.py"
    path.write_text(script)
    return [sys.executable, str(path)]


ANSWERS = """
import sys
for line in sys.stdin:
    print("sftp> " + line.strip(), flush=True)
    if line.startswith("put") and "fail" in line:
        print('dest open "fail.bin": Permission denied', file=sys.stderr, flush=True)
        sys.exit(1)
    if line.startswith("pwd"):
        print("Remote working directory: /workspace", flush=True)
"""


def test_a_failing_command_gives_sftps_reason(tmp_path: Path) -> None:
    async def go() -> None:
        mover = bulk.Mover(fake_sftp(tmp_path, ANSWERS))
        await mover.start()
        moved: list[int] = []

        async def size() -> int:
            return 7

        await mover.run('put "a" "ok.bin"', size, moved.append, 0, 7)
        assert moved == [7]  # the whole file once done, as progress
        with pytest.raises(bulk.MoveError, match=r'dest open "fail\.bin": Permission denied'):
            await mover.run('put "a" "fail.bin"', size, moved.append, 7, 9)
        await mover.close()

    asyncio.run(go())


def test_sftp_dies_with_the_copy(tmp_path: Path) -> None:
    """A killed `openpod cp` leaves no sftp copying behind it (PR_SET_PDEATHSIG)."""
    pid_file = tmp_path / "sftp.pid"
    sleeper = fake_sftp(tmp_path, "import os, sys, time\n"
                        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                        "sys.stdin.read()\n")  # fmt: skip
    parent = f"""
import asyncio, sys
sys.path.insert(0, {str(Path(bulk.__file__).parents[2])!r})
from openpod.cli import transfer_openssh as bulk
async def main():
    mover = bulk.Mover({sleeper!r})
    await mover.start()
    print("started", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "started\n"
        wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", 10, "sftp's pid")
        child = int(pid_file.read_text())
        assert alive(child)
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    wait_until(lambda: not alive(child), 10, "sftp to end with the copy")


def alive(pid: int) -> bool:
    """Runs (a zombie not yet reaped by init does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# A stand-in sftp that notes its pid in `tried`, then (connected) in `started`, and logs
# "<its pid> <file>" for every `put`; a `put` of hold.bin waits until something is written to
# the FIFO `gate`. With `refuse` existing, it ends at once as an sftp that cannot connect.
LOGGING = """
import os, sys
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "tried"), "a") as tried:
    tried.write(f"{os.getpid()}\\n")
if os.path.exists(os.path.join(here, "refuse")):
    print("ssh: connect to host pod: Connection refused", file=sys.stderr, flush=True)
    sys.exit(255)
with open(os.path.join(here, "started"), "a") as started:
    started.write(f"{os.getpid()}\\n")
for line in sys.stdin:
    if line.startswith("put"):
        name = line.split()[-1].strip('"')
        if name == "hold.bin":
            with open(os.path.join(here, "gate")) as gate:
                gate.read()
        with open(os.path.join(here, "log"), "a") as log:
            log.write(f"{os.getpid()} {name}\\n")
    if line.startswith("pwd"):
        print("Remote working directory: /workspace", flush=True)
"""


async def _nothing() -> int:
    return 0


async def put(movers: bulk.Movers, name: str, moved: list[int], total: int) -> None:
    """`put` of `name` on the first free sftp, as openpod cp hands a large file over."""
    async with movers.lend() as sftp:
        await sftp.run(f'put "a" "{name}"', _nothing, moved.append, 0, total)


def test_a_second_sftp_takes_what_the_first_is_too_busy_for(tmp_path: Path) -> None:
    """While the first sftp is held on one file, the files behind it go through a second,
    started for them; never more than two, however many files wait."""
    argv = fake_sftp(tmp_path, LOGGING)
    os.mkfifo(tmp_path / "gate")

    async def go() -> list[int]:
        movers = bulk.Movers(argv, most=2)
        await movers.start()
        moved: list[int] = []
        held = asyncio.ensure_future(put(movers, "hold.bin", moved, 1))
        await asyncio.gather(*(put(movers, f"f{n}.bin", moved, 2) for n in range(6)))
        assert not held.done()  # the six went past it
        await asyncio.to_thread((tmp_path / "gate").write_text, "go")
        await held
        await movers.close()
        return moved

    assert sorted(asyncio.run(go())) == [1, 2, 2, 2, 2, 2, 2]
    started = (tmp_path / "started").read_text().split()
    assert len(started) == 2
    log = {}  # file -> the pid of the sftp that moved it
    for line in (tmp_path / "log").read_text().splitlines():
        pid, name = line.split()
        log[name] = pid
    assert log["hold.bin"] == started[0]
    assert {log[f"f{n}.bin"] for n in range(6)} == {started[1]}


def test_an_sftp_that_cannot_connect_is_left_out(tmp_path: Path) -> None:
    """A second sftp that ends before it answers (refused, say) is dropped; the first moves
    every file."""
    argv = fake_sftp(tmp_path, LOGGING)
    os.mkfifo(tmp_path / "gate")
    tried = tmp_path / "tried"

    async def go() -> list[int]:
        movers = bulk.Movers(argv, most=2)
        await movers.start()
        moved: list[int] = []
        await put(movers, "first.bin", moved, 1)  # connected
        (tmp_path / "refuse").touch()  # every sftp started from now on
        held = asyncio.ensure_future(put(movers, "hold.bin", moved, 1))
        behind = asyncio.gather(*(put(movers, f"f{n}.bin", moved, 2) for n in range(4)))
        # The files behind hold.bin start a second sftp, which is refused.
        await asyncio.to_thread(
            wait_until, lambda: len(tried.read_text().split()) == 2, 10, "a second sftp"
        )
        await asyncio.to_thread((tmp_path / "gate").write_text, "go")
        await asyncio.gather(held, behind)
        await movers.close()
        return moved

    assert sorted(asyncio.run(go())) == [1, 1, 2, 2, 2, 2]
    started = (tmp_path / "started").read_text().split()
    assert len(started) == 1
    pids = {line.split()[0] for line in (tmp_path / "log").read_text().splitlines()}
    assert pids == set(started)


def test_an_sftp_is_killed_once(tmp_path: Path) -> None:
    """Movers.kill, then the cancelled _connect, each kill an sftp still connecting: only the
    first sends SIGKILL. Popen.send_signal polls the pid first, and a second kill of an sftp
    that already died of the first reaped it behind asyncio's child watcher ("Unknown child
    process pid N, will report returncode 255" on the copy's stderr)."""
    sleeper = fake_sftp(tmp_path, "import sys\nsys.stdin.read()\n")

    async def go() -> None:
        mover = bulk.Mover(sleeper)
        await mover.start()
        proc = mover._proc
        assert proc is not None
        kills: list[None] = []
        kill = proc.kill

        def counted() -> None:
            kills.append(None)
            kill()

        proc.kill = counted  # type: ignore[method-assign]
        mover.kill()
        mover.kill()
        assert await proc.wait() == -signal.SIGKILL
        mover.kill()  # seen dead: nothing either
        assert len(kills) == 1
        await mover.close()

    asyncio.run(go())
