/**
 * Dynamic batching: the items of concurrent requests are coalesced into one call of a batch function (one
 * `scorer.score` or `generator.generate`, i.e. shared forward passes on the GPU).
 *
 * One worker runs one batch at a time. A batch starts when `maxBatch` items are waiting or when the oldest
 * waiting request has waited `waitMs`; it takes whole requests in arrival order while their items fit in
 * `maxBatch` (a request larger than `maxBatch` runs alone). Requests arriving while a batch runs queue up and
 * form the next batch, so batches grow with load. At most `queueSize` items wait: beyond that {@linkcode submit}
 * throws {@linkcode QueueFullError} (the server answers 503 with `Retry-After`).
 *
 * When a coalesced batch fails, each of its requests is retried alone, so one bad request cannot fail the others.
 *
 * @example
 * ```ts
 * const batcher = new Batcher((items: ScoreItem[]) => scorer.score(items), { maxBatch: 32, waitMs: 5 });
 * const [out] = await batcher.submit([item]);
 * ```
 *
 * @module
 */

/** Options of {@linkcode Batcher}. */
export interface BatcherOptions {
  /** Most items per batch (default 32). */
  maxBatch?: number;
  /** Longest wait of a request for others to join its batch, in milliseconds (default 5). */
  waitMs?: number;
  /** Most items waiting (not yet running) before submissions are refused (default 1024). */
  queueSize?: number;
  /** Called after every batch run with its item count and duration in seconds (for metrics). */
  onBatch?: (items: number, seconds: number) => void;
}

/** Thrown by {@linkcode Batcher.submit} when the queue is full or the batcher is closed. */
export class QueueFullError extends Error {
  /** Suggested wait before retrying, in whole seconds (at least 1). */
  readonly retryAfter: number;
  /** Creates the error with its retry hint. */
  constructor(message: string, retryAfter: number) {
    super(message);
    this.name = "QueueFullError";
    this.retryAfter = retryAfter;
  }
}

interface Pending<I, O> {
  items: I[];
  arrived: number;
  resolve: (out: O[]) => void;
  reject: (e: unknown) => void;
}

/** Coalesces concurrent submissions into batched calls of `run`; results come back in each request's order. */
export class Batcher<I, O> {
  readonly #run: (items: I[]) => Promise<O[]>;
  readonly #maxBatch: number;
  readonly #waitMs: number;
  readonly #queueSize: number;
  readonly #onBatch?: (items: number, seconds: number) => void;
  #queue: Pending<I, O>[] = [];
  #queued = 0;
  #running: Promise<void> | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  #lastSeconds = 0.05; // duration of the latest batch, for Retry-After

  /** Creates a batcher over `run`, which must return one output per input item, in order. */
  constructor(run: (items: I[]) => Promise<O[]>, opts: BatcherOptions = {}) {
    const { maxBatch = 32, waitMs = 5, queueSize = 1024 } = opts;
    const check = (name: string, v: number, min: number) => {
      if (!Number.isFinite(v) || v < min) {
        throw new Error(`Invalid batcher ${name} "${v}": expected >= ${min}`);
      }
    };
    check("maxBatch", maxBatch, 1);
    check("waitMs", waitMs, 0);
    check("queueSize", queueSize, 1);
    this.#run = run;
    this.#maxBatch = Math.floor(maxBatch);
    this.#waitMs = waitMs;
    this.#queueSize = Math.floor(queueSize);
    this.#onBatch = opts.onBatch;
  }

  /** Items waiting for a batch (not counting the batch running). */
  get queued(): number {
    return this.#queued;
  }

  /** Most items per batch. */
  get maxBatch(): number {
    return this.#maxBatch;
  }

  /** Queues `items` (one request) and resolves with their outputs once their batch has run. */
  submit(items: I[]): Promise<O[]> {
    if (items.length === 0) return Promise.resolve([]);
    if (this.#closed) throw new QueueFullError("The server is shutting down", 1);
    if (this.#queued + items.length > this.#queueSize) {
      const batchesAhead = Math.ceil((this.#queued + items.length) / this.#maxBatch) + 1;
      throw new QueueFullError(
        `Queue full: ${this.#queued} items waiting, queue size ${this.#queueSize}`,
        Math.max(1, Math.ceil(batchesAhead * this.#lastSeconds)),
      );
    }
    return new Promise<O[]>((resolve, reject) => {
      this.#queue.push({ items, arrived: performance.now(), resolve, reject });
      this.#queued += items.length;
      this.#schedule();
    });
  }

  /** Refuses new submissions and resolves once every queued request has been answered. */
  async close(): Promise<void> {
    this.#closed = true;
    while (this.#running || this.#queue.length > 0) {
      this.#schedule();
      await (this.#running ?? new Promise((r) => setTimeout(r, 1)));
    }
  }

  // Starts the next batch now if it is full or overdue, else arms a timer for the oldest request's deadline.
  #schedule(): void {
    if (this.#running || this.#queue.length === 0) return;
    clearTimeout(this.#timer);
    const wait = this.#queue[0].arrived + this.#waitMs - performance.now();
    if (this.#queued >= this.#maxBatch || wait <= 0 || this.#closed) {
      this.#running = this.#next().finally(() => {
        this.#running = null;
        this.#schedule();
      });
    } else {
      this.#timer = setTimeout(() => this.#schedule(), wait);
    }
  }

  // Takes whole requests up to maxBatch items and runs them as one batch.
  async #next(): Promise<void> {
    const take: Pending<I, O>[] = [];
    let n = 0;
    while (this.#queue.length > 0) {
      const k = this.#queue[0].items.length;
      if (take.length > 0 && n + k > this.#maxBatch) break;
      take.push(this.#queue.shift()!);
      n += k;
    }
    this.#queued -= n;
    try {
      const out = await this.#timed(take.flatMap((p) => p.items));
      let at = 0;
      for (const p of take) p.resolve(out.slice(at, at += p.items.length));
    } catch (e) {
      if (take.length === 1) return take[0].reject(e);
      for (const p of take) { // isolate the failing request(s)
        try {
          p.resolve(await this.#timed(p.items));
        } catch (e1) {
          p.reject(e1);
        }
      }
    }
  }

  async #timed(items: I[]): Promise<O[]> {
    const t0 = performance.now();
    const out = await this.#run(items);
    if (!Array.isArray(out) || out.length !== items.length) {
      throw new Error(`Batch function returned ${out?.length} outputs for ${items.length} items`);
    }
    const seconds = (performance.now() - t0) / 1000;
    this.#lastSeconds = seconds;
    this.#onBatch?.(items.length, seconds);
    return out;
  }
}
