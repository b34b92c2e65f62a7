/**
 * Plain-TS float64 reference for `core/ops/matmul.ts`:
 * `out[z, m, n] = (accumulate ? out[z, m, n] : 0) + Σ_k op(A)[z, m, k]·op(B)[z, k, n] + bias[n]`,
 * with `op(A)[m, k] = A[k, m]` when `transA` (A stored `(K, M)`) and `op(B)[k, n] = B[n, k]` when `transB`.
 *
 * @module
 */

/** Inputs of {@linkcode matmulRef}: host arrays in the layouts {@linkcode matmul} takes. */
export interface MatmulRefOptions {
  /** `(batches, M, K)`, or `(batches, K, M)` with `transA`; with `sharedA` one matrix for every batch. */
  a: ArrayLike<number>;
  /** `(batches, K, N)`, or `(batches, N, K)` with `transB`; with `sharedB` one matrix for every batch. */
  b: ArrayLike<number>;
  M: number;
  N: number;
  K: number;
  /** Number of batches (default 1). */
  batches?: number;
  transA?: boolean;
  transB?: boolean;
  /** A is one matrix used by every batch. */
  sharedA?: boolean;
  /** B is one matrix used by every batch. */
  sharedB?: boolean;
  /** `(N)`, added to every row. */
  bias?: ArrayLike<number>;
  /** Initial `out` `(batches, M, N)` to accumulate into. */
  accumulate?: ArrayLike<number>;
}

/** Returns `out` `(batches, M, N)` in float64. */
export function matmulRef(opts: MatmulRefOptions): Float64Array {
  const { a, b, M, N, K } = opts;
  const B = opts.batches ?? 1;
  const sA = opts.sharedA ? 0 : M * K, sB = opts.sharedB ? 0 : K * N;
  const need = (arr: ArrayLike<number> | undefined, n: number, what: string) => {
    if (arr && arr.length !== n) {
      throw new Error(`Reference matmul: ${what} has ${arr.length} values, expected ${n}`);
    }
  };
  need(a, opts.sharedA ? M * K : B * M * K, "a");
  need(b, opts.sharedB ? K * N : B * K * N, "b");
  need(opts.bias, N, "bias");
  need(opts.accumulate, B * M * N, "accumulate");
  const out = new Float64Array(B * M * N);
  const aAt = opts.transA
    ? (z: number, m: number, k: number) => a[z * sA + k * M + m]
    : (z: number, m: number, k: number) => a[z * sA + m * K + k];
  const bAt = opts.transB
    ? (z: number, k: number, n: number) => b[z * sB + n * K + k]
    : (z: number, k: number, n: number) => b[z * sB + k * N + n];
  for (let z = 0; z < B; z++) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += aAt(z, m, k) * bAt(z, k, n);
        const i = (z * M + m) * N + n;
        out[i] = s + (opts.bias ? opts.bias[n] : 0) + (opts.accumulate ? opts.accumulate[i] : 0);
      }
    }
  }
  return out;
}
