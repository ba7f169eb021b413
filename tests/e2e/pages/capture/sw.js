// The service worker of docs/migrating-from-workbox.md, word for word (the
// test checks that the guide shows this file): Workbox's
//
//   registerRoute(/\/api\//, new NetworkOnly({ plugins: [
//     new BackgroundSyncPlugin("uploads", { maxRetentionTime: 24 * 60 }) ] }), "POST");
//
// in Tidesync. Registered as a module worker by index.html.
import init, { SyncClient } from "/pkg/tidesync.js";

const WASM_URL = new URL("/pkg/tidesync_bg.wasm", self.location.href).href;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open("app-v1").then((cache) => cache.add(WASM_URL)).then(() => self.skipWaiting()));
});
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

let opening;
function getClient() {
  opening ??= (async () => {
    const cached = await caches.match(WASM_URL);
    await init({ module_or_path: cached ?? fetch(WASM_URL) });
    return SyncClient.open({ name: "uploads" });
  })();
  opening.catch(() => { opening = undefined; });
  return opening;
}

// The route: POST requests under /api/ go to the network; the ones the network
// fails are queued (in order: the orderingKey plays the queue's part) and the
// page is answered 202 with a Tidesync-Task header.
self.addEventListener("fetch", (event) => {
  if (event.request.method !== "POST") return;
  event.respondWith(getClient().then((client) => client.captureFailedRequests(event, {
    match: /\/api\//,
    orderingKey: "uploads",
    maxRetentionTime: 24 * 60 * 60 * 1000, // milliseconds (Workbox counts minutes: 24 * 60)
  })));
});

// Workbox's onSync / replayRequests: the browser fires `sync` when the network
// returns; the queue is replayed, and rejected if work remains so the browser
// tries again later.
self.addEventListener("sync", (event) => {
  if (event.tag !== "tidesync") return;
  event.waitUntil(getClient().then((client) => client.handleSyncEvent(event.tag)));
});
