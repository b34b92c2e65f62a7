/**
 * The test runner behind `deno task test`: every test file runs in its own `deno test` process, `--jobs` at a
 * time, after one type check of them all; it prints each file's report as the file finishes and ends with Deno's
 * own summary line (`ok | N passed (S steps) | N failed (time)`).
 *
 * Why a process per file: a crash, a hang or an abort at exit is then one file's and named as such, and each
 * file's report is printed whole. (The abort that first made the suite run this way, "corrupted size vs.
 * prev_size" or "double free" after Deno's summary, was libEGL's destructor racing a thread's exit; `Gpu.create`
 * now keeps WebGPU off the OpenGL backend, see core/gpu/README.md.)
 *
 * ```sh
 * deno run -A tests/run.ts                      # every *_test.ts under tests/
 * deno run -A tests/run.ts tests/rmsnorm_test.ts --filter backward --jobs 1
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";

const USAGE = `Usage: deno run -A tests/run.ts [paths...] [options]

Runs each test file (*_test.ts, *.test.ts, test.ts under the given files or folders; default tests/) in its own
\`deno test\` process after one \`deno check\` of them all, and ends with Deno's summary line.

Options:
  --filter <text>   run only tests whose name contains <text> (or matches /regex/), as deno test --filter
  --jobs <n>        test files run at once (default: $DENO_JOBS, else the number of CPUs)
  --no-check        skip the type check
  -h, --help        this text`;

/** Counts from one Deno summary line. */
export interface Summary {
  ok: boolean;
  passed: number;
  passedSteps: number;
  failed: number;
  failedSteps: number;
  ignored: number;
  filteredOut: number;
}

/** A summary with every count 0. */
function emptySummary(ok: boolean): Summary {
  return { ok, passed: 0, passedSteps: 0, failed: 0, failedSteps: 0, ignored: 0, filteredOut: 0 };
}

/**
 * Parses Deno's summary line, e.g. `ok | 12 passed (3 steps) | 0 failed (1s)` or
 * `FAILED | 1 passed | 2 failed (1 step) | 1 ignored | 4 filtered out (20ms)`; undefined when `line` is not one.
 */
export function parseSummary(line: string): Summary | undefined {
  // deno test colours its output even into a pipe unless NO_COLOR is set: strip the escape sequences
  // deno-lint-ignore no-control-regex
  const m = /^(ok|FAILED) \| (.*)$/.exec(line.replace(/\x1b\[[0-9;]*m/g, "").trim());
  if (!m) return undefined;
  const s = emptySummary(m[1] === "ok");
  let seen = false;
  for (const part of m[2].split(" | ")) {
    const p = /^(\d+) (passed|failed|ignored|filtered out)(?: \((\d+) steps?\))?/.exec(part.trim());
    if (!p) return undefined;
    const n = Number(p[1]), steps = Number(p[3] ?? 0);
    if (p[2] === "passed") [s.passed, s.passedSteps, seen] = [n, steps, true];
    else if (p[2] === "failed") [s.failed, s.failedSteps] = [n, steps];
    else if (p[2] === "ignored") s.ignored = n;
    else s.filteredOut = n;
  }
  return seen ? s : undefined;
}

/** Deno-style duration: `850ms`, `12s`, `2m5s`. */
function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${s % 60}s`;
}

const TEST_FILE = /(^|[\/_.])test\.(ts|tsx|js|mjs|mts)$/;

/** The test files under `path` (a file or a folder), sorted; folders named `fixtures` or starting with `.` skipped. */
async function collect(path: string): Promise<string[]> {
  const info = await Deno.stat(path).catch(() => {
    throw new Error(`Test path "${path}" does not exist`);
  });
  if (info.isFile) return [path];
  const out: string[] = [];
  for await (const e of Deno.readDir(path)) {
    const p = `${path.replace(/\/$/, "")}/${e.name}`;
    if (e.isDirectory && !e.name.startsWith(".") && e.name !== "fixtures") out.push(...await collect(p));
    else if (e.isFile && TEST_FILE.test(e.name)) out.push(p);
  }
  return out.sort();
}

/** Runs `deno <args>` and returns its exit code and its stdout and stderr, interleaved as they arrived. */
async function deno(args: string[]): Promise<{ code: number; signal: string | null; output: string }> {
  const child = new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped", stdin: "null" })
    .spawn();
  const chunks: Uint8Array[] = [];
  const drain = async (s: ReadableStream<Uint8Array>) => {
    for await (const c of s) chunks.push(c);
  };
  const [status] = await Promise.all([child.status, drain(child.stdout), drain(child.stderr)]);
  const bytes = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) bytes.set(c, (at += c.length) - c.length);
  const output = new TextDecoder().decode(bytes);
  return { code: status.code, signal: status.signal, output };
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args, // `deno task test -- ...` passes the "--" on
    allowPositionals: true,
    options: {
      filter: { type: "string" },
      jobs: { type: "string" },
      "no-check": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const jobsText = values.jobs ?? Deno.env.get("DENO_JOBS") ?? String(navigator.hardwareConcurrency || 1);
  const jobs = Number(jobsText);
  if (!Number.isInteger(jobs) || jobs < 1) {
    throw new Error(`Invalid --jobs "${jobsText}": expected an integer ≥ 1`);
  }
  const files = [
    ...new Set((await Promise.all((positionals.length ? positionals : ["tests"]).map(collect))).flat()),
  ];
  if (files.length === 0) throw new Error(`No test files under ${positionals.join(", ") || "tests"}`);

  const start = performance.now();
  if (!values["no-check"]) {
    const check = await deno(["check", ...files]);
    if (check.code !== 0) {
      console.log(check.output.trimEnd());
      console.log(
        `\nFAILED | 0 passed | ${files.length} failed (type check: ${duration(performance.now() - start)})`,
      );
      return 1;
    }
  }

  const total = emptySummary(true);
  const problems: string[] = [];
  const filter = values.filter === undefined ? [] : ["--filter", values.filter];
  let next = 0;
  const worker = async () => {
    while (next < files.length) {
      const file = files[next++];
      const r = await deno(["test", "-A", "--no-check", ...filter, file]);
      const lines = r.output.trimEnd().split("\n");
      const at = lines.findLastIndex((l) => parseSummary(l) !== undefined);
      const s = at >= 0 ? parseSummary(lines[at])! : undefined;
      const report = (at >= 0 ? [...lines.slice(0, at), ...lines.slice(at + 1)] : lines).join("\n").trim();
      if (report) console.log(report);
      if (!s) {
        total.failed += 1;
        problems.push(`${file}: no summary (exit code ${r.code}${r.signal ? `, ${r.signal}` : ""})`);
        continue;
      }
      for (const k of ["passed", "passedSteps", "failed", "failedSteps", "ignored", "filteredOut"] as const) {
        total[k] += s[k];
      }
      if (s.failed > 0) problems.push(`${file}: ${s.failed} failed`);
      else if (r.code !== 0) {
        // Every test passed but the process did not exit cleanly (a crash at exit): that is a failure too.
        total.failed += 1;
        problems.push(
          `${file}: all tests passed, then the process exited with code ${r.code}` +
            (r.signal ? ` (${r.signal})` : ""),
        );
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, files.length) }, worker));

  if (problems.length) console.log(`\nfailed files:\n${problems.map((p) => `  ${p}`).join("\n")}`);
  const steps = (n: number) => n ? ` (${n} step${n === 1 ? "" : "s"})` : "";
  const extra = (total.ignored ? ` | ${total.ignored} ignored` : "") +
    (total.filteredOut ? ` | ${total.filteredOut} filtered out` : "");
  const ok = total.failed === 0;
  const how =
    `${duration(performance.now() - start)}, ${files.length} file${files.length === 1 ? "" : "s"}, ` +
    `${jobs} at a time`;
  console.log(
    `\n${ok ? "ok" : "FAILED"} | ${total.passed} passed${steps(total.passedSteps)} | ${total.failed} failed` +
      `${steps(total.failedSteps)}${extra} (${how})`,
  );
  return ok ? 0 : 1;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}\n\n${USAGE}`);
    Deno.exit(2);
  }
}
