"""The /transfer page end to end in Chromium: browser to browser over WebRTC and over the
relay (50 MiB, the saved download hashed against the source), a wrong code failing cleanly on
both pages, and crypto.js computing the protocol's shared vectors inside the browser."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Download, Page, WebSocketRoute
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser.conftest import open_page, random_file, sha256_of
from tests.support.platform import ControlPlane
from tests.vectors.transfer_crypto import sha256_4m

BIG = 50 * 1024 * 1024
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "transfer_crypto.json"
TRANSFER_TIMEOUT_MS = 60_000


def state(page: Page) -> dict[str, Any]:
    hook: dict[str, Any] = page.evaluate("() => JSON.parse(JSON.stringify(window.openpodTransfer))")
    return hook


def wait_state(page: Page, *states: str) -> dict[str, Any]:
    page.wait_for_function(
        "states => states.includes(window.openpodTransfer.state)",
        arg=list(states),
        timeout=TRANSFER_TIMEOUT_MS,
    )
    return state(page)


def click_for_download(page: Page, selector: str, explain: Callable[[], str] = str) -> Download:
    """Click `selector` and return the download it starts; if none starts, fail saying where
    the page (and, through `explain`, the other side) stood."""
    try:
        with page.expect_download(timeout=TRANSFER_TIMEOUT_MS) as started:
            page.click(selector)
        return started.value
    except PlaywrightTimeout:
        raise AssertionError(
            f"no download began within {TRANSFER_TIMEOUT_MS // 1000} s; "
            f"the page: {state(page)}; {explain()}"
        ) from None


def offer(sender: Page, source: Path) -> str:
    """Pick `source` on the sender page; the code it shows."""
    sender.set_input_files("#pick", str(source))
    sender.wait_for_function("window.openpodTransfer.code !== null")
    code: str = sender.evaluate("window.openpodTransfer.code")
    assert code == sender.text_content("#code")
    return code


# Every data channel a page makes, with the options it asked for, in window.openpodChannels;
# what the page sends on them in window.openpodSent: `messages` in all,
# `clear` of them a control record as it is (`J{"t":"`; a sealed record starts so with odds
# of 2^-56), so a channel whose records go in the clear inside DTLS shows every control
# message it sent here, and a sealed one none.
RECORD_CHANNELS = """(() => {
  window.openpodChannels = [];
  window.openpodSent = { messages: 0, clear: 0 };
  const create = RTCPeerConnection.prototype.createDataChannel;
  RTCPeerConnection.prototype.createDataChannel = function (label, options) {
    window.openpodChannels.push({ label, ...(options || {}) });
    return create.call(this, label, options);
  };
  const control = Array.from('J{"t":"', (c) => c.charCodeAt(0));
  const send = RTCDataChannel.prototype.send;
  RTCDataChannel.prototype.send = function (message) {
    const bytes = ArrayBuffer.isView(message)
      ? new Uint8Array(message.buffer, message.byteOffset, message.byteLength)
      : new Uint8Array(message);
    window.openpodSent.messages += 1;
    if (control.every((c, i) => bytes[i] === c)) window.openpodSent.clear += 1;
    return send.call(this, message);
  };
})();"""
NEGOTIATED = [{"label": "openpod", "ordered": True, "negotiated": True, "id": 0}]


def records_went(page: Page) -> str:
    """How the page's records crossed its data channel: "clear" or "sealed" (RECORD_CHANNELS)."""
    sent = page.evaluate("window.openpodSent")
    assert sent["messages"] >= 3, sent  # a sender's manifest, plan, file, end, done; a
    # receiver's hello, have, go, ok, done
    if sent["clear"] == 0:
        return "sealed"
    assert sent["clear"] >= 3, sent
    return "clear"


def browser_to_browser(
    context: BrowserContext,
    plane: ControlPlane,
    tmp_path: Path,
    transport: str | None,
    size: int = BIG,
    init_script: str | None = None,
    sender_script: str | None = None,
    queries: tuple[str, str] = ("", ""),
) -> tuple[Page, Page, Path, Path]:
    """`size` bytes from one page to another (`transport` forced on both, or None; the
    sender page runs `sender_script` instead of `init_script`; `queries` add to the sender's
    and the receiver's query string); (sender, receiver, source, saved), both pages done or
    failed."""
    source = random_file(tmp_path / "payload.bin", size)
    sender = open_page(context, plane, transport, sender_script or init_script, queries[0])
    receiver = open_page(context, plane, transport, init_script, queries[1])
    code = offer(sender, source)
    receiver.fill("#code-input", code)
    download = click_for_download(receiver, "#receive-go", lambda: f"the sender: {state(sender)}")
    saved = tmp_path / "saved" / "payload.bin"
    download.save_as(saved)  # returns once the streamed download is complete
    assert download.suggested_filename == "payload.bin"
    wait_state(receiver, "done", "failed")
    wait_state(sender, "done", "failed")
    return sender, receiver, source, saved


@pytest.mark.parametrize("transport", ["webrtc", "relay"])
def test_browser_to_browser(
    context: BrowserContext, plane: ControlPlane, tmp_path: Path, transport: str
) -> None:
    """50 MiB; over WebRTC both pages make the data channel pre-negotiated on stream 0 (with
    the channel opened in band, Chromium dropped the receiver's first message about 1 time in
    200 here, and WebRTC was given up)."""
    pages = browser_to_browser(context, plane, tmp_path, transport, init_script=RECORD_CHANNELS)
    sender, receiver, source, saved = pages
    sent, received = state(sender), state(receiver)
    assert received["error"] is None and sent["error"] is None, (sent["error"], received["error"])
    assert (sent["transport"], received["transport"]) == (transport, transport)
    assert sha256_of(saved) == sha256_of(source)
    assert saved.stat().st_size == BIG
    # Two pages check the file with the block hash (WebCrypto per 4 MiB), as Python computes it.
    digest = sha256_4m(source.read_bytes())
    assert sent["result"]["files"] == [
        {"path": "payload.bin", "size": BIG, "sha256-4m": digest, "resumedFrom": 0}
    ]
    assert received["result"]["files"] == [
        {"path": "payload.bin", "size": BIG, "sha256-4m": digest}
    ]
    assert received["result"]["bytes"] == BIG
    channels = NEGOTIATED if transport == "webrtc" else []
    assert sender.evaluate("window.openpodChannels") == channels
    assert receiver.evaluate("window.openpodChannels") == channels
    if transport == "webrtc":  # both pages say "dtls": DTLS alone carries the records
        assert (records_went(sender), records_went(receiver)) == ("clear", "clear")
    rate = received["result"]["mbps"]
    print(f"\nbrowser -> browser over {transport}: {rate:.1f} MB/s")  # shown with -s


# A browser that cannot transfer a ReadableStream to a worker (as save.js probes): the
# receiving page then posts each chunk to the service worker over a MessagePort, counted in
# window.openpodPortChunks.
NO_STREAM_TRANSFER = """(() => {
  window.openpodPortChunks = 0;
  const post = MessagePort.prototype.postMessage;
  MessagePort.prototype.postMessage = function (message, transfer) {
    const list = Array.isArray(transfer) ? transfer : (transfer && transfer.transfer) || [];
    if (list.some((item) => item instanceof ReadableStream)) {
      throw new DOMException("a ReadableStream cannot be transferred here", "DataCloneError");
    }
    if (message && message.chunk) window.openpodPortChunks += 1;
    return post.call(this, message, transfer);
  };
})();"""


def test_a_browser_that_cannot_transfer_streams_saves_through_a_port(
    context: BrowserContext, plane: ControlPlane, tmp_path: Path
) -> None:
    """The service worker's other way in (save.js portWriter, sw.js streamFromPort): every
    chunk posted over a MessagePort, with the same queue depth, and the file saved whole."""
    size = 8 << 20
    sender, receiver, source, saved = browser_to_browser(
        context, plane, tmp_path, "webrtc", size, NO_STREAM_TRANSFER
    )
    sent, received = state(sender), state(receiver)
    assert received["error"] is None and sent["error"] is None, (sent["error"], received["error"])
    assert sha256_of(saved) == sha256_of(source)
    assert saved.stat().st_size == size
    chunks = receiver.evaluate("window.openpodPortChunks")
    assert chunks >= size // (256 * 1024), chunks  # every record's bytes went by the port


@pytest.mark.parametrize("sealing", ["sender", "receiver"])
def test_a_page_that_seals_webrtc_records_gets_them_sealed_both_ways(
    context: BrowserContext, plane: ControlPlane, tmp_path: Path, sealing: str
) -> None:
    """One page acts as a peer from before "dtls" (`?dtls=0`): both seal their records."""
    queries = ("dtls=0", "") if sealing == "sender" else ("", "dtls=0")
    sender, receiver, source, saved = browser_to_browser(
        context, plane, tmp_path, "webrtc", 2 << 20, RECORD_CHANNELS, queries=queries
    )
    sent, received = state(sender), state(receiver)
    assert received["error"] is None and sent["error"] is None, (sent["error"], received["error"])
    assert (sent["transport"], received["transport"]) == ("webrtc", "webrtc")
    assert sha256_of(saved) == sha256_of(source)
    assert (records_went(sender), records_went(receiver)) == ("sealed", "sealed")


GATHER = """async () => {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  for (const track of stream.getTracks()) track.stop();
  const pc = new RTCPeerConnection();
  pc.createDataChannel("probe");
  await pc.setLocalDescription();
  await new Promise((done) => {
    const check = () => pc.iceGatheringState === "complete" && done();
    pc.addEventListener("icegatheringstatechange", check);
    check();
  });
  const lines = pc.localDescription.sdp.split("\\r\\n");
  pc.close();
  return lines.filter((line) => line.startsWith("a=candidate:")).map((line) => line.split(" ")[4]);
}"""


def test_the_pages_webrtc_sees_only_loopback(context: BrowserContext, plane: ControlPlane) -> None:
    """Chromium runs where `lo` is the only interface (conftest.py): every host candidate it
    gathers is 127.0.0.1 or ::1, so a connection has one candidate pair to settle on and
    sends nothing outside 127.0.0.0/8 (on the host it would add eth0's addresses)."""
    addresses = open_page(context, plane).evaluate(GATHER)
    assert "127.0.0.1" in addresses
    assert set(addresses) <= {"127.0.0.1", "::1"}, addresses


def test_wrong_code_fails_cleanly_on_both_pages(
    context: BrowserContext, plane: ControlPlane, tmp_path: Path
) -> None:
    source = random_file(tmp_path / "small.bin", 1000)
    sender = open_page(context, plane)
    receiver = open_page(context, plane)
    code = offer(sender, source)
    nameplate, *words = code.split("-")
    wrong = "-".join([nameplate, *reversed(words)]) if words[0] != words[2] else code + "x"
    receiver.fill("#code-input", wrong)
    receiver.click("#receive-go")
    for page in (receiver, sender):
        hook = wait_state(page, "failed", "done")
        assert hook["state"] == "failed"
        assert hook["error"]["kind"] == "wrong-code"
        assert "Wrong code" in (page.text_content("#error") or "")
    # The sender burned the room: the right code is used up too.
    late = open_page(context, plane)
    late.fill("#code-input", code)
    late.click("#receive-go")
    hook = wait_state(late, "failed", "done")
    assert hook["error"]["kind"] in ("no-such-code", "code-used"), hook["error"]


def test_several_files_and_an_empty_one_arrive_as_downloads(
    context: BrowserContext, plane: ControlPlane, tmp_path: Path
) -> None:
    sources = [
        random_file(tmp_path / name, size)
        for name, size in (("a.bin", 300_000), ("empty.txt", 0), ("c.bin", 2_000_000))
    ]
    sender = open_page(context, plane)
    receiver = open_page(context, plane)
    downloads: list[Download] = []
    receiver.on("download", lambda download: downloads.append(download))
    sender.set_input_files("#pick", [str(path) for path in sources])
    sender.wait_for_function("window.openpodTransfer.code !== null")
    receiver.fill("#code-input", sender.evaluate("window.openpodTransfer.code"))
    receiver.click("#receive-go")
    received = wait_state(receiver, "done", "failed")
    assert received["error"] is None, received["error"]
    assert wait_state(sender, "done", "failed")["error"] is None
    saved = {}
    for download in downloads:
        target = tmp_path / "saved" / download.suggested_filename
        download.save_as(target)
        saved[download.suggested_filename] = sha256_of(target)
    assert saved == {path.name: sha256_of(path) for path in sources}
    assert [f["path"] for f in received["result"]["files"]] == ["a.bin", "empty.txt", "c.bin"]


def test_no_transport_in_common_fails_on_both_pages(
    context: BrowserContext, plane: ControlPlane, tmp_path: Path
) -> None:
    sender = open_page(context, plane, "relay")
    receiver = open_page(context, plane, "webrtc")
    receiver.fill("#code-input", offer(sender, random_file(tmp_path / "x.bin", 10)))
    receiver.click("#receive-go")
    for page in (sender, receiver):
        hook = wait_state(page, "failed", "done")
        assert hook["error"] == {
            "kind": "no-connect",
            "message": "No way to connect: tried nothing in common.",
        }
        assert "No way to connect" in (page.text_content("#error") or "")


def test_a_malformed_or_unknown_code_is_named_on_the_page(
    context: BrowserContext, plane: ControlPlane
) -> None:
    words = httpx.get(f"{plane.url}/transfer/words.json").json()["words"]
    receiver = open_page(context, plane)
    for typed, kind, shown in (
        (f"7-{words[0]}-{words[1]}", "bad-code", "That code is not valid"),
        (f"99999-{words[0]}-{words[1]}-{words[2]}", "no-such-code", "No such code"),
    ):
        receiver.fill("#code-input", typed)
        receiver.click("#receive-go")
        hook = wait_state(receiver, "failed", "done")
        assert hook["error"]["kind"] == kind, hook["error"]
        assert shown in (receiver.text_content("#error") or "")


def test_the_sender_waits_for_a_receiver_that_left_to_come_back(
    context: BrowserContext, plane: ControlPlane, tmp_path: Path
) -> None:
    """Closing the receiving tab mid-transfer does not end the code: the sender waits, and
    the same code then delivers the whole file to a new receiver."""
    source = random_file(tmp_path / "again.bin", 12 * 1024 * 1024)
    sender = open_page(context, plane)
    first = open_page(context, plane)
    code = offer(sender, source)
    first.fill("#code-input", code)
    first.click("#receive-go")
    first.wait_for_function("(window.openpodTransfer.progress || {done: 0}).done > 1e6")
    first.close()
    sender.wait_for_function("window.openpodTransfer.state === 'waiting'")
    assert "come back" in (sender.text_content("#state") or "")
    second = open_page(context, plane)
    second.fill("#code-input", code)
    download = click_for_download(second, "#receive-go", lambda: f"the sender: {state(sender)}")
    saved = tmp_path / "saved" / "again.bin"
    download.save_as(saved)
    assert wait_state(second, "done", "failed")["error"] is None
    assert wait_state(sender, "done", "failed")["error"] is None
    assert sha256_of(saved) == sha256_of(source)


# Every RTCDataChannel in the page loses the first message it receives.
LOSE_FIRST_MESSAGE = """(() => {
  const onmessage = Object.getOwnPropertyDescriptor(RTCDataChannel.prototype, "onmessage");
  Object.defineProperty(RTCDataChannel.prototype, "onmessage", {
    configurable: true,
    get() { return onmessage.get.call(this); },
    set(handler) {
      let lost = false;
      onmessage.set.call(this, (event) => { if (lost) handler(event); else lost = true; });
    },
  });
})();"""


def test_a_sender_that_misses_the_hello_takes_the_receiver_to_the_relay(
    context: BrowserContext, plane: ControlPlane, tmp_path: Path
) -> None:
    """The receiver's hello over WebRTC never reaches the sender, which gives WebRTC up after
    its hello wait and tries the relay; the receiver, which had said hello, follows it there
    instead of waiting on the abandoned channel."""
    pages = browser_to_browser(
        context, plane, tmp_path, None, 3 * 1024 * 1024, sender_script=LOSE_FIRST_MESSAGE
    )
    sender, receiver, source, saved = pages
    sent, received = state(sender), state(receiver)
    assert received["error"] is None and sent["error"] is None, (sent["error"], received["error"])
    assert (sent["transport"], received["transport"]) == ("relay", "relay")
    assert sha256_of(saved) == sha256_of(source)


def test_a_lost_hello_with_only_webrtc_fails_saying_why_on_both_pages(
    context: BrowserContext, plane: ControlPlane, tmp_path: Path
) -> None:
    """The same lost hello with WebRTC the only transport: each page fails and its message
    says what became of the attempt from where it stood."""
    sender = open_page(context, plane, "webrtc", init_script=LOSE_FIRST_MESSAGE)
    receiver = open_page(context, plane, "webrtc")
    receiver.fill("#code-input", offer(sender, random_file(tmp_path / "x.bin", 1000)))
    receiver.click("#receive-go")
    sent = wait_state(sender, "failed", "done")
    received = wait_state(receiver, "failed", "done")
    assert sent["error"] == {
        "kind": "no-connect",
        "message": "No way to connect: tried webrtc (the other side stopped answering).",
    }
    assert received["error"] == {
        "kind": "no-connect",
        "message": "No way to connect: tried webrtc (the sender never answered over it).",
    }


# The sender page's setRemoteDescription(answer) settles only after its data channel has
# received a message: the connection opens and the receiver's hello arrives first, as it
# now and then did under load.
LATE_ANSWER = """(() => {
  const firstMessage = new WeakMap();
  const create = RTCPeerConnection.prototype.createDataChannel;
  RTCPeerConnection.prototype.createDataChannel = function (...args) {
    const dc = create.apply(this, args);
    firstMessage.set(this, new Promise((got) => dc.addEventListener("message", got, { once: true })));
    return dc;
  };
  const setRemote = RTCPeerConnection.prototype.setRemoteDescription;
  RTCPeerConnection.prototype.setRemoteDescription = async function (description) {
    await setRemote.call(this, description);
    if (description.type === "answer" && firstMessage.has(this)) {
      await firstMessage.get(this);
      window.openpodLateAnswer = true;
    }
  };
})();"""


def test_a_hello_before_the_answer_is_applied_is_kept(
    context: BrowserContext, plane: ControlPlane, tmp_path: Path
) -> None:
    """The receiver's hello reaches the sender's data channel before the sender's page has
    seen its setRemoteDescription settle: the page listens from the channel's creation, so the
    hello is read and WebRTC carries the file (a page that listened only once the channel
    opened lost it, and with WebRTC the only transport both pages failed)."""
    pages = browser_to_browser(
        context, plane, tmp_path, "webrtc", 3 * 1024 * 1024, sender_script=LATE_ANSWER
    )
    sender, receiver, source, saved = pages
    sent, received = state(sender), state(receiver)
    assert received["error"] is None and sent["error"] is None, (sent["error"], received["error"])
    assert (sent["transport"], received["transport"]) == ("webrtc", "webrtc")
    assert sender.evaluate("window.openpodLateAnswer") is True
    assert sha256_of(saved) == sha256_of(source)


def test_a_record_altered_on_the_relay_is_an_integrity_failure(
    context: BrowserContext, plane: ControlPlane, tmp_path: Path
) -> None:
    """A hostile relay flips one bit: the receiver stops with the integrity error and tells
    the sender, and nothing is reported as received."""
    frames = {"seen": 0}

    def tamper(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        ws.on_message(lambda message: server.send(message))

        def to_page(message: str | bytes) -> None:
            if isinstance(message, bytes):
                frames["seen"] += 1
                if frames["seen"] == 3:  # after the manifest and the plan: the first file
                    message = bytes([message[0] ^ 0x01]) + message[1:]
            ws.send(message)

        server.on_message(to_page)

    sender = open_page(context, plane, "relay")
    receiver = open_page(context, plane, "relay")
    receiver.route_web_socket("**/transfer/relay?*", tamper)
    receiver.fill("#code-input", offer(sender, random_file(tmp_path / "x.bin", 1_000_000)))
    receiver.click("#receive-go")
    received = wait_state(receiver, "failed", "done")
    assert received["error"]["kind"] == "integrity", received["error"]
    assert "altered in transit" in (receiver.text_content("#error") or "")
    sent = wait_state(sender, "failed", "done")
    assert sent["state"] == "failed" and "altered in transit" in sent["error"]["message"]
    assert frames["seen"] >= 3


VECTOR_CHECKS = """async (vectors) => {
  const c = await import("/transfer/static/crypto.js");
  const h = await import("/transfer/static/hashes.js");
  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const unhex = (text) => Uint8Array.from(text.match(/../g) || [], (h) => parseInt(h, 16));
  const wrong = [];
  let checks = 0;
  const same = (what, got, want) => { checks += 1; if (got !== want) wrong.push({ what, got, want }); };
  for (const v of vectors.cpace) {
    const [prs, ci, sid] = [unhex(v.prs), unhex(v.ci), unhex(v.sid)];
    const a = await c.cpaceStart({ prs, sid, ci, initiator: true, ad: unhex(v.ada), scalar: unhex(v.ya) });
    const b = await c.cpaceStart({ prs, sid, ci, initiator: false, ad: unhex(v.adb), scalar: unhex(v.yb) });
    same(`${v.name} Ya`, hex(a.share), v.share_a);
    same(`${v.name} ISK`, hex(await a.finish(b.share, unhex(v.adb))), v.isk);
    same(`${v.name} ISK (responder)`, hex(await b.finish(a.share, unhex(v.ada))), v.isk);
  }
  const s = vectors.session;
  const keys = await c.deriveSessionKeys(unhex(s.isk), unhex(s.sid), unhex(s.ya), unhex(s.yb));
  same("tag sender", hex(await keys.confirmTag("sender")), s.tag_sender);
  same("tag receiver", hex(await keys.confirmTag("receiver")), s.tag_receiver);
  const sealers = new Map();
  const openers = new Map();
  for (const r of vectors.records) {
    if (!sealers.has(r.key)) {
      const [use, role, transport] = r.key.split(" ");
      const key = await (use === "signal" ? keys.signalKey(role) : keys.dataKey(role, transport));
      sealers.set(r.key, new c.Sealer(key));
      openers.set(r.key, new c.Opener(key));
    }
    same(`seal ${r.key} #${r.seq}`, hex(await sealers.get(r.key).seal(unhex(r.plaintext))), r.record);
    same(`open ${r.key} #${r.seq}`, hex(await openers.get(r.key).open(unhex(r.record))), r.plaintext);
  }
  for (const v of vectors.sha256) {
    let data;
    if (v.text !== undefined) data = new TextEncoder().encode(v.text);
    else data = Uint8Array.from({ length: v.pattern_length }, (_, i) => i % 251);
    same(`sha256 ${v.text ?? v.pattern_length}`, new c.Sha256().update(data).digestHex(), v.digest);
  }
  for (const v of vectors.sha256_4m) { // Chromium's WebCrypto, fed the page's record size
    const data = Uint8Array.from({ length: v.pattern_length }, (_, i) => i % 251);
    const hash = h.fileHash(h.BLOCKS);
    for (let at = 0; at < data.length; at += 262144) {
      const wait = hash.update(data.subarray(at, at + 262144));
      if (wait) await wait;
    }
    same(`sha256-4m ${v.pattern_length}`, await hash.hex(), v.digest);
  }
  for (const v of vectors.codes.filter((v) => !v.error)) {
    same(`code ${v.input}`, c.parseCode(v.input, vectors.words).text, v.text);
  }
  return { checks, wrong };
}"""


def test_crypto_js_computes_the_python_vectors_in_chromium(
    context: BrowserContext, plane: ControlPlane
) -> None:
    """The browser's CPace, key schedule, records, SHA-256 and block hash equal what Python
    computes."""
    vectors = json.loads(VECTORS.read_text())
    page = open_page(context, plane)
    outcome = page.evaluate(VECTOR_CHECKS, vectors)
    assert outcome["wrong"] == []
    expected = (
        3 * len(vectors["cpace"])
        + 2
        + 2 * len(vectors["records"])
        + len(vectors["sha256"])
        + len(vectors["sha256_4m"])
        + sum(1 for v in vectors["codes"] if not v.get("error"))
    )
    assert outcome["checks"] == expected > 20
