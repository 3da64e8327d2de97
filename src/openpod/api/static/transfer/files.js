// The transfer itself, once a sealed channel is open (docs/transfer.md "The transfer"):
// manifest, have, plan, go, then each file as `file`, data records and `end` with its
// SHA-256, acknowledged by `ok`; `done` both ways. The sender hashes what it reads, the
// receiver what it writes, and a file is only reported saved when both hashes agree: plain
// SHA-256, or SHA-256 over 4 MiB blocks when the sender offers it and the receiver picks it
// (hashes.js; pages do, the CLI does not).

import { BLOCKS, PLAIN, fileHash } from "./hashes.js";
import { TransferError } from "./signal.js";

const READ_CHUNK = 4 * 1024 * 1024; // bytes read from disk at a time
// Of an empty file in either hash (no blocks: the SHA-256 of nothing).
const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const MAX_PATH_BYTES = 4096;
const ANSWER_MS = 120000; // a receiver may take a while to confirm a large file's hash
const CLOSE_MS = 3000;
// Flow control on WebRTC (docs/transfer.md "The transfer"): the data channel hands every
// message to the page as it arrives, so nothing else stops a sender when saving stalls.
// What a receiver lets be sent and not yet saved: more than a sending page queues in its data
// channel (12 MiB, channels.js) plus the W/4 between our reports, or the window, not the
// channel, paces the sender. At 16 MiB a sending page waited for room up to 1.6 s of a 6.3 s
// transfer of 128 MiB; at 32 MiB, under 10 ms (bench/RESULTS.md).
const WINDOW = 32 * 1024 * 1024;
const WINDOW_MIN = 1024 * 1024;
const WINDOW_MAX = 1024 * 1024 * 1024;

/** Counts bytes and time for the progress bar and the final report. */
class Meter {
  constructor(total, onProgress) {
    this.total = total;
    this.done = 0;
    this.started = performance.now();
    this.onProgress = onProgress || (() => {});
    this.lastShown = 0;
  }

  add(bytes, path) {
    this.done += bytes;
    const now = performance.now();
    if (now - this.lastShown > 100 || this.done === this.total) {
      this.lastShown = now;
      this.onProgress({ done: this.done, total: this.total, seconds: (now - this.started) / 1000, path });
    }
  }

  report(files) {
    const seconds = (performance.now() - this.started) / 1000;
    return { bytes: this.done, total: this.total, seconds, mbps: this.done / 1e6 / Math.max(seconds, 1e-6), files };
  }
}

/** The reason `path` is unsafe to write, or null (relative POSIX, no `..`, `\` or NUL). */
export function unsafePath(path) {
  if (typeof path !== "string" || !path) return "empty or not text";
  if (new TextEncoder().encode(path).length > MAX_PATH_BYTES) return `longer than ${MAX_PATH_BYTES} bytes`;
  if (path.includes("\\") || path.includes("\0")) return "backslash or NUL";
  if (path.startsWith("/")) return "absolute";
  if (path.split("/").some((part) => part === "" || part === "." || part === "..")) return "empty, '.' or '..' part";
  return null;
}

async function readSlice(file, start, end) {
  return new Uint8Array(await file.slice(start, end).arrayBuffer());
}

/** The `scheme` hash of the first `length` bytes of `file` (to check a receiver's prefix). */
async function hashPrefix(file, length, scheme) {
  const hash = fileHash(scheme);
  for (let at = 0; at < length; at += READ_CHUNK) {
    const wait = hash.update(await readSlice(file, at, Math.min(length, at + READ_CHUNK)));
    if (wait) await wait;
  }
  return hash;
}

/** The hash the receiver picked in `have`: plain unless it names one this sender offered. */
function pickedHash(have) {
  const picked = have.hash === undefined ? PLAIN : have.hash;
  if (picked === PLAIN || picked === BLOCKS) return picked;
  throw new TransferError("protocol", `'have' picks the hash '${String(have.hash).slice(0, 40)}', which this sender did not offer.`);
}

/** The sender's view of the receiver's window: `got` moves it; the other replies pass. */
class Credit {
  constructor(channel, go) {
    this.channel = channel;
    this.sent = 0;
    this.acked = 0;
    this.window = 0; // none asked for: the transport's own flow control
    if (go.window !== undefined) {
      if (!Number.isSafeInteger(go.window) || go.window < WINDOW_MIN || go.window > WINDOW_MAX) {
        throw new TransferError("protocol", `'go' asks for a window of ${go.window} bytes, outside ${WINDOW_MIN}..${WINDOW_MAX}.`);
      }
      this.window = go.window;
    }
  }

  take(json) {
    const bytes = json.bytes;
    if (!Number.isSafeInteger(bytes) || bytes < this.acked || bytes > this.sent) {
      throw new TransferError("protocol", `'got' reports ${bytes} bytes written; ${this.sent} were sent.`);
    }
    this.acked = bytes;
  }

  async next(ms) {
    const message = await this.channel.recv(ms);
    if (message.json && message.json.t === "got") {
      this.take(message.json);
      return null;
    }
    return message;
  }

  /** Resolves once `n` more bytes fit the window (reading the receiver's `got`s). No time
   * limit: a paused download may wait as long as its user likes; a closed channel ends it. */
  async room(n) {
    while (this.window && (this.channel.pending || this.sent + n - this.acked > this.window)) {
      const other = await this.next(0);
      if (other) throw new TransferError("protocol", `Expected 'got' from the other side, got '${other.json ? other.json.t : "file data"}'.`);
    }
    this.sent += n;
  }

  /** The next control message other than `got`; it must be of type `t`. */
  async expect(t) {
    let message = null;
    while (!message) message = await this.next(ANSWER_MS);
    if (!message.json || message.json.t !== t) {
      throw new TransferError("protocol", `Expected '${t}' from the other side, got '${message.json ? message.json.t : "file data"}'.`);
    }
    return message.json;
  }
}

/** The sender's side: `entries` is [{file, path}], `dirs` the folders to create. */
export async function sendFiles(channel, entries, dirs, onProgress) {
  try {
    return await sendAll(channel, entries, dirs, onProgress);
  } catch (error) {
    await tellPeer(channel, error);
    throw error;
  }
}

async function sendAll(channel, entries, dirs, onProgress) {
  const files = entries.map(({ file, path }) => ({ path, size: file.size, mode: 0o644 }));
  await channel.sendJson({ t: "manifest", files, dirs, credit: 1, hashes: [BLOCKS] });
  const have = await channel.expect("have", ANSWER_MS);
  if (!Array.isArray(have.files) || have.files.length !== files.length) {
    throw new TransferError("protocol", "'have' does not list one entry per file.");
  }
  const scheme = pickedHash(have);
  const hashes = [];
  const offsets = [];
  for (const [i, { file }] of entries.entries()) {
    const { offset, sha256 } = have.files[i] || {};
    let keep = 0;
    let hash = fileHash(scheme);
    if (Number.isInteger(offset) && offset > 0 && offset <= file.size) {
      const prefix = await hashPrefix(file, offset, scheme);
      if (await prefix.hex() === String(sha256).toLowerCase()) [keep, hash] = [offset, prefix];
    }
    offsets.push(keep);
    hashes.push(hash);
  }
  await channel.sendJson({ t: "plan", offsets });
  const credit = new Credit(channel, await channel.expect("go", ANSWER_MS));
  const meter = new Meter(files.reduce((sum, f, i) => sum + f.size - offsets[i], 0), onProgress);
  const results = [];
  for (const [i, { file, path }] of entries.entries()) {
    if (offsets[i] < file.size) {
      await channel.sendJson({ t: "file", i });
      await sendOne(channel, file, offsets[i], hashes[i], (n) => meter.add(n, path), credit);
    }
    const sha256 = await hashes[i].hex();
    if (offsets[i] < file.size) {
      await channel.sendJson({ t: "end", i, sha256 });
      const ok = await credit.expect("ok");
      if (ok.i !== i) throw new TransferError("protocol", `'ok' names file ${ok.i}, expected ${i}.`);
    }
    results.push({ path, size: file.size, [scheme]: sha256, resumedFrom: offsets[i] });
  }
  await channel.sendJson({ t: "done" });
  try {
    await credit.expect("done");
  } catch (error) {
    // Every file was confirmed with `ok` (its hash checked): a receiver that closes at once
    // after its `done` may lose that last record on the way, which changes nothing.
    if (!(error instanceof TransferError) || error.kind !== "closed") throw error;
  }
  return meter.report(results);
}

/** One file's data records from `offset`; the next slice is read while this one is sent. Each
 * slice is hashed whole: a block hash then digests it in place, with no copy. */
async function sendOne(channel, file, offset, hash, counted, credit) {
  const step = channel.maxData;
  let reading = offset < file.size ? readSlice(file, offset, Math.min(file.size, offset + READ_CHUNK)) : null;
  for (let at = offset; at < file.size; at += READ_CHUNK) {
    const chunk = await reading;
    const nextAt = at + READ_CHUNK;
    reading = nextAt < file.size ? readSlice(file, nextAt, Math.min(file.size, nextAt + READ_CHUNK)) : null;
    const hashing = hash.update(chunk);
    if (hashing) await hashing;
    for (let p = 0; p < chunk.length; p += step) {
      const record = chunk.subarray(p, p + step);
      await credit.room(record.length);
      await channel.sendData(record);
      counted(record.length);
    }
  }
  await channel.flush();
}

/** The manifest's files and dirs, or a TransferError naming what is wrong with it: as the CLI's
 * receiver checks (domain/transfer_protocol.py parse_manifest). */
export function checkManifest(manifest) {
  const files = manifest.files;
  const dirs = manifest.dirs || [];
  if (!Array.isArray(files) || !Array.isArray(dirs)) throw new TransferError("protocol", "The manifest is malformed.");
  const seen = new Set();
  for (const entry of files) {
    const why = unsafePath(entry && entry.path);
    if (why) throw new TransferError("unsafe-path", `Unsafe path in manifest (${why}): ${String(entry && entry.path).slice(0, 200)}`);
    if (!Number.isSafeInteger(entry.size) || entry.size < 0) throw new TransferError("protocol", `Bad size for ${entry.path}.`);
    if (seen.has(entry.path)) throw new TransferError("protocol", `The manifest lists ${entry.path} twice.`);
    seen.add(entry.path);
  }
  for (const dir of dirs) {
    const why = unsafePath(dir);
    if (why) throw new TransferError("unsafe-path", `Unsafe path in manifest (${why}): ${String(dir).slice(0, 200)}`);
    if (seen.has(dir)) throw new TransferError("protocol", `The manifest lists ${dir} as a file and a directory.`);
  }
  // A file may not be the folder of another path (`a` and `a/b`): it would be found out only
  // when the file `a` had been written and had nowhere to go.
  for (const path of [...seen, ...dirs]) {
    const parts = path.split("/");
    for (let depth = 1; depth < parts.length; depth++) {
      const above = parts.slice(0, depth).join("/");
      if (seen.has(above)) throw new TransferError("protocol", `The manifest lists ${above} as a file and as the folder of ${path}.`);
    }
  }
  return { files, dirs };
}

/** The receiver's side: every file goes to `sink.open(path, size)` as a stream of bytes. */
export async function receiveFiles(channel, sink, onProgress) {
  let writer = null;
  try {
    const manifest = await channel.expect("manifest", ANSWER_MS);
    const { files, dirs } = checkManifest(manifest);
    // The block hash when the sender offers it: WebCrypto's, off this thread (hashes.js).
    const scheme = Array.isArray(manifest.hashes) && manifest.hashes.includes(BLOCKS) ? BLOCKS : PLAIN;
    // A browser keeps no part files: it holds nothing of any file yet.
    const held = files.map(() => ({ offset: 0, sha256: EMPTY_SHA256 }));
    await channel.sendJson(scheme === PLAIN ? { t: "have", files: held } : { t: "have", files: held, hash: scheme });
    const plan = await channel.expect("plan", ANSWER_MS);
    if (!Array.isArray(plan.offsets) || plan.offsets.length !== files.length
      || plan.offsets.some((o, i) => o !== 0 && o !== files[i].size)) {
      throw new TransferError("protocol", "The sender's plan does not match what this browser holds.");
    }
    if (sink.begin) await sink.begin(files, dirs);
    // A sender that keeps to a window gets one on WebRTC: saving may stall (a paused
    // download), and nothing else would stop it from sending.
    const window = manifest.credit === 1 && channel.name === "webrtc" ? WINDOW : 0;
    await channel.sendJson(window ? { t: "go", window } : { t: "go" });
    let saved = 0;
    let reported = 0;
    const meter = new Meter(files.reduce((sum, f) => sum + f.size, 0), onProgress);
    const results = [];
    for (const [i, entry] of files.entries()) {
      if (entry.size === 0) { // nothing to send: the sender skips it, it is complete already
        await (await sink.open(entry.path, 0)).close();
        results.push({ path: entry.path, size: 0, [scheme]: EMPTY_SHA256 });
        continue;
      }
      const start = await channel.expect("file", ANSWER_MS);
      if (start.i !== i) throw new TransferError("protocol", `The sender sent file ${start.i}, expected ${i}.`);
      writer = await sink.open(entry.path, entry.size);
      const hash = fileHash(scheme);
      let got = 0;
      for (;;) {
        const message = await channel.recv(ANSWER_MS);
        if (message.json) {
          if (message.json.t !== "end" || message.json.i !== i) {
            throw new TransferError("protocol", `Expected the end of ${entry.path}, got '${message.json.t}'.`);
          }
          const sha256 = await hash.hex();
          if (got !== entry.size || sha256 !== String(message.json.sha256).toLowerCase()) {
            throw new TransferError("integrity", `Integrity check failed for ${entry.path}: it does not match the sender's SHA-256.`);
          }
          await writer.close();
          writer = null;
          await channel.sendJson({ t: "ok", i });
          results.push({ path: entry.path, size: entry.size, [scheme]: sha256 });
          break;
        }
        got += message.data.length;
        if (got > entry.size) throw new TransferError("protocol", `The sender sent more than the size of ${entry.path}.`);
        const hashing = hash.update(message.data);
        if (hashing) await hashing;
        await writer.write(message.data);
        meter.add(message.data.length, entry.path);
        saved += message.data.length;
        if (window && saved - reported >= window / 4) {
          reported = saved;
          await channel.sendJson({ t: "got", bytes: saved });
        }
      }
    }
    await channel.expect("done", ANSWER_MS);
    await channel.sendJson({ t: "done" });
    await channel.flush();
    await channel.ended(CLOSE_MS); // the sender closes once it has our done
    return meter.report(results);
  } catch (error) {
    if (writer) writer.abort(error.message);
    await tellPeer(channel, error);
    throw error;
  }
}

/** Say why we stop (the other side shows it), unless the channel or the peer is gone. */
export async function tellPeer(channel, error) {
  if (error instanceof TransferError && (error.kind === "closed" || error.kind === "peer")) return;
  channel.sendJson({ t: "error", message: error.message }).catch(() => {});
  await channel.flush().catch(() => {});
  await channel.ended(CLOSE_MS);
}
