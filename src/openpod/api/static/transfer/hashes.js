// The hash a file is checked with end to end (docs/transfer.md "Hashes"). Every peer can do
// "sha256", the plain SHA-256 of the file: the page computes it in pure JS (sha256.js, 355 MB/s
// on its main thread) because WebCrypto's digest is one-shot. A sending page also offers
// "sha256-4m", the SHA-256 of the SHA-256s of the file's 4 MiB blocks, which WebCrypto computes
// natively, off the page's main thread; a receiving page picks it when offered. Page to page,
// 128 MiB, that took the two pages' main threads from ~1.7 to ~1.2 core-seconds and all of
// Chromium from 10.65 to 9.98 (medians of 10 interleaved rounds, bench/RESULTS.md): headroom
// for links faster than this 2-core box, where the rate stayed the same. The CLI offers and
// picks plain SHA-256, the one `sha256sum` prints.

import { hexencode, Sha256 } from "./crypto.js";

export const PLAIN = "sha256";
export const BLOCKS = "sha256-4m";
export const BLOCK_SIZE = 4 * 1024 * 1024;
// Block digests queued in WebCrypto at once: each holds a copy of its 4 MiB until done.
const DIGESTS_IN_FLIGHT = 8;

/** Plain SHA-256 of everything fed, incrementally, in pure JS. */
class PlainHash {
  constructor() {
    this.sha = new Sha256();
  }

  /** Always null: nothing to wait for. */
  update(bytes) {
    this.sha.update(bytes);
    return null;
  }

  async hex() {
    return this.sha.digestHex();
  }
}

/** "sha256-4m": the file cut at every 4 MiB of its offset; each block's SHA-256 from
 * WebCrypto, the hash of their concatenation (an empty file: of nothing, like plain SHA-256). */
class BlockHash {
  constructor() {
    this.block = new Uint8Array(BLOCK_SIZE);
    this.fill = 0;
    this.digests = []; // promises of each whole block's digest, in order
  }

  _digest(bytes) {
    // WebCrypto copies `bytes` before it returns, so the block buffer may be refilled at once.
    this.digests.push(crypto.subtle.digest("SHA-256", bytes));
  }

  /** Null, or a promise to await before feeding more (too many digests queued). */
  update(bytes) {
    let at = 0;
    while (at < bytes.length) {
      if (this.fill === 0 && bytes.length - at >= BLOCK_SIZE) { // a whole block: no copy here
        this._digest(bytes.subarray(at, at + BLOCK_SIZE));
        at += BLOCK_SIZE;
        continue;
      }
      const take = Math.min(BLOCK_SIZE - this.fill, bytes.length - at);
      this.block.set(bytes.subarray(at, at + take), this.fill);
      this.fill += take;
      at += take;
      if (this.fill === BLOCK_SIZE) {
        this._digest(this.block);
        this.fill = 0;
      }
    }
    return this.digests.length > DIGESTS_IN_FLIGHT ? this.digests[this.digests.length - DIGESTS_IN_FLIGHT] : null;
  }

  /** The hex digest of everything so far (a short last block counts); feeding may go on. */
  async hex() {
    const parts = this.digests.slice();
    if (this.fill) parts.push(crypto.subtle.digest("SHA-256", this.block.subarray(0, this.fill)));
    const all = new Uint8Array(32 * parts.length);
    (await Promise.all(parts)).forEach((digest, i) => all.set(new Uint8Array(digest), 32 * i));
    return hexencode(new Uint8Array(await crypto.subtle.digest("SHA-256", all)));
  }
}

/** A new hash of `scheme` (PLAIN or BLOCKS). */
export function fileHash(scheme) {
  if (scheme === PLAIN) return new PlainHash();
  if (scheme === BLOCKS) return new BlockHash();
  throw new Error(`unknown hash ${scheme}`);
}
