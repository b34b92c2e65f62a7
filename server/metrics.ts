/**
 * Server metrics in the Prometheus text exposition format (version 0.0.4), served at `GET /metrics`:
 *
 * - `prm_server_requests_total{route, method, status}`: requests answered;
 * - `prm_server_request_seconds{route}`: latency histogram (cumulative `_bucket{le}`, `_sum`, `_count`);
 * - `prm_server_request_latency_seconds{route, quantile}`: p50/p90/p99 over the latest 1024 requests per route;
 * - `prm_server_batch_size{kind}`: items per model call (histogram), and `prm_server_batch_seconds{kind}`;
 * - `prm_server_queue_items{kind}` and `prm_server_in_flight_requests`: gauges read at scrape time.
 *
 * Routes are the matched route patterns (`/v1/score`), never raw paths, so label cardinality stays bounded.
 *
 * @module
 */

/** Latency histogram bucket bounds in seconds. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];
/** Batch size histogram bucket bounds in items. */
export const BATCH_BUCKETS: readonly number[] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

const WINDOW = 1024;

class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array(bounds.length).fill(0);
  }
  observe(v: number): void {
    const i = this.bounds.findIndex((b) => v <= b);
    if (i >= 0) this.counts[i]++;
    this.sum += v;
    this.count++;
  }
  lines(name: string, labels: string): string[] {
    let acc = 0;
    const sep = labels ? "," : "";
    return [
      ...this.bounds.map((b, i) => `${name}_bucket{${labels}${sep}le="${b}"} ${acc += this.counts[i]}`),
      `${name}_bucket{${labels}${sep}le="+Inf"} ${this.count}`,
      `${name}_sum{${labels}} ${this.sum}`,
      `${name}_count{${labels}} ${this.count}`,
    ];
  }
}

/** The `q`-quantile (0..1) of `xs` by the nearest-rank method: the ⌈q·n⌉-th smallest value. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

/** Counters, histograms and gauges of the server; render with {@linkcode Metrics.render}. */
export class Metrics {
  readonly #requests = new Map<string, number>();
  readonly #latency = new Map<string, Histogram>();
  readonly #recent = new Map<string, number[]>();
  readonly #batchSize = new Map<string, Histogram>();
  readonly #batchSeconds = new Map<string, Histogram>();
  readonly #gauges = new Map<string, () => number>();
  /** Requests being handled now. */
  inFlight = 0;

  /** Records one answered request. */
  observeRequest(route: string, method: string, status: number, seconds: number): void {
    const key = `route="${esc(route)}",method="${esc(method)}",status="${status}"`;
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
    const r = `route="${esc(route)}"`;
    if (!this.#latency.has(r)) this.#latency.set(r, new Histogram(LATENCY_BUCKETS)), this.#recent.set(r, []);
    this.#latency.get(r)!.observe(seconds);
    const recent = this.#recent.get(r)!;
    recent.push(seconds);
    if (recent.length > WINDOW) recent.splice(0, recent.length - WINDOW);
  }

  /** Records one model call of `kind` ("score", "generate") over `items` items taking `seconds`. */
  observeBatch(kind: string, items: number, seconds: number): void {
    const k = `kind="${esc(kind)}"`;
    if (!this.#batchSize.has(k)) {
      this.#batchSize.set(k, new Histogram(BATCH_BUCKETS));
      this.#batchSeconds.set(k, new Histogram(LATENCY_BUCKETS));
    }
    this.#batchSize.get(k)!.observe(items);
    this.#batchSeconds.get(k)!.observe(seconds);
  }

  /** Registers a gauge read at each scrape, e.g. `gauge('prm_server_queue_items{kind="score"}', () => n)`. */
  gauge(series: string, read: () => number): void {
    this.#gauges.set(series, read);
  }

  /** Mean items per model call of `kind` so far (NaN before the first). */
  meanBatchSize(kind: string): number {
    const h = this.#batchSize.get(`kind="${esc(kind)}"`);
    return h ? h.sum / h.count : NaN;
  }

  /** Everything in the Prometheus text format. */
  render(): string {
    const out: string[] = [];
    const family = (name: string, type: string, help: string) =>
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    family("prm_server_requests_total", "counter", "Requests answered, by route, method and status.");
    for (const [k, v] of this.#requests) out.push(`prm_server_requests_total{${k}} ${v}`);
    family("prm_server_request_seconds", "histogram", "Request latency in seconds.");
    for (const [k, h] of this.#latency) out.push(...h.lines("prm_server_request_seconds", k));
    family(
      "prm_server_request_latency_seconds",
      "summary",
      `Request latency quantiles over the latest ${WINDOW} requests.`,
    );
    for (const [k, xs] of this.#recent) {
      for (const q of [0.5, 0.9, 0.99]) {
        out.push(`prm_server_request_latency_seconds{${k},quantile="${q}"} ${quantile(xs, q)}`);
      }
    }
    family("prm_server_batch_size", "histogram", "Items per model call.");
    for (const [k, h] of this.#batchSize) out.push(...h.lines("prm_server_batch_size", k));
    family("prm_server_batch_seconds", "histogram", "Duration of model calls in seconds.");
    for (const [k, h] of this.#batchSeconds) out.push(...h.lines("prm_server_batch_seconds", k));
    family("prm_server_in_flight_requests", "gauge", "Requests being handled.");
    out.push(`prm_server_in_flight_requests ${this.inFlight}`);
    const gauges = [...this.#gauges].sort(([a], [b]) => a.localeCompare(b));
    let last = "";
    for (const [series, read] of gauges) {
      const name = series.replace(/\{.*$/, "");
      if (name !== last) family(name, "gauge", "Gauge read at scrape time."), last = name;
      out.push(`${series} ${read()}`);
    }
    return out.join("\n") + "\n";
  }
}

/** Parses Prometheus text into `series → value` (comments skipped), e.g. to read `/metrics` in tests and benches. */
export function parsePrometheus(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}
