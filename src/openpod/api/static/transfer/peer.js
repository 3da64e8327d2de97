// The browser side of `openpod send`/`receive` (docs/transfer.md): from a code to a sealed
// record channel, then the sender's or the receiver's part of the transfer.
//
// Both sides meet in a signaling room named by the nameplate, run CPace with the whole code,
// confirm the key (a mismatch is "wrong code"; the sender then burns the room), agree on a
// transport over sealed signaling (WebRTC first, then the relay), and move the files as
// sealed records (on WebRTC, when both sides say so, as they are inside DTLS, whose peer the
// sealed SDPs pin). The server sees only the nameplate and opaque, sealed bytes.

import {
  b64decode, b64encode, hexencode, ClearOpener, ClearSealer, cpaceStart, deriveSessionKeys,
  IntegrityError, newCode, Opener, parseCode, PakeError, Sealer,
} from "./crypto.js";
import { RecordChannel, relayConnect, webrtcAnswer, webrtcOffer } from "./channels.js";
import { receiveFiles, sendFiles } from "./files.js";
import { SignalClient, TransferError } from "./signal.js";

export { TransferError } from "./signal.js";

const CI = "openpod-transfer/1";
const ORDER = ["direct", "webrtc", "relay"];
const BROWSER_CAN = ["webrtc", "relay"];
const HELLO_MS = 10000;
const CONNECT_MS = 10000;
// Failures of one transport attempt: the next transport is tried.
const TRANSPORT_FAILURES = new Set(["connect", "timeout", "closed", "integrity", "protocol"]);
// Failures after which the sender waits for the receiver to come back.
const RECEIVER_GONE = new Set(["peer-left", "closed"]);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const peerOf = (role) => (role === "sender" ? "receiver" : "sender");

function hexBytes(hex) {
  if (!/^[0-9a-f]{32}$/i.test(hex)) throw new TransferError("signal", "The server sent a malformed room id.");
  return Uint8Array.from(hex.match(/../g), (pair) => parseInt(pair, 16));
}

function b64field(body, name) {
  try {
    if (typeof body[name] !== "string") throw new Error();
    return b64decode(body[name]);
  } catch (_) {
    throw new TransferError("protocol", `The other side sent no valid '${name}'.`);
  }
}

const WRONG_CODE = {
  sender: "Wrong code: the receiver typed a different code. This code is now used up; send again for a new one.",
  receiver: "Wrong code: it does not match the sender's. Each code allows one try: ask the sender for a new one.",
};

/** The next body of handshake `s`; bodies of another handshake are dropped. */
async function recvFor(signal, s) {
  for (;;) {
    const body = await signal.recv();
    if (body && body.s === s) return body;
  }
}

/** One side's keys and sealed signaling for one run of the PAKE. */
class Session {
  constructor(role, signal, roomHex, s, keys, sealer, opener) {
    Object.assign(this, { role, signal, roomHex, s, keys, sealer, opener });
  }

  static async exchange(signal, code, roomHex, role) {
    const sid = hexBytes(roomHex);
    const pake = await cpaceStart({
      prs: encoder.encode(code.text), sid, ci: encoder.encode(CI),
      initiator: role === "sender", ad: encoder.encode(role),
    });
    // The receiver speaks first and picks the handshake's id `s`; bodies with another are stale.
    let s;
    let peerShare;
    if (role === "receiver") {
      s = hexencode(crypto.getRandomValues(new Uint8Array(8)));
      signal.send({ s, pake: b64encode(pake.share) });
      peerShare = b64field(await recvFor(signal, s), "pake");
    } else {
      let body;
      do body = await signal.recv(); while (typeof body.s !== "string" || !("pake" in body));
      s = body.s.slice(0, 64);
      peerShare = b64field(body, "pake");
      signal.send({ s, pake: b64encode(pake.share) });
    }
    let isk;
    try {
      isk = await pake.finish(peerShare, encoder.encode(peerOf(role)));
    } catch (error) {
      if (error instanceof PakeError) throw new TransferError("wrong-code", WRONG_CODE[role]);
      throw error;
    }
    const [ya, yb] = role === "sender" ? [pake.share, peerShare] : [peerShare, pake.share];
    const keys = await deriveSessionKeys(isk, sid, ya, yb);
    signal.send({ s, confirm: b64encode(await keys.confirmTag(role)) });
    try {
      await keys.checkConfirm(peerOf(role), b64field(await recvFor(signal, s), "confirm"));
    } catch (error) {
      if (!(error instanceof IntegrityError)) throw error;
      if (role === "sender") signal.burn();
      throw new TransferError("wrong-code", WRONG_CODE[role]);
    }
    const sealer = new Sealer(await keys.signalKey(role));
    const opener = new Opener(await keys.signalKey(peerOf(role)));
    return new Session(role, signal, roomHex, s, keys, sealer, opener);
  }

  async send(message) {
    const sealed = await this.sealer.seal(encoder.encode(JSON.stringify(message)));
    this.signal.send({ s: this.s, sealed: b64encode(sealed) });
  }

  async recv() {
    const body = await recvFor(this.signal, this.s);
    if (typeof body.sealed !== "string") {
      throw new TransferError("protocol", "The other side sent an unsealed message after the key exchange.");
    }
    let message;
    try {
      message = JSON.parse(decoder.decode(await this.opener.open(b64decode(body.sealed))));
    } catch (_) {
      throw new TransferError("integrity", "A signaling message was altered in transit.");
    }
    if (!message || typeof message.t !== "string") {
      throw new TransferError("protocol", "The other side sent a malformed negotiation message.");
    }
    if (message.t === "error") throw new TransferError("peer", `The other side stopped: ${message.message}`);
    return message;
  }

  async channel(transport, name) {
    if (name === "webrtc" && this.dtls) {
      return new RecordChannel(transport, new ClearSealer(), new ClearOpener(), name);
    }
    const sealer = new Sealer(await this.keys.dataKey(this.role, name));
    const opener = new Opener(await this.keys.dataKey(peerOf(this.role), name));
    return new RecordChannel(transport, sealer, opener, name);
  }

  /** Both sides say what they can; the ones both can, in the protocol's order. Both say
   * they can pre-negotiate the WebRTC data channel: then `this.negotiated` (older peers do
   * not say so and get the channel opened in band). Both say their WebRTC records may go in
   * the clear inside DTLS (`dtls`: false here acts as a peer from before that): then
   * `this.dtls`. */
  async common(can, dtls) {
    const mine = { t: "transports", can, negotiated: true };
    if (dtls) mine.dtls = true;
    await this.send(mine);
    const theirs = await this.recv();
    if (theirs.t !== "transports" || !Array.isArray(theirs.can)) {
      throw new TransferError("protocol", "The other side did not say how it can connect.");
    }
    this.negotiated = theirs.negotiated === true;
    this.dtls = dtls && theirs.dtls === true;
    return ORDER.filter((t) => can.includes(t) && theirs.can.includes(t));
  }
}

function isTransportFailure(error) {
  // WebRTC reports a bad SDP or a peer connection it cannot make as a DOMException.
  return (error instanceof TransferError && TRANSPORT_FAILURES.has(error.kind)) || error instanceof DOMException;
}

/** `attempts` is [{transport, why}]: what each attempt ended with, when known here. */
function noWay(attempts) {
  const tried = attempts.map(({ transport, why }) => (why ? `${transport} (${why})` : transport));
  return new TransferError("no-connect", `No way to connect: tried ${tried.join(", ") || "nothing in common"}.`);
}

/** An error's message as a clause: "The relay closed." -> "the relay closed". */
function clause(message) {
  const text = String(message || "").replace(/\.$/, "");
  return text.charAt(0).toLowerCase() + text.slice(1);
}

async function tried(session, transport) {
  const reply = await session.recv();
  if (reply.t !== "tried" || reply.transport !== transport) {
    throw new TransferError("protocol", `The other side answered '${reply.t}' to a ${transport} attempt.`);
  }
  if (reply.ok !== true) throw new TransferError("connect", `The other side could not: ${String(reply.message || "no reason given").slice(0, 200)}`);
  return reply;
}

/** The sender tries each transport both sides can until the receiver's hello arrives. */
async function senderConnect(session, can, iceServers, dtls) {
  const attempted = [];
  for (const transport of await session.common(can, dtls)) {
    const tally = { transport, why: null };
    attempted.push(tally);
    let attempt = null;
    try {
      if (transport === "webrtc") {
        attempt = await webrtcOffer(iceServers, session.negotiated);
        await session.send({ t: "try", transport, sdp: offered(attempt.sdp) });
        const reply = await tried(session, transport);
        const channel = await session.channel(await attempt.accept(String(reply.sdp || ""), CONNECT_MS), transport);
        attempt = channel;
        await channel.expect("hello", HELLO_MS);
        return channel;
      } else if (transport === "relay") {
        await session.send({ t: "try", transport });
        await tried(session, transport);
        attempt = await session.channel(await relayConnect(session.roomHex, "sender", HELLO_MS), transport);
        await attempt.expect("hello", HELLO_MS);
        return attempt;
      }
    } catch (error) {
      if (!isTransportFailure(error)) throw error;
      tally.why = clause(error.message);
    }
    if (attempt) attempt.close();
    await session.send({ t: "abandon", transport });
  }
  throw noWay(attempted);
}

/** The receiver answers each `try` and says hello on the first channel that opens. */
async function receiverConnect(session, can, iceServers, dtls) {
  const common = await session.common(can, dtls);
  if (!common.length) throw noWay([]);
  const attempted = []; // [{transport, why}]
  let current = null; // {tally, pending: Promise<{channel}|{failed}>, close()}
  let next = null;
  for (;;) {
    if (!next) next = session.recv().then((message) => ({ message }));
    const waits = [next];
    if (current) waits.push(current.pending);
    const event = await Promise.race(waits);
    if (event.channel) {
      // Kept only once the sender's first record arrives on it: a sender that missed the
      // hello (it waits HELLO_MS) abandons this transport instead and tries the next.
      await event.channel.sendJson({ t: "hello", v: 1 });
      await Promise.race([event.channel.arrived(), next]);
      if (event.channel.pending) {
        next.catch(() => {}); // a signaling failure after this is the transfer's business
        return event.channel;
      }
      event.channel.close();
      current.tally.why = "the sender never answered over it";
      current = null; // the abandon (already here or coming) is read by the loop
      continue;
    }
    if (event.failed) {
      current.tally.why = clause(event.failed.message);
      current.close(); // a WebRTC attempt that did not open lets its connection go
      current = null; // the sender gives up on it after HELLO_MS and says abandon
      continue;
    }
    next = null;
    const message = event.message;
    if (message.t === "try") {
      if (current) current.close();
      current = null;
      const tally = { transport: String(message.transport).slice(0, 20), why: null };
      attempted.push(tally);
      current = await startAttempt(session, message, iceServers, can, tally);
    } else if (message.t === "abandon") {
      if (current) current.close();
      current = null;
      if (message.transport === common[common.length - 1]) throw noWay(attempted);
    } else {
      throw new TransferError("protocol", `Unexpected '${message.t}' while connecting.`);
    }
  }
}

async function startAttempt(session, message, iceServers, can, tally) {
  const transport = message.transport;
  let opening;
  let closer = () => {};
  try {
    if (!can.includes(transport)) throw new TransferError("connect", `${transport} is not offered here`);
    if (transport === "webrtc") {
      const answer = await webrtcAnswer(String(message.sdp || ""), iceServers, session.negotiated);
      closer = () => answer.close();
      await session.send({ t: "tried", transport, ok: true, sdp: offered(answer.sdp) });
      opening = answer.open(CONNECT_MS);
    } else {
      await session.send({ t: "tried", transport, ok: true });
      opening = relayConnect(session.roomHex, "receiver", HELLO_MS);
    }
  } catch (error) {
    if (!isTransportFailure(error)) throw error;
    tally.why = clause(error.message);
    await session.send({ t: "tried", transport, ok: false, message: error.message });
    return null;
  }
  let channel = null;
  const pending = opening.then(
    async (carrier) => {
      channel = await session.channel(carrier, transport);
      return { channel };
    },
    (error) => ({ failed: error }),
  );
  const close = () => {
    if (channel) return channel.close();
    closer(); // a WebRTC attempt still opening stops now
    opening.then((carrier) => carrier.close(), () => {});
  };
  return { tally, pending, close };
}

// `?loopback=1` (tests: both ends on one machine) also offers only 127.0.0.1 candidates, so
// the peer's connectivity checks go nowhere else (the CLI's --loopback does the same).
let loopbackOnly = false;

function offered(sdp) {
  if (!loopbackOnly) return sdp;
  return sdp
    .split("\r\n")
    .filter((line) => !line.startsWith("a=candidate:") || line.split(" ")[4] === "127.0.0.1")
    .join("\r\n");
}

async function loopbackCandidates() {
  // Chromium gathers no host candidate on loopback until the page has used a media device.
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  for (const track of stream.getTracks()) track.stop();
}

async function setup(options) {
  const [words, config] = await Promise.all([
    fetch("/transfer/words.json").then((r) => r.json()),
    fetch("/transfer/config").then((r) => r.json()),
  ]);
  loopbackOnly = Boolean(options.loopback);
  if (loopbackOnly) await loopbackCandidates();
  const can = options.transport ? [options.transport] : BROWSER_CAN;
  // `options.dtls === false` seals WebRTC records as peers from before "dtls" do (tests)
  return { words: words.words, iceServers: config.iceServers || [], can, dtls: options.dtls !== false };
}

/** Send `entries` ([{file, path}]) and `dirs`; `on.code(text)` shows the code to the user.
 * A receiver that leaves before the end may come back with the same code (a CLI receiver
 * resumes); a wrong code ends the code for good. */
export async function send(entries, dirs, on, options = {}) {
  const { words, iceServers, can, dtls } = await setup(options);
  const signal = await SignalClient.connect();
  let channel = null;
  signal.onPeerLeft = () => {
    signal.interrupt(new TransferError("peer-left", "The receiver left."));
    if (channel) channel.close();
  };
  try {
    const room = await signal.allocate();
    const code = newCode(String(room.nameplate), words);
    on.code(code.text, room.expires_in);
    for (;;) {
      try {
        const session = await Session.exchange(signal, code, room.room, "sender");
        on.state("connecting");
        channel = await senderConnect(session, can, iceServers, dtls);
        on.state("transferring", channel.name);
        return await sendFiles(channel, entries, dirs, on.progress);
      } catch (error) {
        if (!(error instanceof TransferError) || !RECEIVER_GONE.has(error.kind) || signal.failure) throw error;
        on.state("waiting", null, "The receiver left. Waiting for it to come back with the same code…");
      } finally {
        if (channel) channel.close();
        channel = null;
      }
    }
  } finally {
    signal.close();
  }
}

/** Receive the files of `codeText`, each written to `sink.open(path, size)`. */
export async function receive(codeText, sink, on, options = {}) {
  const { words, iceServers, can, dtls } = await setup(options);
  const code = parseCode(codeText, words);
  const signal = await SignalClient.connect();
  try {
    signal.onPeerLeft = () => signal.fail(new TransferError("peer-left", "The sender left."));
    const room = await signal.claim(code.nameplate);
    on.state("connecting");
    const session = await Session.exchange(signal, code, room.room, "receiver");
    const channel = await receiverConnect(session, can, iceServers, dtls);
    on.state("transferring", channel.name);
    try {
      return await receiveFiles(channel, sink, on.progress);
    } finally {
      channel.close();
    }
  } finally {
    signal.close();
  }
}
