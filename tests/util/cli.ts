/** Runs the CLI (`cli/main.ts`) as a subprocess for the CLI tests. @module */

/** Path of `cli/main.ts`. */
export const CLI_MAIN = new URL("../../cli/main.ts", import.meta.url).pathname;

/**
 * Runs `deno run -A cli/main.ts ...args` with colours off (`NO_COLOR`) and `XDG_RUNTIME_DIR` set, plus `env`;
 * returns the exit code and the decoded output.
 */
export async function runCli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI_MAIN, ...args],
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}
