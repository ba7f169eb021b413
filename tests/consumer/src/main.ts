// What a web developer writes: the README's quick start, bundled by Vite,
// type-checked with `tsc --noEmit --strict`. The page completes one task
// against the server given in `?server=` and shows what happened.
import init, {
  SyncClient,
  type FailureInfo,
  type QueuedTask,
  type SyncClientOptions,
  type SyncEventName,
  type SyncEvents,
  type SyncResponse,
  type SyncStatus,
  type TidesyncError,
} from "tidesync";

interface Result {
  ok: boolean;
  id?: string;
  status?: number;
  body?: unknown;
  pendingCount?: number;
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

  // Listener parameters are typed from the SyncEvents map: no annotations needed.
  const delivered = new Promise<{ task: QueuedTask; response: SyncResponse }>((resolve, reject) => {
    client.on("sync:complete", (task, response) => resolve({ task, response }));
    client.on("sync:failed", (task, error) => {
      const reason: string = error.reason;
      reject(new Error(`${task.id}: ${reason} (${error.class})`));
    });
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
  const { response } = await delivered;
  off();
  await client.flush();
  const pendingCount = client.getStatus().pendingCount;
  await client.close();
  return { ok: true, id: task.id, status: response.status, body: response.body, pendingCount };
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
