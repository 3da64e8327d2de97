"""Benchmark: the /transfer page, browser → browser, in Debian's Chromium on 127.0.0.1.

Run by bench/transfer.py (or alone: `python -m bench.transfer_browser`). Two pages of one
headless Chromium, a control plane of their own; a 128 MiB file is sent 9 times over WebRTC
(records in the clear inside DTLS, as two pages of today agree), 9 times over WebRTC with
every record sealed as well (both pages `?dtls=0`, as before "dtls": what that buys) and 9
times over the relay, interleaved (every other round in reverse order); the rate is
the one the receiving page measures from its first data to its last (the service-worker
download included). For scale, each round also measures the same Chromium's bare data
channel between two pages (PEER/SEND/RECEIVE below): 128 MiB with no encryption, hashing,
reading or saving. Once, in one page: the page's own SHA-256 (sha256.js, incremental, fed
the record size) and its block hash (hashes.js "sha256-4m", WebCrypto per 4 MiB block, what
two pages check a file with) against WebCrypto's one-shot digest of the same 128 MiB (HASH
below).
Chromium runs in a network namespace that has only loopback, as in the tests
(tests/support/loopback_ns.py); the pages reach the control plane through its forwarder, so
relay bytes cross that hop twice.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

from tests.browser.conftest import launch_chromium
from tests.browser.test_transfer_page import browser_to_browser, state
from tests.support.loopback_ns import LoopbackNamespace
from tests.support.platform import ControlPlane

SIZE = 128 << 20
RUNS = 9
WAYS = ("webrtc", "webrtc-sealed", "relay", "bare")
# The reference: Chromium's bare data channel between two pages (two renderers, as the
# transfer has), made as the page makes its own (pre-negotiated on stream 0), fed 256 KiB
# messages (the page's record size) with the page's thresholds (12 MiB high, 6 MiB low); no
# encryption, hashing, reading or saving. The rate is the receiver's, first message to last.
PEER = """async (offer) => {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  for (const track of stream.getTracks()) track.stop();
  const pc = new RTCPeerConnection();
  window.bare = { pc, dc: pc.createDataChannel("bare", { negotiated: true, id: 0 }) };
  window.bare.dc.binaryType = "arraybuffer";
  if (offer) await pc.setRemoteDescription(offer);
  await pc.setLocalDescription();
  await new Promise((done) => {
    const check = () => pc.iceGatheringState === "complete" && done();
    pc.addEventListener("icegatheringstatechange", check);
    check();
  });
  return { type: pc.localDescription.type, sdp: pc.localDescription.sdp };
}"""
RECEIVE = """(size) => {
  window.bare.rate = new Promise((resolve) => {
    let got = 0, first = 0;
    window.bare.dc.onmessage = (m) => {
      if (!first) first = performance.now();
      got += m.data.byteLength;
      if (got >= size) resolve(size / 1e6 / ((performance.now() - first) / 1000));
    };
  });
}"""
SEND = """async (size) => {
  const dc = window.bare.dc;
  await new Promise((open) => (dc.readyState === "open" ? open() : (dc.onopen = open)));
  const message = new Uint8Array(256 * 1024);
  dc.bufferedAmountLowThreshold = 6 << 20;
  for (let sent = 0; sent < size; sent += message.length) {
    if (dc.bufferedAmount > 12 << 20) await new Promise((low) => (dc.onbufferedamountlow = low));
    dc.send(message);
  }
}"""
# The page's SHA-256 and block hash against WebCrypto's one-shot digest, 5 interleaved rounds
# in one page, each the median MB/s; the SHA-256s must agree.
HASH = """async (size) => {
  const { Sha256 } = await import("/transfer/static/sha256.js");
  const { BLOCKS, fileHash } = await import("/transfer/static/hashes.js");
  const { hexencode } = await import("/transfer/static/crypto.js");
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
  const rates = { page: [], blocks: [], webcrypto: [] };
  for (let round = 0; round < 5; round++) {
    let t = performance.now();
    const hash = new Sha256();
    for (let at = 0; at < size; at += 256 * 1024) hash.update(data.subarray(at, at + 256 * 1024));
    const page = hash.digestHex();
    rates.page.push(size / 1e6 / ((performance.now() - t) / 1000));
    t = performance.now();
    const blocks = fileHash(BLOCKS);
    for (let at = 0; at < size; at += 256 * 1024) {
      const wait = blocks.update(data.subarray(at, at + 256 * 1024));
      if (wait) await wait;
    }
    await blocks.hex();
    rates.blocks.push(size / 1e6 / ((performance.now() - t) / 1000));
    t = performance.now();
    const whole = hexencode(new Uint8Array(await crypto.subtle.digest("SHA-256", data)));
    rates.webcrypto.push(size / 1e6 / ((performance.now() - t) / 1000));
    if (page !== whole) throw new Error(`sha256.js gave ${page}, WebCrypto ${whole}`);
  }
  const median = (runs) => runs.sort((a, b) => a - b)[runs.length >> 1];
  return { page: median(rates.page), blocks: median(rates.blocks), webcrypto: median(rates.webcrypto) };
}"""


def measure() -> tuple[dict[str, list[float]], dict[str, float]]:
    """The rates of each way, round by round, and the two hashes' MB/s."""
    root = Path(tempfile.mkdtemp(prefix="openpod-bench-browser-"))
    (root / "plane").mkdir()
    plane = ControlPlane(root / "plane")
    rates: dict[str, list[float]] = {}
    plane.start()
    try:
        with LoopbackNamespace() as netns, sync_playwright() as driver:
            netns.forward(plane.port)
            chromium = launch_chromium(driver, netns, root)
            try:
                hashes = hash_rates(chromium, plane.url)
                for run in range(RUNS):
                    # Every other round in reverse (as the other benches): no way always
                    # follows the same one.
                    for way in WAYS if run % 2 == 0 else WAYS[::-1]:
                        work = root / f"{way}-{run}"
                        if way == "bare":
                            rate = bare_channel(chromium, plane.url)
                        elif way == "webrtc-sealed":
                            rate = page_to_page(chromium, plane, work, "webrtc", "dtls=0")
                        else:
                            rate = page_to_page(chromium, plane, work, way)
                        rates.setdefault(way, []).append(rate)
            finally:
                chromium.close()
    finally:
        plane.stop()
        shutil.rmtree(root, ignore_errors=True)
    return rates, hashes


def page_to_page(
    chromium: Browser, plane: ControlPlane, work: Path, transport: str, query: str = ""
) -> float:
    """MB/s the receiving /transfer page reports for SIZE bytes over `transport` (`query`
    added to both pages' query string)."""
    context = chromium.new_context(accept_downloads=True, permissions=["camera", "microphone"])
    context.set_default_timeout(120_000)
    work.mkdir()
    try:
        _sender, receiver, _source, saved = browser_to_browser(
            context, plane, work, transport, size=SIZE, queries=(query, query)
        )
        received = state(receiver)
        if received["error"] or saved.stat().st_size != SIZE:
            raise RuntimeError(f"{transport}: {received['error']}")
        rate: float = received["result"]["mbps"]
        return rate
    finally:
        context.close()
        shutil.rmtree(work, ignore_errors=True)  # the 128 MiB source and its saved copy


def bare_channel(chromium: Browser, url: str) -> float:
    """MB/s of SIZE bytes over a bare data channel from one page to another."""
    context = chromium.new_context(permissions=["camera", "microphone"])
    try:
        sender, receiver = context.new_page(), context.new_page()
        for page in (sender, receiver):
            page.goto(f"{url}/transfer")
        answer = receiver.evaluate(PEER, sender.evaluate(PEER, None))
        sender.evaluate("(answer) => window.bare.pc.setRemoteDescription(answer)", answer)
        receiver.evaluate(RECEIVE, SIZE)
        sender.evaluate(SEND, SIZE)
        rate: float = receiver.evaluate("() => window.bare.rate")
        return rate
    finally:
        context.close()


def hash_rates(chromium: Browser, url: str) -> dict[str, float]:
    """MB/s of the page's SHA-256 and of WebCrypto's digest on the same SIZE bytes."""
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{url}/transfer")
        rates: dict[str, float] = page.evaluate(HASH, SIZE)
        return rates
    finally:
        context.close()


def browser_section() -> str:
    rates, hashes = measure()
    med = {name: statistics.median(runs) for name, runs in rates.items()}

    def runs(name: str) -> str:
        return ", ".join(f"{v:.1f}" for v in rates[name])

    webrtc = med["webrtc"]

    def paired(a: str, b: str) -> str:
        ratios = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
        wins = sum(r > 1 for r in ratios)
        return f"median of the rounds' ratios {statistics.median(ratios):.2f}x, faster in {wins} of {len(ratios)} rounds"

    return "\n".join(
        [
            f"Browser → browser (`/transfer`, Debian Chromium, headless, 128 MiB, {RUNS} runs):",
            "",
            "| way | median MB/s | runs |",
            "|---|---|---|",
            f"| page → page over WebRTC | {webrtc:.1f} | {runs('webrtc')} |",
            "| page → page over WebRTC, every record sealed as well (`?dtls=0`) | "
            f"{med['webrtc-sealed']:.1f} | {runs('webrtc-sealed')} |",
            f"| page → page over the relay | {med['relay']:.1f} | {runs('relay')} |",
            "| reference: Chromium's bare data channel, page to page, 256 KiB messages, "
            f"nothing else | "
            f"{med['bare']:.1f} | {runs('bare')} |",
            "",
            f"Browser → browser over WebRTC: **{webrtc:.1f} MB/s** (target ≥ 25 MB/s: "
            f"{'met' if webrtc >= 25 else 'missed'}); {webrtc / med['bare']:.2f}x of what this "
            "Chromium's data channel carries bare on this machine; records left to DTLS "
            f"against sealed as well: {webrtc / med['webrtc-sealed']:.2f}x (medians), "
            f"{paired('webrtc', 'webrtc-sealed')}.",
            "",
            f"The page's SHA-256 (sha256.js, JavaScript, incremental, 256 KiB pieces, each "
            f"side hashes every byte): {hashes['page']:.0f} MB/s; WebCrypto's one-shot digest "
            f"of the same 128 MiB in the same page: {hashes['webcrypto']:.0f} MB/s "
            f"({hashes['page'] / hashes['webcrypto']:.2f}x; it cannot hash a stream). The block "
            f"hash two pages agree on (hashes.js, WebCrypto per 4 MiB block, fed the same "
            f"pieces): {hashes['blocks']:.0f} MB/s ({hashes['blocks'] / hashes['page']:.2f}x the "
            "page's SHA-256).",
        ]
    )


if __name__ == "__main__":
    print(browser_section())
