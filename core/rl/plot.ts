/**
 * A metrics plot as hand-written SVG: one small line chart per metric in a grid, x = iteration, each with its
 * title, y range and last value. No dependencies; the output opens in any browser.
 *
 * ```
 * ┌ reward ─────────┐ ┌ accuracy ───────┐ ┌ kl ─────────────┐
 * │     ╱╲__╱‾‾     │ │   __╱‾‾‾        │ │ ╲__             │
 * └─────────────────┘ └─────────────────┘ └─────────────────┘
 * ```
 *
 * Also the plain-text tables of the trainer, the eval command and the ablation.
 *
 * @module
 */
import type { EvalSummary } from "./ppo_checkpoint.ts";

/** One plotted series: points (x, y); non-finite y values are skipped. */
export interface Series {
  /** Panel title. */
  title: string;
  points: [number, number][];
}

/** Options of {@linkcode svgPlot}. */
export interface PlotOptions {
  /** Panels per row (default 3). */
  columns?: number;
  /** Panel width and height in px (default 300 × 170). */
  width?: number;
  height?: number;
  /** Title above the grid. */
  title?: string;
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** Short number text: 3 significant digits, exponent form for very small or large magnitudes. */
export function formatTick(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1);
  return Number(v.toPrecision(3)).toString();
}

/** One panel at (x0, y0): frame, title, y range labels, polyline and points. */
function panel(s: Series, x0: number, y0: number, w: number, h: number): string {
  const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const pad = { l: 46, r: 10, t: 22, b: 22 };
  const iw = w - pad.l - pad.r, ih = h - pad.t - pad.b;
  const out = [
    `<g transform="translate(${x0},${y0})">`,
    `<rect x="0.5" y="0.5" width="${w - 1}" height="${h - 1}" fill="#fff" stroke="#ddd"/>`,
    `<text x="${pad.l}" y="15" font-size="12" font-weight="bold">${esc(s.title)}</text>`,
  ];
  if (pts.length === 0) {
    out.push(
      `<text x="${w / 2}" y="${h / 2}" font-size="11" fill="#999" text-anchor="middle">no data</text></g>`,
    );
    return out.join("");
  }
  let [xmin, xmax] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [ymin, ymax] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  if (xmax === xmin) (xmin -= 1, xmax += 1);
  if (ymax === ymin) {
    const d = Math.abs(ymin) > 0 ? Math.abs(ymin) * 0.1 : 1;
    (ymin -= d, ymax += d);
  }
  const X = (x: number) => pad.l + ((x - xmin) / (xmax - xmin)) * iw;
  const Y = (y: number) => pad.t + ih - ((y - ymin) / (ymax - ymin)) * ih;
  const f = (v: number) => v.toFixed(1);
  out.push(
    `<line x1="${pad.l}" y1="${pad.t + ih}" x2="${pad.l + iw}" y2="${pad.t + ih}" stroke="#999"/>`,
    `<line x1="${pad.l}" y1="${pad.t}" x2="${pad.l}" y2="${pad.t + ih}" stroke="#999"/>`,
    `<text x="${pad.l - 4}" y="${pad.t + 4}" font-size="10" text-anchor="end">${formatTick(ymax)}</text>`,
    `<text x="${pad.l - 4}" y="${pad.t + ih}" font-size="10" text-anchor="end">${formatTick(ymin)}</text>`,
    `<text x="${pad.l}" y="${h - 6}" font-size="10">${formatTick(xmin)}</text>`,
    `<text x="${pad.l + iw}" y="${h - 6}" font-size="10" text-anchor="end">${formatTick(xmax)}</text>`,
  );
  if (ymin < 0 && ymax > 0) {
    out.push(
      `<line x1="${pad.l}" y1="${f(Y(0))}" x2="${pad.l + iw}" y2="${
        f(Y(0))
      }" stroke="#ccc" stroke-dasharray="3,3"/>`,
    );
  }
  const line = pts.map(([x, y]) => `${f(X(x))},${f(Y(y))}`).join(" ");
  out.push(`<polyline points="${line}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>`);
  for (const [x, y] of pts) out.push(`<circle cx="${f(X(x))}" cy="${f(Y(y))}" r="2" fill="#1f77b4"/>`);
  const last = pts[pts.length - 1][1];
  out.push(
    `<text x="${w - pad.r}" y="15" font-size="11" text-anchor="end" fill="#555">${
      formatTick(last)
    }</text></g>`,
  );
  return out.join("");
}

/** The SVG document of `series` laid out in a grid (see the module doc). */
export function svgPlot(series: readonly Series[], opts: PlotOptions = {}): string {
  const cols = Math.max(1, opts.columns ?? 3), w = opts.width ?? 300, h = opts.height ?? 170;
  const top = opts.title ? 28 : 0, gap = 8;
  const rows = Math.max(1, Math.ceil(series.length / cols));
  const W = cols * w + (cols + 1) * gap, H = top + rows * h + (rows + 1) * gap;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
    `font-family="sans-serif">`,
    `<rect width="${W}" height="${H}" fill="#f7f7f7"/>`,
  ];
  if (opts.title) {
    parts.push(`<text x="${gap}" y="20" font-size="14" font-weight="bold">${esc(opts.title)}</text>`);
  }
  series.forEach((s, i) => {
    const x = gap + (i % cols) * (w + gap), y = top + gap + Math.floor(i / cols) * (h + gap);
    parts.push(panel(s, x, y, w, h));
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

/** A metrics record: flat JSON values. */
type Rec = Record<string, string | number | boolean | null>;

/** Default panels of a PPO run: [record type, key, title]. */
export const PPO_PLOT_METRICS: [string, string, string][] = [
  ["iteration", "reward_total", "reward (total per sequence)"],
  ["iteration", "reward_success", "success reward"],
  ["iteration", "reward_process", "process reward (α·Σ shaped)"],
  ["eval", "greedy_accuracy", "held-out greedy accuracy"],
  ["iteration", "accuracy", "rollout accuracy"],
  ["iteration", "kl", "KL(π ‖ π_ref) per token"],
  ["iteration", "entropy", "entropy per token"],
  ["iteration", "clip_frac", "clip fraction"],
  ["iteration", "approx_kl", "approx-KL(π_old ‖ π)"],
  ["iteration", "value_loss", "value loss"],
  ["iteration", "explained_variance", "explained variance"],
  ["iteration", "response_length", "response length (tokens)"],
  ["iteration", "steps_per_solution", "steps per solution"],
  ["iteration", "repeated_step_rate", "repeated-step rate"],
  ["iteration", "tokens_per_s", "generated tokens / s"],
];

/** The plot of a PPO run's metrics records (x = `iteration`). */
export function metricsSvg(records: readonly Rec[], opts: PlotOptions = {}): string {
  const series = PPO_PLOT_METRICS.map(([type, key, title]) => ({
    title,
    points: records
      .filter((r) => r.type === type && typeof r.iteration === "number" && typeof r[key] === "number")
      .map((r) => [r.iteration as number, r[key] as number] as [number, number]),
  }));
  return svgPlot(series, opts);
}

/** A plain-text table (first column left-aligned). */
export function textTable(title: string, header: string[], rows: (string | number)[][]): string {
  const cell = (v: string | number) =>
    typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(3)) : v;
  const text = rows.map((r) => r.map(cell));
  const w = header.map((h, i) => Math.max(h.length, ...text.map((r) => (r[i] ?? "").length)));
  const line = (c: string[]) =>
    "| " + c.map((s, i) => (i ? s.padStart(w[i]) : s.padEnd(w[i]))).join(" | ") + " |";
  return [title, line(header), "|" + w.map((x) => "-".repeat(x + 2)).join("|") + "|", ...text.map(line)].join(
    "\n",
  );
}

/** The final summary table: held-out metrics before/after and the first/last iteration's rollout metrics. */
export function summaryTable(
  initial: EvalSummary | null,
  final: EvalSummary | null,
  records: readonly Rec[],
): string {
  const pct = (
    x: number | null | undefined,
  ) => (x === null || x === undefined ? "—" : `${(100 * x).toFixed(1)}%`);
  const num = (x: unknown) => (typeof x === "number" ? x : "—");
  const rows: (string | number)[][] = [
    ["held-out greedy accuracy", pct(initial?.greedyAccuracy), pct(final?.greedyAccuracy)],
    ["held-out pass@1 (sampled)", pct(initial?.pass1), pct(final?.pass1)],
    ["held-out pass@k", pct(initial?.passK), pct(final?.passK)],
    ["held-out maj@k", pct(initial?.majK), pct(final?.majK)],
    ["held-out steps / solution", num(initial?.stepsPerSolution), num(final?.stepsPerSolution)],
    ["held-out repeated-step rate", num(initial?.repeatedStepRate), num(final?.repeatedStepRate)],
    ["held-out response tokens", num(initial?.meanResponseTokens), num(final?.meanResponseTokens)],
  ];
  const it = records.filter((r) => r.type === "iteration");
  const [a, b] = [it[0], it[it.length - 1]];
  for (
    const [k, label] of [
      ["reward_total", "rollout reward (total)"],
      ["reward_success", "rollout success reward"],
      ["reward_process", "rollout process reward"],
      ["accuracy", "rollout accuracy"],
      ["kl", "KL(π ‖ π_ref) per token"],
      ["steps_per_solution", "rollout steps / solution"],
      ["repeated_step_rate", "rollout repeated-step rate"],
      ["iteration_s", "iteration wall time (s)"],
    ]
  ) rows.push([label, num(a?.[k]), num(b?.[k])]);
  return textTable("PPO summary (start → end)", ["metric", "start", "end"], rows);
}
