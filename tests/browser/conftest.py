"""The /transfer page in a real Chromium against a real control plane.

The control plane runs as a child process (as in the e2e tests: `python -m openpod server`
on a free 127.0.0.1 port, stopped by its PID); Chromium is Debian's (/usr/bin/chromium,
nothing downloaded), launched with the flags that let WebRTC gather loopback candidates
(/work/shared/MACHINE-NOTES.md "WebRTC"): the pages are opened with `?loopback=1`, which
makes the page touch the fake microphone once, and camera/microphone are granted.

Chromium (and the CLI in test_transfer_cli) runs in a network namespace of its own that has
only `lo`, where 127.0.0.1:port leads to the control plane (tests/support/loopback_ns.py):
on the host its WebRTC would also pair eth0's addresses with the peer's 127.0.0.1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.support.loopback_ns import LoopbackNamespace
from tests.support.platform import ControlPlane

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
PAGE_TIMEOUT_MS = 30_000


@pytest.fixture(scope="session")
def netns() -> Iterator[LoopbackNamespace]:
    """Where Chromium and the CLI peers run: loopback only."""
    with LoopbackNamespace() as namespace:
        yield namespace


@pytest.fixture(scope="session")
def plane(
    tmp_path_factory: pytest.TempPathFactory, netns: LoopbackNamespace
) -> Iterator[ControlPlane]:
    """A control plane serving /transfer, its signaling and its relay; its URL works on the
    host and inside `netns`."""
    root = tmp_path_factory.mktemp("transfer-plane")
    running = ControlPlane(root)
    try:
        running.start()
        netns.forward(running.port)
        yield running
    finally:
        running.stop()


def launch_chromium(playwright: Playwright, netns: LoopbackNamespace, scratch: Path) -> Browser:
    """Debian's Chromium inside `netns`, downloads under `scratch`."""
    return playwright.chromium.launch(
        executable_path=str(netns.executable(scratch, CHROMIUM)),
        args=CHROMIUM_FLAGS,
        downloads_path=scratch / "downloads",
    )


# Module scope, not session: playwright's sync API runs an event loop on this thread while it
# is open, and every later test that calls asyncio.run() would find it running.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(
    playwright: Playwright, netns: LoopbackNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Browser]:
    chromium = launch_chromium(playwright, netns, tmp_path_factory.mktemp("chromium"))
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile: downloads accepted, camera/microphone granted (loopback WebRTC)."""
    ctx = browser.new_context(accept_downloads=True, permissions=["camera", "microphone"])
    ctx.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


def open_page(
    context: BrowserContext,
    plane: ControlPlane,
    transport: str | None = None,
    init_script: str | None = None,
    query: str = "",
) -> Page:
    """The /transfer page, ready (its state shows `idle`), for loopback WebRTC on 127.0.0.1;
    `init_script` runs in the page before its own scripts (to break something on purpose);
    `query` adds to the page's query string (`dtls=0`)."""
    query = (
        "?loopback=1"
        + (f"&transport={transport}" if transport else "")
        + (f"&{query}" if query else "")
    )
    page = context.new_page()
    if init_script:
        page.add_init_script(init_script)
    page.goto(f"{plane.url}/transfer{query}")
    page.wait_for_function("window.openpodTransfer && window.openpodTransfer.state === 'idle'")
    return page


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def random_file(path: Path, size: int) -> Path:
    """`size` pseudo-random bytes, each MiB different (a reordered block changes the hash)."""
    with path.open("wb") as out:
        for index, start in enumerate(range(0, size, 1 << 20)):
            seed = b"openpod transfer page %d" % index
            out.write(hashlib.shake_256(seed).digest(min(1 << 20, size - start)))
    return path
