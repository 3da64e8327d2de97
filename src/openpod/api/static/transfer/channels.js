// The two ways a browser moves records (docs/transfer.md "Transports"): a WebRTC data channel
// straight to the other side, or the control plane's relay WebSocket when nothing else
// connects. Both are wrapped in a RecordChannel that seals every record with the session's
// per-transport key (on WebRTC, when both sides said so, leaves it to DTLS), keeps them in
// order, and slows the sender down when the pipe is full.

import { IntegrityError } from "./crypto.js";
import { TransferError, wsUrl } from "./signal.js";

const RECORD_OVERHEAD = 17; // the type byte + the AES-GCM tag of a sealed record (relay)
const WEBRTC_MAX = 262144; // Chromium's and aiortc's maxMessageSize: fewer, larger messages
const RELAY_DATA = 256 * 1024;
const HIGH_WATER = 4 * 1024 * 1024; // relay: bytes queued in the browser before we wait
const LOW_WATER = 1024 * 1024;
// WebRTC queues deeper: the sending page stalls now and then (reading the file, hashing, GC)
// and a 4 MiB queue ran dry meanwhile (page to page in Chromium, 18 runs: 12/6 MiB beat
// 4/1 MiB in 13, median +2 MB/s, bench/RESULTS.md). Chromium refuses a send once 16 MiB are
// queued ("send queue is full"); the high mark leaves room for the record sent past it.
const DC_HIGH_WATER = 12 * 1024 * 1024;
const DC_LOW_WATER = 6 * 1024 * 1024;
const SEALS_IN_FLIGHT = 16;
const GATHER_MS = 5000;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Records in, records out, whatever carries them; buffers what arrives before anyone reads. */
class Transport {
  constructor(maxRecord) {
    this.maxRecord = maxRecord;
    this.handler = null;
    this.early = [];
    this.closed = null;
    this.onClose = null;
  }

  deliver(buffer) {
    if (this.handler) this.handler(new Uint8Array(buffer));
    else this.early.push(new Uint8Array(buffer));
  }

  listen(handler, onClose) {
    this.handler = handler;
    this.onClose = onClose;
    for (const record of this.early.splice(0)) handler(record);
    if (this.closed) onClose(this.closed);
  }

  ended(reason) {
    if (this.closed) return;
    this.closed = reason;
    if (this.onClose) this.onClose(reason);
  }
}

/** Made with the data channel, not once it opens (as the CLI does): the channel may open and
 * the peer's first message arrive before our setRemoteDescription promise settles (seen
 * under load: the receiver's hello came in the same millisecond as `open`), and a message
 * nobody listens to is gone. */
class DataChannelTransport extends Transport {
  constructor(pc, dc) {
    super(WEBRTC_MAX);
    this.pc = pc;
    this.dc = dc;
    dc.binaryType = "arraybuffer";
    dc.bufferedAmountLowThreshold = DC_LOW_WATER;
    dc.onmessage = (event) => this.deliver(event.data);
    dc.onclose = () => this.ended("the WebRTC data channel closed");
  }

  /** Once open: records no larger than the remote's maxMessageSize (from its SDP). */
  opened() {
    const remote = this.pc.sctp && this.pc.sctp.maxMessageSize ? this.pc.sctp.maxMessageSize : WEBRTC_MAX;
    this.maxRecord = Math.min(remote, WEBRTC_MAX);
    return this;
  }

  sendRaw(record) {
    this.dc.send(record);
  }

  writable() {
    if (this.dc.bufferedAmount <= DC_HIGH_WATER || this.dc.readyState !== "open") return null;
    return new Promise((resolve) => {
      this.dc.addEventListener("bufferedamountlow", resolve, { once: true });
      this.dc.addEventListener("close", resolve, { once: true });
    });
  }

  close() {
    this.dc.close();
    this.pc.close();
  }
}

class RelayTransport extends Transport {
  constructor(ws) {
    super(RELAY_DATA + RECORD_OVERHEAD);
    this.ws = ws;
    ws.onmessage = (event) => {
      if (typeof event.data !== "string") this.deliver(event.data);
    };
    ws.onclose = () => this.ended("the relay connection closed");
  }

  sendRaw(record) {
    this.ws.send(record);
  }

  writable() {
    if (this.ws.bufferedAmount <= HIGH_WATER || this.ws.readyState !== WebSocket.OPEN) return null;
    return new Promise((resolve) => {
      const poll = () => (this.ws.bufferedAmount <= LOW_WATER || this.ws.readyState !== WebSocket.OPEN
        ? resolve() : setTimeout(poll, 2));
      setTimeout(poll, 2);
    });
  }

  close() {
    this.ws.close();
  }
}

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, GATHER_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

function opened(dc, ms) {
  if (dc.readyState === "open") return Promise.resolve(dc);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new TransferError("connect", "The WebRTC connection did not open.")), ms);
    dc.addEventListener("open", () => { clearTimeout(timer); resolve(dc); }, { once: true });
    dc.addEventListener("close", () => { clearTimeout(timer); reject(new TransferError("connect", "The WebRTC connection closed.")); }, { once: true });
  });
}

/** The transfer's one ordered, reliable channel. Pre-negotiated on stream 0 when both sides
 * said they can: that skips the in-band open handshake, after which Chromium now and then
 * (about 1 in 200 here) dropped the first message the answering side sent - the receiver's
 * hello - and the transfer gave WebRTC up. */
function dataChannel(pc, negotiated) {
  return pc.createDataChannel("openpod", negotiated ? { ordered: true, negotiated: true, id: 0 } : { ordered: true });
}

/** The sender's side of WebRTC: an offer with all its candidates, then the answer. */
export async function webrtcOffer(iceServers, negotiated) {
  const pc = new RTCPeerConnection({ iceServers });
  const transport = new DataChannelTransport(pc, dataChannel(pc, negotiated));
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  return {
    sdp: pc.localDescription.sdp,
    async accept(answerSdp, ms) {
      await pc.setRemoteDescription({ type: "answer", sdp: answerSdp });
      await opened(transport.dc, ms);
      return transport.opened();
    },
    close() { pc.close(); },
  };
}

/** The receiver's side of WebRTC: the answer to `offerSdp`, then the channel (ours too when
 * it is pre-negotiated, else the one the sender opens). */
export async function webrtcAnswer(offerSdp, iceServers, negotiated) {
  const pc = new RTCPeerConnection({ iceServers });
  const channel = negotiated
    ? Promise.resolve(new DataChannelTransport(pc, dataChannel(pc, true)))
    : new Promise((resolve) => { pc.ondatachannel = (event) => resolve(new DataChannelTransport(pc, event.channel)); });
  await pc.setRemoteDescription({ type: "offer", sdp: offerSdp });
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered(pc);
  return {
    sdp: pc.localDescription.sdp,
    async open(ms) {
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new TransferError("connect", "The WebRTC connection did not open.")), ms);
      });
      try {
        const transport = await Promise.race([channel, timeout]);
        await opened(transport.dc, ms);
        return transport.opened();
      } finally {
        clearTimeout(timer);
      }
    },
    close() { pc.close(); },
  };
}

/** The relay WebSocket for `room` (hex), resolved once the server says both sides are there. */
export function relayConnect(room, side, ms) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(`/transfer/relay?room=${room}&side=${side}`));
    ws.binaryType = "arraybuffer";
    const fail = (why) => { clearTimeout(timer); ws.close(); reject(new TransferError("connect", why)); };
    const timer = setTimeout(() => fail("The relay did not pair us in time."), ms);
    ws.onerror = () => fail("Cannot reach the relay.");
    ws.onclose = () => fail("The relay closed the connection.");
    ws.onmessage = (event) => {
      if (typeof event.data !== "string") return;
      const frame = JSON.parse(event.data);
      if (frame.op === "paired") {
        clearTimeout(timer);
        ws.onerror = null;
        resolve(new RelayTransport(ws));
      } else if (frame.op === "error") {
        fail(`The relay refused: ${frame.message || frame.code}`);
      }
    };
  });
}

function concat(type, body) {
  const out = new Uint8Array(1 + body.length);
  out[0] = type;
  out.set(body, 1);
  return out;
}

/** Sealed, ordered records over a transport; `recv` yields {json} or {data}. */
export class RecordChannel {
  constructor(transport, sealer, opener, name) {
    this.transport = transport;
    this.name = name;
    this.sealer = sealer;
    this.opener = opener;
    this.maxData = transport.maxRecord - 1 - sealer.overhead; // the type byte, the tag if any
    this.outgoing = [];      // seal promises (clear records as they are), in seq order
    this.pumping = null;
    this.roomWaiters = [];
    this.incoming = [];      // open promises, in seq order
    this.readers = [];
    this.end = null;
    this.failure = null;
    this.endWaiters = [];
    this.arrivalWaiters = [];
    transport.listen((record) => this._arrived(record), (why) => this._ended(why));
  }

  _arrived(record) {
    const result = this.opener.open(record).then(
      (plain) => ({ plain }),
      (error) => ({ error: error instanceof IntegrityError
        ? new TransferError("integrity", "Data was altered in transit (integrity check failed).") : error }),
    );
    const reader = this.readers.shift();
    if (reader) reader.resolve(result);
    else this.incoming.push(result);
    for (const waiter of this.arrivalWaiters.splice(0)) waiter();
  }

  _ended(why) {
    if (this.end) return;
    this.end = new TransferError("closed", `The connection closed (${why}).`);
    for (const reader of this.readers.splice(0)) reader.resolve(Promise.resolve({ error: this.end }));
    for (const waiter of this.roomWaiters.splice(0)) waiter();
    for (const waiter of this.endWaiters.splice(0)) waiter();
    for (const waiter of this.arrivalWaiters.splice(0)) waiter();
  }

  /** Resolves once a record waits to be read or the channel has ended; reads nothing. */
  arrived() {
    if (this.incoming.length || this.end) return Promise.resolve();
    return new Promise((resolve) => this.arrivalWaiters.push(resolve));
  }

  /** True when a record waits to be read. */
  get pending() {
    return this.incoming.length > 0;
  }

  /** The next message: {json: object} or {data: Uint8Array}; rejects after `ms` without one. */
  async recv(ms) {
    let next;
    if (this.incoming.length) next = this.incoming.shift();
    else if (this.end) throw this.end;
    else next = new Promise((resolve) => this.readers.push({ resolve }));
    let timer;
    if (ms) {
      const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve({ error: new TransferError("timeout", "The other side stopped answering.") }), ms); });
      next = Promise.race([next, timeout]);
    }
    const { plain, error } = await next;
    clearTimeout(timer);
    if (error) throw error;
    if (plain[0] === 0x44) return { data: plain.subarray(1) };
    if (plain[0] === 0x4a) {
      const json = JSON.parse(decoder.decode(plain.subarray(1)));
      if (json.t === "error") throw new TransferError("peer", `The other side stopped: ${json.message || "error"}`);
      return { json };
    }
    throw new TransferError("protocol", "The other side sent a record of an unknown type.");
  }

  /** The next control message; it must be of type `t`. */
  async expect(t, ms) {
    const message = await this.recv(ms);
    if (!message.json || message.json.t !== t) {
      const got = message.json ? message.json.t : "file data";
      throw new TransferError("protocol", `Expected '${t}' from the other side, got '${got}'.`);
    }
    return message.json;
  }

  sendJson(message) {
    return this._send(concat(0x4a, encoder.encode(JSON.stringify(message))));
  }

  sendData(bytes) {
    return this._send(concat(0x44, bytes));
  }

  /** Seal now (the seq is taken at the call), send in order; resolves when there is room. */
  _send(plaintext) {
    if (this.end) return Promise.reject(this.end);
    if (this.failure) return Promise.reject(this.failure);
    this.outgoing.push(this.sealer.seal(plaintext));
    if (!this.pumping) this.pumping = this._pump();
    if (this.outgoing.length < SEALS_IN_FLIGHT) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  async _pump() {
    try {
      while (this.outgoing.length && !this.end) {
        const record = await this.outgoing[0];
        this.outgoing.shift();
        this.transport.sendRaw(record);
        if (this.outgoing.length < SEALS_IN_FLIGHT) {
          for (const waiter of this.roomWaiters.splice(0)) waiter();
        }
        const wait = this.transport.writable();
        if (wait) await wait;
      }
    } catch (error) {
      this.failure = error instanceof TransferError ? error : new TransferError("closed", `Sending failed: ${error.message}`);
      for (const waiter of this.roomWaiters.splice(0)) waiter();
    } finally {
      this.pumping = null;
    }
  }

  /** Resolves once every record handed to send has gone to the transport. */
  async flush() {
    while (this.pumping) await this.pumping;
    if (this.failure) throw this.failure;
    if (this.end) throw this.end;
  }

  /** Resolves when the other side has closed the channel, or after `ms`. */
  ended(ms) {
    if (this.end) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.endWaiters.push(() => { clearTimeout(timer); resolve(); });
    });
  }

  close() {
    this.transport.close();
    this._ended("closed here");
  }
}
