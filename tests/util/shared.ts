/**
 * Paths into the workspace's shared data (`../shared/` beside the repository: the real Qwen tokenizer and
 * GSM8K), which tests read but the repository never copies.
 *
 * @module
 */

/** Absolute path of `rel` under ../shared; throws naming the path and the check that needs it when absent. */
export async function sharedPath(rel: string, neededFor: string): Promise<string> {
  const path = new URL(`../../../shared/${rel}`, import.meta.url).pathname;
  await Deno.stat(path).catch(() => {
    throw new Error(`Shared data not found at "${path}" (needed for ${neededFor})`);
  });
  return path;
}
