// Seeded pseudo-random streams for the chaos suite. Every decision the suite
// makes at random (a fault, an operation, a reload) comes from a stream named
// after what it drives and derived from the run's seed, so the same seed gives
// the same fault schedule and the same operation scripts, whatever else runs.

/** A 32-bit FNV-1a hash of a string (used to derive named streams from the seed). */
export function hash32(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** A fresh random seed (printed at start so a failing run can be replayed). */
export function randomSeed() {
  return (Math.floor(Math.random() * 0x7fffffff) + 1) >>> 0;
}

/**
 * sfc32 ("small fast counter"), seeded from `seed` and a stream name. Returns
 * a stream with helpers; each stream is independent of the others.
 */
export function stream(seed, name) {
  let a = hash32(`a:${seed}:${name}`);
  let b = hash32(`b:${seed}:${name}`);
  let c = hash32(`c:${seed}:${name}`);
  let d = 1;
  const next = () => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    const t = (a + b + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 15; i++) next(); // mix the initial state
  const rng = {
    /** A float in [0, 1). */
    next,
    /** An integer in [min, max]. */
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    /** True with probability p. */
    chance: (p) => next() < p,
    /** One element of an array. */
    pick: (items) => items[Math.floor(next() * items.length)],
    /** A key of `weights` ({name: weight}), drawn by weight. */
    weighted: (weights) => {
      const entries = Object.entries(weights).filter(([, w]) => w > 0);
      const total = entries.reduce((sum, [, w]) => sum + w, 0);
      let x = next() * total;
      for (const [key, w] of entries) {
        x -= w;
        if (x < 0) return key;
      }
      return entries[entries.length - 1][0];
    },
  };
  return rng;
}
