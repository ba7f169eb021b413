// Runs a chaos actor's operations against its client and reports each
// outcome. Shared by the device page (two tabs per device) and the device's
// service worker; keep it free of window-only APIs.

/** The client options every actor of a device uses (one database per device). */
export function clientOptions(config) {
  return {
    name: config.name,
    serverUrl: config.serverUrl,
    token: config.token,
    entityTypes: config.entityTypes,
    conflictStrategy: "last-write-wins",
    // Only the poison endpoint may make a task fail for good: retryable
    // faults must never exhaust the budget.
    retry: { maxRetries: 1000, baseDelay: 100, maxDelay: 2000, jitter: true },
    circuitBreaker: { failureThreshold: 8, cooldown: 1000, maxCooldown: 4000 },
    requestTimeout: config.requestTimeout,
    closeTimeout: 2000,
    batchSize: 20,
    pageSize: 50,
    logLevel: "silent",
  };
}

/** What a failed call threw, as plain data. */
export function describeError(error) {
  return {
    code: error?.code ?? null,
    name: error?.name ?? null,
    message: String(error?.message ?? error).slice(0, 300),
  };
}

/**
 * Returns `run(ops)`: executes the ops in order, awaiting those marked
 * `await` and letting the others overlap, and calls `report` once per op.
 */
export function makeRunner({ client, actor, serverUrl, report }) {
  async function one(op) {
    const base = { opId: op.id, actor, kind: op.kind, started: Date.now() };
    try {
      let extra = {};
      switch (op.kind) {
        case "register": {
          const url = `${serverUrl}/api/outbox/${op.poison ? "poison/" : ""}${actor.replace("/", "-")}`;
          const options = { url, method: "POST", data: { opId: op.id, actor, pad: op.pad }, priority: op.priority };
          if (op.orderingKey) options.orderingKey = op.orderingKey;
          await client.register(`t:${op.id}`, options);
          break;
        }
        case "put": {
          const record = await client.put(op.type, { id: op.rid, v: op.id, by: actor, text: op.text });
          extra = { editedAt: Date.parse(record.updatedAt), version: record.version };
          break;
        }
        case "delete":
          extra = { deleted: await client.delete(op.type, op.rid) };
          break;
        case "sync": {
          const result = await client.sync();
          extra = { remaining: result?.remaining ?? null };
          break;
        }
        case "flush": {
          const result = await client.flush();
          extra = { remaining: result?.remaining ?? null, report: result === undefined ? "undefined" : "ok" };
          break;
        }
        case "pull":
          await client.pull();
          break;
        default:
          throw new Error(`unknown op kind ${op.kind}`);
      }
      report({ ...base, ok: true, ended: Date.now(), ...extra });
    } catch (error) {
      report({ ...base, ok: false, ended: Date.now(), ...describeError(error) });
    }
  }
  return async function run(ops) {
    const overlapping = [];
    for (const op of ops) {
      const done = one(op);
      if (op.await) await done;
      else overlapping.push(done);
    }
    await Promise.all(overlapping);
  };
}

/**
 * Follows what becomes of plain outbox tasks in this realm: each retry (with
 * its error) and each completion this client hears (its own, or relayed from
 * another client of the database), as `{actor, event, id, at, ...}` entries
 * handed to `send`. The runner keeps them to explain a duplicate delivery.
 */
export function traceOutcomes(client, actor, send) {
  const plain = (task) => typeof task?.id === "string" && task.id.startsWith("t:");
  client.on("sync:retry", (task, info) => {
    if (!plain(task)) return;
    send({ actor, event: "retry", id: task.id, at: Date.now(), attempt: info?.attempt, delay: info?.delay, class: info?.error?.class, message: String(info?.error?.message ?? "").slice(0, 120) });
  });
  client.on("sync:complete", (task, response) => {
    if (!plain(task)) return;
    // The proxy names the delivery in the ETag (the body may be cut).
    const delivery = Number(/delivery-(\d+)/.exec(response?.headers?.etag ?? "")?.[1] ?? NaN);
    send({ actor, event: "complete", id: task.id, at: Date.now(), delivery: Number.isFinite(delivery) ? delivery : null, status: response?.status });
  });
  client.on("sync:failed", (task, error) => {
    if (!plain(task)) return;
    send({ actor, event: "failed", id: task.id, at: Date.now(), class: error?.class, message: String(error?.message ?? "").slice(0, 120) });
  });
}

/** Reads the client's database directly (not through the SDK): every store's content. */
export function dumpDatabase(name) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(`tidesync:${name}`);
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const db = open.result;
      const stores = [...db.objectStoreNames];
      const out = {};
      const tx = db.transaction(stores, "readonly");
      for (const store of stores) {
        const request = tx.objectStore(store).getAll();
        request.onsuccess = () => { out[store] = request.result; };
      }
      tx.oncomplete = () => { db.close(); resolve(out); };
      tx.onerror = () => { db.close(); reject(tx.error); };
    };
  });
}
