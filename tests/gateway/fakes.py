"""Test doubles for the gateway: an in-memory Directory, accounts' keys, and the gateway
running on an event loop of its own (the OpenSSH tests block on subprocesses)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from openpod.adapters.gateway.directory import Caller, PodTarget, Refused
from openpod.adapters.runtimes.base import PodPhase
from openpod.adapters.runtimes.local import LocalRuntime
from openpod.domain.sshkeys import parse_public_key


@dataclass
class FakeDirectory:
    """Accounts' keys and pods' owners in memory; a pod's state is asked of a real runtime.

    Lookups are recorded so tests can show what reached the platform. Pods without a runtime
    answer with `targets` (a plain TCP server standing in for a pod's sshd).
    """

    keys: dict[str, Caller] = field(default_factory=dict)  # "type base64" -> caller
    owners: dict[str, str] = field(default_factory=dict)  # pod id -> account id
    runtime: LocalRuntime | None = None
    targets: dict[str, PodTarget] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)  # (account id, pod id)

    def add_account(self, account_id: str, public_key_line: str) -> Caller:
        key = parse_public_key(public_key_line)
        caller = Caller(account_id, f"name-{account_id}", key.fingerprint)
        self.keys[_blob(public_key_line)] = caller
        return caller

    async def caller_for_key(self, public_key_openssh: str) -> Caller | None:
        return self.keys.get(_blob(public_key_openssh))

    async def target_for(self, caller: Caller, pod_id: str) -> PodTarget:
        self.asked.append((caller.account_id, pod_id))
        if self.owners.get(pod_id) != caller.account_id:
            raise Refused(f"no such pod {pod_id}")
        if pod_id in self.targets:
            return self.targets[pod_id]
        assert self.runtime is not None
        obs = await asyncio.to_thread(self.runtime.observe, pod_id)
        if obs.phase is not PodPhase.RUNNING:
            raise Refused(f"pod {pod_id} is not running ({obs.phase.name})")
        return PodTarget(pod_id, "127.0.0.1", obs.port_mappings[22])


def _blob(line: str) -> str:
    return " ".join(line.split()[:2])


class Served(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


S = TypeVar("S", bound=Served)


class GatewayThread(Generic[S]):
    """An SSHGateway (or its fast path) served by an event loop in a background thread,
    stopped on request."""

    def __init__(self, gateway: S) -> None:
        self.gateway = gateway
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> GatewayThread[S]:
        self._thread.start()
        assert self._ready.wait(10), "the gateway did not start within 10 s"
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return  # never started, or its start failed
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "the gateway did not stop within 10 s"

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.gateway.start()
        except BaseException as exc:  # handed to the test thread by start()
            self._error = exc
            raise
        finally:
            self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.gateway.stop()


@dataclass(frozen=True)
class Keys:
    alice: Path
    bob: Path
    stranger: Path

    @staticmethod
    def public(key: Path) -> str:
        return key.with_suffix(".pub").read_text().strip()


def make_key(path: Path) -> Path:
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)]
    subprocess.run(argv, check=True)
    return path
