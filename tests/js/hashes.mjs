// Which hash two ends of the /transfer page check a file with (files.js, hashes.js;
// docs/transfer.md "Hashes"), run under Node against scripted peers behind fake record
// channels (a unit test of one layer; tests/browser runs pages against each other and the
// CLI). A sending page offers the block hash and uses what the receiver picks; a receiving
// page picks it when offered and plain SHA-256 when not (the CLI); a pick nobody offered and
// a file whose block hash differs are refused. Prints "ok: N checks".
//
//   node tests/js/hashes.mjs

import { receiveFiles, sendFiles } from "../../src/openpod/api/static/transfer/files.js";
import { BLOCKS, PLAIN, fileHash } from "../../src/openpod/api/static/transfer/hashes.js";
import { ScriptedChannel, check, passed } from "./scripted.mjs";

const EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

async function digest(scheme, bytes) {
  const hash = fileHash(scheme);
  const wait = hash.update(bytes);
  if (wait) await wait;
  return hash.hex();
}

async function failure(promise) {
  try { await promise; } catch (error) { return error; }
  return null;
}

const size = 9 * 1024 * 1024 + 4321; // three blocks, the last short
const bytes = new Uint8Array(size);
for (let i = 0; i < size; i += 991) bytes[i] = (i >> 3) & 255;
const file = new File([bytes], "f.bin");
const plainDigest = await digest(PLAIN, bytes);
const blockDigest = await digest(BLOCKS, bytes);
check("the two hashes differ", plainDigest !== blockDigest && plainDigest.length === 64 && blockDigest.length === 64);

/** A receiver that answers `have` with `pick` (undefined: says nothing, as the CLI). */
class ScriptedReceiver extends ScriptedChannel {
  constructor(pick) {
    super("sender");
    this.maxData = 262144;
    this.pick = pick;
    this.received = [];
  }

  async sendJson(message) {
    const reply = (json) => this.queue.push({ json });
    if (message.t === "manifest") {
      this.offered = message.hashes;
      const files = message.files.map(() => ({ offset: 0, sha256: EMPTY }));
      reply(this.pick === undefined ? { t: "have", files } : { t: "have", files, hash: this.pick });
    } else if (message.t === "plan") {
      reply({ t: "go" });
    } else if (message.t === "end") {
      this.end = message.sha256;
      reply({ t: "ok", i: message.i });
    } else if (message.t === "done") {
      reply({ t: "done" });
    }
  }

  async sendData(data) { this.received.push(data.slice()); }
}

for (const [pick, scheme, want] of [[BLOCKS, BLOCKS, blockDigest], [undefined, PLAIN, plainDigest], [PLAIN, PLAIN, plainDigest]]) {
  const receiver = new ScriptedReceiver(pick);
  const report = await sendFiles(receiver, [{ file, path: "f.bin" }], [], null);
  check(`the sender offers the block hash (${pick})`, JSON.stringify(receiver.offered) === JSON.stringify([BLOCKS]));
  check(`picked ${pick}: 'end' carries the ${scheme} of the file`, receiver.end === want);
  check(`picked ${pick}: the report names it`, report.files[0][scheme] === want && Object.keys(report.files[0]).length === 4);
}
const odd = new ScriptedReceiver("md5");
const refused = await failure(sendFiles(odd, [{ file, path: "f.bin" }], [], null));
check(`a pick nobody offered stops the sender (${refused && refused.message})`,
  refused && refused.kind === "protocol" && refused.message.includes("'have' picks the hash 'md5'") && odd.received.length === 0);

/** A sender that offers `hashes` (undefined: none, as the CLI) and ends with `end(picked)`. */
class ScriptedSender extends ScriptedChannel {
  constructor(hashes, end) {
    super("receiver");
    this.hashes = hashes;
    this.endDigest = end;
    this.queue.push({ json: hashes === undefined
      ? { t: "manifest", files: [{ path: "f.bin", size }], dirs: [] }
      : { t: "manifest", files: [{ path: "f.bin", size }], dirs: [], hashes } });
    this.sent = [];
  }

  async sendJson(message) {
    this.sent.push(message);
    if (message.t === "have") {
      this.have = message;
      this.queue.push({ json: { t: "plan", offsets: [0] } });
    } else if (message.t === "go") {
      this.queue.push({ json: { t: "file", i: 0 } });
      for (let at = 0; at < size; at += 262144) this.queue.push({ data: bytes.subarray(at, at + 262144) });
      this.queue.push({ json: { t: "end", i: 0, sha256: await this.endDigest(this.have.hash || PLAIN) } });
    } else if (message.t === "ok") {
      this.queue.push({ json: { t: "done" } });
    }
  }
}

class Sink {
  constructor() { this.saved = null; this.aborted = null; }

  async open() {
    const parts = [];
    return {
      write: async (data) => { parts.push(data.slice()); },
      close: async () => { this.saved = Buffer.concat(parts); },
      abort: (why) => { this.aborted = why; },
    };
  }
}

const honest = (scheme) => digest(scheme, bytes);
for (const [hashes, scheme, want] of [[[BLOCKS], BLOCKS, blockDigest], [undefined, PLAIN, plainDigest], [["sha256-9x", BLOCKS], BLOCKS, blockDigest], [["sha256-9x"], PLAIN, plainDigest]]) {
  const sender = new ScriptedSender(hashes, honest);
  const sink = new Sink();
  const report = await receiveFiles(sender, sink, null);
  check(`offered ${hashes}: the receiver picks ${scheme}`, (sender.have.hash || PLAIN) === scheme && (scheme === BLOCKS || !("hash" in sender.have)));
  check(`offered ${hashes}: the file is saved and reported with its ${scheme}`, sink.saved.equals(Buffer.from(bytes)) && report.files[0][scheme] === want);
}

// A block hash that does not match what arrived: nothing reported saved, the peer told why.
const liar = new ScriptedSender([BLOCKS], async () => plainDigest);
const sink = new Sink();
const mismatch = await failure(receiveFiles(liar, sink, null));
check(`a wrong block hash is an integrity error (${mismatch && mismatch.message})`, mismatch && mismatch.kind === "integrity" && mismatch.message.includes("f.bin"));
check("the download is aborted, never closed", sink.saved === null && sink.aborted !== null);
check("the sender is told", liar.sent.some((m) => m.t === "error") && !liar.sent.some((m) => m.t === "ok"));

passed();
