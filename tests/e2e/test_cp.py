"""`openpod cp` end to end: the real CLI against the real control plane, node, pod sshd and
gateway (its fast path on, as `make up` runs it): 1 GiB to a pod and back with equal hashes,
a copy killed half way resumed by running it again, directories both ways, a second run that
finds everything there, and failures that exit non-zero with the reason."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_edge_gateway import Access
from tests.e2e.test_edge_gateway import access as access  # the platform of that module
from tests.support.net import wait_until

MIB = 1 << 20


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, 64 * MIB))
            out.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(8 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def pod(access: Access) -> Iterator[dict[str, Any]]:
    body = {"name": "files", "imageName": "local", "gpuTypeId": "NVIDIA GeForce RTX 4090",
            "ports": "22/tcp"}  # fmt: skip
    created = access.alice.wait(access.alice.ok("POST", "/pods", json=body)["id"])
    wait_until(
        lambda: 22 in access.alice.ok("GET", f"/pods/{created['id']}")["readyPorts"], 30, "sshd"
    )
    yield access.alice.ok("GET", f"/pods/{created['id']}")
    access.alice.ok("DELETE", f"/pods/{created['id']}")


def workspace(access: Access, pod_id: str) -> Path:
    return access.root / "node" / "pods" / pod_id / "workspace"


def cp_argv(access: Access, *args: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "OPENPOD_API_URL": access.plane.url,
           "OPENPOD_API_KEY": str(access.alice.http.headers["Authorization"]).removeprefix("Bearer "),
           "OPENPOD_CONFIG_DIR": str(access.root / "cli-config")}  # fmt: skip
    env.pop("SSH_AUTH_SOCK", None)
    argv = [sys.executable, "-m", "openpod", "cp", "-i", str(access.alice_key), *args]
    return argv, env


def cp(access: Access, *args: str, **env_changes: str) -> subprocess.CompletedProcess[str]:
    argv, env = cp_argv(access, *args)
    env.update(env_changes)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def children(pid: int) -> list[int]:
    """The direct children of `pid` (sftp, while `openpod cp` moves a large file)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(child) for child in text.split()]


def alive(pid: int) -> bool:
    """Runs (a zombie not yet reaped does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_gibibyte_to_the_pod_and_back(
    access: Access, pod: dict[str, Any], tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    digest = write_random(big, 1024 * MIB)
    up = summary(cp(access, str(big), f"{pod['id']}:big.bin", "--json"))
    assert (up["files"], up["bytes"], up["bytesSent"]) == (1, 1024 * MIB, 1024 * MIB)
    assert up["sha256"] == {"big.bin": digest}
    assert sha256(workspace(access, pod["id"]) / "big.bin") == digest
    back = tmp_path / "back.bin"
    down = summary(cp(access, f"{pod['id']}:big.bin", str(back), "--json"))
    assert down["bytesSent"] == 1024 * MIB
    assert sha256(back) == digest
    again = summary(cp(access, str(big), f"{pod['id']}:big.bin", "--json"))
    assert (again["skipped"], again["bytesSent"]) == (["big.bin"], 0)  # verified, not sent


def test_a_killed_copy_resumes_where_it_stopped(
    access: Access, pod: dict[str, Any], tmp_path: Path
) -> None:
    source = tmp_path / "resume.bin"
    size = 256 * MIB
    digest = write_random(source, size)
    landed = workspace(access, pod["id"]) / "resume.bin"
    argv, env = cp_argv(access, str(source), f"{pod['id']}:resume.bin", "--json")
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: landed.exists() and landed.stat().st_size >= 32 * MIB, 60, "32 MiB")
        helpers = children(first.pid)
        assert helpers  # the sftp moving the bytes
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    # Nothing goes on copying behind the killed command (sftp dies with it).
    wait_until(lambda: not any(alive(pid) for pid in helpers), 10, "sftp to end with cp")
    partial = landed.stat().st_size
    assert 0 < partial < size
    resumed = summary(cp(access, str(source), f"{pod['id']}:resume.bin", "--json"))
    assert resumed["resumed"] == ["resume.bin"]
    assert size - resumed["bytesSent"] >= partial - 64 * 255 * 1024  # holes of the last blocks
    assert sha256(landed) == digest


def test_the_asyncssh_engine_moves_large_files_too(
    access: Access, pod: dict[str, Any], tmp_path: Path
) -> None:
    """OPENPOD_CP_ENGINE=asyncssh (and a client without OpenSSH's sftp): every byte on the
    asyncssh connection, both ways."""
    source = tmp_path / "a.bin"
    digest = write_random(source, 48 * MIB)
    up = summary(
        cp(access, str(source), f"{pod['id']}:a.bin", "--json", OPENPOD_CP_ENGINE="asyncssh")
    )
    assert (up["bytesSent"], up["sha256"]) == (48 * MIB, {"a.bin": digest})
    back = tmp_path / "a-back.bin"
    down = summary(
        cp(access, f"{pod['id']}:a.bin", str(back), "--json", OPENPOD_CP_ENGINE="asyncssh")
    )
    assert down["bytesSent"] == 48 * MIB
    assert sha256(back) == sha256(workspace(access, pod["id"]) / "a.bin") == digest


def test_a_failing_sftp_exits_non_zero_with_its_reason(
    access: Access, pod: dict[str, Any], tmp_path: Path
) -> None:
    source = tmp_path / "big-enough.bin"
    write_random(source, 17 * MIB)  # past the size OpenSSH's sftp moves
    done = cp(access, str(source), f"{pod['id']}:no/such/dir/f.bin")
    assert done.returncode == 1
    assert done.stderr.startswith("error: copy failed: no/such/dir/f.bin: ")
    assert "No such file or directory" in done.stderr


def test_a_corrupt_partial_file_is_sent_again(
    access: Access, pod: dict[str, Any], tmp_path: Path
) -> None:
    source = tmp_path / "c.bin"
    digest = write_random(source, 8 * MIB)
    (workspace(access, pod["id"]) / "c.bin").write_bytes(b"not the same bytes")
    done = summary(cp(access, str(source), f"{pod['id']}:c.bin", "--json"))
    assert (done["resumed"], done["bytesSent"]) == ([], 8 * MIB)
    assert sha256(workspace(access, pod["id"]) / "c.bin") == digest


def test_directories_both_ways(access: Access, pod: dict[str, Any], tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    files = {"a.txt": 10, "sub/b.bin": 3 * MIB + 1, "sub/deeper/c.bin": 0, "sub/d.bin": 70_000}
    digests = {name: write_random(tree / name, size) for name, size in files.items()}
    up = summary(cp(access, str(tree), f"{pod['id']}:tree", "--json", "--verify"))
    assert (up["files"], up["verified"]) == (4, True)  # every file hashed in the pod too
    for name, digest in digests.items():
        assert sha256(workspace(access, pod["id"]) / "tree" / name) == digest
    back = tmp_path / "back"
    down = summary(cp(access, f"{pod['id']}:tree", str(back), "--json"))
    assert down["files"] == 4
    for name, digest in digests.items():
        assert sha256(back / name) == digest
    again = summary(cp(access, f"{pod['id']}:tree", str(back), "--json"))
    assert len(again["skipped"]) == 4 and again["bytesSent"] == 0


def test_failures_exit_non_zero_with_the_reason(
    access: Access, pod: dict[str, Any], tmp_path: Path
) -> None:
    # One file with --verify: hashed in the pod after the copy.
    source = tmp_path / "v.bin"
    write_random(source, MIB)
    assert summary(cp(access, str(source), f"{pod['id']}:v.bin", "--json", "--verify"))["verified"]
    missing = cp(access, f"{pod['id']}:no-such-file", str(tmp_path / "x"))
    assert missing.returncode == 1
    assert "no such file in the pod: no-such-file" in missing.stderr
    # A source in the pod named as a directory (`v.bin/`) must be one, as scp has it.
    for given, why in (("v.bin/", "not a directory"), ("no-such-dir/", "no such directory")):
        named = cp(access, f"{pod['id']}:{given}", str(tmp_path / "y"))
        assert (named.returncode, named.stderr) == (
            1,
            f"error: copy failed: {given}: {why} in the pod\n",
        )
    assert not (tmp_path / "y").exists()
    both_local = cp(access, str(tmp_path / "a"), str(tmp_path / "b"))
    assert both_local.returncode == 2
    assert "one of SRC and DST must be POD:PATH" in both_local.stderr
    nopod = cp(access, str(tmp_path), "nosuchpod1:x")
    assert (nopod.returncode, nopod.stderr) == (3, "error: no such pod 'nosuchpod1'\n")


def test_a_directory_of_many_files_both_ways(
    access: Access, pod: dict[str, Any], tmp_path: Path
) -> None:
    """60 files: most small (on the asyncssh connection, several at once) and some from 2 MiB
    on (through sftp, two at once beside them); every one arrives whole, both ways."""
    tree = tmp_path / "many"
    (tree / "d1").mkdir(parents=True)
    (tree / "d2").mkdir()
    sizes = {f"d{1 + n % 2}/s{n:02d}.bin": 1000 + 997 * n for n in range(50)}
    sizes |= {f"d1/b{n}.bin": 2 * MIB + n for n in range(4)}
    sizes |= {f"top{n}.txt": n for n in range(6)}
    digests = {name: write_random(tree / name, size) for name, size in sizes.items()}
    up = summary(cp(access, str(tree), f"{pod['id']}:many", "--json"))
    assert (up["files"], up["bytesSent"]) == (60, sum(sizes.values()))
    assert up["sha256"] == {f"many/{name}": digest for name, digest in digests.items()}
    assert list(up["sha256"]) == sorted(up["sha256"])  # in path order, whatever ended first
    for name, digest in digests.items():
        assert sha256(workspace(access, pod["id"]) / "many" / name) == digest
    back = tmp_path / "back"
    down = summary(cp(access, f"{pod['id']}:many", str(back), "--json"))
    assert (down["files"], down["bytesSent"]) == (60, sum(sizes.values()))
    for name, digest in digests.items():
        assert sha256(back / name) == digest


def test_a_failing_file_stops_a_directory_and_the_next_run_finishes_it(
    access: Access, pod: dict[str, Any], tmp_path: Path
) -> None:
    tree = tmp_path / "stops"
    tree.mkdir()
    digests = {f"f{n:02d}.bin": write_random(tree / f"f{n:02d}.bin", 5000 + n) for n in range(30)}
    blocked = workspace(access, pod["id"]) / "stops" / "f15.bin"
    blocked.mkdir(parents=True)  # a directory where a file goes: that file cannot be written
    done = cp(access, str(tree), f"{pod['id']}:stops")
    assert done.returncode == 1
    assert done.stderr.startswith("error: copy failed: stops/f15.bin: "), done.stderr
    blocked.rmdir()
    again = summary(cp(access, str(tree), f"{pod['id']}:stops", "--json"))
    assert again["files"] == 30
    for name, digest in digests.items():
        assert sha256(workspace(access, pod["id"]) / "stops" / name) == digest


def test_a_directory_in_the_way_of_a_large_file_stops_the_copy_both_ways(
    access: Access, pod: dict[str, Any], tmp_path: Path
) -> None:
    """A directory where a large file goes (two sftp at work): the copy stops naming it, as
    for a small file (sftp would have written the file inside it and said nothing); with it
    gone, the next run finishes. Up, then down."""
    tree = tmp_path / "large"
    tree.mkdir()
    digests = {f"f{n}.bin": write_random(tree / f"f{n}.bin", 2 * MIB + n) for n in range(8)}
    blocked = workspace(access, pod["id"]) / "large" / "f3.bin"
    blocked.mkdir(parents=True)
    done = cp(access, str(tree), f"{pod['id']}:large")
    assert done.returncode == 1
    assert (
        done.stderr == "error: copy failed: large/f3.bin: is a directory in the pod, not a file\n"
    )
    assert list(blocked.iterdir()) == []
    blocked.rmdir()
    assert summary(cp(access, str(tree), f"{pod['id']}:large", "--json"))["files"] == 8
    back = tmp_path / "back"
    (back / "f5.bin").mkdir(parents=True)
    done = cp(access, f"{pod['id']}:large", str(back))
    assert done.returncode == 1
    assert done.stderr == f"error: copy failed: {back}/f5.bin: is a directory here, not a file\n"
    assert list((back / "f5.bin").iterdir()) == []
    (back / "f5.bin").rmdir()
    assert summary(cp(access, f"{pod['id']}:large", str(back), "--json"))["files"] == 8
    for name, digest in digests.items():
        assert sha256(workspace(access, pod["id"]) / "large" / name) == digest
        assert sha256(back / name) == digest


# ---- a full disk, in the pod and here ---------------------------------------------------


def listener(port: int) -> int:
    """The pid of the process that listens on TCP `port` (found through /proc/net/tcp's
    socket inode): for a pod's SSH port, the pod's own sshd."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:  # gone, or not ours to read
            continue
    raise AssertionError(f"nothing listens on port {port}")


@contextlib.contextmanager
def small_disk(mount: list[str], where: str, size: int) -> Iterator[None]:
    """A tmpfs of `size` bytes mounted at `where` (by `mount` + the command: nsenter into a
    pod's mount namespace, or nothing), unmounted after."""
    subprocess.run(
        [*mount, "mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", where], check=True
    )
    try:
        yield
    finally:
        subprocess.run([*mount, "umount", where], check=True)


@pytest.fixture
def pod_disk(access: Access, pod: dict[str, Any]) -> Iterator[tuple[str, Path]]:
    """A 4 MiB disk at /workspace/<name> in the pod, as the pod sees it (a mount in its own
    namespace: the host's view of the workspace does not have it): its name there, and its
    path as this process sees it (through the sshd's /proc/PID/root)."""
    name = f"small{os.urandom(3).hex()}"
    (workspace(access, pod["id"]) / name).mkdir()
    sshd = listener(int(pod["portMappings"]["22"]))
    with small_disk(["nsenter", "-t", str(sshd), "-m"], f"/workspace/{name}", 4 * MIB):
        yield name, Path(f"/proc/{sshd}/root/workspace/{name}")


@pytest.fixture
def local_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB disk here."""
    where = tmp_path / "small"
    where.mkdir()
    with small_disk([], str(where), 4 * MIB):
        yield where


def test_what_cannot_fit_in_the_pod_is_refused_before_a_byte_is_written(
    access: Access, pod: dict[str, Any], pod_disk: tuple[str, Path], tmp_path: Path
) -> None:
    name, disk = pod_disk
    (disk / "filler").write_bytes(bytes(2 * MIB))  # 2 MiB of the 4 left
    source = tmp_path / "three.bin"
    digest = write_random(source, 3 * MIB)
    done = cp(access, str(source), f"{pod['id']}:{name}/three.bin")
    assert done.returncode == 1
    assert done.stderr == (
        f"error: copy failed: not enough space in the pod: the copy needs 3.1 MB more, "
        f"2.1 MB is free in {name}; nothing was copied\n"
    )
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for n in range(3):
        write_random(tree / "sub" / f"f{n}.bin", MIB)
    done = cp(access, str(tree), f"{pod['id']}:{name}/tree")
    assert done.returncode == 1
    assert "not enough space in the pod: the copy needs 3.1 MB more" in done.stderr
    assert sorted(path.name for path in disk.iterdir()) == ["filler"]  # no directory made
    # What is there already counts: with 1.5 MiB of the file there, the rest (1.5 MiB) fits
    # in the 2 MiB left beside a smaller filler, though the whole file would not.
    (disk / "filler").write_bytes(bytes(MIB // 2))
    (disk / "three.bin").write_bytes(source.read_bytes()[: 3 * MIB // 2])
    resumed = summary(cp(access, str(source), f"{pod['id']}:{name}/three.bin", "--json"))
    assert (resumed["resumed"], resumed["bytesSent"]) == ([f"{name}/three.bin"], 3 * MIB // 2)
    assert sha256(disk / "three.bin") == digest


@pytest.mark.parametrize("engine", ["openssh", "asyncssh"])
def test_a_pod_disk_that_fills_during_the_copy_is_named_as_the_reason(
    access: Access, pod: dict[str, Any], pod_disk: tuple[str, Path], tmp_path: Path, engine: str
) -> None:
    """The space counted at the start is not there when the copy writes (here: the file it
    replaces is sparse, 3 MiB long and holding none, and the copy counts its length): sftp-server
    says only `Failure`; the copy says the disk is full, in one line."""
    name, disk = pod_disk
    (disk / "filler").write_bytes(bytes(2 * MIB))
    with (disk / "x.bin").open("wb") as sparse:
        sparse.truncate(3 * MIB)
    source = tmp_path / "x.bin"
    write_random(source, 3 * MIB + MIB // 2)  # different bytes: sent again, from 0
    done = cp(access, str(source), f"{pod['id']}:{name}/x.bin", OPENPOD_CP_ENGINE=engine)
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"error: copy failed: {name}/x.bin: no space left in the pod ("
    ), done.stderr
    assert done.stderr.endswith(f" free in {name})\n")
    assert done.stderr.count("\n") == 1  # nothing else: no stray task's traceback


def test_what_cannot_fit_here_is_refused_before_a_byte_is_written(
    access: Access, pod: dict[str, Any], local_disk: Path
) -> None:
    folder = workspace(access, pod["id"]) / "down"
    folder.mkdir()
    digest = write_random(folder / "three.bin", 3 * MIB)
    (local_disk / "filler").write_bytes(bytes(2 * MIB))
    done = cp(access, f"{pod['id']}:down/three.bin", str(local_disk / "three.bin"))
    assert done.returncode == 1
    assert done.stderr == (
        f"error: copy failed: not enough space here: the copy needs 3.1 MB more, "
        f"2.1 MB is free in {local_disk}; nothing was copied\n"
    )
    done = cp(access, f"{pod['id']}:down", str(local_disk / "tree"))
    assert "not enough space here: the copy needs 3.1 MB more" in done.stderr
    assert sorted(path.name for path in local_disk.iterdir()) == ["filler"]
    (local_disk / "filler").write_bytes(bytes(MIB // 2))
    (local_disk / "three.bin").write_bytes((folder / "three.bin").read_bytes()[: 3 * MIB // 2])
    resumed = summary(cp(access, f"{pod['id']}:down/three.bin", str(local_disk), "--json"))
    assert resumed["bytesSent"] == 3 * MIB // 2
    assert sha256(local_disk / "three.bin") == digest


@pytest.mark.parametrize("engine", ["openssh", "asyncssh"])
def test_a_disk_here_that_fills_during_the_copy_is_named_as_the_reason(
    access: Access, pod: dict[str, Any], local_disk: Path, engine: str
) -> None:
    folder = workspace(access, pod["id"]) / f"fills-{engine}"
    folder.mkdir()
    write_random(folder / "x.bin", 3 * MIB + MIB // 2)
    (local_disk / "filler").write_bytes(bytes(2 * MIB))
    with (local_disk / "x.bin").open("wb") as sparse:  # see the test of the pod's side
        sparse.truncate(3 * MIB)
    done = cp(access, f"{pod['id']}:{folder.name}/x.bin", str(local_disk), OPENPOD_CP_ENGINE=engine)
    assert done.returncode == 1
    assert "No space left on device" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1


def test_the_pods_home_is_written_as_scp_writes_it(
    access: Access, pod: dict[str, Any], tmp_path: Path
) -> None:
    """`~` and `~/...` are the pod's home for both engines (SFTP alone would make a file
    named `~`); a path that ends in `/` is a directory that must be there, both ways."""
    home = workspace(access, pod["id"])
    small, big = tmp_path / "home-small.bin", tmp_path / "home-big.bin"
    digests = {small.name: write_random(small, 1000), big.name: write_random(big, 3 * MIB)}
    for source in (small, big):
        assert cp(access, str(source), f"{pod['id']}:~").returncode == 0
        assert cp(access, str(source), f"{pod['id']}:~/t-{source.name}").returncode == 0
        assert (
            sha256(home / source.name) == sha256(home / f"t-{source.name}") == digests[source.name]
        )
        missing = cp(access, str(source), f"{pod['id']}:~/no-such-dir/")
        assert missing.returncode == 1
        assert missing.stderr == "error: copy failed: no-such-dir/: no such directory in the pod\n"
    assert not (home / "~").exists()
    assert not (home / "no-such-dir").exists()
    down = tmp_path / "down"
    down.mkdir()
    for name in digests:
        assert cp(access, f"{pod['id']}:~/{name}", f"{down}/").returncode == 0
        assert sha256(down / name) == digests[name]
        missing = cp(access, f"{pod['id']}:~/{name}", f"{tmp_path}/not-there/")
        assert missing.returncode == 1
        assert (
            missing.stderr == f"error: copy failed: {tmp_path}/not-there/: no such directory here\n"
        )
    assert not (tmp_path / "not-there").exists()


def test_a_file_that_cannot_be_sent_stops_a_directory_before_anything_is_written(
    access: Access, pod: dict[str, Any], tmp_path: Path
) -> None:
    """A symlink to nothing, or a FIFO (reading it would wait for a writer forever), in a
    directory: the copy names it and writes nothing; a FIFO in the pod likewise."""
    for name, make in (
        ("dangling", lambda path: path.symlink_to(tmp_path / "nowhere")),
        ("fifo", lambda path: os.mkfifo(path)),
    ):
        tree = tmp_path / f"odd-{name}"
        (tree / "sub").mkdir(parents=True)
        write_random(tree / "a.bin", 1000)
        make(tree / "sub" / name)
        done = cp(access, str(tree), f"{pod['id']}:odd-{name}")
        assert done.returncode == 1
        what = "a symlink to nothing" if name == "dangling" else "not a regular file"
        assert done.stderr == f"error: copy failed: {tree}/sub/{name}: {what}\n"
        assert not (workspace(access, pod["id"]) / f"odd-{name}").exists()
    # The same the other way: a FIFO in the pod.
    tree = workspace(access, pod["id"]) / "odd-down"
    (tree / "sub").mkdir(parents=True)
    write_random(tree / "a.bin", 1000)
    os.mkfifo(tree / "sub" / "fifo")
    done = cp(access, f"{pod['id']}:odd-down", str(tmp_path / "odd-down"))
    assert (done.returncode, done.stderr) == (
        1,
        "error: copy failed: odd-down/sub/fifo: not a regular file in the pod\n",
    )
    assert not (tmp_path / "odd-down").exists()


def hub_snapshot(top: Path) -> dict[str, str]:
    """A Hugging Face cache under `top`: snapshots/abc holds only links into ../../blobs (one
    of them a directory). What a copy of snapshots/abc must hold: path -> SHA-256."""
    (top / "blobs").mkdir(parents=True)
    weights = write_random(top / "blobs" / "b1", 3 * MIB)  # through OpenSSH's sftp
    config = write_random(top / "blobs" / "b2", 1000)  # through asyncssh
    snap = top / "snapshots" / "abc"
    (snap / "sub").mkdir(parents=True)
    (snap / "model.bin").symlink_to("../../blobs/b1")
    (snap / "sub" / "config.json").symlink_to("../../../blobs/b2")
    (snap / "more").symlink_to("../../blobs")
    return {"model.bin": weights, "sub/config.json": config, "more/b1": weights, "more/b2": config}


def tree_of(top: Path) -> dict[str, str]:
    """Every file under `top` (none may be a link): path -> SHA-256."""
    assert not [path for path in top.rglob("*") if path.is_symlink()]
    return {p.relative_to(top).as_posix(): sha256(p) for p in top.rglob("*") if p.is_file()}


def test_symlinks_are_followed_both_ways_as_scp_follows_them(
    access: Access, pod: dict[str, Any], tmp_path: Path
) -> None:
    """A snapshot of links copies as its files under the links' names, up and down; a link
    back to a directory it is in, or to nothing, stops the copy before anything is written."""
    home = workspace(access, pod["id"])
    snap = tmp_path / "here" / "snapshots" / "abc"
    want = hub_snapshot(tmp_path / "here")
    assert cp(access, str(snap), f"{pod['id']}:up-abc").returncode == 0
    assert tree_of(home / "up-abc") == want
    want = hub_snapshot(home / "hub")
    assert cp(access, f"{pod['id']}:hub/snapshots/abc", str(tmp_path / "down")).returncode == 0
    assert tree_of(tmp_path / "down") == want
    (home / "hub" / "snapshots" / "abc" / "sub" / "up").symlink_to("..")
    (snap / "sub" / "up").symlink_to("..")
    looped = cp(access, f"{pod['id']}:hub/snapshots/abc", str(tmp_path / "looped"))
    assert (looped.returncode, looped.stderr) == (
        1,
        "error: copy failed: hub/snapshots/abc/sub/up: a symlink loop in the pod "
        "(it leads back to /workspace/hub/snapshots/abc)\n",
    )
    looped = cp(access, str(snap), f"{pod['id']}:looped")
    assert (looped.returncode, looped.stderr) == (
        1,
        f"error: copy failed: {snap}/sub/up: a symlink loop (it leads back to {snap})\n",
    )
    (home / "hub" / "snapshots" / "abc" / "sub" / "up").unlink()
    (home / "hub" / "snapshots" / "abc" / "gone").symlink_to("../nowhere")
    dangling = cp(access, f"{pod['id']}:hub/snapshots/abc", str(tmp_path / "looped"))
    assert (dangling.returncode, dangling.stderr) == (
        1,
        "error: copy failed: hub/snapshots/abc/gone: a symlink to nothing in the pod\n",
    )
    assert not (tmp_path / "looped").exists()
    assert not (home / "looped").exists()


def test_a_file_where_a_directory_goes_stops_the_copy_before_anything_is_written(
    access: Access, pod: dict[str, Any], tmp_path: Path
) -> None:
    """A directory copied where a file of its name, or of one of its folders' names, is:
    named, both ways, and no folder made."""
    home = workspace(access, pod["id"])
    tree = tmp_path / "tree"
    for sub in ("a", "sub"):  # a/ would be made before sub/ failed, were it walked first
        (tree / sub).mkdir(parents=True)
        write_random(tree / sub / "f.bin", 1000)
    (home / "clash-top").mkdir()
    (home / "clash-top" / "tree").write_text("a file")
    (home / "clash-sub" / "tree").mkdir(parents=True)
    (home / "clash-sub" / "tree" / "sub").write_text("a file")
    for where, what in (("clash-top", "tree"), ("clash-sub", "tree/sub")):
        done = cp(access, str(tree), f"{pod['id']}:{where}/tree")
        assert (done.returncode, done.stderr) == (
            1,
            f"error: copy failed: {where}/{what}: is a file in the pod, not a directory\n",
        )
    assert sorted(p.name for p in (home / "clash-sub" / "tree").iterdir()) == ["sub"]
    down = tmp_path / "down"
    down.mkdir()
    (down / "tree").write_text("a file")
    done = cp(access, f"{pod['id']}:clash-sub/tree", str(down / "tree" / "deeper"))
    assert (done.returncode, done.stderr) == (
        1,
        f"error: copy failed: {down / 'tree'}: is a file here, not a directory\n",
    )
    (home / "clash-sub" / "tree" / "sub").unlink()
    (home / "clash-sub" / "tree" / "a").mkdir()
    (home / "clash-sub" / "tree" / "sub").mkdir()
    (down / "tree").unlink()
    (down / "tree").mkdir()
    (down / "tree" / "sub").write_text("a file")
    done = cp(access, f"{pod['id']}:clash-sub/tree", str(down / "tree"))
    assert (done.returncode, done.stderr) == (
        1,
        f"error: copy failed: {down / 'tree' / 'sub'}: is a file here, not a directory\n",
    )
    assert sorted(p.name for p in (down / "tree").iterdir()) == ["sub"]
