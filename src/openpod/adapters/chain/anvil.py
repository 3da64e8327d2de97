"""anvil, the development chain (npm `@foundry-rs/anvil`): started on a free port, stopped by PID."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import IO

from openpod.adapters.chain.errors import ChainError

_REPO = Path(__file__).resolve().parents[4]
_NPM_BINARY = _REPO / "contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
_LISTENING = re.compile(r"Listening on ([0-9.]+):(\d+)")
DEV_CHAIN_ID = 31337


def anvil_binary() -> str:
    """`$OPENPOD_ANVIL`, else the one npm installed under contracts/, else `anvil` on PATH."""
    configured = os.environ.get("OPENPOD_ANVIL")
    if configured:
        return configured
    if _NPM_BINARY.exists():
        return str(_NPM_BINARY)
    found = shutil.which("anvil")
    if found:
        return found
    raise ChainError(
        "anvil not found: run `make node-deps` (npm ci in contracts/) or set OPENPOD_ANVIL"
    )


class Anvil:
    """One anvil process on 127.0.0.1. `block_time` None mines on every transaction."""

    def __init__(
        self,
        *,
        chain_id: int = DEV_CHAIN_ID,
        block_time: float | None = None,
        state: Path | None = None,
        log: Path | None = None,
    ) -> None:
        self.chain_id = chain_id
        self._args = [
            anvil_binary(),
            "--host", "127.0.0.1",
            "--port", "0",
            "--chain-id", str(chain_id),
            "--accounts", "0",
        ]  # fmt: skip
        if block_time is not None:
            self._args += ["--block-time", str(block_time)]
        if state is not None:
            self._args += ["--state", str(state), "--state-interval", "5"]
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout_s: float = 30.0) -> Anvil:
        proc = subprocess.Popen(
            self._args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._proc = proc
        ready = threading.Event()
        found: list[str] = []
        assert proc.stdout is not None
        log = self._log.open("ab") if self._log else None
        self._reader = threading.Thread(
            target=_drain, args=(proc.stdout, log, found, ready), daemon=True, name="anvil-log"
        )
        self._reader.start()
        if not ready.wait(timeout_s) or not found:
            self.stop()
            raise ChainError(f"anvil did not start listening within {timeout_s:.0f} s")
        self.url = found[0]
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(10)  # it closes the pipe at its end

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _drain(
    stream: IO[bytes], log: IO[bytes] | None, found: list[str], ready: threading.Event
) -> None:
    """Read anvil's output to the end (a full pipe would stall it); note where it listens."""
    try:
        for line in stream:
            if log:
                log.write(line)
                log.flush()
            if not ready.is_set():
                match = _LISTENING.search(line.decode(errors="replace"))
                if match:
                    found.append(f"http://{match.group(1)}:{match.group(2)}")
                    ready.set()
    finally:
        ready.set()
        stream.close()
        if log:
            log.close()
