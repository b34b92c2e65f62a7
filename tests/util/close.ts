/**
 * Numeric comparison for kernel tests: `|got − want| ≤ atol + rtol·|want|` elementwise, reporting the worst element,
 * its index and the first mismatching pairs.
 *
 * @module
 */

/** Tolerances of {@linkcode assertClose}. */
export interface Tolerance {
  atol: number;
  rtol: number;
}

/** Largest violation of the tolerance: `max(|got − want| − rtol·|want|)` and where it happens. */
export function worstError(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: Tolerance,
): { index: number; excess: number; maxAbs: number } {
  let index = -1, excess = -Infinity, maxAbs = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    const e = Number.isNaN(d) ? Infinity : d - tol.atol - tol.rtol * Math.abs(want[i]);
    if (e > excess) [index, excess] = [i, e];
    if (d > maxAbs || Number.isNaN(d)) maxAbs = Number.isNaN(d) ? Infinity : d;
  }
  return { index, excess, maxAbs };
}

/** Throws unless `got` and `want` have the same length and agree within `atol + rtol·|want|` everywhere. */
export function assertClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: Tolerance,
  what = "values",
): void {
  if (got.length !== want.length) throw new Error(`${what}: length ${got.length}, expected ${want.length}`);
  const { index, excess, maxAbs } = worstError(got, want, tol);
  if (excess <= 0) return;
  const bad: string[] = [];
  for (let i = 0; i < want.length && bad.length < 5; i++) {
    if (!(Math.abs(got[i] - want[i]) <= tol.atol + tol.rtol * Math.abs(want[i]))) {
      bad.push(`[${i}] got ${got[i]} want ${want[i]}`);
    }
  }
  throw new Error(
    `${what}: max |Δ| = ${maxAbs} exceeds atol ${tol.atol} + rtol ${tol.rtol}·|ref| at index ${index} ` +
      `(got ${got[index]}, want ${want[index]}); first mismatches: ${bad.join(", ")}`,
  );
}
