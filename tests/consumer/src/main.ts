// What a web developer writes: the README's quick start, bundled by Vite,
// type-checked with `tsc --noEmit --strict`. The page completes one task
// against the server given in `?server=` and shows what happened.
import { createElement, type ReactElement } from "react";
import { createRoot } from "react-dom/client";
import init, {
  SyncClient,
  type FailureInfo,
  type LiveStatus,
  type RecordsSnapshot,
  type SubscribeOptions,
  type QueuedTask,
  type SyncClientOptions,
  type SyncEventName,
  type SyncEvents,
  type SyncResponse,
  type SyncStatus,
  type TidesyncError,
} from "tidesync";
import { useRecords } from "./useRecords.js";

interface Result {
  ok: boolean;
  id?: string;
  status?: number;
  body?: unknown;
  pendingCount?: number;
  outcomes?: string[];
  subscribed?: string[][];
  rendered?: string[];
  samples?: Record<string, unknown>;
  error?: string;
}

declare global {
  interface Window {
    consumerResult?: Result;
  }
}

function isTidesyncError(error: unknown): error is TidesyncError {
  return error instanceof Error && error.name === "TidesyncError";
}

async function main(): Promise<Result> {
  const server = new URLSearchParams(location.search).get("server") ?? location.origin;
  await init();

  const options: SyncClientOptions = {
    name: "consumer",
    logLevel: "warn",
    retry: { maxRetries: 3, baseDelay: 200, jitter: true },
    circuitBreaker: { failureThreshold: 5, cooldown: 10_000 },
  };
  const client = await SyncClient.open(options);
  // Runtime values of every public shape, checked against the .d.ts by the test.
  const samples: Record<string, unknown> = { statusOpen: client.getStatus() };

  // Listener parameters are typed from the SyncEvents map: no annotations needed.
  const settled = new Map<string, (outcome: string) => void>();
  const outcome = (id: string) => new Promise<string>((resolve) => settled.set(id, resolve));
  const helloDone = outcome("consumer-hello");
  const retryDone = outcome("consumer-retry");
  const failDone = outcome("consumer-fail");
  let response: SyncResponse | undefined;
  client.on("sync:complete", (task, res) => {
    if (task.id === "consumer-hello") {
      response = res;
      samples.completeTask = task;
      samples.completeResponse = res;
    }
    settled.get(task.id)?.("complete");
  });
  client.on("sync:failed", (task, error) => {
    const reason: string = error.reason;
    samples.failedTask = task;
    samples.failure = error;
    settled.get(task.id)?.(`failed: ${reason} (${error.class})`);
  });
  client.on("sync:retry", (task, info) => {
    samples.retryTask = task;
    samples.retryInfo = info;
  });
  const statuses: SyncStatus[] = [];
  const off: () => void = client.on("status", (status) => statuses.push(status));
  client.on("online", () => console.info("online"));
  client.on("circuit:open", (info) => console.warn(`circuit open until ${info.until}`));

  // A handler written apart from the call, typed through the map.
  const onFailed: SyncEvents["sync:failed"] = (task: QueuedTask, error: FailureInfo) =>
    console.warn(task.id, error.message);
  client.on("sync:failed", onFailed);
  const names: SyncEventName[] = ["sync:retry", "auth:required"];
  console.debug("also available:", names);

  // What the types forbid, JavaScript callers get as a TidesyncError at run time.
  try {
    // @ts-expect-error a misspelled event name is a type error
    client.on("sync:complet", () => {});
    throw new Error("on() accepted a misspelled event name");
  } catch (error) {
    if (!isTidesyncError(error) || error.code !== "invalid-event") throw error;
  }
  try {
    // @ts-expect-error `name` is required
    await SyncClient.open({});
    throw new Error("open() accepted options without a name");
  } catch (error) {
    if (!isTidesyncError(error) || error.code !== "invalid-options") throw error;
  }

  const task = await client.register("consumer-hello", {
    url: `${server}/api/consumer/hello`,
    method: "POST",
    data: { from: "vite bundle", at: new Date().toISOString() },
    headers: { "X-Trace": "consumer" },
    priority: "high",
  });
  samples.queuedTask = task;
  samples.taskStatusPending = await client.getTaskStatus("consumer-hello");
  // The test server answers these 503 then 201, and 422.
  await client.register("consumer-retry", { url: `${server}/api/consumer/retry`, data: { n: 1 }, orderingKey: "k" });
  await client.register("consumer-fail", { url: `${server}/api/consumer/fail`, body: "not json", priority: "low" });

  const outcomes = await Promise.all([helloDone, retryDone, failDone]);
  if (outcomes[0] !== "complete" || outcomes[1] !== "complete" || !outcomes[2]?.startsWith("failed")) {
    throw new Error(`unexpected outcomes: ${outcomes.join(" | ")}`);
  }
  off();
  samples.statusEvent = statuses.at(-1);
  samples.flushReport = await client.flush();
  samples.statusAfter = client.getStatus();
  samples.metrics = client.getMetrics();
  samples.health = client.getHealth();
  samples.taskStatusComplete = await client.getTaskStatus("consumer-hello");
  samples.failedList = await client.listFailed();
  samples.queuedList = client.listQueued();
  const pendingCount = client.getStatus().pendingCount;
  await client.close();

  // Local records (replication), offline: put/get/query/delete and the queued mutations.
  // (The test server is not a sync server: no live connection to it.)
  const records = await SyncClient.open({ name: "consumer-records", serverUrl: server, entityTypes: ["note"], autoFlush: false, live: false });
  samples.recordPut = await records.put("note", { id: "n1", title: "Typed", tags: ["a", "b"], done: false });
  samples.recordGet = await records.get("note", "n1");
  await records.put("note", { id: "n2", title: "To delete" });
  const deleted: boolean = await records.delete("note", "n2");
  samples.recordQuery = await records.query("note");
  samples.mutations = records.listQueued();
  if (!deleted || records.listQueued().length === 0) throw new Error("records: nothing deleted or queued");
  const liveStatus: LiveStatus = records.getLiveStatus();
  samples.liveStatus = liveStatus;

  // Subscriptions: the callback form, and the React hook of docs/live.md rendered by React.
  const subscribed: string[][] = [];
  const unsubscribe: () => void = records.subscribe("note", OPEN_NOTES, (notes: RecordsSnapshot) => {
    subscribed.push(notes.map((n) => n.id));
    samples.snapshot = notes;
  });
  const host = document.body.appendChild(document.createElement("div"));
  const root = createRoot(host);
  root.render(createElement(OpenNotes, { client: records }));
  const rendered = () => Array.from(host.querySelectorAll("li"), (li) => li.textContent ?? "").join(" | ");
  const steps: string[] = [];
  await until(() => rendered() === "Typed");
  steps.push(rendered());
  await records.put("note", { id: "n3", title: "Another", done: false });
  await until(() => rendered() === "Another | Typed");
  steps.push(rendered());
  await records.put("note", { id: "n1", title: "Typed", tags: ["a", "b"], done: true });
  await until(() => rendered() === "Another");
  steps.push(rendered());
  unsubscribe();
  const calls = subscribed.length;
  await records.put("note", { id: "n4", title: "After unsubscribing", done: false });
  await until(() => rendered() === "After unsubscribing | Another");
  if (subscribed.length !== calls) throw new Error("a callback ran after unsubscribe()");
  root.unmount();
  await records.close();
  return {
    ok: true, id: task.id, status: response?.status, body: response?.body, pendingCount, outcomes,
    subscribed, rendered: steps, samples: JSON.parse(JSON.stringify(samples)),
  };
}

/** Open notes by title: a constant, so the hook subscribes once. */
const OPEN_NOTES: SubscribeOptions = { where: { done: false }, orderBy: "title" };

function OpenNotes({ client }: { client: SyncClient }): ReactElement {
  const notes = useRecords(client, "note", OPEN_NOTES);
  if (!notes) return createElement("p", null, "loading");
  return createElement("ul", null, notes.map((n) => createElement("li", { key: n.id }, String(n.title))));
}

/** Resolves once `ready()` holds; fails after 5 s. */
async function until(ready: () => boolean): Promise<void> {
  for (let waited = 0; !ready(); waited += 20) {
    if (waited > 5000) throw new Error(`timed out waiting for ${ready.toString()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Never called: type-level checks only (tsc fails on an unused @ts-expect-error). */
export function typeOnlyChecks(client: SyncClient): void {
  // @ts-expect-error the listener of "sync:complete" gets a task, not a number
  client.on("sync:complete", (task: number) => task);
  // @ts-expect-error "sync:failed" passes FailureInfo, which has no `response`
  client.on("sync:failed", (_task, error) => error.response);
  // @ts-expect-error priorities are "high" | "normal" | "low"
  void client.register("bad", { url: "/x", priority: "urgent" });
  // @ts-expect-error retry options are numbers
  void SyncClient.open({ name: "x", retry: { maxRetries: "5" } });
  // @ts-expect-error on() returns the unsubscribe function, not a promise
  void client.on("online", () => {}).then;
  // @ts-expect-error orderBy's direction is "asc" or "desc"
  client.subscribe("note", { orderBy: ["title", "down"] }, () => {});
  // @ts-expect-error snapshots are read-only
  client.subscribe("note", (records) => records.push(records[0]!));
  // @ts-expect-error "live:closed" passes {leader, reason, retryAt}, which has no `code`
  client.on("live:closed", (info) => info.code);
}

main().then(
  (result) => {
    window.consumerResult = result;
    document.getElementById("state")!.textContent = `delivered ${result.id}: HTTP ${result.status}`;
  },
  (error: unknown) => {
    window.consumerResult = { ok: false, error: String(error instanceof Error ? error.stack ?? error.message : error) };
    document.getElementById("state")!.textContent = "failed";
  },
);
