// Tests for core/model/safetensors.ts (reader, dtype conversion) and core/model/checkpoint.ts (writer, sharded
// checkpoints, atomic checkpoint directories). Files are hand-built bytes in temp dirs.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  bf16BitsToF32,
  decodeToF32,
  encodeF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  SafetensorsFile,
} from "../core/model/safetensors.ts";
import {
  openCheckpointDir,
  SafetensorsCheckpoint,
  saveCheckpointDir,
  type TensorToWrite,
  writeSafetensors,
  writeSafetensorsSharded,
} from "../core/model/checkpoint.ts";
import { qwen2Config } from "../core/model/config.ts";
import { mulberry32 } from "./util/finite_diff.ts";

/** Assemble a safetensors file by hand: u64 LE header length, header text, data bytes. */
function handBuild(header: string | object, data: Uint8Array, lengthOverride?: bigint): Uint8Array {
  const h = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

const le = (arr: ArrayBufferView) => new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) (out.set(p, o), o += p.length);
  return out;
};

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "st_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// a: F32 [2,3], b: BF16 [4], c: F16 [3], d: I64 [2] — data laid out in that order.
const A = new Float32Array([1, -2, 3.5, 0, 1e-3, -7]);
const B_BITS = new Uint16Array([0x3f80, 0xc000, 0x7f80, 0x0001]); // 1, -2, +inf, 2^-133
const C_BITS = new Uint16Array([0x3c00, 0x0001, 0xfbff]); // 1, 2^-24, -65504
const D = new BigInt64Array([-5n, 1n << 40n]);
const GOOD_HEADER = {
  __metadata__: { format: "pt" },
  a: { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] },
  b: { dtype: "BF16", shape: [4], data_offsets: [24, 32] },
  c: { dtype: "F16", shape: [3], data_offsets: [32, 38] },
  d: { dtype: "I64", shape: [2], data_offsets: [38, 54] },
};
const GOOD_DATA = concat(le(A), le(B_BITS), le(C_BITS), le(D));

Deno.test("safetensors: reads a hand-built file tensor by tensor", async () => {
  await withTmp(async (dir) => {
    const path = `${dir}/m.safetensors`;
    await Deno.writeFile(path, handBuild(GOOD_HEADER, GOOD_DATA));
    await using f = await SafetensorsFile.open(path);
    assert.deepEqual(f.metadata, { format: "pt" });
    assert.deepEqual(f.list().map((t) => [t.name, t.dtype, t.shape, t.byteLength]), [
      ["a", "F32", [2, 3], 24],
      ["b", "BF16", [4], 8],
      ["c", "F16", [3], 6],
      ["d", "I64", [2], 16],
    ]);
    assert.deepEqual(await f.readTensorF32("a"), A);
    assert.deepEqual([...await f.readTensorF32("b")], [1, -2, Infinity, 2 ** -133]);
    assert.deepEqual([...await f.readTensorF32("c")], [1, 2 ** -24, -65504]);
    assert.deepEqual([...await f.readTensorF32("d")], [-5, 2 ** 40]);
    assert.deepEqual(await f.readRaw("c"), le(C_BITS));
    assert.deepEqual(
      [...await f.readTensorF32("a", { rowStart: 1, rowCount: 1 })],
      [0, 1e-3, -7].map(Math.fround),
    );
    // concurrent reads on one handle are serialised correctly
    const all = await Promise.all(["d", "a", "c", "b", "a"].map((n) => f.readRaw(n)));
    assert.deepEqual(all[1], le(A));
    assert.deepEqual(all[0], le(D));
    await assert.rejects(
      f.readTensorF32("a", { rowStart: 1, rowCount: 2 }),
      /rows \[1, 3\) are out of range/,
    );
    await assert.rejects(
      async () => await f.readRaw("zzz"),
      /Cannot read safetensors ".*m.safetensors": tensor "zzz" is missing/,
    );
  });
});

Deno.test("safetensors: corrupt and truncated files give errors naming the file and problem", async () => {
  const variants: [string, Uint8Array, RegExp][] = [
    ["tiny", new Uint8Array(5), /file is 5 bytes, too small/],
    [
      "hugelen",
      handBuild(GOOD_HEADER, GOOD_DATA, 1n << 40n),
      /header length 1099511627776 exceeds the limit/,
    ],
    ["longlen", handBuild("{}", new Uint8Array(0), 64n), /truncated: header length 64 exceeds the 2 bytes/],
    ["json", handBuild('{"a": {', new Uint8Array(0)), /header is not valid UTF-8 JSON/],
    [
      "utf8",
      handBuild(
        new Uint8Array([0x7b, 0xff, 0x7d]).reduce((s, b) => s + String.fromCharCode(b), ""),
        new Uint8Array(0),
      ),
      /header is not valid UTF-8 JSON|not a JSON object/,
    ],
    ["array", handBuild("[1,2]", new Uint8Array(0)), /header is not a JSON object/],
    [
      "dtype",
      handBuild({ a: { dtype: "F17", shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)),
      /tensor "a": unknown dtype "F17"/,
    ],
    [
      "shape",
      handBuild({ a: { dtype: "F32", shape: [2, 2], data_offsets: [0, 12] } }, new Uint8Array(12)),
      /tensor "a": shape \[2,2\] × 4 bytes \(F32\) = 16 bytes, but data_offsets span 12/,
    ],
    [
      "negshape",
      handBuild({ a: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4)),
      /shape must be a list of non-negative integers/,
    ],
    [
      "offsets",
      handBuild({ a: { dtype: "U8", shape: [2], data_offsets: [3, 1] } }, new Uint8Array(4)),
      /data_offsets must be \[begin, end\]/,
    ],
    [
      "overlap",
      handBuild({
        a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
        b: { dtype: "F32", shape: [1], data_offsets: [4, 8] },
      }, new Uint8Array(8)),
      /tensor "b" overlaps tensor "a"/,
    ],
    [
      "gap",
      handBuild({ a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)),
      /gap of 4 bytes before tensor "a"/,
    ],
    [
      "truncated",
      handBuild(GOOD_HEADER, GOOD_DATA.subarray(0, 50)),
      /file is truncated: tensor "d" ends at data byte 54, but the data section has 50 bytes/,
    ],
    [
      "trailing",
      handBuild(GOOD_HEADER, concat(GOOD_DATA, new Uint8Array(3))),
      /3 trailing bytes after the last tensor/,
    ],
    [
      "meta",
      handBuild({ __metadata__: { n: 1 } }, new Uint8Array(0)),
      /"__metadata__" must map strings to strings/,
    ],
  ];
  await withTmp(async (dir) => {
    for (const [name, bytes, re] of variants) {
      const path = `${dir}/${name}.safetensors`;
      await Deno.writeFile(path, bytes);
      await assert.rejects(SafetensorsFile.open(path), (e: Error) => {
        assert.ok(e.message.startsWith(`Cannot read safetensors "${path}": `), e.message);
        assert.match(e.message, re, name);
        return true;
      }, name);
    }
    await assert.rejects(
      SafetensorsFile.open(`${dir}/nope.safetensors`),
      /nope.safetensors": file not found/,
    );
    // A file truncated after opening: the read reports the tensor.
    const path = `${dir}/shrinks.safetensors`;
    await Deno.writeFile(path, handBuild(GOOD_HEADER, GOOD_DATA));
    await using f = await SafetensorsFile.open(path);
    await Deno.truncate(path, 8 + JSON.stringify(GOOD_HEADER).length + 40);
    await assert.rejects(f.readRaw("d"), /file is truncated inside tensor "d"/);
  });
});

Deno.test("dtype: f16 decode matches Float16Array on all 65536 bit patterns", () => {
  const bits = new Uint16Array(65536).map((_, i) => i);
  const ref = new Float16Array(bits.buffer);
  const ours = decodeToF32(le(bits), "F16");
  for (let i = 0; i < 65536; i++) {
    const r = ref[i], o = ours[i];
    if (!(Object.is(r, o) || (Number.isNaN(r) && Number.isNaN(o)))) {
      assert.fail(`bits 0x${i.toString(16)}: ${o} vs ${r}`);
    }
    if (!Object.is(f16BitsToF32(i), o) && !Number.isNaN(o)) assert.fail(`f16BitsToF32 0x${i.toString(16)}`);
  }
});

/** Arbitrary f32 from all 2^32 bit patterns (covers subnormals, huge values, NaN, ±0, ±inf). */
const anyF32 = fc.integer({ min: 0, max: 0xffffffff }).map((u) =>
  new Float32Array(new Uint32Array([u]).buffer)[0]
);

Deno.test("dtype: property — f32→f16 equals Math.f16round (round to nearest even)", () => {
  fc.assert(
    fc.property(anyF32, (x) => {
      const got = f16BitsToF32(f32ToF16Bits(x));
      const want = Math.f16round(x);
      if (Number.isNaN(want)) return Number.isNaN(got);
      return Object.is(got, want);
    }),
    { seed: 7, numRuns: 20000 },
  );
  // tie cases: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 → even (1); 1 + 3·2^-11 → 1 + 2^-9
  assert.equal(f16BitsToF32(f32ToF16Bits(1 + 2 ** -11)), 1);
  assert.equal(f16BitsToF32(f32ToF16Bits(1 + 3 * 2 ** -11)), 1 + 2 ** -9);
  assert.equal(f16BitsToF32(f32ToF16Bits(65520)), Infinity);
  assert.equal(f16BitsToF32(f32ToF16Bits(65519.99)), 65504);
  assert.equal(f16BitsToF32(f32ToF16Bits(2 ** -25)), 0, "half of the smallest subnormal ties to even (0)");
  assert.equal(f16BitsToF32(f32ToF16Bits(1.5 * 2 ** -24)), 2 ** -23, "1.5 ulp ties to even (2 ulp)");
});

Deno.test("dtype: property — f32→bf16 is the nearest bf16, ties to even", () => {
  fc.assert(
    fc.property(anyF32, (x) => {
      const h = f32ToBf16Bits(x);
      const q = bf16BitsToF32(h);
      if (Number.isNaN(x)) return Number.isNaN(q);
      if (!Number.isFinite(x)) return q === x;
      // overflow: x rounds to ±inf iff |x| ≥ halfway between the largest bf16 (2 − 2^−7)·2^127 and 2^128
      if (!Number.isFinite(q)) {
        return Math.abs(x) >= (2 - 2 ** -8) * 2 ** 127 && Math.sign(q) === Math.sign(x);
      }
      // neighbours of q in bf16 (same sign): |x − q| must not exceed |x − neighbour|; ties pick the even one
      for (const nb of [h - 1, h + 1]) {
        if (nb < 0 || nb > 0xffff || ((nb ^ h) & 0x8000)) continue;
        const v = bf16BitsToF32(nb);
        if (!Number.isFinite(v)) continue;
        const dq = Math.abs(x - q), dv = Math.abs(x - v);
        if (dq > dv || (dq === dv && (h & 1))) return false;
      }
      return true;
    }),
    { seed: 11, numRuns: 20000 },
  );
  assert.equal(bf16BitsToF32(f32ToBf16Bits(1 + 2 ** -8)), 1, "tie → even");
  assert.equal(bf16BitsToF32(f32ToBf16Bits(1 + 3 * 2 ** -8)), 1 + 2 ** -6, "tie → even (up)");
  const nanBits = f32ToBf16Bits(NaN);
  assert.ok(Number.isNaN(bf16BitsToF32(nanBits)));
  const bulk = encodeF32(new Float32Array([1 + 2 ** -8, -3.25, 1e-40]), "BF16");
  assert.deepEqual([...new Uint16Array(bulk.buffer)], [1 + 2 ** -8, -3.25, 1e-40].map(f32ToBf16Bits));
});

Deno.test("writer: bytes match the format spec built by hand (header padded to 8 with spaces)", async () => {
  await withTmp(async (dir) => {
    const path = `${dir}/w.safetensors`;
    await writeSafetensors(path, [
      { name: "a", dtype: "F32", shape: [2, 3], data: A },
      { name: "b", dtype: "BF16", shape: [4], data: le(B_BITS) },
      { name: "c", dtype: "F16", shape: [3], data: new Float32Array([1, 2 ** -24, -65504]) },
      { name: "d", dtype: "I64", shape: [2], data: D },
    ], { metadata: { format: "pt" } });
    const json = JSON.stringify(GOOD_HEADER);
    const padded = json + " ".repeat((8 - (json.length % 8)) % 8);
    assert.deepEqual(await Deno.readFile(path), handBuild(padded, GOOD_DATA));
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["w.safetensors"], "no temp files left");
  });
});

/** Ragged shapes: 0–3 dims of sizes 1, primes and non-multiples of tiles. */
const shapeArb = fc.array(fc.constantFrom<number>(1, 2, 3, 5, 7, 13, 31, 33), { minLength: 0, maxLength: 3 });

Deno.test("writer: property — write→read round trip for F32 (exact), BF16 and F16 (round-off bounds)", async () => {
  await withTmp(async (dir) => {
    let k = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(shapeArb, fc.constantFrom("F32", "BF16", "F16"), fc.integer()), {
          minLength: 1,
          maxLength: 4,
        }),
        async (specs) => {
          const tensors = specs.map(([shape, dtype, seed], i) => {
            const n = shape.reduce((a, b) => a * b, 1);
            const range = dtype === "F16" ? 6e4 : 1e30;
            const rnd = mulberry32(seed);
            // log-uniform magnitudes so tiny and huge values both occur
            const data = Float32Array.from({ length: n }, () => (rnd() - 0.5) * range * 10 ** (-20 * rnd()));
            return { name: `t${i}.weight`, dtype: dtype as "F32" | "BF16" | "F16", shape, data };
          });
          const path = `${dir}/rt${k++}.safetensors`;
          await writeSafetensors(path, tensors);
          await using f = await SafetensorsFile.open(path);
          for (const t of tensors) {
            const got = await f.readTensorF32(t.name);
            assert.deepEqual(f.info(t.name).shape, t.shape);
            // unit round-off u: bf16 2^-8 (8-bit significand), f16 2^-11; f16 subnormal spacing 2^-24 → atol 2^-25
            const [rtol, atol] = t.dtype === "F32"
              ? [0, 0]
              : t.dtype === "BF16"
              ? [2 ** -8, 2 ** -133]
              : [2 ** -11, 2 ** -25];
            for (let i = 0; i < got.length; i++) {
              const ref = t.data[i];
              if (Math.abs(got[i] - ref) > atol + rtol * Math.abs(ref)) {
                assert.fail(
                  `${t.dtype} ${t.name}[${i}]: got ${got[i]}, ref ${ref}, diff ${Math.abs(got[i] - ref)}`,
                );
              }
            }
            if (t.dtype === "F16") assert.deepEqual(got, Float32Array.from(new Float16Array(t.data)));
          }
        },
      ),
      { seed: 1234, numRuns: 40 },
    );
  });
});

Deno.test("writer: rejects bad input and leaves no partial file", async () => {
  await withTmp(async (dir) => {
    const p = `${dir}/bad.safetensors`;
    const ok: TensorToWrite = { name: "x", dtype: "F32", shape: [2], data: new Float32Array(2) };
    await assert.rejects(writeSafetensors(p, [ok, ok]), /duplicate tensor "x"/);
    await assert.rejects(
      writeSafetensors(p, [{ ...ok, shape: [3] }]),
      /Cannot write safetensors ".*bad.safetensors": tensor "x" has shape \[3\] \(3 elements\) but data has 2/,
    );
    await assert.rejects(
      writeSafetensors(p, [{ ...ok, dtype: "I32" }]),
      /cannot encode Float32Array data as I32/,
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

function tinyTensors(): TensorToWrite[] {
  return Array.from({ length: 5 }, (_, i) => ({
    name: `model.layers.${i}.w`,
    dtype: "F32" as const,
    shape: [10, 10],
    data: Float32Array.from({ length: 100 }, (_, j) => i * 1000 + j),
  }));
}

Deno.test("checkpoint: sharded write + SafetensorsCheckpoint reads lazily across shards", async () => {
  await withTmp(async (dir) => {
    const tensors = tinyTensors(); // 400 bytes each
    const files = await writeSafetensorsSharded(dir, tensors, { maxShardBytes: 900 });
    assert.deepEqual(files, [
      "model-00001-of-00003.safetensors",
      "model-00002-of-00003.safetensors",
      "model-00003-of-00003.safetensors",
      "model.safetensors.index.json",
    ]);
    const index = JSON.parse(await Deno.readTextFile(`${dir}/model.safetensors.index.json`));
    assert.equal(index.metadata.total_size, 2000);
    assert.equal(index.weight_map["model.layers.4.w"], "model-00003-of-00003.safetensors");
    await using ck = await SafetensorsCheckpoint.open(dir);
    assert.equal(ck.files.length, 3);
    assert.equal(await ck.has("model.layers.2.w"), true);
    assert.equal(await ck.has("nope"), false);
    assert.deepEqual((await ck.list()).map((t) => t.name), tensors.map((t) => t.name));
    for (const t of tensors) assert.deepEqual(await ck.readTensorF32(t.name), t.data);
    assert.deepEqual([...await ck.readTensorF32("model.layers.3.w", { rowStart: 9 })], [
      ...tensors[3].data.slice(90),
    ]);
    await assert.rejects(
      ck.readRaw("lm_head.weight"),
      new RegExp(`Cannot load checkpoint "${dir}": tensor "lm_head.weight" is missing`),
    );
    // a small model gets a single model.safetensors and no index
    const single = `${dir}/single`;
    await Deno.mkdir(single);
    assert.deepEqual(await writeSafetensorsSharded(single, tensors), ["model.safetensors"]);
    await using ck1 = await SafetensorsCheckpoint.open(single);
    assert.deepEqual(await ck1.readTensorF32("model.layers.1.w"), tensors[1].data);
  });
});

Deno.test("checkpoint: inconsistent indexes give clear errors", async () => {
  await withTmp(async (dir) => {
    await writeSafetensorsSharded(dir, tinyTensors(), { maxShardBytes: 900 });
    const idxPath = `${dir}/model.safetensors.index.json`;
    const index = JSON.parse(await Deno.readTextFile(idxPath));
    index.weight_map["ghost"] = "model-00001-of-00003.safetensors";
    await Deno.writeTextFile(idxPath, JSON.stringify(index));
    await using ck = await SafetensorsCheckpoint.open(dir);
    await assert.rejects(
      ck.readRaw("ghost"),
      /tensor "ghost" is missing from shard ".*model-00001-of-00003.safetensors" although/,
    );
    index.weight_map["x"] = "model-00009-of-00009.safetensors";
    await Deno.writeTextFile(idxPath, JSON.stringify(index));
    await assert.rejects(
      SafetensorsCheckpoint.open(dir),
      /shard ".*model-00009-of-00009.safetensors" listed in .* is missing/,
    );
    index.weight_map["x"] = "../escape.safetensors";
    await Deno.writeTextFile(idxPath, JSON.stringify(index));
    await assert.rejects(SafetensorsCheckpoint.open(idxPath), /maps tensor "x" to invalid shard/);
    await Deno.writeTextFile(idxPath, "{}");
    await assert.rejects(SafetensorsCheckpoint.open(dir), /has no "weight_map" object/);
    await assert.rejects(
      SafetensorsCheckpoint.open(`${dir}/none`),
      /Cannot load checkpoint ".*none": path not found/,
    );
  });
});

const TINY_CFG = qwen2Config({
  hiddenSize: 8,
  intermediateSize: 12,
  numHiddenLayers: 1,
  numAttentionHeads: 2,
  numKeyValueHeads: 1,
  vocabSize: 10,
  tieWordEmbeddings: true,
});

Deno.test("checkpoint: saveCheckpointDir writes a transformers-style directory and replaces it atomically", async () => {
  await withTmp(async (root) => {
    const tok = `${root}/tok`;
    await Deno.mkdir(tok);
    await Deno.writeTextFile(`${tok}/tokenizer.json`, '{"model":{}}');
    await Deno.writeTextFile(`${tok}/tokenizer_config.json`, "{}");
    await Deno.writeTextFile(`${tok}/unrelated.txt`, "x");
    const dir = `${root}/runs/step1`;
    const emb = {
      name: "model.embed_tokens.weight",
      dtype: "BF16" as const,
      shape: [10, 8],
      data: new Float32Array(80).fill(0.5),
    };
    await saveCheckpointDir(dir, {
      config: TINY_CFG,
      tensors: [emb],
      tokenizerFiles: tok,
      extraFiles: { "generation_config.json": { eos_token_id: 3 }, "notes/readme.txt": "hi" },
    });
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, [
      "config.json",
      "generation_config.json",
      "model.safetensors",
      "notes",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    assert.equal(cfg.torch_dtype, "bfloat16");
    assert.equal(cfg.model_type, "qwen2");
    assert.deepEqual(cfg.architectures, ["Qwen2ForCausalLM"]);
    const opened = await openCheckpointDir(dir);
    assert.deepEqual(opened.config.hiddenSize, 8);
    assert.deepEqual((await opened.weights.info("model.embed_tokens.weight")).dtype, "BF16");
    await opened.weights.close();
    {
      await using f = await SafetensorsFile.open(`${dir}/model.safetensors`);
      assert.equal(f.metadata.format, "pt", "transformers refuses safetensors without format=pt");
    }

    // A failing save (bad tensor) keeps the previous checkpoint and leaves no temp dirs behind.
    await assert.rejects(
      saveCheckpointDir(dir, { config: TINY_CFG, tensors: [{ ...emb, shape: [3] }] }),
      /tensor "model.embed_tokens.weight" has shape \[3\]/,
    );
    assert.deepEqual([...Deno.readDirSync(`${root}/runs`)].map((e) => e.name), ["step1"]);
    assert.equal(JSON.parse(await Deno.readTextFile(`${dir}/config.json`)).hidden_size, 8);
    await assert.rejects(
      saveCheckpointDir(dir, { config: TINY_CFG, tensors: [], tokenizerFiles: `${root}/none` }),
      /tokenizer file ".*none\/tokenizer.json" not found/,
    );

    // Simulated crash between the two renames: only step1.old-* exists plus an orphan tmp build.
    await Deno.rename(dir, `${dir}.old-deadbeef`);
    await Deno.mkdir(`${dir}.tmp-cafe`);
    const fallback = await openCheckpointDir(dir);
    assert.equal(
      fallback.dir,
      `${dir}.old-deadbeef`,
      "readers use the surviving copy without modifying anything",
    );
    await fallback.weights.close();
    await saveCheckpointDir(dir, { config: TINY_CFG, tensors: [{ ...emb, dtype: "F32" }] });
    assert.deepEqual(
      [...Deno.readDirSync(`${root}/runs`)].map((e) => e.name),
      ["step1"],
      "recovered and cleaned",
    );
    assert.equal(JSON.parse(await Deno.readTextFile(`${dir}/config.json`)).torch_dtype, "float32");
    await assert.rejects(
      openCheckpointDir(`${root}/missing`),
      /Cannot load checkpoint ".*missing": directory not found/,
    );
  });
});
