/**
 * A WebGPU-native toolkit for RL fine-tuning of LLM reasoning with process (PRM) and outcome (ORM) reward models.
 *
 * The transformer's math runs as WGSL compute shaders on Deno's native WebGPU; reward shaping (Clip, Delta),
 * GAE and the PPO losses are pure, property-tested TypeScript with WGSL twins.
 *
 * @example
 * ```ts
 * import { Gpu, upload, readF32, runBatch, add } from "./mod.ts";
 * const gpu = await Gpu.create();
 * const a = upload(gpu, [1, 2, 3]), b = upload(gpu, [4, 5, 6]), out = upload(gpu, [0, 0, 0]);
 * await runBatch(gpu, "add", (batch) => add(batch, out, a, b));
 * console.log(await readF32(out)); // Float32Array [5, 7, 9]
 * ```
 *
 * @module
 */

// GPU runtime
export { getGpu, Gpu, type GpuLimits, type GpuOptions, NO_ADAPTER_MESSAGE } from "./core/gpu/device.ts";
export { type Binding, type DType, expectShape, numel, Tensor, type TensorView } from "./core/gpu/tensor.ts";
export { Batch, runBatch } from "./core/gpu/batch.ts";
export { type HostData, readF32, readI32, upload, zeros } from "./core/gpu/io.ts";
export { grid1d, type KernelSpec, packParams, type ParamField, withConstants } from "./core/gpu/kernel.ts";
export { type PoolStats } from "./core/gpu/buffer_pool.ts";
export { rowShards } from "./core/gpu/shard.ts";

// Kernels
export { add, axpy, mul, scale } from "./core/ops/elementwise.ts";

// Reward math (pure TS)
export * from "./core/rewards/mod.ts";
export {
  AdaptiveKLController,
  type AdaptiveKLOptions,
  FixedKLController,
  K3_LOG_RATIO_CLAMP,
  type KLController,
  klEstimate,
  klEstimateGrad,
  type KLEstimateOptions,
  type KLEstimator,
  type KLMode,
  klPenalty,
  type KLPenaltyOptions,
} from "./core/rl/kl.ts";
export {
  gae,
  gaeBatch,
  type GAEBatchOptions,
  type GAEOptions,
  type GAEResult,
  whiten,
  type WhitenOptions,
} from "./core/rl/gae.ts";
export {
  LOG_RATIO_CLAMP,
  type PPOBatch,
  type PPOKLInLoss,
  ppoLoss,
  type PPOLossOptions,
  type PPOLossResult,
} from "./core/rl/ppo_loss.ts";

// Model I/O: config, safetensors, checkpoints, hub, tokenizer, chat template
export {
  configToJson,
  loadConfig,
  parseQwen2Config,
  QWEN2_ARCHITECTURES,
  type Qwen2Architecture,
  type Qwen2Config,
  qwen2Config,
  type Qwen2ConfigInit,
} from "./core/model/config.ts";
export {
  bf16BitsToF32,
  decodeToF32,
  DTYPE_SIZE,
  encodeF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  parseSafetensorsHeader,
  type ReadOptions,
  type SafetensorsDtype,
  SafetensorsFile,
  type TensorInfo,
} from "./core/model/safetensors.ts";
export {
  type CheckpointContents,
  openCheckpointDir,
  type OpenedCheckpoint,
  SafetensorsCheckpoint,
  saveCheckpointDir,
  type TensorToWrite,
  TOKENIZER_FILES,
  writeSafetensors,
  writeSafetensorsSharded,
} from "./core/model/checkpoint.ts";
export {
  DEFAULT_MODEL_FILES,
  hubCacheDir,
  type HubOptions,
  repoFolderName,
  type RepoType,
  resolveDataset,
  type ResolvedRepo,
  resolveModel,
} from "./core/model/hub.ts";
export { formatBytes, formatDuration, ProgressBar, type ProgressOptions } from "./core/util/progress.ts";
export {
  type AddedTokenInfo,
  type DecodeOptions,
  type EncodeOptions,
  type EncodingWithOffsets,
  loadTokenizer,
  Tokenizer,
} from "./core/tokenizer/tokenizer.ts";
export {
  applyChatTemplate,
  applyChatTemplateIds,
  type ChatMessage,
  type ChatTemplateOptions,
} from "./core/tokenizer/chat_template.ts";

// Data: the built-in arithmetic task, its tiny tokenizer and preset, GSM8K loading
export * from "./core/data/mod.ts";

// PPO loss and GAE on the GPU (WGSL twins of the TS references)
export {
  parsePPOStats,
  PPO_STATS,
  ppoLossGpu,
  type PPOLossGpuInputs,
  type PPOLossGpuOptions,
  type PPOLossGpuOutputs,
  type PPOStatName,
  type PPOStats,
  readPPOStats,
} from "./core/rl/ppo_loss_gpu.ts";
export {
  gaeGpu,
  type GAEGpuInputs,
  type GAEGpuOptions,
  type GAEGpuOutputs,
  whitenGpu,
  type WhitenGpuInputs,
} from "./core/rl/gae_gpu.ts";

// Kernels: softmax, reductions, embedding
export {
  type CausalMask,
  logSoftmax,
  logSoftmaxBackward,
  softmax,
  softmaxBackward,
  type SoftmaxOptions,
} from "./core/ops/softmax.ts";
export { REDUCE_CHUNK, reduceAll, type ReduceOp, type ReduceOptions, reduceRows } from "./core/ops/reduce.ts";
export {
  checkEmbeddingStatus,
  embedding,
  embeddingBackward,
  type EmbeddingOptions,
} from "./core/ops/embedding.ts";

// Qwen2 layer kernels (forward and backward)
export { rmsnormBackward, rmsnormForward, type RmsnormOptions } from "./core/model/rmsnorm.ts";
export { ropeBackward, ropeForward, ropeInvFreq, type RopeOptions } from "./core/model/rope.ts";
export { attentionBackward, attentionForward, type AttentionOptions } from "./core/model/attention.ts";
export {
  swigluBackward,
  swigluForward,
  swigluFusedBackward,
  swigluFusedForward,
} from "./core/model/swiglu.ts";
export { logprobsBackward, logprobsForward } from "./core/model/logprobs.ts";

// Qwen2 model: parameters, forward, scoring, generation
export { type LayerParams, paramShapes, type Qwen2Params } from "./core/model/params.ts";
export {
  type CacheStep,
  type ForwardInputs,
  type LayerActivations,
  lmHead,
  releaseActivations,
  trunkForward,
  type TrunkOutput,
} from "./core/model/qwen2.ts";
export {
  loadModel,
  type PackedBatch,
  packSequences,
  type Qwen2Model,
  randomModel,
  releaseModel,
  saveModel,
  type ScoreOptions,
  type ScoreResult,
  scoreSequences,
} from "./core/model/model.ts";
export { generate, type GenerateOptions, type GenerateResult } from "./core/model/generate.ts";
export { appendLayers, type AppendLayersOptions } from "./core/model/grow.ts";
export {
  calculatorFor,
  calculatorState,
  calculatorStep,
  type CalculatorTable,
  calculatorTable,
  calculatorWritten,
  forcedToken,
} from "./core/model/calculator.ts";
export { createKVCache, type KVCache, releaseKVCache } from "./core/model/kv_cache.ts";
export { linear, linearBackward } from "./core/model/linear.ts";
export { reduceColumns } from "./core/ops/columns.ts";

// Optimisers: AdamW, SGD, gradient clipping, LR schedules, state files
export * from "./core/optim/mod.ts";

// GPU sampling
export {
  createSamplerState,
  releaseSamplerState,
  type SampleOptions,
  type SamplerState,
  sampleTokens,
} from "./core/ops/sampling.ts";
export { philox4x32, sampleTokensRef, samplingRandom } from "./core/ref/sampling_ref.ts";

// Matmul
export {
  canBindTextures,
  checkTile,
  DEFAULT_GPU_TILE,
  GPU_TILES,
  type GpuTile,
  matmul,
  matmulDims,
  type MatmulOptions,
  tileName,
} from "./core/ops/matmul.ts";
export { matmulRef } from "./core/ref/matmul_ref.ts";

// Training: LM loss, SFT, evaluation, the tiny preset
export { type LMExample, lmLossAndGrads, type LMLossResult } from "./core/train/lm_loss.ts";
export { runSft, SFT_DEFAULTS, type SftConfig, type SftResult } from "./core/train/sft.ts";
export { loadSftData, type SftDataset } from "./core/train/sft_data.ts";
export { evaluateAccuracy, type EvaluateOptions, type EvaluateResult } from "./core/train/evaluate.ts";
export { ensureTinyModel, TINY_INIT_DIR } from "./core/train/tiny.ts";
export { createGrads, type Grads, trunkBackward } from "./core/model/qwen2_backward.ts";
export { lmHeadBackward, lmHeadForward } from "./core/model/lm_head.ts";

// Reward models (PRM, ORM), their scoring contract, and RL (rollouts, critic, PPO)
export * from "./core/rm/types.ts";
export * from "./core/rm/mod.ts";
export * from "./core/rl/mod.ts";

// Scoring server
export { type AppDeps, createApp, type ScoringApp } from "./server/app.ts";
