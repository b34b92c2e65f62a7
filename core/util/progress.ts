/**
 * A small TTY-aware progress bar for byte transfers and long loops:
 * `label  [#########-----------]  45%  12.3/27.0 MB  5.1 MB/s  ETA 3s`.
 * It redraws in place (carriage return) at most every `intervalMs`, and prints nothing when disabled or when
 * the output stream is not a terminal (CI logs stay clean).
 *
 * @module
 */

/** Where a {@link ProgressBar} writes; defaults to `Deno.stderr`. */
export interface ProgressSink {
  /** Write raw bytes. */
  writeSync(p: Uint8Array): number;
  /** Whether the sink is an interactive terminal. */
  isTerminal(): boolean;
}

/** Options of {@link ProgressBar}. */
export interface ProgressOptions {
  /** Total units (bytes when `bytes`), or undefined/0 when unknown (no percentage and no ETA then). */
  total?: number;
  /** Text shown before the bar. */
  label?: string;
  /** Format amounts as bytes (kB/MB/GB) instead of plain counts. Default true. */
  bytes?: boolean;
  /** Force on/off; default: on only when the sink is a TTY and `$NO_PROGRESS` is unset. */
  enabled?: boolean;
  /** Output sink; default `Deno.stderr`. */
  sink?: ProgressSink;
  /** Minimum milliseconds between redraws. Default 100. */
  intervalMs?: number;
  /** Bar width in characters. Default 24. */
  width?: number;
  /** Clock in milliseconds (tests). Default `performance.now`. */
  now?: () => number;
}

/** Format a byte count with decimal units: `formatBytes(1234567) === "1.2 MB"`. */
export function formatBytes(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

/** Format seconds as `45s`, `3m05s` or `2h03m`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** True when `$NO_PROGRESS` is set (or env access is denied), which disables bars by default. */
function progressDisabledByEnv(): boolean {
  try {
    return Deno.env.get("NO_PROGRESS") !== undefined;
  } catch {
    return true;
  }
}

/** An in-place terminal progress bar; see the module doc. */
export class ProgressBar {
  /** Units done so far. */
  done = 0;
  /** Total units (0 = unknown). */
  total: number;
  readonly #label: string;
  readonly #bytes: boolean;
  readonly #enabled: boolean;
  readonly #sink: ProgressSink;
  readonly #interval: number;
  readonly #width: number;
  readonly #now: () => number;
  readonly #start: number;
  #lastDraw = -Infinity;
  #lastLen = 0;
  #finished = false;

  /** Create a bar; nothing is printed until the first {@link update}. */
  constructor(opts: ProgressOptions = {}) {
    this.total = opts.total ?? 0;
    this.#label = opts.label ?? "";
    this.#bytes = opts.bytes ?? true;
    this.#sink = opts.sink ?? Deno.stderr;
    this.#enabled = opts.enabled ?? (this.#sink.isTerminal() && !progressDisabledByEnv());
    this.#interval = opts.intervalMs ?? 100;
    this.#width = opts.width ?? 24;
    this.#now = opts.now ?? (() => performance.now());
    this.#start = this.#now();
  }

  /** Whether the bar draws anything. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /** Advance by `delta` units and redraw if the redraw interval has passed. */
  update(delta: number): void {
    this.done += delta;
    if (!this.#enabled || this.#finished) return;
    const t = this.#now();
    if (t - this.#lastDraw < this.#interval) return;
    this.#lastDraw = t;
    this.#draw(this.render(t));
  }

  /** Draw the final state and end the line (no-op when disabled or already finished). */
  finish(): void {
    if (!this.#enabled || this.#finished) return;
    this.#finished = true;
    this.#draw(this.render(this.#now()), true);
  }

  /** The status line at time `t` (ms, same clock as `now`): label, bar, percent, amounts, rate, ETA. */
  render(t: number = this.#now()): string {
    const elapsed = Math.max((t - this.#start) / 1000, 1e-9);
    const rate = this.done / elapsed;
    const fmt = (n: number) => (this.#bytes ? formatBytes(n) : String(n));
    const parts: string[] = [];
    if (this.#label) parts.push(this.#label);
    if (this.total > 0) {
      const frac = Math.min(this.done / this.total, 1);
      const fill = Math.round(frac * this.#width);
      parts.push(`[${"#".repeat(fill)}${"-".repeat(this.#width - fill)}]`);
      parts.push(`${(frac * 100).toFixed(0).padStart(3)}%`);
      parts.push(`${fmt(this.done)}/${fmt(this.total)}`);
    } else {
      parts.push(fmt(this.done));
    }
    parts.push(`${fmt(Math.round(rate))}/s`);
    if (this.total > 0 && this.done < this.total) {
      parts.push(`ETA ${rate > 0 ? formatDuration((this.total - this.done) / rate) : "?"}`);
    } else if (this.total > 0) {
      parts.push(`in ${formatDuration(elapsed)}`);
    }
    return parts.join("  ");
  }

  /** Overwrite the current line with `line`, blanking leftovers of a longer previous line. */
  #draw(line: string, newline = false): void {
    const pad = " ".repeat(Math.max(0, this.#lastLen - line.length));
    this.#lastLen = line.length;
    this.#sink.writeSync(new TextEncoder().encode(`\r${line}${pad}${newline ? "\n" : ""}`));
  }
}
