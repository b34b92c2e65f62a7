import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { parseSummary } from "./run.ts";

Deno.test("parseSummary reads Deno's summary lines, coloured or not, and rejects other lines", () => {
  deepStrictEqual(parseSummary("ok | 337 passed (5 steps) | 0 failed (1m34s)"), {
    ok: true,
    passed: 337,
    passedSteps: 5,
    failed: 0,
    failedSteps: 0,
    ignored: 0,
    filteredOut: 0,
  });
  deepStrictEqual(parseSummary("FAILED | 1 passed | 2 failed (1 step) | 3 ignored | 4 filtered out (20ms)"), {
    ok: false,
    passed: 1,
    passedSteps: 0,
    failed: 2,
    failedSteps: 1,
    ignored: 3,
    filteredOut: 4,
  });
  equal(
    parseSummary("\x1b[0m\x1b[32mok\x1b[0m | 2 passed | 0 failed \x1b[0m\x1b[38;5;245m(64ms)\x1b[0m")?.passed,
    2,
  );
  equal(parseSummary("./tests/a_test.ts => x ... ok (2ms)"), undefined);
  equal(parseSummary("ok | the rest"), undefined);
});

Deno.test("the runner runs each file in its own process and counts failures and crashes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "run_test_" });
  try {
    await Deno.writeTextFile(
      `${dir}/pass_test.ts`,
      `Deno.test("p1", () => {});\nDeno.test("p2", () => {});\n`,
    );
    await Deno.writeTextFile(`${dir}/fail_test.ts`, `Deno.test("f1", () => { throw new Error("boom"); });\n`);
    // passes its test, then the process aborts before Deno's summary (as a native crash at teardown would)
    await Deno.writeTextFile(
      `${dir}/crash_test.ts`,
      `globalThis.addEventListener("unload", () => Deno.kill(Deno.pid, "SIGABRT"));\nDeno.test("c1", () => {});\n`,
    );
    await Deno.writeTextFile(`${dir}/helper.ts`, `export const notATest = 1;\n`);
    const runner = new URL("./run.ts", import.meta.url).pathname;
    const run = async (...args: string[]) => {
      const r = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", runner, "--no-check", ...args],
        env: { NO_COLOR: "1" },
      }).output();
      return { code: r.code, out: new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr) };
    };

    const all = await run(dir, "--jobs", "2");
    equal(all.code, 1, all.out);
    const last = all.out.trimEnd().split("\n").at(-1)!;
    match(last, /^FAILED \| 2 passed \| 2 failed \(.*3 files, 2 at a time\)$/);
    match(all.out, /fail_test\.ts: 1 failed/);
    match(all.out, /crash_test\.ts: no summary \(exit code 134, SIGABRT\)/);
    match(all.out, /boom/); // the failing file's own report is printed

    const one = await run(`${dir}/pass_test.ts`, "--filter", "p2");
    equal(one.code, 0, one.out);
    match(one.out.trimEnd().split("\n").at(-1)!, /^ok \| 1 passed \| 0 failed \| 1 filtered out \(/);

    const bad = await run(`${dir}/missing_test.ts`);
    equal(bad.code, 2);
    ok(bad.out.includes(`Test path "${dir}/missing_test.ts" does not exist`), bad.out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
