// The /transfer page's receiver refuses a manifest the CLI's receiver refuses
// (files.js checkManifest against domain/transfer_protocol.py parse_manifest): unsafe paths,
// a path twice, a bad size, a path both a file and a directory, a file that is the folder of
// another path. Prints "ok: N checks".
//
//   node tests/js/manifest.mjs

import { checkManifest } from "../../src/openpod/api/static/transfer/files.js";

let checks = 0;

function refused(what, manifest, kind, message) {
  try {
    checkManifest(manifest);
  } catch (error) {
    if (error.kind !== kind || !error.message.includes(message)) {
      console.error(`FAILED ${what}: ${error.kind} ${error.message}`);
      process.exit(1);
    }
    checks++;
    return;
  }
  console.error(`FAILED ${what}: accepted`);
  process.exit(1);
}

const file = (path, size = 1) => ({ path, size });
const good = checkManifest({ files: [file("ab"), file("a/b"), file("d/e")], dirs: ["a", "d", "d/f"] });
if (good.files.length !== 3 || good.dirs.length !== 3) {
  console.error("FAILED a good manifest");
  process.exit(1);
}
checks++;
refused("absolute", { files: [file("/etc/x")] }, "unsafe-path", "absolute");
refused("dot-dot", { files: [file("a/../../x")] }, "unsafe-path", "'..' part");
refused("twice", { files: [file("a"), file("a")] }, "protocol", "lists a twice");
refused("negative size", { files: [file("a", -1)] }, "protocol", "Bad size for a");
refused("file and dir", { files: [file("a")], dirs: ["a"] }, "protocol", "lists a as a file and a directory");
refused("file above a file", { files: [file("a"), file("a/b")] }, "protocol", "lists a as a file and as the folder of a/b");
refused("file above a deep file", { files: [file("a/b/c"), file("a")] }, "protocol", "lists a as a file and as the folder of a/b/c");
refused("file above a dir", { files: [file("x/y")], dirs: ["x", "x/y/z"] }, "protocol", "lists x/y as a file and as the folder of x/y/z");
console.log(`ok: ${checks} checks`);
