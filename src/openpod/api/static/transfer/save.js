// Where a browser receiver writes files, as streams (never a whole file in memory):
// - `downloadSink`: each file becomes a normal download, streamed through the service worker
//   (sw.js) from /transfer/download/<id>;
// - `folderSink`: with the File System Access API and the user's choice, straight into a
//   folder the user picked (sub-folders included).
// A sink has `open(path, size)` returning {write(bytes), close(), abort(reason)}.

import { hexencode } from "./crypto.js";

const SW_URL = "/transfer/static/sw.js";
const SW_SCOPE = "/transfer/";
// Chunks (of up to 256 KiB) queued towards the download before the receiver waits. The
// download's writes come in bursts on a busy machine: with 32 a receiving page waited for room
// 0.6-3.1 s of a 6-7 s transfer of 128 MiB (median 1.9 s, 9 runs), with 128 0.1-1.7 s (median
// 0.2 s) (bench/RESULTS.md). A paused download holds at most this queue plus the window
// (files.js) in the page: 32 + 32 MiB.
const STREAM_HWM = 128;

/** The active service worker for /transfer/ (the page itself is outside its scope). */
async function activeWorker() {
  const registration = await navigator.serviceWorker.register(SW_URL, { scope: SW_SCOPE });
  const worker = registration.active || registration.waiting || registration.installing;
  if (worker.state !== "activated") {
    await new Promise((resolve) => {
      const check = () => worker.state === "activated" && resolve();
      worker.addEventListener("statechange", check);
      check();
    });
  }
  return worker;
}

function post(worker, message, transfer) {
  return new Promise((resolve) => {
    const reply = new MessageChannel();
    reply.port1.onmessage = () => resolve();
    worker.postMessage(message, [reply.port2, ...transfer]);
  });
}

function canTransferStreams() {
  try {
    const { port1 } = new MessageChannel();
    const stream = new ReadableStream();
    port1.postMessage(stream, [stream]);
    port1.close();
    return true;
  } catch (_) {
    return false;
  }
}

/** A writer over a MessagePort for browsers that cannot transfer a stream to the worker. */
function portWriter(port) {
  let room = STREAM_HWM;
  let wake = null;
  let cancelled = null;
  port.onmessage = ({ data }) => {
    if (data.cancelled) cancelled = new Error(`the download was cancelled (${data.cancelled})`);
    else room = data.room;
    if (wake) wake();
  };
  return {
    async write(bytes) {
      while (room <= 0 && !cancelled) await new Promise((resolve) => { wake = resolve; });
      if (cancelled) throw cancelled;
      room -= 1;
      const copy = bytes.slice();
      port.postMessage({ chunk: copy.buffer }, [copy.buffer]);
    },
    async close() { port.postMessage({ end: true }); },
    abort(reason) { port.postMessage({ abort: String(reason) }); },
  };
}

function startDownload(id) {
  const frame = document.createElement("iframe");
  frame.hidden = true;
  frame.className = "download-frame";
  frame.src = `/transfer/download/${id}`;
  document.body.append(frame);
}

/** Each file as its own streamed download (the browser's download folder). */
export async function downloadSink() {
  if (!("serviceWorker" in navigator)) throw new Error("This browser cannot stream downloads (no service worker).");
  const worker = await activeWorker();
  const streams = canTransferStreams();
  for (const frame of document.querySelectorAll("iframe.download-frame")) frame.remove(); // earlier, finished downloads
  return {
    async open(path, size) {
      const id = hexencode(crypto.getRandomValues(new Uint8Array(16)));
      const name = path.split("/").join("_");
      let writer;
      if (streams) {
        const { readable, writable } = new TransformStream({}, new CountQueuingStrategy({ highWaterMark: STREAM_HWM }));
        await post(worker, { type: "download", id, name, size, stream: readable }, [readable]);
        const w = writable.getWriter();
        writer = {
          async write(bytes) { await w.ready; w.write(bytes).catch(() => {}); },
          async close() { await w.close(); },
          abort(reason) { w.abort(reason).catch(() => {}); },
        };
      } else {
        const channel = new MessageChannel();
        const message = { type: "download", id, name, size, port: channel.port2, depth: STREAM_HWM };
        await post(worker, message, [channel.port2]);
        writer = portWriter(channel.port1);
      }
      startDownload(id);
      return writer;
    },
  };
}

async function folder(root, parts) {
  let dir = root;
  for (const part of parts) dir = await dir.getDirectoryHandle(part, { create: true });
  return dir;
}

/** Files written under a folder the user picked (`showDirectoryPicker`, asked at the click). */
export function folderSink(root) {
  return {
    async begin(files, dirs) {
      for (const dir of dirs) await folder(root, dir.split("/"));
    },
    async open(path) {
      const parts = path.split("/");
      const name = parts.pop();
      const handle = await (await folder(root, parts)).getFileHandle(name, { create: true });
      const w = await handle.createWritable();
      return {
        write: (bytes) => w.write(bytes),
        close: () => w.close(),
        abort: (reason) => { w.abort(reason).catch(() => {}); },
      };
    },
  };
}
