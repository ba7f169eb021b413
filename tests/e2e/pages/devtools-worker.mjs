// A dedicated module worker that opens a Tidesync client named by ?name=, so
// the DevTools tests can inspect a client that lives in a worker. Messages:
// in {register: [id, options]} → out {registered: id}; out "ready" once open.
import init, { SyncClient } from "/pkg/tidesync.js";

const name = new URL(self.location.href).searchParams.get("name");
await init();
const client = await SyncClient.open({ name, logLevel: "silent" });
self.onmessage = async ({ data }) => {
  if (data?.register) {
    const [id, options] = data.register;
    await client.register(id, options);
    self.postMessage({ registered: id });
  }
};
self.postMessage("ready");
