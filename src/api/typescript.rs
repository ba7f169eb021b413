//! The TypeScript declarations of the public API, written next to the
//! bindings so the `.d.ts` says exactly what JavaScript receives: string
//! literal unions for priorities and states, and an event-name → listener
//! map so `client.on("sync:failed", (task, error) => …)` is typed.

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
export type Priority = "high" | "normal" | "low";
export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";
export type ConflictStrategy = "server-wins" | "client-wins" | "last-write-wins" | "merge";
export type ErrorClass = "network" | "timeout" | "retryable" | "validation" | "permission" | "conflict" | "unconfirmed"
  | "expired" | "dependency";
export type TidesyncErrorCode =
  | "invalid-options" | "invalid-task" | "invalid-event" | "closed"
  | "storage-quota" | "storage-unavailable" | "storage-corrupt" | "sync-incomplete"
  | "invalid-record" | "unknown-entity-type" | "replication-not-configured"
  | "network" | "http" | "auth-required" | "busy" | "invalid-query";
/** Every error thrown or rejected by Tidesync. */
export interface TidesyncError extends Error { name: "TidesyncError"; code: TidesyncErrorCode; }

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

export interface RetryOptions {
  /** Retries after the first attempt before a task becomes a dead letter (default 5). */
  maxRetries?: number;
  /** First retry delay in ms (default 1000). */
  baseDelay?: number;
  /** Longest retry delay in ms (default 60000). */
  maxDelay?: number;
  /** Growth of the delay per attempt (default 2). */
  backoffMultiplier?: number;
  /** Full jitter: a uniform draw in [0, delay] (default true). */
  jitter?: boolean;
}

export interface CircuitBreakerOptions {
  /** Consecutive retryable failures that open the circuit (default 5). */
  failureThreshold?: number;
  /** First open period in ms (default 60000); doubles on each reopening. */
  cooldown?: number;
  /** Cap of the open period in ms (default 16 × cooldown). */
  maxCooldown?: number;
}

export interface SyncClientOptions {
  /** The client's name; its IndexedDB database is `tidesync:<name>`. */
  name: string;
  /** Base URL of the push/pull server. Relative URLs and URLs under it carry the token. */
  serverUrl?: string;
  /** Bearer token for the app's own server. */
  token?: string;
  /** Called when the server answers 401/403; return a fresh token or null. */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  entityTypes?: string[];
  retry?: RetryOptions;
  circuitBreaker?: CircuitBreakerOptions;
  conflictStrategy?: ConflictStrategy;
  onConflict?: (local: Record<string, JsonValue>, remote: Record<string, JsonValue>) => Record<string, JsonValue> | Promise<Record<string, JsonValue>>;
  /** Mutations per push (default 500). */
  batchSize?: number;
  /** Records per pull page (default 1000). */
  pageSize?: number;
  logLevel?: LogLevel;
  /** Requests in flight at once across ordering keys (default 4). */
  concurrency?: number;
  /** Per-request timeout in ms (default 30000). */
  requestTimeout?: number;
  /** Longest close() waits for the flush in progress, in ms (default 10000). */
  closeTimeout?: number;
  /** Flush on register, on `online` and on backoff timers (default true). */
  autoFlush?: boolean;
  /** Keep a live connection to the server (Server-Sent Events): a change made on another
   *  device is pulled as soon as the server announces it. One connection per database across
   *  tabs and workers. Default true when `serverUrl` and `entityTypes` are set. */
  live?: boolean;
  /** With `live`: pull after this many ms without a pull, as a safety net (default 60000; 0: never). */
  pullInterval?: number;
  /** How long a request may wait undelivered, in ms, before it becomes a dead letter with reason
   *  "expired" (default 7 days, as Workbox — whose option is in minutes). Mutations never expire. */
  maxRetentionTime?: number;
}

export interface RegisterOptions {
  url: string;
  /** Default "POST" with a body, "GET" without. */
  method?: string;
  /** A JSON body (sent with Content-Type: application/json). */
  data?: JsonValue;
  /** A text or binary body: Blob and File are sent as they are, FormData as multipart
   *  (its boundary in Content-Type), URLSearchParams as a form; all stored byte for byte. */
  body?: string | ArrayBuffer | ArrayBufferView | Blob | FormData | URLSearchParams;
  headers?: Record<string, string>;
  priority?: Priority;
  /** Tasks sharing a key run strictly one after another. */
  orderingKey?: string;
  /** false: the first failure makes it a dead letter (default true). */
  retryOnFailure?: boolean;
  /** This task's own retention in ms (default: the client's `maxRetentionTime`). */
  maxRetentionTime?: number;
  /** The id of an earlier task whose answer this one needs. It waits for that task (it runs in its
   *  ordering chain, so `orderingKey` cannot be given too), is filled in from its answer at send
   *  time, and becomes a dead letter if that task fails. */
  dependsOn?: string;
  /** Placeholder → where in the answer of `dependsOn`: "body.id", "body.items.0.id",
   *  "headers.location", "status". `{{name}}` is replaced in `url`, in header values, and in the
   *  strings of `data` (a string that is exactly "{{name}}" becomes the value itself). */
  values?: Record<string, string>;
}

/** What `captureFailedRequests(event, options)` takes over, and how it queues it. */
export interface CaptureOptions {
  /** Which URLs: a prefix ("/api/"; a path is resolved against the worker's origin), a RegExp
   *  tested against the full URL, or a function of the Request. Default: every URL. */
  match?: string | RegExp | ((request: Request) => boolean);
  /** Methods taken over (default ["POST", "PUT", "PATCH", "DELETE"]); GET and HEAD are refused. */
  methods?: string[];
  priority?: Priority;
  /** Tasks sharing a key are replayed strictly one after another, as a Workbox queue is. */
  orderingKey?: string;
  /** false: the first failed replay makes it a dead letter (default true). */
  retryOnFailure?: boolean;
  /** How long a captured request may wait undelivered, in ms (default: the client's). */
  maxRetentionTime?: number;
}

export interface TaskError { class: ErrorClass; message: string; status?: number; at: string; }

export interface QueuedTask {
  id: string;
  /** "mutation": a replicated record's change (its request body is the protocol mutation). */
  kind: "request" | "mutation";
  priority: Priority;
  seq: number;
  orderingKey?: string;
  request: { url: string; method: string; headers: Record<string, string>;
             body?: { type: "json"; value: JsonValue } | { type: "text"; value: string } | { type: "bytes"; value: Uint8Array } };
  revision: number;
  idempotencyKey: string;
  retryOnFailure: boolean;
  attempts: number;
  nextAttemptAt?: string;
  createdAt: string;
  errors: TaskError[];
  /** When it becomes a dead letter ("expired") if not delivered by then (plain requests). */
  expiresAt?: string;
  /** The task whose answer fills this one in, and where in that answer each placeholder is. */
  dependsOn?: { task: string; values: Record<string, string> };
}

export interface FailedTask { id: string; task: QueuedTask; reason: string; failedAt: string; }

export interface SyncResponse {
  status: number;
  headers: { "content-type"?: string; location?: string; etag?: string; "retry-after"?: string };
  /** Parsed when JSON, text otherwise, null when empty; capped at 64 KiB. */
  body: JsonValue;
}

export interface SyncStatus {
  pendingCount: number; failedCount: number; inFlightCount: number; online: boolean;
  circuit: "closed" | "open" | "half-open"; authRequired: boolean;
  /** Absent until the first flush completes. */
  lastSyncAt?: string | null; lastSyncOk?: boolean | null; totalSynced: number; isSyncInProgress: boolean;
}

export interface TaskStatus {
  id: string; state: "pending" | "in-flight" | "complete" | "failed";
  attempts: number; nextAttemptAt?: string | null; lastError?: TaskError | null;
}

export interface SyncMetrics {
  registered: number; registerTransactions: number; completed: number; ackTransactions: number; failed: number; retried: number;
  flushes: number; requestsSent: number; networkErrors: number;
  lastFlushDurationMs: number; averageRequestMs: number; totalRequestMs: number;
}

/** This origin's storage, in bytes (`navigator.storage.estimate()`). */
export interface StorageEstimate {
  usage: number; quota: number;
  /** usage / quota (0 when the quota is unknown). */
  usageRatio: number;
  persisted: boolean;
}

export interface SyncHealth {
  status: "healthy" | "degraded" | "critical"; issues: string[]; recommendations: string[];
  /** This origin's storage (degraded past 80 % of the quota, critical past 95 %); null until measured. */
  storage: StorageEstimate | null;
}

/** `storage:evicted`: the client's database vanished (evicted by the browser, or site data cleared). */
export interface EvictionInfo {
  /** "while-open": deleted under the running client, which wrote its queue back;
   *  "on-open": missing when the client opened, though this browser had opened it before. */
  seen: "while-open" | "on-open";
  detectedAt: string;
  /** Queued tasks the client held in memory and wrote back. */
  restoredTasks: number;
  /** Dead letters it knew of, now lost (local records are lost too). */
  lostFailedTasks: number;
}

export interface FlushReport {
  sent: number; completed: number; failed: number; retried: number; remaining: number;
  /** When the next backoff or breaker probe is due (ISO 8601), or null when nothing waits. */
  nextWakeupAt?: string | null;
}

export interface RetryInfo { error: TaskError; delay: number; attempt: number; nextAttemptAt?: string | null; }
export interface FailureInfo extends TaskError { reason: string; }
export interface ProgressInfo { phase: string; done: number; total: number; }

/** A local record as `put`/`get`/`query` return it: the app's fields plus the reserved ones. */
export interface SyncedRecord {
  id: string;
  /** The server version this copy is based on (0: never synced). */
  version: number;
  /** ISO 8601. */
  updatedAt: string;
  syncStatus: "pending" | "synced" | "conflict" | "rejected";
  /** Present (true) on a soft-deleted record. */
  isDeleted?: boolean;
  /** Why the server rejected the last change (with syncStatus "rejected"). */
  syncError?: string;
  [field: string]: JsonValue | undefined;
}

export interface PullReport { pulled: number; pages: number; conflicts: number; }
export interface SyncReport { pushed: number; pulled: number; pages: number; conflicts: number; remaining: number; }
export interface VerifyReport {
  entityType: string; localCount: number; serverCount: number;
  localChecksum: string; serverChecksum: string; repaired: number;
}
export interface ConflictInfo {
  entityType: string; id: string; local: JsonValue; remote: JsonValue; resolved: JsonValue;
  /** "unresolved": the onConflict callback failed; the record waits with syncStatus "conflict". */
  outcome: "server" | "client" | "merged" | "callback" | "unresolved";
}

/** Event name → listener signature. */
export interface SyncEvents {
  "sync:complete": (task: QueuedTask, response: SyncResponse) => void;
  "sync:failed": (task: QueuedTask, error: FailureInfo) => void;
  "sync:retry": (task: QueuedTask, info: RetryInfo) => void;
  "sync:conflict": (conflict: ConflictInfo) => void;
  "sync:progress": (progress: ProgressInfo) => void;
  "status": (status: SyncStatus) => void;
  "online": () => void;
  "offline": () => void;
  "circuit:open": (info: { until: string; cooldown: number }) => void;
  "circuit:close": () => void;
  "auth:required": (info: { status?: number | null; taskId: string }) => void;
  "pull:complete": (info: PullReport) => void;
  /** The database's live connection opened (in this client or in the tab that holds it). */
  "live:open": (info: { leader: boolean }) => void;
  /** It closed; `retryAt` is when the next attempt is due (null: when back online). */
  "live:closed": (info: { leader: boolean; reason: string; retryAt: string | null }) => void;
  "storage:evicted": (info: EvictionInfo) => void;
}
export type SyncEventName = keyof SyncEvents;

/** `getLiveStatus()`. */
export interface LiveStatus {
  /** "off": live is off here; "closed": lost or refused, waiting to reconnect. */
  state: "off" | "connecting" | "open" | "closed";
  /** Whether this client holds the database's connection (otherwise `state` is the holder's). */
  leader: boolean;
  /** When the next reconnection attempt is due (ISO 8601), while closed. */
  retryAt?: string | null;
}

/** The query of `subscribe()`. */
export interface SubscribeOptions {
  /** Records whose fields equal these values (a missing field equals null), or for which the
   *  function returns true. */
  where?: { [field: string]: JsonValue } | ((record: SyncedRecord) => boolean);
  /** A field to sort by (ascending), or [field, "asc" | "desc"]; ties, and no orderBy, keep id order. */
  orderBy?: string | [field: string, direction?: "asc" | "desc"];
  /** At most this many records (after where and orderBy). */
  limit?: number;
}

/** A subscription's result: frozen, and the same array until the result changes. */
export type RecordsSnapshot = readonly Readonly<SyncedRecord>[];

/** Merged into the class `SyncClient` below: `on()` is typed from {@link SyncEvents}. */
export interface SyncClient {
  /**
   * Calls `callback` with the live records of `entityType` that match the query, now and again
   * whenever a local write, a pull or another tab changes that result. Returns a function that
   * unsubscribes.
   *
   * @example
   * const off = client.subscribe("notes", { where: { done: false }, orderBy: ["updatedAt", "desc"] },
   *   (notes) => render(notes));
   */
  subscribe(entityType: string, options: SubscribeOptions, callback: (records: RecordsSnapshot) => void): () => void;
  subscribe(entityType: string, callback: (records: RecordsSnapshot) => void): () => void;
  /**
   * Subscribes to an event; returns a function that unsubscribes.
   * A listener that throws is logged and does not stop the engine.
   *
   * @example
   * const off = client.on("sync:failed", (task, error) => console.warn(task.id, error.reason));
   * off();
   */
  on<K extends SyncEventName>(event: K, listener: SyncEvents[K]): () => void;
}
"#;
