/**
 * Plain-TS float64 references for `core/ops/embedding.ts`: the gather `out[t] = table[ids[t]]` (zero rows for ids
 * outside `[0, V)`) and the scatter-add `dTable[ids[t]] += dOut[t]` (out-of-range ids get no gradient).
 *
 * @module
 */

function vocabOf(table: ArrayLike<number>, dim: number): number {
  if (dim < 1 || table.length % dim !== 0) {
    throw new Error(`Reference embedding: ${table.length} table values are not whole rows of ${dim}`);
  }
  return table.length / dim;
}

/** `out[t, c] = table[ids[t], c]`, or 0 when `ids[t] ∉ [0, V)`; `table` is `(V, dim)` row-major. */
export function embeddingRef(
  table: ArrayLike<number>,
  ids: ArrayLike<number>,
  opts: { dim: number },
): Float64Array {
  const C = opts.dim, V = vocabOf(table, C);
  const out = new Float64Array(ids.length * C);
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t];
    if (id < 0 || id >= V) continue;
    for (let c = 0; c < C; c++) out[t * C + c] = table[id * C + c];
  }
  return out;
}

/** Returns `dTable` plus the scatter-add `Σ_{t: ids[t] = v} dOut[t, c]` on each row `v` (new array). */
export function embeddingBackwardRef(
  dTable: ArrayLike<number>,
  dOut: ArrayLike<number>,
  ids: ArrayLike<number>,
  opts: { dim: number },
): Float64Array {
  const C = opts.dim, V = vocabOf(dTable, C);
  if (dOut.length !== ids.length * C) {
    throw new Error(
      `Reference embedding backward: dOut has ${dOut.length} values, expected ${ids.length}·${C}`,
    );
  }
  const out = Float64Array.from(dTable);
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t];
    if (id < 0 || id >= V) continue;
    for (let c = 0; c < C; c++) out[id * C + c] += dOut[t * C + c];
  }
  return out;
}

/** Out-of-range ids of `ids` for a vocabulary of `vocab` rows: their count and the first token index (or -1). */
export function outOfRangeRef(ids: ArrayLike<number>, vocab: number): { count: number; first: number } {
  let count = 0, first = -1;
  for (let t = 0; t < ids.length; t++) {
    if (ids[t] < 0 || ids[t] >= vocab) {
      count++;
      if (first < 0) first = t;
    }
  }
  return { count, first };
}
