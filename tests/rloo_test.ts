// Leave-one-out group baselines (core/rl/rloo.ts) against a direct computation.
import fc from "fast-check";
import assert from "node:assert/strict";
import { rlooBaselines } from "../core/rl/rloo.ts";

Deno.test("rlooBaselines is the mean total of the other members of each group (0 alone)", () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.double({ min: -5, max: 5, noNaN: true }), fc.integer({ min: 0, max: 4 })), {
        minLength: 1,
        maxLength: 40,
      }),
      (rows) => {
        const totals = rows.map(([r]) => r), groups = rows.map(([, g]) => g);
        const got = rlooBaselines(totals, groups);
        rows.forEach(([, g], b) => {
          const others = totals.filter((_, i) => i !== b && groups[i] === g);
          const want = others.length ? others.reduce((a, x) => a + x, 0) / others.length : 0;
          assert.ok(Math.abs(got[b] - want) <= 1e-9 * (1 + Math.abs(want)), `row ${b}: ${got[b]} vs ${want}`);
        });
      },
    ),
    { seed: 5 },
  );
  assert.deepEqual(Array.from(rlooBaselines([1, 0, 1, 1], [0, 0, 0, 0])), [2 / 3, 1, 2 / 3, 2 / 3]);
  assert.throws(() => rlooBaselines([1, 2], [0]), /2 totals but 1 group ids/);
});
