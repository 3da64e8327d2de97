// The /transfer page's sender (files.js sendFiles) keeps to a receiver's window: run under
// Node against a scripted receiver behind a fake record channel (a unit test of one layer;
// tests/browser runs the page against the CLI over real WebRTC). The receiver asks for a
// 1 MiB window and reports what it "wrote" only when the sender waits for a reply, so a
// sender that sent past its window is caught at that record. Prints "ok: N checks".
//
//   node tests/js/window.mjs

import { sendFiles } from "../../src/openpod/api/static/transfer/files.js";
import { Sha256 } from "../../src/openpod/api/static/transfer/crypto.js";
import { ScriptedChannel, check, passed } from "./scripted.mjs";

const WINDOW = 1024 * 1024;
const MAX_DATA = 65536 - 17;
const EMPTY = new Sha256().digestHex();

class ScriptedReceiver extends ScriptedChannel {
  constructor(window) {
    super("sender");
    this.maxData = MAX_DATA;
    this.window = window;
    this.received = 0;
    this.reported = 0;
    this.reports = 0;
    this.sawCredit = false;
    this.hash = new Sha256();
  }

  reply(json) { this.queue.push({ json }); }

  async sendJson(message) {
    if (message.t === "manifest") {
      this.sawCredit = message.credit === 1;
      this.reply({ t: "have", files: message.files.map(() => ({ offset: 0, sha256: EMPTY })) });
    } else if (message.t === "plan") {
      this.reply(this.window ? { t: "go", window: this.window } : { t: "go" });
    } else if (message.t === "end") {
      this.sha256 = message.sha256;
      this.reply({ t: "ok", i: message.i });
    } else if (message.t === "done") {
      this.reply({ t: "done" });
    }
  }

  async sendData(bytes) {
    this.received += bytes.length;
    this.hash.update(bytes);
    if (this.window) check(`at most the window unreported (${this.received - this.reported})`, this.received - this.reported <= this.window);
  }

  async recv(ms) {
    if (!this.queue.length && this.received > this.reported) {
      // A paused download may keep the sender waiting for room as long as it likes.
      check(`the wait for room has no time limit (${ms})`, !ms);
      // The sender waits for us with data unreported: it must have filled its window.
      if (this.window) check("the sender waited only with its window full", this.received - this.reported > this.window - MAX_DATA);
      this.reported = this.received;
      this.reports++;
      this.reply({ t: "got", bytes: this.received });
    }
    return this.next();
  }
}

const size = 5 * WINDOW + 12345;
const bytes = new Uint8Array(size);
for (let i = 0; i < size; i += 997) bytes[i] = i & 255;
const file = new File([bytes], "f.bin");

const windowed = new ScriptedReceiver(WINDOW);
const report = await sendFiles(windowed, [{ file, path: "f.bin" }], [], null);
check("the manifest says the sender keeps to a window", windowed.sawCredit);
check("every byte sent", windowed.received === size && report.bytes === size);
check("the hash sent is the data's", windowed.sha256 === windowed.hash.digestHex());
check(`reported about once a window (${windowed.reports})`, windowed.reports >= Math.floor(size / WINDOW) - 1);

// A receiver that asks for no window (an older one) is never waited for.
const plain = new ScriptedReceiver(0);
await sendFiles(plain, [{ file, path: "f.bin" }], [], null);
check("no window, no report needed", plain.received === size && plain.reports <= 1);

// A window outside the protocol's bounds stops the sender with the reason.
const tiny = new ScriptedReceiver(1000);
let why = "";
try { await sendFiles(tiny, [{ file, path: "f.bin" }], [], null); } catch (error) { why = error.message; }
check(`a window of 1000 bytes is refused (${why})`, why.includes("window of 1000 bytes"));

passed();
