// A fake record channel for the Node checks of the /transfer page's files.js (window.mjs,
// hashes.mjs): the scripted peer pushes what it "sends" on `queue` ({json} or {data}), and
// the page's side reads it with recv/expect as it would from a RecordChannel. Also the checks'
// count: `check` exits 1 naming the first failure, `passed` prints "ok: N checks".

let checks = 0;

export function check(what, ok) {
  if (!ok) {
    console.error(`FAILED ${what}`);
    process.exit(1);
  }
  checks++;
}

export function passed() {
  console.log(`ok: ${checks} checks`);
}

export class ScriptedChannel {
  /** `who` names the waiting side in the error for a read the script never answers. */
  constructor(who) {
    this.name = "webrtc";
    this.queue = [];
    this.who = who;
  }

  get pending() { return this.queue.length > 0; }

  async recv() {
    return this.next();
  }

  next() {
    if (!this.queue.length) throw new Error(`the ${this.who} waits for a message the script never sends`);
    return this.queue.shift();
  }

  async expect(t) {
    const message = await this.recv();
    if (!message.json || message.json.t !== t) throw new Error(`the script sent ${message.json ? message.json.t : "file data"}, not ${t}`);
    return message.json;
  }

  async flush() {}

  async ended() {}
}
