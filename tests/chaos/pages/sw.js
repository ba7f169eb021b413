// A chaos device's service worker: opens the same client (same IndexedDB
// database, same Web Lock) as the device's tabs, answers the Background Sync
// `sync` event, and runs operations the runner sends through a tab.
// The .wasm goes into Cache Storage at install, so a worker woken while the
// device is offline still starts.
import init, { SyncClient } from "/pkg/tidesync.js";
import { clientOptions, makeRunner, dumpDatabase, describeError, traceOutcomes } from "./ops.js";

const config = JSON.parse(new URL(self.location.href).searchParams.get("config"));
const CACHE = "tidesync-chaos";
const WASM_URL = new URL("/pkg/tidesync_bg.wasm", self.location.href).href;

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    await (await caches.open(CACHE)).add(WASM_URL);
    await self.skipWaiting();
  })());
});
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

let opening;
function getClient() {
  if (!opening) {
    opening = (async () => {
      const cached = await caches.match(WASM_URL);
      await init({ module_or_path: cached ?? fetch(WASM_URL) });
      const client = await SyncClient.open(clientOptions(config));
      const channel = new BroadcastChannel("chaos-trace");
      traceOutcomes(client, config.actor, (entry) => channel.postMessage(entry));
      return client;
    })();
    opening.catch(() => { opening = undefined; });
  }
  return opening;
}

self.addEventListener("sync", (event) => {
  if (event.tag !== "tidesync") return;
  event.waitUntil(getClient().then((client) => client.handleSyncEvent(event.tag)));
});

self.addEventListener("message", (event) => {
  const port = event.ports[0];
  if (!port) return;
  const { type, ops } = event.data ?? {};
  event.waitUntil((async () => {
    try {
      const client = await getClient();
      if (type === "ops") {
        const report = (result) => port.postMessage({ type: "result", result });
        await makeRunner({ client, actor: config.actor, serverUrl: config.serverUrl, report })(ops);
        port.postMessage({ type: "done" });
      } else if (type === "status") {
        port.postMessage({ type: "done", value: client.getStatus() });
      } else if (type === "dump") {
        port.postMessage({ type: "done", value: await dumpDatabase(config.name) });
      } else {
        port.postMessage({ type: "error", error: { message: `unknown message ${type}` } });
      }
    } catch (error) {
      port.postMessage({ type: "error", error: describeError(error) });
    }
  })());
});
