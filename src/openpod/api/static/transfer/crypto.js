// The /transfer page's cryptography: the same protocol as openpod.domain.transfer_code, cpace
// and transfer_keys (docs/transfer.md, "The code" and "Cryptography"); tests/vectors/
// transfer_crypto.json, generated from the Python side, keeps the two identical.
//
// Plain ES module with no dependencies: SHA-512, HMAC, HKDF and AES-GCM come from WebCrypto
// (globalThis.crypto.subtle, in browsers and Node 20); X25519 and the Elligator 2 map are
// written here with BigInt, and SHA-256 is pure JS (sha256.js) so a file can be hashed as it
// streams.
//
// BigInt arithmetic is not constant time, so the X25519 below can leak timing about its
// scalar. The scalars are ephemeral (one per session, drawn fresh) and the exchange happens
// once, so an attacker gets one timing sample per secret; that is the accepted trade-off for a
// page that must not load a WASM or native library.

export class IntegrityError extends Error {
  constructor(message = "data was altered in transit") { super(message); this.name = "IntegrityError"; }
}

export class CodeError extends Error {
  // part: "code", "nameplate", "word1", "word2" or "word3", as in the Python CodeError.
  constructor(part, message) { super(message); this.name = "CodeError"; this.part = part; }
}

export class PakeError extends Error {
  constructor(message) { super(message); this.name = "PakeError"; }
}

const subtle = globalThis.crypto.subtle;
const encoder = new TextEncoder();

function toBytes(value) {
  if (typeof value === "string") return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  throw new TypeError("expected a string or a Uint8Array");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) { out.set(part, offset); offset += part.length; }
  return out;
}

// ---- The code: {nameplate}-{w1}-{w2}-{w3} ----

const ORDINALS = ["first", "second", "third"];
const NAMEPLATE = /^[1-9][0-9]{0,4}$/;
const SEPARATORS = /[ \t\r\n-]+/;

function checkNameplate(nameplate) {
  if (!NAMEPLATE.test(nameplate)) {
    throw new CodeError("nameplate", "a code starts with a number from 1 to 99999, as in 7-amber-falcon-orbit");
  }
}

export function parseCode(text, words) {
  const known = new Set(words);
  const parts = String(text).toLowerCase().split(SEPARATORS).filter((p) => p !== "");
  if (parts.length === 0) throw new CodeError("code", "the code is empty; it looks like 7-amber-falcon-orbit");
  checkNameplate(parts[0]);
  if (parts.length < 4) {
    throw new CodeError(`word${parts.length}`, `the code is missing its ${ORDINALS[parts.length - 1]} word`);
  }
  if (parts.length > 4) throw new CodeError("code", "the code has more than a number and three words");
  parts.slice(1).forEach((word, i) => {
    if (!known.has(word)) {
      const shown = word.length <= 16 ? word : word.slice(0, 16) + "…";
      throw new CodeError(`word${i + 1}`, `the ${ORDINALS[i]} word "${shown}" is not a code word`);
    }
  });
  return { nameplate: parts[0], words: parts.slice(1), text: parts.join("-") };
}

export function newCode(nameplate, words) {
  checkNameplate(String(nameplate));
  const limit = Math.floor(2 ** 32 / words.length) * words.length; // rejection sampling: uniform
  const picked = [];
  const sample = new Uint32Array(1);
  while (picked.length < 3) {
    globalThis.crypto.getRandomValues(sample);
    if (sample[0] < limit) picked.push(words[sample[0] % words.length]);
  }
  return { nameplate: String(nameplate), words: picked, text: [nameplate, ...picked].join("-") };
}

// ---- Hex (lower case) and Base64 (standard alphabet, with padding) ----

export function hexencode(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function b64encode(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

export function b64decode(text) {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

// ---- SHA-256, incremental, pure JS (files are hashed as they stream): see sha256.js ----

export { Sha256 } from "./sha256.js";

// ---- Curve25519: field arithmetic, X25519 (RFC 7748), Elligator 2 ----

const P = 2n ** 255n - 19n;
const A = 486662n;
const A24 = 121665n;

function modPow(base, exponent) {
  let result = 1n;
  base %= P;
  while (exponent > 0n) {
    if (exponent & 1n) result = (result * base) % P;
    base = (base * base) % P;
    exponent >>= 1n;
  }
  return result;
}

function decodeLE(bytes) {
  let value = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]);
  return value;
}

function encodeLE(value) {
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) { out[i] = Number(value & 0xffn); value >>= 8n; }
  return out;
}

function decodeU(bytes) { // bit 255 is ignored, values >= p are reduced (RFC 7748)
  const masked = Uint8Array.from(bytes);
  masked[31] &= 0x7f;
  return decodeLE(masked) % P;
}

// X25519(scalar, u) per RFC 7748: the Montgomery ladder on u-coordinates. Not constant time.
export function x25519(scalar, u) {
  if (scalar.length !== 32 || u.length !== 32) throw new PakeError("X25519 takes 32-byte inputs");
  const k = Uint8Array.from(scalar);
  k[0] &= 248; k[31] &= 127; k[31] |= 64;
  const n = decodeLE(k);
  const x1 = decodeU(u);
  let x2 = 1n, z2 = 0n, x3 = x1, z3 = 1n, swap = 0n;
  for (let t = 254n; t >= 0n; t--) {
    const bit = (n >> t) & 1n;
    if (swap ^ bit) { [x2, x3] = [x3, x2]; [z2, z3] = [z3, z2]; }
    swap = bit;
    const a = x2 + z2, aa = (a * a) % P;
    const b = x2 - z2 + P, bb = (b * b) % P;
    const e = aa - bb + P;
    const c = x3 + z3, d = x3 - z3 + P;
    const da = (d * a) % P, cb = (c * b) % P;
    const sum = da + cb, diff = da - cb + P;
    x3 = (sum * sum) % P;
    z3 = (x1 * ((diff * diff) % P)) % P;
    x2 = (aa * bb) % P;
    z2 = (e * (aa + A24 * e)) % P;
  }
  if (swap) { [x2, x3] = [x3, x2]; [z2, z3] = [z3, z2]; }
  return encodeLE((x2 * modPow(z2, P - 2n)) % P);
}

function elligator2(r) {
  const v = (((-A * modPow(1n + 2n * r * r, P - 2n)) % P) + P) % P; // Z = 2
  const gv = (v * v * v + A * v * v + v) % P;
  return modPow(gv, (P - 1n) / 2n) === 1n ? v : (((-v - A) % P) + P) % P;
}

// ---- CPace (draft-irtf-cfrg-cpace, CPACE-X25519-SHA512, initiator-responder) ----

const DSI = encoder.encode("CPace255");

function prependLen(bytes) {
  const len = [];
  let n = bytes.length;
  do { len.push(n < 128 ? n : (n & 0x7f) | 0x80); n = Math.floor(n / 128); } while (n > 0);
  return concat(Uint8Array.from(len), bytes);
}

function lvCat(...parts) { return concat(...parts.map(prependLen)); }

async function sha512(bytes) { return new Uint8Array(await subtle.digest("SHA-512", bytes)); }

export async function calculateGenerator(prs, ci, sid) {
  prs = toBytes(prs);
  const zpad = Math.max(0, 128 - 1 - prependLen(prs).length - prependLen(DSI).length);
  const digest = await sha512(lvCat(DSI, prs, new Uint8Array(zpad), toBytes(ci), toBytes(sid)));
  return encodeLE(elligator2(decodeU(digest.subarray(0, 32))));
}

function isNeutral(bytes) { return bytes.every((b) => b === 0); }

export async function cpaceStart({ prs, sid, ci, initiator, ad, scalar }) {
  sid = toBytes(sid); ad = toBytes(ad);
  const y = scalar ? toBytes(scalar) : globalThis.crypto.getRandomValues(new Uint8Array(32));
  const share = x25519(y, await calculateGenerator(prs, ci, sid));
  if (isNeutral(share)) throw new PakeError("the generator gave the neutral element");
  async function finish(peerShare, peerAd) {
    peerShare = toBytes(peerShare);
    if (peerShare.length !== 32) throw new PakeError(`the peer's share is ${peerShare.length} bytes, not 32`);
    const k = x25519(y, peerShare);
    if (isNeutral(k)) throw new PakeError("the peer's share is a low-order point");
    const own = lvCat(share, ad), peer = lvCat(peerShare, toBytes(peerAd));
    const transcript = initiator ? concat(own, peer) : concat(peer, own);
    return sha512(concat(lvCat(encoder.encode("CPace255_ISK"), sid, k), transcript));
  }
  return { share, finish };
}

// ---- Key schedule, confirmation, sealed records ----

const ROLES = ["sender", "receiver"];
const TRANSPORTS = ["direct", "webrtc", "relay"];

export async function hkdfSha256(ikm, salt, info, length = 32) {
  const key = await subtle.importKey("raw", toBytes(ikm), "HKDF", false, ["deriveBits"]);
  const params = { name: "HKDF", hash: "SHA-256", salt: toBytes(salt), info: toBytes(info) };
  return new Uint8Array(await subtle.deriveBits(params, key, length * 8));
}

function checkRole(role) { if (!ROLES.includes(role)) throw new Error(`unknown role ${role}`); }

export async function deriveSessionKeys(isk, sid, ya, yb) {
  const derive = (name) => hkdfSha256(isk, sid, `openpod-transfer/1 ${name}`);
  const aesKey = async (name) =>
    subtle.importKey("raw", await derive(name), "AES-GCM", false, ["encrypt", "decrypt"]);
  const confirmTag = async (role) => {
    checkRole(role);
    const raw = await derive(`confirm ${role}`);
    const key = await subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return new Uint8Array(await subtle.sign("HMAC", key, concat(encoder.encode(role), ya, yb)));
  };
  return {
    confirmTag,
    async checkConfirm(role, tag) {
      const expected = await confirmTag(role);
      let diff = expected.length ^ tag.length;
      for (let i = 0; i < expected.length; i++) diff |= expected[i] ^ (tag[i] | 0);
      if (diff !== 0) throw new IntegrityError("the codes do not match (key confirmation failed)");
    },
    async signalKey(role) { checkRole(role); return aesKey(`signal ${role}`); },
    async dataKey(role, transport) {
      checkRole(role);
      if (!TRANSPORTS.includes(transport)) throw new Error(`unknown transport ${transport}`);
      return aesKey(`data ${role} ${transport}`);
    },
  };
}

function nonce(seq) {
  const iv = new Uint8Array(12);
  const view = new DataView(iv.buffer);
  view.setUint32(4, Math.floor(seq / 2 ** 32));
  view.setUint32(8, seq >>> 0);
  return iv;
}

export class Sealer {
  constructor(key) { this._key = key; this._seq = 0; this.overhead = 16; } // the AES-GCM tag

  async seal(plaintext) {
    const iv = nonce(this._seq++); // taken now, so concurrent calls keep their order
    return new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv }, this._key, plaintext));
  }
}

export class Opener {
  constructor(key) { this._key = key; this._seq = 0; this._broken = false; }

  async open(record) {
    if (this._broken) throw new IntegrityError("data was altered in transit (an earlier record failed)");
    const iv = nonce(this._seq++);
    try {
      return new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv }, this._key, record));
    } catch (error) {
      this._broken = true;
      throw new IntegrityError();
    }
  }
}

/** Records as they are, on WebRTC once both sides said so: its DTLS peer is pinned by the
 * certificate fingerprint of an SDP that came over sealed signaling, so DTLS already keeps
 * every byte secret and unaltered between the two holders of the code (docs/transfer.md,
 * "Records on WebRTC"). `seal` answers at once: no promise, no copy. */
export class ClearSealer {
  constructor() { this.overhead = 0; }

  seal(plaintext) { return plaintext; }
}

export class ClearOpener {
  open(record) { return Promise.resolve(record); }
}
