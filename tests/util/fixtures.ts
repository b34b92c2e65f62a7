/**
 * Access to the PyTorch fixtures in tests/fixtures/ (made by tests/reference/make_fixtures.py).
 *
 * @module
 */
import { SafetensorsFile } from "../../core/model/safetensors.ts";

/** Directory of the fixtures. */
export const FIXTURES_DIR = new URL("../fixtures/", import.meta.url).pathname;

/** One checkpoint's manifest (subset of expected.json used by the tests). */
export interface FixtureManifest {
  name: string;
  batch: number;
  seq_len: number;
  seq_lengths: number[];
  max_new_tokens: number;
  loss: number;
  tied: boolean;
  weights_dtype: string;
  sgd?: { lr: number; loss_after: number };
}

/** A fixture: its directory, manifest and expected tensors as Float32Array/Int32Array by name. */
export interface Fixture {
  dir: string;
  manifest: FixtureManifest;
  tensor(name: string): Promise<Float32Array>;
  ints(name: string): Promise<Int32Array>;
  /** Real (unpadded) token ids of each row of input_ids. */
  sequences(): Promise<number[][]>;
  close(): Promise<void>;
}

/** Names of every fixture checkpoint (from index.json). */
export function fixtureNames(): string[] {
  const index = JSON.parse(Deno.readTextFileSync(`${FIXTURES_DIR}index.json`));
  return index.checkpoints.map((c: { dir: string }) => c.dir);
}

/** Opens fixture `name`. */
export async function openFixture(name: string): Promise<Fixture> {
  const dir = `${FIXTURES_DIR}${name}`;
  const manifest = JSON.parse(await Deno.readTextFile(`${dir}/expected.json`)) as FixtureManifest;
  const file = await SafetensorsFile.open(`${dir}/expected.safetensors`);
  const ints = async (n: string) => {
    const raw = await file.readRaw(n);
    return new Int32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  };
  return {
    dir,
    manifest,
    tensor: (n) => file.readTensorF32(n),
    ints,
    async sequences() {
      const ids = await ints("input_ids"), mask = await ints("attention_mask");
      const T = manifest.seq_len;
      return Array.from({ length: manifest.batch }, (_, b) => {
        const row: number[] = [];
        for (let t = 0; t < T; t++) if (mask[b * T + t]) row.push(ids[b * T + t]);
        return row;
      });
    },
    close: () => file.close(),
  };
}
