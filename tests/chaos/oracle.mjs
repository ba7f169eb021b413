// The oracle of a chaos run, judged after faults stop and every client has
// synced to quiescence. Pure: it reads what the runner collected (the ledger
// of operations and their outcomes, the proxy's records of what reached the
// endpoint and the server, every device's database read directly, the
// server's records) and returns the figures and every violation found.
//
// What must hold (issue 11):
//  - every `register` whose promise resolved reached the endpoint;
//  - a request delivered more than once only after a lost answer (never
//    written to the browser, written after the client gave up on it, or a
//    crash of its device), always with the same Idempotency-Key; never once
//    a client has acted on an answer (its completion names the delivery);
//  - no mutation applied twice on the server (by mutation id, or the same
//    edit under two mutation ids);
//  - every device's records equal the server's (hence each other's);
//  - no task stuck pending or in flight, no record stuck pending/conflict;
//  - dead letters are exactly the requests the proxy refused for good;
//  - every record ends on its last edit, by edit time (last-write-wins).

/** Slack for comparing edit times taken on one machine's clock (ms). */
const CLOCK_SLACK = 2;

/** Error classes of a failed attempt that got no usable answer. */
const NO_ANSWER = new Set(["timeout", "network", "unconfirmed"]);
/** How far (ms) a client's give-up may lie outside the two deliveries it explains (clocks of one machine, a busy event loop). */
const GIVE_UP_SLACK = 2000;
/** How late (ms) the runner may hear of a worker stop or a tab crash it did not order. */
const OBSERVED_SLACK = 1000;

/**
 * How long before `at` (ms) something the proxy read at `at` may have
 * arrived: the longest stall of its event loop near `at` (a 20 ms ticker
 * records them), at least one tick.
 */
export function lagAround(stalls, at) {
  return stalls.filter((s) => s.at >= at - 100 && s.at - s.ms <= at + 100)
    .reduce((max, s) => Math.max(max, s.ms), 20);
}

export function judge({ ledger, proxy, devices, server, kills, traces = new Map(), requestTimeout = 1500 }) {
  const violations = [];
  const violation = (kind, detail) => violations.push({ kind, ...detail });
  const duplicates = {};
  const countDuplicate = (kind) => { duplicates[kind] = (duplicates[kind] ?? 0) + 1; };
  let lost = 0;
  const ambiguous = [];
  let diverged = 0;
  let stuck = 0;
  let stale = 0;

  // ---- plain outbox requests -------------------------------------------
  const registers = [...ledger.ops.values()].filter((o) => o.op.kind === "register");
  const byOpId = new Map();
  for (const d of proxy.deliveries) {
    if (!byOpId.has(d.opId)) byOpId.set(d.opId, []);
    byOpId.get(d.opId).push(d);
  }
  const killsOf = (device) => kills.filter((k) => k.device === device);
  // What the clients heard: the proxy's answer body names its delivery, and
  // every client of a database hears every plain task's completion (relayed
  // across realms), so `heard` says exactly which delivery's answer a device
  // acted on. Failures (retries, dead letters) are heard only where they
  // happened.
  const heard = new Map(); // task id → delivery numbers completed
  const heardAt = new Map(); // delivery number → when a client first acted on it
  const failures = new Map(); // task id → [{at, class, actor}] of attempts that got no answer
  const endings = new Map(); // task id → every retry and dead letter
  for (const [id, entries] of traces ?? []) {
    for (const e of entries) {
      if (e.event === "complete" && e.delivery != null) {
        if (!heard.has(id)) heard.set(id, new Set());
        heard.get(id).add(e.delivery);
        heardAt.set(e.delivery, Math.min(heardAt.get(e.delivery) ?? Infinity, e.at));
      } else if (e.event === "retry" || e.event === "failed") {
        if (!endings.has(id)) endings.set(id, []);
        endings.get(id).push(e);
        if (NO_ANSWER.has(e.class)) {
          if (!failures.has(id)) failures.set(id, []);
          failures.get(id).push(e);
        }
      }
    }
  }
  for (const [opId, deliveries] of byOpId) {
    const issued = ledger.ops.get(opId);
    if (!issued || issued.op.kind !== "register") {
      violation("phantom-request", { opId, deliveries: deliveries.length });
      continue;
    }
    const keys = new Set(deliveries.map((d) => d.key));
    if (keys.size > 1) violation("idempotency-key-changed", { opId, keys: [...keys] });
    const taskId = `t:${opId}`;
    const completed = heard.get(taskId) ?? new Set();
    for (let i = 1; i < deliveries.length; i++) {
      const before = deliveries[i - 1];
      const again = deliveries[i];
      // The realm that sent `before` (from its Referer), when known.
      const sender = (actor) => !before.realm || actor === before.realm;
      const gaveUp = (failures.get(taskId) ?? []).some((f) => sender(f.actor)
        && f.at >= before.at - requestTimeout - GIVE_UP_SLACK && f.at <= again.at + GIVE_UP_SLACK);
      // An observed death (reported after the fact) may be reported a
      // little after the redelivery it explains.
      const killed = killsOf(issued.device).some((k) => sender(k.actor)
        && k.at <= again.at + (k.observed ? OBSERVED_SLACK : 0) && (k.doneAt ?? k.at) >= before.at - 50);
      const acted = deliveries.slice(0, i).filter((d) => completed.has(d.n));
      // When the proxy read `again`, at the latest; it may have arrived
      // earlier by as long as the proxy's event loop was stalled then.
      const lag = lagAround(proxy.stalls ?? [], again.at);
      const actedAt = Math.min(...acted.map((d) => heardAt.get(d.n)));
      // Every attempt ends in one outcome where it ran (a retry, a
      // completion naming its delivery, a dead letter): an attempt made
      // after the completion shows as a second completed delivery or as a
      // failure after it, whatever the proxy's clock says.
      const attemptedAfter = completed.size > 1
        || (endings.get(taskId) ?? []).some((f) => f.at > actedAt);
      if (acted.length && (attemptedAfter || again.at - lag > actedAt)) {
        // A client acted on an earlier answer (its task completed), and
        // then the request went out again: what must never happen.
        countDuplicate("outbox-after-answer-heard");
        violation("duplicate-after-answer", { opId, device: issued.device, first: before, again, heard: [...completed], actedAt, lag, deliveries });
      } else if (acted.length) {
        // Read after the completion, but during a stall of the proxy long
        // enough that the browser may have sent it before: an earlier
        // attempt, given up, whose bytes were read late. Not a violation,
        // but counted and listed in the report.
        countDuplicate("outbox-read-late-after-answer");
        ambiguous.push({ opId, first: before, again, actedAt, lag });
      } else if (before.answered !== true || before.answeredAt > again.at) {
        // Lost: never written to the browser, or still held back (a late
        // answer) when the client gave up and sent the request again.
        countDuplicate("outbox-after-lost-answer");
      } else if (gaveUp) {
        // Written by the proxy, but the client had given up on that attempt
        // (its timeout ran from fetch(), queueing in the browser included,
        // so it can end before the proxy even reads the request): the
        // client's retry event says so. A lost answer too.
        countDuplicate("outbox-after-client-gave-up");
      } else if (killed) {
        // The answer reached the browser, but the tab or worker holding it
        // was being killed (reload, close, crash, worker stop) and died
        // before it could record it: a lost answer too.
        countDuplicate("outbox-after-crash");
      } else {
        countDuplicate("outbox-unexplained");
        violation("duplicate-unexplained", { opId, device: issued.device, first: before, again });
      }
    }
  }
  const deadLetters = new Map(); // task id → {device, reason}
  for (const device of devices) {
    for (const f of device.dump.failed ?? []) deadLetters.set(f.id ?? f.task?.id, { device: device.name, reason: f.reason, kind: f.task?.kind });
  }
  for (const r of registers) {
    const resolved = r.result?.ok === true;
    const delivered = byOpId.has(r.op.id);
    const taskId = `t:${r.op.id}`;
    if (r.op.poison) {
      if (resolved && !deadLetters.has(taskId)) {
        lost++;
        violation("poison-not-dead-lettered", { opId: r.op.id, delivered });
      }
    } else if (resolved && !delivered) {
      lost++;
      violation("register-lost", { opId: r.op.id, actor: r.actor });
    }
  }
  let expectedDeadLetters = 0;
  for (const [id, letter] of deadLetters) {
    const opId = id?.startsWith("t:") ? id.slice(2) : null;
    const issued = opId && ledger.ops.get(opId);
    if (issued?.op.poison) {
      expectedDeadLetters++;
    } else {
      violation("unexpected-dead-letter", { id, ...letter });
      if (letter.kind === "mutation") lost++;
    }
  }

  // ---- pushes: nothing applied twice -------------------------------------
  const appliedById = new Map();
  const appliedByValue = new Map();
  for (const p of proxy.pushes) {
    if (p.status === "duplicate") countDuplicate("push-replay-answered-duplicate");
    const took = p.status === "applied" || (p.status === "conflict" && p.winner === "client");
    if (!took) continue;
    const key = `${p.clientId}/${p.mutationId}`;
    appliedById.set(key, (appliedById.get(key) ?? 0) + 1);
    if (p.op === "upsert" && p.v) {
      const edits = appliedByValue.get(p.v) ?? new Set();
      edits.add(p.mutationId);
      appliedByValue.set(p.v, edits);
    }
  }
  // A mutation is sent as it was made: a replay carries the same payload,
  // and its clientTimestamp is when the user edited (docs/decisions.md #10).
  const firstSend = new Map();
  const editTimes = new Map();
  for (const o of ledger.ops.values()) {
    if (o.op.kind === "put" && o.result?.ok) editTimes.set(o.op.id, o.result.editedAt);
  }
  for (const p of proxy.pushes) {
    const key = `${p.clientId}/${p.mutationId}`;
    const payload = JSON.stringify([p.op, p.v, p.baseVersion, p.clientTimestamp]);
    const first = firstSend.get(key);
    if (!first) firstSend.set(key, { payload, p });
    else if (first.payload !== payload && !first.reported) {
      first.reported = true;
      violation("mutation-rewritten", { mutation: key, first: JSON.parse(first.payload), later: JSON.parse(payload) });
    }
    if (p.op === "upsert" && editTimes.has(p.v) && Date.parse(p.clientTimestamp) !== editTimes.get(p.v) && !first) {
      violation("edit-time-restamped", { edit: p.v, editedAt: new Date(editTimes.get(p.v)).toISOString(), clientTimestamp: p.clientTimestamp, mutationId: p.mutationId });
    }
  }
  for (const [key, times] of appliedById) {
    if (times > 1) {
      const pushes = proxy.pushes.filter((p) => `${p.clientId}/${p.mutationId}` === key)
        .map(({ device, upstream, fate, at, status, version, answered }) => ({ device, upstream, fate, at, status, version, answered }));
      violation("mutation-applied-twice", { mutation: key, times, pushes, kills: kills.filter((k) => k.device === "*") });
    }
  }
  for (const [v, ids] of appliedByValue) {
    if (ids.size > 1) {
      countDuplicate("edit-applied-under-two-mutation-ids");
      const pushes = proxy.pushes.filter((p) => p.v === v)
        .map(({ device, fate, clientId, mutationId, baseVersion, clientTimestamp, status, winner, version, answered }) =>
          ({ device, fate, clientId, mutationId, baseVersion, clientTimestamp, status, winner, version, answered }));
      violation("edit-applied-twice", { edit: v, mutationIds: [...ids], pushes });
    }
  }

  // ---- devices equal the server; nothing stuck ----------------------------
  const serverRecords = new Map();
  for (const [type, records] of Object.entries(server)) {
    for (const r of records) serverRecords.set(`${type}/${r.id}`, r);
  }
  const appFields = (data) => {
    const out = {};
    for (const [k, v] of Object.entries(data ?? {})) {
      if (!["id", "version", "updatedAt", "changedAt", "isDeleted", "syncStatus", "syncError"].includes(k)) out[k] = v;
    }
    return JSON.stringify(Object.keys(out).sort().map((k) => [k, out[k]]));
  };
  for (const device of devices) {
    const tasks = device.dump.tasks ?? [];
    if (tasks.length) {
      stuck += tasks.length;
      violation("task-stuck", { device: device.name, tasks: tasks.slice(0, 5).map((t) => ({ id: t.id, attempts: t.attempts, errors: t.errors?.slice(-2) })), count: tasks.length });
    }
    for (const s of device.statuses ?? []) {
      if (s.status && (s.status.pendingCount > 0 || s.status.inFlightCount > 0)) {
        violation("status-not-idle", { device: device.name, actor: s.actor, pendingCount: s.status.pendingCount, inFlightCount: s.status.inFlightCount });
      }
    }
    const local = new Map((device.dump.records ?? []).map((r) => [`${r.entityType}/${r.id}`, r]));
    for (const [key, r] of local) {
      if (r.syncStatus !== "synced") {
        stuck++;
        violation("record-not-synced", { device: device.name, record: key, syncStatus: r.syncStatus, data: r.data, version: r.version, pendingMutationId: r.pendingMutationId });
      }
      const s = serverRecords.get(key);
      const same = s && s.version === r.version && !!s.isDeleted === !!r.isDeleted
        && (r.isDeleted || appFields(s) === appFields(r.data));
      if (!same) {
        diverged++;
        violation("diverged", { device: device.name, record: key, local: { v: r.data?.v, version: r.version, isDeleted: r.isDeleted, syncStatus: r.syncStatus }, server: s ? { v: s.v, version: s.version, isDeleted: s.isDeleted } : null });
      }
    }
    for (const [key, s] of serverRecords) {
      if (!local.has(key) && !s.isDeleted) {
        diverged++;
        violation("diverged", { device: device.name, record: key, local: null, server: { v: s.v, version: s.version } });
      }
    }
  }

  // ---- every record on its last edit ------------------------------------
  const writes = new Map(); // record key → [{opId, kind, lo, hi, confirmed}]
  for (const o of ledger.ops.values()) {
    if (o.op.kind !== "put" && o.op.kind !== "delete") continue;
    const key = `${o.op.type}/${o.op.rid}`;
    const list = writes.get(key) ?? [];
    const r = o.result;
    if (r?.ok && o.op.kind === "put") list.push({ opId: o.op.id, kind: "put", lo: r.editedAt, hi: r.editedAt, confirmed: true });
    else if (r?.ok && o.op.kind === "delete" && r.deleted) list.push({ opId: o.op.id, kind: "delete", lo: r.started, hi: r.ended, confirmed: true });
    else if (!r && o.sentAt) list.push({ opId: o.op.id, kind: o.op.kind, lo: o.sentAt, hi: o.endAt ?? Infinity, confirmed: false });
    writes.set(key, list);
  }
  for (const [key, list] of writes) {
    const confirmed = list.filter((w) => w.confirmed);
    const s = serverRecords.get(key);
    if (!s) {
      if (confirmed.length) {
        lost++;
        violation("record-lost", { record: key, lastConfirmed: confirmed.at(-1) });
      }
      continue;
    }
    const latest = confirmed.reduce((m, w) => Math.max(m, w.lo), -Infinity);
    const candidates = s.isDeleted
      ? list.filter((w) => w.kind === "delete")
      : list.filter((w) => w.kind === "put" && w.opId === s.v);
    if (!s.isDeleted && candidates.length === 0) {
      violation("unknown-value", { record: key, v: s.v });
      continue;
    }
    if (!candidates.some((w) => w.hi + CLOCK_SLACK >= latest)) {
      stale++;
      const last = confirmed.filter((w) => w.lo === latest);
      violation("not-on-last-edit", {
        record: key,
        server: { v: s.isDeleted ? "(deleted)" : s.v, version: s.version, editedAt: candidates.map((w) => w.hi) },
        lastEdit: last.map((w) => ({ opId: w.opId, kind: w.kind, at: w.lo })),
      });
    }
  }

  return {
    violations,
    ambiguous,
    figures: {
      operations: ledger.ops.size,
      confirmed: [...ledger.ops.values()].filter((o) => o.result?.ok).length,
      deliveries: proxy.deliveries.length,
      pushedMutations: proxy.pushes.length,
      deadLetters: deadLetters.size,
      expectedDeadLetters,
      duplicates,
      lost,
      diverged,
      stale,
      stuck,
    },
  };
}
