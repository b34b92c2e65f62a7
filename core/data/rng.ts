/**
 * Small seeded pseudo-random number generator for reproducible data generation (problem templates, corruptions,
 * dataset splits). Not cryptographic.
 *
 * The generator is mulberry32 (Tommy Ettinger, public domain): a 32-bit state advanced by the Weyl increment
 * `0x6D2B79F5`, then mixed. Streams are derived from a string or number seed with 32-bit FNV-1a, so
 * `new Rng("train").fork("template")` is a fixed, independent-looking stream for every run on every platform.
 *
 * @module
 */

/**
 * 32-bit FNV-1a hash of a string's UTF-16 code units:
 * `h = 2166136261; for each unit u: h = (h ^ u) · 16777619 mod 2³²`.
 *
 * @example fnv1a32("") // 2166136261
 */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A seeded mulberry32 generator. Same seed → same sequence of draws. */
export class Rng {
  #state: number;

  /** Seed with a number (its low 32 bits after truncation) or a string (hashed with {@link fnv1a32}). */
  constructor(seed: number | string) {
    if (typeof seed === "number" && !Number.isFinite(seed)) {
      throw new Error(`Cannot seed Rng: seed must be a finite number or a string, got ${seed}`);
    }
    this.#state = typeof seed === "string" ? fnv1a32(seed) : Math.trunc(seed) >>> 0;
  }

  /** Next raw 32-bit unsigned integer (mulberry32 step). */
  nextU32(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform float in [0, 1): `nextU32() / 2³²`. */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in `[lo, hi]` (both inclusive). Throws when the range is empty or not integral. */
  int(lo: number, hi: number): number {
    if (!Number.isInteger(lo) || !Number.isInteger(hi) || hi < lo) {
      throw new Error(`Cannot draw an integer from [${lo}, ${hi}]: expected integers with lo <= hi`);
    }
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** A uniformly chosen element. Throws on an empty array. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("Cannot pick from an empty array");
    return items[Math.floor(this.next() * items.length)];
  }

  /** A shuffled copy (Fisher–Yates). */
  shuffle<T>(items: readonly T[]): T[] {
    const out = items.slice();
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }

  /**
   * A new generator whose seed mixes this generator's next draw with `label`: `fnv1a32(label) ^ nextU32()`.
   * Advances this generator by one draw.
   */
  fork(label = ""): Rng {
    return new Rng((fnv1a32(label) ^ this.nextU32()) >>> 0);
  }
}
