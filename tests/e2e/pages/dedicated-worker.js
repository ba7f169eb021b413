// A module dedicated worker that loads the same pkg/ as a page. Dedicated
// module workers may use top-level await (service workers may not).
import init, { SyncClient, version } from "/pkg/tidesync.js";
await init();

self.onmessage = async (event) => {
  const { name, url, retry } = event.data;
  try {
    const client = await SyncClient.open({ name, logLevel: "silent", retry });
    const retries = [];
    client.on("sync:retry", (task, info) => retries.push({ id: task.id, delay: info.delay, class: info.error.class }));
    const delivered = new Promise((resolve, reject) => {
      client.on("sync:complete", (task, response) => resolve({ id: task.id, status: response.status, body: response.body }));
      client.on("sync:failed", (task, error) => reject(new Error(`${task.id} failed: ${error.reason}`)));
    });
    const queued = await client.register("worker-task", { url, data: { from: "dedicated worker" } });
    const complete = await delivered;
    const status = client.getStatus();
    await client.close();
    self.postMessage({
      ok: true, version: version(), queued: { id: queued.id, createdAt: queued.createdAt }, complete, retries, status,
      scope: {
        window: typeof window !== "undefined", document: typeof document !== "undefined",
        indexedDB: typeof indexedDB !== "undefined", locks: typeof navigator.locks?.request === "function",
      },
    });
  } catch (error) {
    self.postMessage({ ok: false, error: { name: error?.name, code: error?.code, message: String(error?.message ?? error) } });
  }
};
self.postMessage({ ready: true });
