/**
 * Storage-buffer pool: tensors take buffers from size buckets and give them back on release, so a training loop
 * that allocates the same shapes every step creates no new GPU buffers after its first step.
 *
 * A released buffer may still be read by commands that are encoded but not yet submitted, so it becomes
 * reusable only after the next queue submission ({@linkcode BufferPool.batchClosed}).
 *
 * @module
 */

/** Usage of every pooled storage buffer. */
export const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/** Counters describing the pool, for leak tests and metrics. */
export interface PoolStats {
  /** Buffers handed out and not yet released. */
  liveBuffers: number;
  /** Bytes of those buffers. */
  liveBytes: number;
  /** Released buffers kept for reuse (including those waiting for a submit). */
  pooledBuffers: number;
  /** Bytes of those buffers. */
  pooledBytes: number;
  /** GPU buffers created since the pool was made. */
  created: number;
  /** Acquisitions served from the pool. */
  reused: number;
}

/**
 * Rounds a byte size up to its bucket: powers of two up to 1 MiB, then multiples of an eighth of the power of two
 * below (at most 12.5% waste for large tensors).
 */
export function bucketSize(bytes: number): number {
  const n = Math.max(16, Math.ceil(bytes / 16) * 16);
  if (n <= 1 << 20) return 2 ** Math.ceil(Math.log2(n));
  const step = 2 ** (Math.floor(Math.log2(n)) - 3);
  return Math.ceil(n / step) * step;
}

/** Pool of storage buffers keyed by bucket size. */
export class BufferPool {
  readonly #device: GPUDevice;
  readonly #capacity: number;
  readonly #free = new Map<number, GPUBuffer[]>();
  #freeOrder: GPUBuffer[] = [];
  #pending: GPUBuffer[] = [];
  readonly #live = new Set<GPUBuffer>();
  #liveBytes = 0;
  #pooledBytes = 0;
  #created = 0;
  #reused = 0;

  constructor(device: GPUDevice, capacity: number) {
    this.#device = device;
    this.#capacity = capacity;
  }

  /** Takes a storage buffer of at least `bytes` bytes. */
  acquire(bytes: number, label: string): GPUBuffer {
    const size = bucketSize(bytes);
    const list = this.#free.get(size);
    let buf = list?.pop();
    if (buf) {
      this.#reused++;
      this.#pooledBytes -= size;
      this.#freeOrder.splice(this.#freeOrder.indexOf(buf), 1);
    } else {
      buf = this.#device.createBuffer({ label, size, usage: STORAGE_USAGE });
      this.#created++;
    }
    this.#live.add(buf);
    this.#liveBytes += size;
    return buf;
  }

  /** Gives a buffer back; it becomes reusable after the next submit. Releasing twice is an error. */
  release(buf: GPUBuffer): void {
    if (!this.#live.delete(buf)) throw new Error(`Buffer "${buf.label}" was released twice or is not pooled`);
    this.#liveBytes -= buf.size;
    this.#pooledBytes += buf.size;
    this.#pending.push(buf);
  }

  #openBatches = 0;

  /** Called when a batch opens: released buffers stay pending until every open batch is submitted. */
  batchOpened(): void {
    this.#openBatches++;
  }

  /**
   * Called when a batch is submitted or abandoned: once no batch is open, buffers released before become reusable
   * (no unsubmitted command can still read them, and later host writes are queued after their last use).
   */
  batchClosed(): void {
    this.#openBatches = Math.max(0, this.#openBatches - 1);
    if (this.#openBatches === 0) this.#recycle();
  }

  #recycle(): void {
    for (const buf of this.#pending) {
      const list = this.#free.get(buf.size) ?? [];
      list.push(buf);
      this.#free.set(buf.size, list);
      this.#freeOrder.push(buf);
    }
    this.#pending = [];
    while (this.#pooledBytes > this.#capacity && this.#freeOrder.length > 0) {
      const old = this.#freeOrder.shift()!;
      const list = this.#free.get(old.size)!;
      list.splice(list.indexOf(old), 1);
      this.#pooledBytes -= old.size;
      old.destroy();
    }
  }

  /** Destroys every free buffer (live ones stay valid). */
  clear(): void {
    for (const buf of this.#freeOrder) buf.destroy();
    for (const buf of this.#pending) buf.destroy();
    this.#free.clear();
    this.#freeOrder = [];
    this.#pending = [];
    this.#pooledBytes = 0;
  }

  /** Current counters. */
  stats(): PoolStats {
    return {
      liveBuffers: this.#live.size,
      liveBytes: this.#liveBytes,
      pooledBuffers: this.#freeOrder.length + this.#pending.length,
      pooledBytes: this.#pooledBytes,
      created: this.#created,
      reused: this.#reused,
    };
  }
}
