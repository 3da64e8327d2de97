// The /transfer page's service worker: it turns a stream of received bytes into a download.
//
// A browser receiver never holds a whole file in memory. For each file the page hands this
// worker a ReadableStream (or, where streams cannot be transferred, posts the chunks over a
// MessagePort), then opens /transfer/download/<id> in a hidden frame; the worker answers that
// request with the stream and `Content-Disposition: attachment`, so the browser saves the
// bytes to disk as they arrive.

const downloads = new Map(); // id -> {name, size, stream}

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

/** A stream fed by chunks posted on `port`, queueing up to `depth` of them (the page's
 * STREAM_HWM, save.js); each chunk is acknowledged once it is read. */
function streamFromPort(port, depth) {
  return new ReadableStream({
    start(controller) {
      port.onmessage = ({ data }) => {
        if (data.chunk) controller.enqueue(new Uint8Array(data.chunk));
        else if (data.end) controller.close();
        else if (data.abort) controller.error(new Error(data.abort));
      };
    },
    pull(controller) {
      port.postMessage({ room: controller.desiredSize });
    },
    cancel(reason) {
      port.postMessage({ cancelled: String(reason) });
    },
  }, new CountQueuingStrategy({ highWaterMark: depth }));
}

self.addEventListener("message", (event) => {
  const data = event.data || {};
  if (data.type !== "download" || !/^[A-Za-z0-9_-]{8,64}$/.test(data.id || "")) return;
  const depth = Number.isSafeInteger(data.depth) ? Math.min(Math.max(data.depth, 1), 1024) : 1;
  const stream = data.stream || streamFromPort(data.port, depth);
  downloads.set(data.id, { name: String(data.name || "download"), size: data.size, stream });
  event.ports[0].postMessage({ ready: data.id });
});

function disposition(name) {
  const fallback = name.replace(/[^\x20-\x7e]|["\\]/g, "_");
  return `attachment; filename="${fallback}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}

self.addEventListener("fetch", (event) => {
  const match = new URL(event.request.url).pathname.match(/^\/transfer\/download\/([A-Za-z0-9_-]+)$/);
  if (!match) return;
  const download = downloads.get(match[1]);
  if (!download) {
    event.respondWith(new Response("This download is gone: receive the files again.", { status: 404 }));
    return;
  }
  downloads.delete(match[1]);
  const headers = {
    "Content-Type": "application/octet-stream",
    "Content-Disposition": disposition(download.name),
    "X-Content-Type-Options": "nosniff",
  };
  if (Number.isSafeInteger(download.size)) headers["Content-Length"] = String(download.size);
  event.respondWith(new Response(download.stream, { headers }));
});
