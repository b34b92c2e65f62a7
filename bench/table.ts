/**
 * Plain-text tables for benchmark output.
 *
 * @module
 */

/** A benchmark result row: column name → value (numbers are printed with 3 significant digits or as integers). */
export type Row = Record<string, string | number>;

function cell(v: string | number): string {
  if (typeof v === "string") return v;
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3);
}

/** Formats rows as an aligned table with a title line. */
export function formatTable(title: string, rows: Row[]): string {
  if (rows.length === 0) return `${title}\n  (no rows)`;
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const text = rows.map((r) => cols.map((c) => (c in r ? cell(r[c]) : "")));
  const width = cols.map((c, i) => Math.max(c.length, ...text.map((t) => t[i].length)));
  const line = (cells: string[]) =>
    "| " + cells.map((s, i) => (i === 0 ? s.padEnd(width[i]) : s.padStart(width[i]))).join(" | ") + " |";
  return [
    title,
    line(cols),
    "|" + width.map((w, i) => (i === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":")).join("|") + "|",
    ...text.map(line),
  ].join("\n");
}

/** Median of a list of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
