// Reward-model metrics (core/rm/eval_rm.ts): exact ROC-AUC against the pairwise definition (ties count ½),
// threshold accuracy, majority vote, and best-of-N selection on hand-made groups and random ones.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  bestOfN,
  type BestOfNGroup,
  classMetrics,
  formatRmReport,
  rocAuc,
  thresholdAccuracy,
  voteAnswer,
  withinProblemAuc,
} from "../core/rm/eval_rm.ts";

/** P(s₊ > s₋) + ½ P(s₊ = s₋) over all positive/negative pairs: the definition, O(n²). */
function pairwiseAuc(s: number[], y: number[]): number {
  let num = 0, den = 0;
  for (let i = 0; i < s.length; i++) {
    for (let j = 0; j < s.length; j++) {
      if (y[i] === 1 && y[j] === 0) {
        den++;
        num += s[i] > s[j] ? 1 : s[i] === s[j] ? 0.5 : 0;
      }
    }
  }
  return num / den;
}

Deno.test("rocAuc equals the pairwise definition, ties counting ½ (few distinct scores force ties)", () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 0, max: 1 })), {
        minLength: 2,
        maxLength: 60,
      }),
      (pairs) => {
        const s = pairs.map(([v]) => v / 6), y = pairs.map(([, l]) => l);
        const auc = rocAuc(s, y);
        if (y.every((l) => l === y[0])) return assert.ok(Number.isNaN(auc));
        assert.ok(Math.abs(auc - pairwiseAuc(s, y)) < 1e-12, `${auc} vs ${pairwiseAuc(s, y)}`);
      },
    ),
    { seed: 3, numRuns: 300 },
  );
});

Deno.test("rocAuc and accuracy: known values and errors", () => {
  assert.equal(rocAuc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]), 1);
  assert.equal(rocAuc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]), 0);
  assert.equal(rocAuc([0.5, 0.5, 0.5], [0, 1, 1]), 0.5);
  assert.equal(rocAuc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]), 0.75); // sklearn's roc_auc_score example
  assert.throws(() => rocAuc([0.1, 0.2], [0, 0.5]), /label 1 is "0.5", expected 0 or 1/);
  assert.throws(() => rocAuc([0.1], [0, 1]), /2 labels for 1 scores/);
  assert.equal(thresholdAccuracy([0.2, 0.7, 0.5, 0.9], [0, 1, 1, 0]), 0.5); // 0.5 is not > 0.5
  const m = classMetrics([0.2, 0.7, 0.6], [0, 1, 1]);
  assert.deepEqual(m, { n: 3, positives: 2, accuracy: 1, auc: 1 });
});

Deno.test("voteAnswer: most frequent extracted answer, ties to the first seen, abstentions ignored", () => {
  assert.equal(voteAnswer(["#### 3", "#### 4", "#### 4", "no answer here"]), "4");
  assert.equal(voteAnswer(["#### 5", "#### 3", "#### 3", "#### 5"]), "5");
  assert.equal(voteAnswer(["#### 2.0", "#### 2", "#### 7"]), "2"); // 2.0 = 2 as rationals
  assert.equal(voteAnswer(["nothing", "at all"]), null);
  assert.equal(voteAnswer(["#### 1", "#### 2", "#### 2"], [0.9, 0.3, 0.4]), "1"); // weighted
  assert.equal(voteAnswer(["#### 1", "#### 2"], [0, 0]), "1"); // all weights 0: first seen
});

const g = (gold: string, samples: [string, number[], number][]): BestOfNGroup => ({
  gold,
  samples: samples.map(([text, prm, orm]) => ({ text, prm, orm })),
});

Deno.test("bestOfN: each selector picks as specified on hand-made groups", () => {
  const groups = [
    // prm_min → sample 1 (min 0.6) ✓; prm_product → sample 2 (0.5445 > 0.216) ✗; prm_last → sample 0 (0.99 ties
    // sample 2: the earliest wins) ✗; orm → sample 2 ✗; majority: 5, 7, 9 once each → 5 (first seen) ✗
    g("7", [["a\n#### 5", [0.2, 0.99], 0.1], ["b\n#### 7", [0.6, 0.6, 0.6], 0.2], [
      "c\n#### 9",
      [0.55, 0.99],
      0.9,
    ]]),
    // every PRM aggregate → sample 2 ✗; orm → sample 1 ✓; majority 7 ✓
    g("7", [["#### 7", [0.1], 0.3], ["#### 7", [0.2], 0.8], ["#### 3", [0.9], 0.1]]),
  ];
  const r = bestOfN(groups, { seed: 1 });
  const a = r.byN["3"];
  assert.equal(r.problems, 2);
  // group 0: ✓ sample 1 (min 0.6) vs ✗ 0.2, 0.55 → 2/2; group 1: ✓ 0.1, 0.2 vs ✗ 0.9 → 0/2
  assert.deepEqual(r.withinProblem.prm_min, { auc: 0.5, pairs: 4, problems: 2 });
  // ORM: group 0 ✓ 0.2 vs ✗ 0.1, 0.9 → 1/2; group 1 ✓ 0.3, 0.8 vs ✗ 0.1 → 2/2
  assert.deepEqual(r.withinProblem.orm, { auc: 0.75, pairs: 4, problems: 2 });
  assert.equal(a.prm_min, 0.5);
  assert.equal(a.prm_product, 0);
  assert.equal(a.prm_last, 0);
  assert.equal(a.orm, 0.5);
  assert.equal(a.majority, 0.5);
  assert.equal(a.prm_vote, 0.5); // group 0: 7 weighs 0.6 ✓; group 1: 3 (0.9) beats 7 (0.1 + 0.2) ✗
  assert.equal(a.orm_vote, 0.5); // group 0: 9 (0.9) ✗; group 1: 7 (0.3 + 0.8) ✓
  assert.equal(a.oracle, 1);
  assert.ok(Math.abs(a.mean! - 0.5) < 1e-12);
  assert.ok([0, 0.5, 1].includes(a.random!));
  const again = bestOfN(groups, { seed: 1 });
  assert.deepEqual(again, r, "seeded: the random pick repeats");
  assert.throws(() => bestOfN(groups, { ns: [4] }), /N = 4 is not in \[1, 3\]/);
  assert.ok(
    !("orm" in bestOfN([g("1", [["#### 1", [0.5], 0]])].map((x) => ({
      ...x,
      samples: x.samples.map(({ text, prm }) => ({ text, prm })),
    }))).byN["1"]),
  );
});

Deno.test("bestOfN on random groups: every selector ≤ pass@N, N = 1 gives the first sample's accuracy", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.array(
          fc.tuple(
            fc.integer({ min: 0, max: 3 }),
            fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 4 }),
            fc.double({ min: 0, max: 1, noNaN: true }),
          ),
          { minLength: 4, maxLength: 4 },
        ),
        { minLength: 1, maxLength: 8 },
      ),
      fc.nat(),
      (raw, seed) => {
        const groups = raw.map((samples) => g("2", samples.map(([a, prm, orm]) => [`#### ${a}`, prm, orm])));
        const r = bestOfN(groups, { ns: [1, 4], seed });
        const first = groups.filter((x) => x.samples[0].text === "#### 2").length / groups.length;
        for (const [k, v] of Object.entries(r.byN["1"])) assert.ok(Math.abs(v! - first) < 1e-12, `N=1 ${k}`);
        for (const [k, v] of Object.entries(r.byN["4"])) {
          assert.ok(v! <= r.byN["4"].oracle! + 1e-12, `${k} ≤ oracle`);
        }
      },
    ),
    { seed: 5, numRuns: 100 },
  );
});

Deno.test("formatRmReport prints every section", () => {
  const text = formatRmReport({
    problems: 2,
    synthetic: { solutions: 10, prm: { n: 30, positives: 12, accuracy: 0.9, auc: 0.95 } },
    bestOfN: {
      problems: 2,
      byN: { "1": { prm_min: 0.5, majority: 0.5 }, "4": { prm_min: 1, majority: 0.5 } },
      withinProblem: { prm_min: { auc: 0.625, pairs: 8, problems: 2 } },
    },
  });
  assert.match(text, /PRM step-level\s+n=\s+30\s+pos=\s+40.0%\s+acc=\s+90.0%\s+AUC=0.950/);
  assert.match(text, /prm_min\s+50.0\s+100.0/);
  assert.match(
    text,
    /Within-problem ROC-AUC \(correct vs wrong samples of the same problem: 8 pairs, 2 problems\):\n\s+prm_min 0.625/,
  );
});

Deno.test("withinProblemAuc equals rocAuc within each problem, pooled over pairs; difficulty alone gives 0.5", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 5 }), fc.boolean()), { minLength: 1, maxLength: 7 }),
        { minLength: 1, maxLength: 6 },
      ),
      (raw) => {
        const groups = raw.map((g) => g.map(([v, correct]) => ({ score: v / 5, correct })));
        const r = withinProblemAuc(groups);
        let wins = 0, pairs = 0, problems = 0;
        for (const g of groups) {
          const np = g.filter((x) => x.correct).length, nn = g.length - np;
          if (!np || !nn) continue;
          problems++, pairs += np * nn;
          wins += np * nn * rocAuc(g.map((x) => x.score), g.map((x) => (x.correct ? 1 : 0)));
        }
        assert.equal(r.pairs, pairs);
        assert.equal(r.problems, problems);
        if (!pairs) return assert.ok(Number.isNaN(r.auc));
        assert.ok(Math.abs(r.auc - wins / pairs) < 1e-12, `${r.auc} vs ${wins / pairs}`);
      },
    ),
    { seed: 7, numRuns: 200 },
  );
  // a score that only knows the problem's difficulty: perfect AUC over all samples, 0.5 within problems
  const easy = [{ score: 0.9, correct: true }, { score: 0.9, correct: true }, { score: 0.9, correct: false }];
  const hard = [{ score: 0.1, correct: false }, { score: 0.1, correct: false }, {
    score: 0.1,
    correct: true,
  }];
  const all = [...easy, ...hard];
  assert.equal(rocAuc(all.map((x) => x.score), all.map((x) => (x.correct ? 1 : 0))), 6 / 9);
  assert.deepEqual(withinProblemAuc([easy, hard]), { auc: 0.5, pairs: 4, problems: 2 });
  assert.deepEqual(withinProblemAuc([[{ score: 0.2, correct: true }, { score: 0.1, correct: false }]]), {
    auc: 1,
    pairs: 1,
    problems: 1,
  });
  assert.throws(
    () => withinProblemAuc([[{ score: NaN, correct: true }, { score: 0, correct: false }]]),
    /NaN/,
  );
});

Deno.test("bestOfN: the policy-confidence baselines pick and vote by mean log-prob", () => {
  const withLogp = (gold: string, s: [string, number][]): BestOfNGroup => ({
    gold,
    samples: s.map(([text, logp]) => ({ text, logp })),
  });
  const groups = [
    // policy_logp → sample 2 (−0.1) ✓; logp_vote: 7 weighs e^−0.1 ≈ 0.905 < 5's e^−0.5 + e^−0.6 ≈ 1.155 ✗
    withLogp("7", [["#### 5", -0.5], ["#### 5", -0.6], ["#### 7", -0.1]]),
    // policy_logp → sample 0 ✗; logp_vote: 3 (e^−0.2 ≈ 0.819) outweighs 4 (e^−1 + e^−1.1 ≈ 0.701) ✗
    withLogp("4", [["#### 3", -0.2], ["#### 4", -1], ["#### 4", -1.1]]),
  ];
  const r = bestOfN(groups, { seed: 0 });
  assert.equal(r.byN["3"].policy_logp, 0.5);
  assert.equal(r.byN["3"].logp_vote, 0);
  assert.equal(r.byN["3"].majority, 0.5);
  assert.ok(!("prm_min" in r.byN["3"]) && !("orm" in r.byN["3"]));
  // group 0: ✓ −0.1 beats both ✗ → 2/2; group 1: ✓ −1, −1.1 lose to ✗ −0.2 → 0/2
  assert.deepEqual(r.withinProblem.policy_logp, { auc: 0.5, pairs: 4, problems: 2 });
});
