/**
 * Kernel descriptions and uniform packing.
 *
 * A kernel is one WGSL entry point with its `override` constants, an optional uniform struct of scalar fields at
 * `@binding(0)`, and storage buffers from `@binding(1)` on, all in `@group(0)`. Entry points of one file share the
 * file's bindings; an entry point that does not use a storage binding names it `""` in its spec.
 *
 * @module
 */

/** Scalar type of a uniform field. */
export type ParamType = "u32" | "i32" | "f32";

/** One field of a kernel's uniform struct: `[name, type]`, in WGSL declaration order. */
export type ParamField = readonly [string, ParamType];

/** A compute kernel: one entry point of one WGSL source with fixed constants. */
export interface KernelSpec {
  /** Label used for every GPU object of this kernel and in error messages, e.g. `"matmul.nn"`. */
  readonly name: string;
  /** WGSL source. */
  readonly code: string;
  /** Entry point name. */
  readonly entry: string;
  /** Values of `override` constants. */
  readonly constants?: Readonly<Record<string, number>>;
  /** Uniform struct fields (scalars, declaration order) bound at `@binding(0)`; omit when the kernel has none. */
  readonly params?: readonly ParamField[];
  /** Storage buffer names for `@binding(1)`, `@binding(2)`, …; `""` marks a binding this entry point does not use. */
  readonly bindings: readonly string[];
}

/** Returns a copy of `spec` with some `override` constants replaced (the pipeline cache keys on them). */
export function withConstants(spec: KernelSpec, constants: Record<string, number>): KernelSpec {
  return { ...spec, constants: { ...spec.constants, ...constants } };
}

/** Byte size of a uniform struct of scalar fields (WGSL rounds a struct to its 16-byte-aligned size in uniforms). */
export function paramsByteSize(fields: readonly ParamField[]): number {
  return Math.max(16, Math.ceil((fields.length * 4) / 16) * 16);
}

/**
 * Packs uniform values into bytes following WGSL layout rules for a struct of 4-byte scalars.
 * Throws naming the kernel and field when a value is missing or does not fit its type.
 */
export function packParams(
  kernel: string,
  fields: readonly ParamField[],
  values: Readonly<Record<string, number>>,
): Uint8Array {
  const bytes = new Uint8Array(paramsByteSize(fields));
  const view = new DataView(bytes.buffer);
  fields.forEach(([name, type], i) => {
    const v = values[name];
    if (typeof v !== "number" || Number.isNaN(v)) {
      throw new Error(`Kernel "${kernel}": parameter "${name}" is missing or not a number (got ${v})`);
    }
    if (type === "f32") {
      view.setFloat32(i * 4, v, true);
    } else if (type === "u32") {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
        throw new Error(`Kernel "${kernel}": parameter "${name}" must be a u32, got ${v}`);
      }
      view.setUint32(i * 4, v, true);
    } else {
      if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) {
        throw new Error(`Kernel "${kernel}": parameter "${name}" must be an i32, got ${v}`);
      }
      view.setInt32(i * 4, v, true);
    }
  });
  for (const key of Object.keys(values)) {
    if (!fields.some(([n]) => n === key)) throw new Error(`Kernel "${kernel}": unknown parameter "${key}"`);
  }
  return bytes;
}

/**
 * Loop iterations one invocation may run on llvmpipe (lavapipe): its shaders count every loop iteration of an
 * invocation against one budget of 65535 (gallivm's `LP_MAX_TGSI_LOOP_ITERATIONS`, a guard against endless
 * loops) and silently leave the loops once it is spent, so a kernel whose invocation loops over n items must
 * keep n (summed over its loops) within this — e.g. by dispatching rows in chunks. GPUs have no such limit.
 */
export const MAX_LOOP_ITERATIONS = 65535;

/**
 * Whether a kernel family's CPU variant (`"rows"`: no workgroup memory or barriers) runs a call: always when
 * `variant` asks for it, on a CPU adapter under `"auto"` (or unset), never for the family's other name. `unfit`
 * says why this call cannot run it (a shape it cannot hold, a loop past {@linkcode MAX_LOOP_ITERATIONS}): asking
 * for `"rows"` then throws `${what}: ${unfit}`, and `"auto"` takes the other family.
 */
export function useRowsVariant(
  gpu: { readonly isCpu: boolean },
  variant: string | undefined,
  what: string,
  unfit?: string,
): boolean {
  if (variant === "rows" && unfit) throw new Error(`${what}: ${unfit}`);
  return variant === "rows" || ((variant ?? "auto") === "auto" && gpu.isCpu && !unfit);
}

/**
 * Splits a workgroup count over x and y so neither exceeds `maxPerDim`; kernels recover the linear workgroup
 * index as `wid.x + wid.y * nwg.x`.
 */
export function grid1d(groups: number, maxPerDim = 65535): [number, number, number] {
  if (groups <= maxPerDim) return [Math.max(1, groups), 1, 1];
  const y = Math.ceil(groups / maxPerDim);
  return [Math.ceil(groups / y), y, 1];
}
