// The service worker of the example, registered as a module worker:
//   navigator.serviceWorker.register("./sw.js", { type: "module" })
//
// Service workers may not use top-level await, so the WebAssembly module is
// loaded lazily, inside the first event that needs it, and every event
// handler keeps the worker alive with event.waitUntil() until it is done.
// The .wasm bytes are put in Cache Storage at install, so a worker woken up
// while the network is still flaky starts without fetching them again.
import init, { SyncClient } from "/pkg/tidesync.js";
import { CLIENT_OPTIONS, SYNC_TAG } from "./config.js";

// Bump when you deploy a new pkg/: a changed worker script installs again
// and refreshes the cached .wasm.
const CACHE = "tidesync-sw-example-v1";
const WASM_URL = new URL("/pkg/tidesync_bg.wasm", self.location.href).href;

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.add(WASM_URL);
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) {
      if (key.startsWith("tidesync-sw-example-") && key !== CACHE) await caches.delete(key);
    }
    await self.clients.claim();
  })());
});

let opening;
/** The worker's client, opened once per worker lifetime (a woken-up worker opens it again). */
function getClient() {
  if (!opening) {
    opening = (async () => {
      const cached = await caches.match(WASM_URL);
      await init({ module_or_path: cached ?? fetch(WASM_URL) });
      return SyncClient.open(CLIENT_OPTIONS);
    })();
    opening.catch(() => { opening = undefined; }); // a failed start is retried by the next event
  }
  return opening;
}

// Chromium: the browser fires `sync` when connectivity returns (and retries
// with backoff while handleSyncEvent rejects with code "sync-incomplete").
self.addEventListener("sync", (event) => {
  if (event.tag !== SYNC_TAG) return;
  event.waitUntil(getClient().then((client) => client.handleSyncEvent(event.tag)));
});

// The page can ask the worker to flush too (used where Background Sync is
// missing, and by the tests). Each flush takes the database's Web Lock, so a
// page and its worker flushing at once never send a task twice.
self.addEventListener("message", (event) => {
  const { type, id } = event.data ?? {};
  if (type !== "flush" && type !== "status") return;
  const reply = (message) => event.source?.postMessage({ id, ...message });
  event.waitUntil((async () => {
    try {
      const client = await getClient();
      if (type === "flush") {
        const startedAt = Date.now();
        const report = await client.flush();
        reply({ type, report, startedAt, endedAt: Date.now() });
      } else {
        // What this scope offers the SDK (the tests check it: no window here).
        const scope = {
          window: typeof window !== "undefined", indexedDB: typeof indexedDB !== "undefined",
          fetch: typeof fetch === "function", setTimeout: typeof setTimeout === "function",
          locks: typeof navigator.locks?.request === "function",
        };
        reply({ type, status: client.getStatus(), scope });
      }
    } catch (error) {
      reply({ type, error: { name: error?.name, code: error?.code, message: String(error?.message ?? error) } });
    }
  })());
});
