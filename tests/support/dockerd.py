"""A real dockerd for tests, started by hand, and the offline pod image it runs.

No registry can be reached (MACHINE-NOTES "dockerd"), so the pod image is built here: a
Debian root filesystem with openssh-server and python3 made by mmdebstrap from the host's
apt sources, with no SSH host keys (each pod makes its own at boot), then `docker import`ed.
The tarball is cached under $XDG_CACHE_HOME/openpod (~220 MiB, ~45 s to build), keyed by
what it is built from; the import (~8 s) is per dockerd.

dockerd runs with its data and exec roots in a temp dir, its own socket, no bridge and no
iptables (tests create no network: pods use the host's network), and is stopped by its PID;
what it left mounted under its dirs is unmounted before they are deleted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from openpod.adapters.runtimes._dockerapi import DockerApi, DockerError
from tests.support.net import wait_until

POD_IMAGE = "openpod-test/debian-sshd:bookworm"
_PACKAGES = "openssh-server,python3"
_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
_NO_HOST_KEYS = 'rm -f "$1"/etc/ssh/ssh_host_*'


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "openpod" / "pod-image"


def pod_rootfs() -> Path:
    """The pod image's root filesystem tarball, built once and cached."""
    recipe = f"bookworm minbase {_PACKAGES} {_NO_HOST_KEYS}"
    target = _cache_dir() / f"debian-sshd-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}.tar"
    if target.is_file():
        return target
    if target.is_dir():  # what an earlier version left: mmdebstrap made a directory
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    sources = [str(_SOURCES)] if _SOURCES.is_file() else []
    argv = [
        # --format: mmdebstrap picks the format by the name's extension, and `.partial`
        # names none it knows (it made a directory).
        "mmdebstrap", "--quiet", "--variant=minbase", "--format=tar", f"--include={_PACKAGES}",
        f"--customize-hook={_NO_HOST_KEYS}", "bookworm", str(partial), *sources,
    ]  # fmt: skip
    try:
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, timeout=600)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as tar:
        while chunk := tar.read(1 << 20):
            yield chunk


class Dockerd:
    """One dockerd under a temp dir (short: unix socket paths are limited to 108 bytes)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="opd-", dir="/tmp"))
        self.socket = self.dir / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "dockerd.log"

    def start(self) -> Dockerd:
        argv = [
            shutil.which("dockerd") or "/usr/sbin/dockerd",
            "--data-root", str(self.dir / "data"), "--exec-root", str(self.dir / "exec"),
            "--pidfile", str(self.dir / "dockerd.pid"), "-H", self.host,
            "--bridge=none", "--iptables=false", "--ip6tables=false",
            "--ip-forward=false", "--ip-masq=false",
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        api = DockerApi(self.host, timeout=5)
        try:
            wait_until(lambda: self._answers(api), 60, "dockerd answering on its socket")
        finally:
            api.close()
        return self

    def _answers(self, api: DockerApi) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-2000:]
        if not self.socket.exists():
            return False
        try:
            api.ping()
        except DockerError:
            return False
        return True

    def load_pod_image(self) -> str:
        """Import the pod image (built or taken from the cache); its reference."""
        api = DockerApi(self.host)
        try:
            try:
                api.image(POD_IMAGE)
            except DockerError:
                repo, tag = POD_IMAGE.split(":")
                api.import_tar(_chunks(pod_rootfs()), repo, tag)
        finally:
            api.close()
        return POD_IMAGE

    def stop(self) -> None:
        """SIGTERM dockerd (it stops its containers and containerd), SIGKILL after 30 s;
        then unmount what is left under its dirs and delete them."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for mountpoint in sorted(_mounts_under(self.dir), key=len, reverse=True):
            subprocess.run(["umount", "-l", mountpoint], check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            found.append(point)
    return found
