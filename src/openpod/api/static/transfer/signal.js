// Signaling for /transfer: a WebSocket to the control plane's /transfer/signal (docs/transfer.md).
//
// The server only pairs two peers in a room named by the nameplate and forwards opaque
// bodies; it never sees the code's words. This module turns its JSON frames into promises:
// `request` for allocate/claim answers, `recv` for the next body from the peer, and every
// server error or a peer leaving becomes a TransferError the page can show.

/** A failure the page shows as is; `kind` lets the page and tests tell failures apart. */
export class TransferError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = "TransferError";
    this.kind = kind;
  }
}

const SERVER_ERRORS = {
  "no-such-code": ["no-such-code", "No such code: check it, or ask the sender for a new one (codes expire and work once)."],
  "code-in-use": ["code-in-use", "This code is already being used by another receiver."],
  burned: ["code-used", "This code was already used (or a wrong code was tried with it). Ask the sender for a new code."],
  expired: ["expired", "The code expired. Ask the sender for a new one."],
  "too-large": ["signal", "A signaling message was too large."],
  "rate-limited": ["signal", "Too many messages: the server slowed this session down. Try again."],
  "too-many-rooms": ["signal", "The server has too many open transfers right now. Try again later."],
  "bad-request": ["signal", "The server did not understand a signaling message."],
  "not-in-room": ["signal", "The signaling room is gone."],
};

/** The TransferError for a server `{"op":"error"}` frame. */
export function serverError(frame) {
  const [kind, message] = SERVER_ERRORS[frame.code] || ["signal", `Signaling error: ${frame.message || frame.code}`];
  return new TransferError(kind, message);
}

/** The ws:// or wss:// URL of `path` on the page's own server. */
export function wsUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

export class SignalClient {
  /** Open the signaling socket; resolves once it is connected. */
  static connect(url = wsUrl("/transfer/signal")) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.onopen = () => resolve(new SignalClient(ws));
      ws.onerror = () => reject(new TransferError("signal-lost", "Cannot reach the openpod server for signaling."));
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.bodies = [];      // peer messages not yet asked for
    this.waiters = [];     // pending recv() calls: {resolve, reject}
    this.answer = null;    // a pending request(): {op, resolve, reject}
    this.failure = null;   // once set, every later call fails with it
    this.onPeerJoined = null;
    this.onPeerLeft = null;
    this.closing = false;
    ws.onmessage = (event) => this._frame(event.data);
    ws.onclose = () => this._fail(this.closing ? new TransferError("closed", "Signaling closed.")
      : new TransferError("signal-lost", "Lost the connection to the openpod server."));
  }

  _frame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (_) {
      return;
    }
    if (frame.op === "message") {
      const waiter = this.waiters.shift();
      if (waiter) waiter.resolve(frame.body);
      else this.bodies.push(frame.body);
    } else if (frame.op === "error") {
      this._fail(serverError(frame));
    } else if (frame.op === "peer-joined") {
      if (this.onPeerJoined) this.onPeerJoined();
    } else if (frame.op === "peer-left") {
      if (this.onPeerLeft) this.onPeerLeft();
      else this._fail(new TransferError("peer-left", "The other side left."));
    } else if (this.answer && frame.op === this.answer.op) {
      const answer = this.answer;
      this.answer = null;
      answer.resolve(frame);
    }
  }

  /** Fail every pending and future call with `error` (the first failure wins). */
  _fail(error) {
    if (this.failure) return;
    this.failure = error;
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
    if (this.answer) this.answer.reject(error);
    this.answer = null;
  }

  fail(error) {
    this._fail(error);
  }

  /** The peer left but the room stays (the sender waits for a receiver to come back):
   * pending `recv` calls fail with `error`, and what the departed peer sent is dropped. */
  interrupt(error) {
    this.bodies.length = 0;
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
  }

  _send(frame) {
    if (this.failure) throw this.failure;
    this.ws.send(JSON.stringify(frame));
  }

  request(frame, op) {
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      this.answer = { op, resolve, reject };
      this._send(frame);
    });
  }

  /** A new room: {nameplate, room (hex), expires_in}. */
  allocate() {
    return this.request({ op: "allocate" }, "allocated");
  }

  /** Join the room of `nameplate`: {room (hex), expires_in}. */
  claim(nameplate) {
    return this.request({ op: "claim", nameplate }, "claimed");
  }

  send(body) {
    this._send({ op: "send", body });
  }

  /** The next body the peer sent. */
  recv() {
    if (this.bodies.length) return Promise.resolve(this.bodies.shift());
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  burn() {
    if (!this.failure && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ op: "burn" }));
  }

  close() {
    this.closing = true;
    this.ws.close();
  }
}
