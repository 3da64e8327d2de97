"""`openpod send`/`receive` (the Python CLI) and the /transfer page in Chromium move the same
50 MiB both ways: the protocol is one, whichever side is a browser. The CLI runs as a child
process (`python -m openpod ... --json --loopback`) against the same control plane, in
Chromium's network namespace (conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext

from tests.browser.conftest import open_page, random_file, sha256_of
from tests.browser.test_transfer_page import (
    BIG,
    NEGOTIATED,
    RECORD_CHANNELS,
    click_for_download,
    offer,
    records_went,
    wait_state,
)
from tests.support.loopback_ns import LoopbackNamespace
from tests.support.net import wait_until
from tests.support.platform import ControlPlane

CLI_SECONDS = 150
# `python -m openpod` as a CLI from before pre-negotiated data channels and clear records in
# DTLS: it says neither, so the channel is opened in band (the sender announces it to the
# receiver) and every record is sealed.
OLDER_CLI = """
import dataclasses, runpy
import openpod.cli.send_connect as connect
newer = connect._transports
async def older(session, options):
    options = dataclasses.replace(options, negotiated_channel=False, dtls_records=False)
    return await newer(session, options)
connect._transports = older
runpy.run_module("openpod", run_name="__main__", alter_sys=True)
"""


class Cli:
    """One `openpod send`/`receive` run; its JSON lines land in a file we poll."""

    def __init__(
        self,
        plane: ControlPlane,
        netns: LoopbackNamespace,
        tmp_path: Path,
        args: list[str],
        older: bool = False,
    ) -> None:
        self.out = tmp_path / f"cli-{args[0]}.jsonl"
        self.err = tmp_path / f"cli-{args[0]}.log"
        env = {
            **os.environ,
            "OPENPOD_API_URL": plane.url,
            "OPENPOD_CONFIG_DIR": str(tmp_path / "cli-config"),
            "PYTHONUNBUFFERED": "1",
        }
        program = ["-c", OLDER_CLI] if older else ["-m", "openpod"]
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                netns.command([sys.executable, *program, *args, "--json", "--loopback"]),
                stdout=out,
                stderr=err,
                env=env,
            )

    def lines(self) -> list[dict[str, Any]]:
        text = self.out.read_text() if self.out.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def first_line(self) -> dict[str, Any]:
        def printed() -> bool:
            assert self.proc.poll() is None or self.lines(), self.err.read_text()
            return bool(self.lines())

        wait_until(printed, 30, "the CLI's first JSON line", step=0.05)
        return self.lines()[0]

    def finish(self) -> dict[str, Any]:
        code = self.proc.wait(CLI_SECONDS)
        assert code == 0, self.err.read_text()
        return self.lines()[-1]

    def explain(self) -> str:
        """What the CLI said so far, for a failing test's message."""
        return f"the CLI (exit {self.proc.poll()}): {self.err.read_text()!r} {self.lines()}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def cli_runs() -> Any:
    runs: list[Cli] = []
    yield runs
    for run in runs:
        run.stop()


def test_cli_sends_to_the_browser(
    context: BrowserContext,
    plane: ControlPlane,
    netns: LoopbackNamespace,
    tmp_path: Path,
    cli_runs: list[Cli],
) -> None:
    source = random_file(tmp_path / "from-cli.bin", BIG)
    sender = Cli(plane, netns, tmp_path, ["send", str(source)])
    cli_runs.append(sender)
    code = sender.first_line()["code"]
    receiver = open_page(context, plane, init_script=RECORD_CHANNELS)
    receiver.fill("#code-input", code)
    download = click_for_download(receiver, "#receive-go", sender.explain)
    saved = tmp_path / "saved" / "from-cli.bin"
    download.save_as(saved)
    hook = wait_state(receiver, "done", "failed")
    summary = sender.finish()
    assert hook["error"] is None, hook["error"]
    digest = sha256_of(source)
    assert sha256_of(saved) == digest
    assert hook["result"]["files"] == [{"path": "from-cli.bin", "size": BIG, "sha256": digest}]
    assert summary["transport"] == hook["transport"] == "webrtc"
    assert receiver.evaluate("window.openpodChannels") == NEGOTIATED  # the CLI said it can
    assert records_went(receiver) == "clear"  # and that DTLS alone may carry the records
    assert list(summary["sha256"].values()) == [digest]
    print(f"\nCLI -> browser over webrtc: {hook['result']['mbps']:.1f} MB/s")


def test_browser_sends_to_the_cli(
    context: BrowserContext,
    plane: ControlPlane,
    netns: LoopbackNamespace,
    tmp_path: Path,
    cli_runs: list[Cli],
) -> None:
    source = random_file(tmp_path / "from-browser.bin", BIG)
    sender = open_page(context, plane, init_script=RECORD_CHANNELS)
    code = offer(sender, source)
    into = tmp_path / "into"
    into.mkdir()
    receiver = Cli(plane, netns, tmp_path, ["receive", code, "--dir", str(into)])
    cli_runs.append(receiver)
    summary = receiver.finish()
    hook = wait_state(sender, "done", "failed")
    assert hook["error"] is None, hook["error"]
    digest = sha256_of(source)
    assert sha256_of(into / "from-browser.bin") == digest
    assert hook["result"]["files"][0]["sha256"] == digest
    assert summary["transport"] == hook["transport"] == "webrtc"
    assert sender.evaluate("window.openpodChannels") == NEGOTIATED
    assert records_went(sender) == "clear"
    assert summary["bytes"] == BIG
    print(f"\nbrowser -> CLI over webrtc: {hook['result']['mbps']:.1f} MB/s")


@pytest.mark.parametrize("page_is", ["receiver", "sender"])
def test_an_older_cli_gets_the_channel_opened_in_band_and_sealed_records(
    context: BrowserContext,
    plane: ControlPlane,
    netns: LoopbackNamespace,
    tmp_path: Path,
    cli_runs: list[Cli],
    page_is: str,
) -> None:
    """A CLI that does not say it can pre-negotiate the data channel, nor that its records may
    go in the clear inside DTLS, still gets WebRTC: the page takes the channel the CLI opens
    (page receiving) or opens it in band (page sending), and seals every record."""
    source = random_file(tmp_path / "older.bin", 2 * 1024 * 1024)
    page = open_page(context, plane, init_script=RECORD_CHANNELS)
    if page_is == "receiver":
        cli = Cli(plane, netns, tmp_path, ["send", str(source)], older=True)
        cli_runs.append(cli)
        page.fill("#code-input", cli.first_line()["code"])
        download = click_for_download(page, "#receive-go", cli.explain)
        arrived = tmp_path / "saved" / "older.bin"
        download.save_as(arrived)
    else:
        code = offer(page, source)
        arrived = tmp_path / "into" / "older.bin"
        arrived.parent.mkdir()
        args = ["receive", code, "--dir", str(arrived.parent)]
        cli = Cli(plane, netns, tmp_path, args, older=True)
        cli_runs.append(cli)
    summary = cli.finish()
    hook = wait_state(page, "done", "failed")
    assert hook["error"] is None, hook["error"]
    assert sha256_of(arrived) == sha256_of(source)
    assert summary["transport"] == hook["transport"] == "webrtc"
    made = [] if page_is == "receiver" else [{"label": "openpod", "ordered": True}]
    assert page.evaluate("window.openpodChannels") == made
    assert records_went(page) == "sealed"
