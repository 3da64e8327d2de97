// Checks the /transfer page's crypto.js against the vectors the Python side generated
// (tests/vectors/transfer_crypto.json), then the failure cases: a wrong code fails the key
// confirmation, an altered, replayed or reordered record fails to open, a low-order share
// aborts the PAKE. Prints "ok: N checks" and timings; exits 1 naming the first mismatch.
//
//   node tests/js/crypto_vectors.mjs tests/vectors/transfer_crypto.json

import { readFileSync } from "node:fs";
import * as c from "../../src/openpod/api/static/transfer/crypto.js";
import { BLOCKS, fileHash } from "../../src/openpod/api/static/transfer/hashes.js";

const vectors = JSON.parse(readFileSync(process.argv[2], "utf8"));
const words = vectors.words; // openpod.domain.transfer_words.WORDS
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const unhex = (text) => Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));
let checks = 0;

function fail(what, got, want) {
  console.error(`MISMATCH ${what}\n  got:  ${got}\n  want: ${want}`);
  process.exit(1);
}
function same(what, got, want) {
  if (got !== want) fail(what, got, want);
  checks++;
}
async function rejects(what, promise, errorClass) {
  try { await promise; } catch (error) {
    if (error instanceof errorClass) { checks++; return; }
    fail(what, `${error.name}: ${error.message}`, errorClass.name);
  }
  fail(what, "no error", errorClass.name);
}

// CPace: the draft's Appendix B.1 case and openpod's own.
for (const v of vectors.cpace) {
  const [prs, ci, sid] = [unhex(v.prs), unhex(v.ci), unhex(v.sid)];
  same(`${v.name} generator`, hex(await c.calculateGenerator(prs, ci, sid)), v.generator);
  const a = await c.cpaceStart({ prs, sid, ci, initiator: true, ad: unhex(v.ada), scalar: unhex(v.ya) });
  const b = await c.cpaceStart({ prs, sid, ci, initiator: false, ad: unhex(v.adb), scalar: unhex(v.yb) });
  same(`${v.name} Ya`, hex(a.share), v.share_a);
  same(`${v.name} Yb`, hex(b.share), v.share_b);
  same(`${v.name} K`, hex(c.x25519(unhex(v.ya), b.share)), v.k);
  same(`${v.name} K (responder)`, hex(c.x25519(unhex(v.yb), a.share)), v.k);
  same(`${v.name} ISK (initiator)`, hex(await a.finish(b.share, unhex(v.adb))), v.isk);
  same(`${v.name} ISK (responder)`, hex(await b.finish(a.share, unhex(v.ada))), v.isk);
}
const low = vectors.scalar_mult_vfy;
for (const [i, v] of low.cases.entries()) {
  same(`scalar_mult_vfy u${i.toString(16)}`, hex(c.x25519(unhex(low.scalar), unhex(v.u))), v.q);
}

// Key schedule, confirmation tags, sealed records with every AES key.
const s = vectors.session;
const [isk, sid, ya, yb] = [s.isk, s.sid, s.ya, s.yb].map(unhex);
for (const [name, key] of Object.entries(s.keys)) {
  same(`key ${name}`, hex(await c.hkdfSha256(isk, sid, `openpod-transfer/1 ${name}`)), key);
}
const keys = await c.deriveSessionKeys(isk, sid, ya, yb);
same("tag sender", hex(await keys.confirmTag("sender")), s.tag_sender);
same("tag receiver", hex(await keys.confirmTag("receiver")), s.tag_receiver);
await keys.checkConfirm("sender", unhex(s.tag_sender));
await keys.checkConfirm("receiver", unhex(s.tag_receiver));
checks += 2;
const cryptoKey = (name) => {
  const [use, role, transport] = name.split(" ");
  return use === "signal" ? keys.signalKey(role) : keys.dataKey(role, transport);
};
const sealers = new Map(), openers = new Map();
for (const r of vectors.records) {
  if (!sealers.has(r.key)) {
    const key = await cryptoKey(r.key);
    sealers.set(r.key, new c.Sealer(key));
    openers.set(r.key, new c.Opener(key));
  }
  same(`seal ${r.key} #${r.seq}`, hex(await sealers.get(r.key).seal(unhex(r.plaintext))), r.record);
  same(`open ${r.key} #${r.seq}`, hex(await openers.get(r.key).open(unhex(r.record))), r.plaintext);
}

// SHA-256 (pure JS), fed in uneven pieces, and base64.
const pattern = (n) => {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = i % 251;
  return out;
};
for (const v of vectors.sha256) {
  const data = v.text !== undefined ? new TextEncoder().encode(v.text) : pattern(v.pattern_length);
  const whole = new c.Sha256();
  whole.update(data);
  same(`sha256 of ${v.text ?? v.pattern_length + " bytes"}`, whole.digestHex(), v.digest);
  const pieces = new c.Sha256();
  for (let i = 0, step = 1; i < data.length; i += step, step = (step * 7 + 3) % 1000) {
    pieces.update(data.subarray(i, i + step));
  }
  same(`sha256 in pieces of ${v.pattern_length ?? v.text}`, pieces.digestHex(), v.digest);
}
// The pages' block hash (hashes.js, WebCrypto per 4 MiB block): whole, in uneven pieces that
// straddle blocks, and read part way (as a sender checks a receiver's prefix) then fed on.
async function blockHash(data, step) {
  const hash = fileHash(BLOCKS);
  for (let i = 0; i < data.length; i += step(i)) {
    const wait = hash.update(data.subarray(i, i + step(i)));
    if (wait) await wait;
  }
  return hash;
}
const blockVectors = new Map(vectors.sha256_4m.map((v) => [v.pattern_length, v.digest]));
for (const [length, digest] of blockVectors) {
  const data = pattern(length);
  same(`sha256-4m of ${length} bytes`, await (await blockHash(data, () => 1 << 30)).hex(), digest);
  same(`sha256-4m of ${length} bytes in 256 KiB`, await (await blockHash(data, () => 262144)).hex(), digest);
  same(`sha256-4m of ${length} bytes in 3 MiB + 7`, await (await blockHash(data, () => 3 * 1048576 + 7)).hex(), digest);
}
{
  const longest = Math.max(...blockVectors.keys());
  const data = pattern(longest);
  const hash = fileHash(BLOCKS);
  let fed = 0;
  for (const length of [...blockVectors.keys()].sort((a, b) => a - b)) {
    const wait = hash.update(data.subarray(fed, length));
    if (wait) await wait;
    fed = length;
    same(`sha256-4m read at ${length} bytes, then fed on`, await hash.hex(), blockVectors.get(length));
  }
  const queued = fileHash(BLOCKS);
  let waits = 0;
  for (let i = 0; i < 12; i++) if (queued.update(pattern(4194304))) waits++;
  same("sha256-4m asks to wait once more than 8 block digests are queued", waits, 4);
  same("an unknown hash is refused", (() => { try { fileHash("md5"); return "made"; } catch (e) { return e.message; } })(), "unknown hash md5");
}
for (const v of vectors.base64) {
  same(`b64encode ${v.hex}`, c.b64encode(unhex(v.hex)), v.b64);
  same(`b64decode ${v.b64}`, hex(c.b64decode(v.b64)), v.hex);
}

// Codes, with the same word list as the Python side.
for (const v of vectors.codes) {
  let got;
  try {
    const code = c.parseCode(v.input, words);
    got = JSON.stringify({ nameplate: code.nameplate, words: code.words, text: code.text });
  } catch (error) {
    if (!(error instanceof c.CodeError)) throw error;
    got = JSON.stringify({ error: error.part });
  }
  const want = v.error ? { error: v.error } : { nameplate: v.nameplate, words: v.words, text: v.text };
  same(`parseCode ${JSON.stringify(v.input)}`, got, JSON.stringify(want));
}
const fresh = c.newCode("42", words);
same("newCode round trip", c.parseCode(fresh.text, words).text, fresh.text);

// Failures: wrong code, altered / replayed / reordered records, low-order shares.
const openpod = vectors.cpace[1];
const start = (prs, initiator) => c.cpaceStart({
  prs, sid, ci: unhex(openpod.ci), initiator, ad: initiator ? "sender" : "receiver",
});
const sender = await start("7-amber-falcon-orbit", true);
const thief = await start("7-amber-falcon-otter", false);
const iskSender = await sender.finish(thief.share, new TextEncoder().encode("receiver"));
const iskThief = await thief.finish(sender.share, new TextEncoder().encode("sender"));
const keysSender = await c.deriveSessionKeys(iskSender, sid, sender.share, thief.share);
const keysThief = await c.deriveSessionKeys(iskThief, sid, sender.share, thief.share);
await rejects("wrong code: confirmation", keysSender.checkConfirm("receiver", await keysThief.confirmTag("receiver")), c.IntegrityError);
await rejects("truncated tag", keys.checkConfirm("sender", unhex(s.tag_sender).subarray(0, 31)), c.IntegrityError);

const dataKey = await keys.dataKey("sender", "relay");
const sealer = new c.Sealer(dataKey);
const [r0, r1, r2] = await Promise.all([1, 2, 3].map((n) => sealer.seal(new Uint8Array([0x44, n]))));
const flipped = Uint8Array.from(r0);
flipped[1] ^= 0x01;
await rejects("flipped byte", new c.Opener(dataKey).open(flipped), c.IntegrityError);
await rejects("reordered record", new c.Opener(dataKey).open(r1), c.IntegrityError);
const opener = new c.Opener(dataKey);
same("concurrent seals keep order", hex(await opener.open(r0)), "4401");
await rejects("replayed record", opener.open(r0), c.IntegrityError);
await rejects("after a failure, nothing opens", opener.open(r1), c.IntegrityError);
await rejects("wrong key", new c.Opener(await keys.dataKey("receiver", "relay")).open(r0), c.IntegrityError);
await rejects("short record", new c.Opener(dataKey).open(new Uint8Array(5)), c.IntegrityError);
same("r2 opens in order", hex(await (async () => {
  const o = new c.Opener(dataKey); await o.open(r0); await o.open(r1); return o.open(r2);
})()), "4403");
for (const [i, v] of low.cases.entries()) {
  if (v.q !== "00".repeat(32)) continue;
  await rejects(`low-order share u${i}`, sender.finish(unhex(v.u), new Uint8Array()), c.PakeError);
}
await rejects("short share", sender.finish(new Uint8Array(31), new Uint8Array()), c.PakeError);
try {
  c.parseCode("7-amber-falcon-orbit", words.filter((w) => w !== "amber"));
  fail("parseCode with amber missing", "parsed", "CodeError");
} catch (error) {
  same("CodeError names the part", `${error.name} ${error.part}`, "CodeError word1");
}

// Timings (informational).
let t = performance.now();
for (let i = 0; i < 20; i++) c.x25519(unhex(openpod.ya), unhex(openpod.share_b));
const x25519Ms = (performance.now() - t) / 20;
t = performance.now();
for (let i = 0; i < 5; i++) {
  const a = await start("7-amber-falcon-orbit", true), b = await start("7-amber-falcon-orbit", false);
  await a.finish(b.share, new TextEncoder().encode("receiver"));
  await b.finish(a.share, new TextEncoder().encode("sender"));
}
const cpaceMs = (performance.now() - t) / 5;
const big = pattern(16 << 20);
let best = 0;
for (let round = 0; round < 4; round++) {
  const hash = new c.Sha256();
  t = performance.now();
  for (let i = 0; i < big.length; i += 1 << 20) hash.update(big.subarray(i, i + (1 << 20)));
  hash.digestHex();
  best = Math.max(best, 16 / ((performance.now() - t) / 1000));
}
console.log(`ok: ${checks} checks`);
console.log(`x25519 ${x25519Ms.toFixed(1)} ms; cpace both sides ${cpaceMs.toFixed(1)} ms; sha256 ${best.toFixed(0)} MiB/s`);
