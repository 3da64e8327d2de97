"""Benchmark: the /transfer page, browser → browser, in Debian's Chromium on 127.0.0.1.

Run by bench/transfer.py (or alone: `python -m bench.transfer_browser`). Two pages of one
headless Chromium, a control plane of their own; a 128 MiB file is sent 3 times over WebRTC
and 3 times over the relay, interleaved; the rate is the one the receiving page measures
from its first data to its last (the service-worker download included). For scale, the same
Chromium's bare data channel is measured in one page: 128 MiB through a pair of
RTCPeerConnections with no encryption, hashing or saving. Chromium runs in a network
namespace that has only loopback, as in the tests (tests/support/loopback_ns.py); the pages
reach the control plane through its forwarder, so relay bytes cross that hop twice.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.browser.conftest import launch_chromium
from tests.browser.test_transfer_page import browser_to_browser, state
from tests.support.loopback_ns import LoopbackNamespace
from tests.support.platform import ControlPlane

SIZE = 128 << 20
RUNS = 3
BARE = """async (size) => {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  for (const track of stream.getTracks()) track.stop();
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  const dc = a.createDataChannel("bare", { ordered: true });
  const done = new Promise((resolve) => {
    b.ondatachannel = (e) => { let got = 0; const t0 = performance.now();
      e.channel.onmessage = (m) => { got += m.data.byteLength;
        if (got >= size) resolve(size / 1e6 / ((performance.now() - t0) / 1000)); }; };
  });
  await a.setLocalDescription(); await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(); await a.setRemoteDescription(b.localDescription);
  await new Promise((r) => dc.readyState === "open" ? r() : (dc.onopen = r));
  const chunk = new Uint8Array(65536); dc.bufferedAmountLowThreshold = 1 << 20;
  for (let sent = 0; sent < size; sent += chunk.length) {
    if (dc.bufferedAmount > (4 << 20)) await new Promise((r) => (dc.onbufferedamountlow = r));
    dc.send(chunk);
  }
  return await done;
}"""


def measure() -> dict[str, list[float]]:
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
                for run in range(RUNS):
                    for transport in ("webrtc", "relay"):
                        context = chromium.new_context(
                            accept_downloads=True, permissions=["camera", "microphone"]
                        )
                        context.set_default_timeout(120_000)
                        work = root / f"{transport}-{run}"
                        work.mkdir()
                        _sender, receiver, _source, saved = browser_to_browser(
                            context, plane, work, transport, size=SIZE
                        )
                        received = state(receiver)
                        context.close()
                        if received["error"] or saved.stat().st_size != SIZE:
                            raise RuntimeError(f"{transport}: {received['error']}")
                        rates.setdefault(transport, []).append(received["result"]["mbps"])
                        saved.unlink()
                context = chromium.new_context(permissions=["camera", "microphone"])
                page = context.new_page()
                page.goto(f"{plane.url}/transfer")
                rates["bare"] = [page.evaluate(BARE, SIZE) for _ in range(RUNS)]
                context.close()
            finally:
                chromium.close()
    finally:
        plane.stop()
        shutil.rmtree(root, ignore_errors=True)  # 6 source files of 128 MiB and the plane's
    return rates


def browser_section() -> str:
    rates = measure()
    med = {name: statistics.median(runs) for name, runs in rates.items()}

    def runs(name: str) -> str:
        return ", ".join(f"{v:.1f}" for v in rates[name])

    webrtc = med["webrtc"]
    return "\n".join(
        [
            f"Browser → browser (`/transfer`, Debian Chromium, headless, 128 MiB, {RUNS} runs):",
            "",
            "| way | median MB/s | runs |",
            "|---|---|---|",
            f"| page → page over WebRTC | {webrtc:.1f} | {runs('webrtc')} |",
            f"| page → page over the relay | {med['relay']:.1f} | {runs('relay')} |",
            f"| reference: Chromium's bare data channel, one page, nothing else | "
            f"{med['bare']:.1f} | {runs('bare')} |",
            "",
            f"Browser → browser over WebRTC: **{webrtc:.1f} MB/s** (target ≥ 25 MB/s: "
            f"{'met' if webrtc >= 25 else 'missed'}); {webrtc / med['bare']:.2f}x of what this "
            "Chromium's data channel carries bare on this machine.",
        ]
    )


if __name__ == "__main__":
    print(browser_section())
