// The seeded operation scripts: for every actor (each tab and each service
// worker of each device) a list of chunks of operations — register, put,
// delete, sync, flush, pull — and the device events that disturb them
// (offline stretches, reloads and closes mid-flush, crashes, worker stops).
// Everything here is a pure function of the seed.
import { stream } from "./rng.mjs";

export const ENTITY_TYPES = ["notes", "tasks"];

const OP_WEIGHTS = { register: 34, put: 34, delete: 10, sync: 12, flush: 5, pull: 5 };
const PRIORITIES = ["high", "normal", "normal", "low"];

/**
 * Splits `total` operations among the actors (a service worker does half a
 * tab's share) and writes each actor's chunks.
 */
export function writeScripts({ seed, devices, tabsPerDevice, totalOps, poisonRate = 0.02 }) {
  const actors = [];
  for (const device of devices) {
    for (let t = 1; t <= tabsPerDevice; t++) actors.push({ device, actor: `${device}/t${t}`, weight: 2 });
    actors.push({ device, actor: `${device}/sw`, weight: 1, worker: true });
  }
  const weightSum = actors.reduce((s, a) => s + a.weight, 0);
  // Few records, so that devices keep editing the same ones.
  const recordsPerType = Math.max(12, Math.min(400, Math.round(totalOps / 60)));
  let assigned = 0;
  return actors.map((a, index) => {
    const count = index === actors.length - 1
      ? totalOps - assigned
      : Math.round((totalOps * a.weight) / weightSum);
    assigned += count;
    const rng = stream(seed, `ops:${a.actor}`);
    const chunks = [];
    let n = 0;
    while (n < count) {
      const size = Math.min(count - n, rng.int(3, 12));
      const ops = [];
      for (let i = 0; i < size; i++, n++) {
        const kind = rng.weighted(OP_WEIGHTS);
        const op = { id: `${a.actor}#${n}`, kind, await: rng.chance(0.7) };
        if (kind === "register") {
          op.priority = rng.pick(PRIORITIES);
          op.poison = rng.chance(poisonRate);
          if (rng.chance(0.2)) op.orderingKey = `${a.actor}:k${rng.int(0, 3)}`;
          op.pad = "x".repeat(rng.int(0, 200));
        } else if (kind === "put" || kind === "delete") {
          op.type = rng.pick(ENTITY_TYPES);
          op.rid = `r${rng.int(0, recordsPerType - 1)}`;
          if (kind === "put") op.text = "y".repeat(rng.int(0, 120));
        }
        ops.push(op);
      }
      chunks.push({ ops, pauseMs: rng.int(0, 250) });
    }
    return { ...a, count, chunks };
  });
}

const EVENT_WEIGHTS = { offline: 4, reload: 3, close: 2, crash: 1, "sw-sync": 2, "sw-stop": 1 };

/**
 * The next disturbance of a device: what, to which tab, and the seeded
 * delays around it. `rng` is the device's event stream.
 */
export function nextDeviceEvent(rng, tabsPerDevice) {
  return {
    kind: rng.weighted(EVENT_WEIGHTS),
    waitMs: rng.int(1500, 6000),
    tab: rng.int(1, tabsPerDevice),
    offlineMs: rng.int(300, 4000),
    /** How long after starting a flush the tab is reloaded/closed. */
    midFlushMs: rng.int(0, 60),
    reopenMs: rng.int(100, 1500),
  };
}

export const deviceEvents = (seed, device) => stream(seed, `events:${device}`);
