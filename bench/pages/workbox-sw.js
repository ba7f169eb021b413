// Workbox Background Sync's Queue in a module service worker, as Workbox users
// run it (issue 13, item 7): the production bundle of bench/workbox/build.mjs,
// with the real `self.registration.sync`, so every pushRequest() also
// registers a sync, as it does in the field. The page
// (bench/pages/workbox-sw.html) relays the bench's calls here over a
// MessageChannel; times are performance.now() inside this worker.
//
// The queue is made while the script is first evaluated (a sync listener added
// later would be ignored by Chromium). Its onSync does nothing: the browser
// fires the sync event as soon as it is registered and online, and the bench
// times replayRequests() itself, with the same code path the default onSync
// runs. Each bench run gets a fresh browser context, so a fresh worker and
// IndexedDB.
import { Queue } from "/workbox/queue.js";

// Counts IndexedDB transactions by mode, as the window pages do.
let idbTransactions = { readonly: 0, readwrite: 0 };
const openTransaction = IDBDatabase.prototype.transaction;
IDBDatabase.prototype.transaction = function (stores, mode) {
  idbTransactions[mode === "readwrite" ? "readwrite" : "readonly"]++;
  return openTransaction.apply(this, arguments);
};
const takeIdbTransactions = () => {
  const taken = idbTransactions;
  idbTransactions = { readonly: 0, readwrite: 0 };
  return taken;
};

const queue = new Queue("bench", { onSync: async () => {} });
const payload = "x".repeat(64);
const request = (path, i) => new Request(new URL(path, self.location.origin), {
  method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ i, payload }),
});

const ops = {
  /** N pushRequest() calls in one tick, awaited together ("tick"), or one by one ("sequential"). */
  async enqueue({ n, mode, path }) {
    takeIdbTransactions();
    const t0 = performance.now();
    if (mode === "tick") {
      const pending = [];
      for (let i = 0; i < n; i++) pending.push(queue.pushRequest({ request: request(path, i) }));
      await Promise.all(pending);
    } else {
      for (let i = 0; i < n; i++) await queue.pushRequest({ request: request(path, i) });
    }
    const ms = performance.now() - t0;
    return { ms, idb: takeIdbTransactions(), pending: await queue.size() };
  },
  /** replayRequests(): one request at a time until the queue is empty. */
  async replay() {
    takeIdbTransactions();
    const t0 = performance.now();
    await queue.replayRequests();
    const ms = performance.now() - t0;
    return { ms, idb: takeIdbTransactions(), pending: await queue.size() };
  },
};

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
self.addEventListener("message", (event) => {
  const { op, args } = event.data;
  const [port] = event.ports;
  // waitUntil keeps the worker alive for the whole measurement.
  event.waitUntil((async () => {
    try {
      port.postMessage({ ok: await ops[op](args) });
    } catch (error) {
      port.postMessage({ error: String(error?.stack ?? error) });
    }
  })());
});
