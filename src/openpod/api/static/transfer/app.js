// The /transfer page: a send panel (drop or pick files, show the code) and a receive panel
// (type the code, save the files), with progress and clear errors. The protocol lives in
// peer.js; this file only wires the page to it and exposes `window.openpodTransfer`, a small
// read-only view of the last transfer for tests and curious users.

import { receive, send, TransferError } from "./peer.js";
import { downloadSink, folderSink } from "./save.js";

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const options = {
  loopback: query.get("loopback") === "1", // tests on 127.0.0.1 only: see peer.js
  transport: ["webrtc", "relay"].includes(query.get("transport")) ? query.get("transport") : null,
  dtls: query.get("dtls") !== "0", // `?dtls=0`: seal WebRTC records as peers before "dtls" do
};
const FOLDER_SETTING = "openpod-transfer-pick-folder";

const hook = { role: null, code: null, state: "idle", transport: null, progress: null, error: null, result: null };
window.openpodTransfer = hook;

function setState(state, text) {
  hook.state = state;
  document.body.dataset.state = state;
  $("state").textContent = text;
}

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${n.toFixed(i && n < 100 ? 1 : 0)} ${units[i]}`;
}

function duration(seconds) {
  if (!Number.isFinite(seconds)) return "…";
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  const m = Math.floor(seconds / 60);
  return m < 60 ? `${m} min ${Math.round(seconds % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

function showProgress(p) {
  hook.progress = p;
  const bar = $("bar");
  bar.hidden = false;
  bar.value = p.total ? p.done / p.total : 1;
  const rate = p.done / Math.max(p.seconds, 1e-3);
  const eta = rate > 0 ? (p.total - p.done) / rate : Infinity;
  $("numbers").textContent = `${bytes(p.done)} of ${bytes(p.total)} · ${(rate / 1e6).toFixed(1)} MB/s · ${duration(eta)} left · ${p.path}`;
}

function failed(error) {
  const kind = error instanceof TransferError ? error.kind : error.name === "CodeError" ? "bad-code" : "error";
  const message = error.name === "CodeError" ? `That code is not valid: ${error.message}` : error.message;
  hook.error = { kind, message };
  setState("failed", "Stopped.");
  $("error").hidden = false;
  $("error").textContent = message;
  document.body.classList.remove("busy");
}

function finished(role, result) {
  hook.result = result;
  const verb = role === "sender" ? "Sent" : "Received";
  setState("done", `${verb} ${result.files.length} file${result.files.length === 1 ? "" : "s"}, verified (SHA-256).`);
  $("numbers").textContent = `${bytes(result.bytes)} in ${result.seconds.toFixed(1)} s · ${result.mbps.toFixed(1)} MB/s over ${hook.transport}`;
  document.body.classList.remove("busy");
}

function begin(role) {
  Object.assign(hook, { role, code: null, transport: null, progress: null, error: null, result: null });
  $("error").hidden = true;
  $("numbers").textContent = "";
  $("bar").hidden = true;
  document.body.classList.add("busy");
}

const events = {
  code(text) {
    hook.code = text;
    $("code").textContent = text;
    $("code-box").hidden = false;
    const link = new URL(`/transfer#${text}`, location.href).toString();
    $("code-link").textContent = link;
    $("code-link").href = link;
    setState("waiting", "Waiting for the receiver. Keep this page open.");
  },
  state(state, transport, text) {
    if (transport) hook.transport = transport;
    const shown = { connecting: "Connecting…", transferring: `Transferring over ${transport === "relay" ? "the relay" : "WebRTC (direct)"}…` };
    setState(state, text || shown[state] || state);
  },
  progress: showProgress,
};

// ---- send: files from the picker or a drop (folders included) ----

function uniquePaths(entries) {
  const seen = new Set();
  for (const entry of entries) {
    let path = entry.path;
    for (let n = 2; seen.has(path); n += 1) path = entry.path.replace(/(\.[^./]*)?$/, ` (${n})$1`);
    seen.add(path);
    entry.path = path;
  }
  return entries;
}

function readDir(reader) {
  return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
}

async function walk(entry, prefix, entries, dirs) {
  const path = prefix ? `${prefix}/${entry.name}` : entry.name;
  if (entry.isFile) {
    entries.push({ file: await new Promise((resolve, reject) => entry.file(resolve, reject)), path });
  } else if (entry.isDirectory) {
    dirs.push(path);
    const reader = entry.createReader();
    for (let batch = await readDir(reader); batch.length; batch = await readDir(reader)) {
      for (const child of batch) await walk(child, path, entries, dirs);
    }
  }
}

async function fromDrop(dataTransfer) {
  const roots = Array.from(dataTransfer.items || [], (item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  if (!roots.length) return { entries: Array.from(dataTransfer.files, (file) => ({ file, path: file.name })), dirs: [] };
  const entries = [];
  const dirs = [];
  for (const root of roots) await walk(root, "", entries, dirs);
  return { entries, dirs };
}

async function startSend({ entries, dirs }) {
  if (!entries.length && !dirs.length) return;
  if (document.body.classList.contains("busy")) return;
  begin("sender");
  $("send-list").textContent = "";
  for (const { file, path } of entries) {
    const item = document.createElement("li");
    item.textContent = `${path} (${bytes(file.size)})`;
    $("send-list").append(item);
  }
  setState("starting", "Getting a code…");
  try {
    finished("sender", await send(uniquePaths(entries), dirs, events, options));
  } catch (error) {
    failed(error);
  }
}

$("pick").addEventListener("change", () => {
  const files = Array.from($("pick").files);
  $("pick").value = "";
  startSend({ entries: files.map((file) => ({ file, path: file.name })), dirs: [] });
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  startSend(await fromDrop(event.dataTransfer));
});
$("copy").addEventListener("click", () => navigator.clipboard.writeText(hook.code || ""));

// ---- receive ----

const canPickFolder = typeof window.showDirectoryPicker === "function";
$("folder-option").hidden = !canPickFolder;
$("pick-folder").checked = canPickFolder && localStorage.getItem(FOLDER_SETTING) === "1";
$("pick-folder").addEventListener("change", () => localStorage.setItem(FOLDER_SETTING, $("pick-folder").checked ? "1" : "0"));

/** Each file is its own download: with several, the browser may ask to allow that once. */
function manyDownloads(sink) {
  return {
    ...sink,
    begin(files) {
      if (files.length > 1) $("state").textContent = `Receiving ${files.length} files as separate downloads: allow multiple downloads if the browser asks.`;
    },
  };
}

$("receive-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (document.body.classList.contains("busy")) return;
  begin("receiver");
  setState("starting", "Looking up the code…");
  try {
    // The folder picker needs the click's user activation, so it is asked for first.
    const sink = canPickFolder && $("pick-folder").checked
      ? folderSink(await window.showDirectoryPicker({ mode: "readwrite" }))
      : manyDownloads(await downloadSink());
    finished("receiver", await receive($("code-input").value, sink, events, options));
  } catch (error) {
    failed(error);
  }
});

if (location.hash.length > 1) $("code-input").value = decodeURIComponent(location.hash.slice(1));
setState("idle", "Ready.");
