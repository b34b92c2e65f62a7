/**
 * The built-in GSM8K-style arithmetic task: seeded, reproducible word problems (shopping, sharing, rates, ages,
 * savings, multi-item totals, …; see {@link ARITHMETIC_TEMPLATES}) with 2–5 solution steps over small
 * non-negative integers, small enough for a tiny model to learn on a CPU.
 *
 * Every problem carries a structured reference solution: each step is one binary operation `x op y = v` whose
 * operands are given quantities or earlier results. Its text follows GSM8K exactly, one step per line with a
 * calculator annotation, and a final `#### n` line:
 *
 * ```text
 * Tom buys 3 packs of 4 pens, so he has 3*4=<<3*4=12>>12 pens.
 * After giving 5 pens to his sister, he has 12-5=<<12-5=7>>7 pens.
 * #### 7
 * ```
 *
 * Generation bounds: given quantities ≤ 60 (bills ≤ 500), every value a non-negative integer < 1000, divisions
 * exact. Train and test splits are disjoint by construction: a problem's split is a hash of its question text
 * ({@link problemSplit}), so the same question can never land in both, whatever the seeds.
 *
 * @module
 */

import { fnv1a32, Rng } from "./rng.ts";
import { TEMPLATES } from "./templates.ts";

/** A binary arithmetic operation of a solution step. */
export type ArithOp = "+" | "-" | "*" | "/";

/** Where a step operand comes from: a quantity of the problem, or the result of an earlier step. */
export type StepInput = { kind: "given"; value: number } | { kind: "step"; index: number };

/** One reference solution step: `operands[0] op operands[1] = value`. */
export interface ArithmeticStep {
  /** The rendered line, e.g. `"Tom buys 3 packs of 4 pens, so he has 3*4=<<3*4=12>>12 pens."`. */
  text: string;
  /** The expression, e.g. `"3*4"`. */
  expr: string;
  /** The operation. */
  op: ArithOp;
  /** Operand values. */
  operands: [number, number];
  /** Operand sources (used to re-derive the solution when a step is corrupted). */
  inputs: [StepInput, StepInput];
  /** The step's result. */
  value: number;
  /** The line with placeholders `{x}`, `{y}` (operands) and `{eq}` (the equation), see {@link renderStep}. */
  template: string;
}

/** A generated word problem with its reference solution. Plain JSON data (serialisable as one JSONL row). */
export interface ArithmeticProblem {
  /** `<template>-<8 hex digits of fnv1a32(question)>`. */
  id: string;
  /** Template name (one of {@link ARITHMETIC_TEMPLATES}). */
  template: string;
  /** The word problem. */
  question: string;
  /** The full reference solution text: the step lines and `#### <finalAnswer>`. */
  answer: string;
  /** The final answer (value of the last step). */
  finalAnswer: number;
  /** The reference steps, in order. */
  steps: ArithmeticStep[];
  /** Quantities of the problem: every number in the question plus word numbers ("dozen" = 12, "twice" = 2). */
  quantities: number[];
  /**
   * True intermediate values: the reference step values plus the values of equivalent solution orders the
   * template declares (e.g. summing hours before multiplying by the rate). Sorted, unique.
   */
  acceptedValues: number[];
}

/** A question/answer pair in GSM8K form, as {@link loadGsm8k} returns (finalAnswer: canonical string). */
export interface MathExample {
  /** The word problem. */
  question: string;
  /** The full solution text ending in `#### n`. */
  answer: string;
  /** Canonical final answer as `extractAnswer` produces it, e.g. `"72"`. */
  finalAnswer: string;
}

/** Names of the built-in problem templates. */
export const ARITHMETIC_TEMPLATES: readonly string[] = TEMPLATES.map((t) => t.name);

/** Options of {@link generateProblem}. */
export interface GenerateProblemOptions {
  /** Restrict to these templates (default: all of {@link ARITHMETIC_TEMPLATES}). */
  templates?: readonly string[];
  /** Minimum number of solution steps, final line excluded (default 2). */
  minSteps?: number;
  /** Maximum number of solution steps, final line excluded (default 5). */
  maxSteps?: number;
}

/** Options of {@link generateProblems}. */
export interface GenerateProblemsOptions extends GenerateProblemOptions {
  /** Seed of the generator stream (default 0). */
  seed?: number | string;
  /** Which split to produce (default "train"). */
  split?: "train" | "test";
  /** Fraction of the problem space that belongs to the test split (default 0.1). */
  testFraction?: number;
}

/** Thrown by a template when its random draw violates a constraint; the generator then redraws. */
export class Redraw extends Error {}

/** Result of `x op y`: exact integer arithmetic; `/` must divide exactly. Returns NaN for an inexact division. */
export function applyOp(op: ArithOp, x: number, y: number): number {
  switch (op) {
    case "+":
      return x + y;
    case "-":
      return x - y;
    case "*":
      return x * y;
    case "/":
      return y !== 0 && x % y === 0 ? x / y : NaN;
  }
}

/**
 * Renders a step line: `{x}`, `{y}` become the operands and `{eq}` the GSM8K equation
 * `x op y=<<x op y=v>>v` (no spaces, e.g. `3*4=<<3*4=12>>12`).
 */
export function renderStep(template: string, op: ArithOp, x: number, y: number, value: number): string {
  const eq = `${x}${op}${y}=<<${x}${op}${y}=${value}>>${value}`;
  return template.replaceAll("{eq}", eq).replaceAll("{x}", String(x)).replaceAll("{y}", String(y));
}

/** The solution text of step lines and a final answer: lines joined by "\n", then `#### <final>`. */
export function renderSolution(lines: readonly string[], finalAnswer: number | string): string {
  return [...lines, `#### ${finalAnswer}`].join("\n");
}

/** An operand while building a problem: its value and where it comes from. */
export interface Operand {
  value: number;
  input: StepInput;
}

/** Collects the quantities and steps of one problem while a template draws it. */
export class ProblemBuilder {
  readonly steps: ArithmeticStep[] = [];
  readonly quantities = new Set<number>();
  readonly alternatives = new Set<number>();

  /** A quantity stated in the question (with digits). */
  given(value: number): Operand {
    if (!Number.isInteger(value) || value < 0) throw new Error(`Invalid given quantity ${value}`);
    this.quantities.add(value);
    return { value, input: { kind: "given", value } };
  }

  /** A quantity stated in words ("dozen" = 12, "twice" = 2); also a quantity of the problem. */
  constant(value: number): Operand {
    return this.given(value);
  }

  /** Redraw unless `cond` holds. */
  require(cond: boolean): void {
    if (!cond) throw new Redraw();
  }

  /** Appends the step `a op b`; redraws unless the result is a non-negative integer below 1000. */
  step(op: ArithOp, a: Operand, b: Operand, template: string): Operand {
    const value = applyOp(op, a.value, b.value);
    this.require(Number.isInteger(value) && value >= 0 && value < 1000);
    const index = this.steps.length;
    this.steps.push({
      text: renderStep(template, op, a.value, b.value, value),
      expr: `${a.value}${op}${b.value}`,
      op,
      operands: [a.value, b.value],
      inputs: [a.input, b.input],
      value,
      template,
    });
    return { value, input: { kind: "step", index } };
  }

  /** Declares values of an equivalent solution order as true intermediate values. */
  alt(...values: number[]): void {
    for (const v of values) this.alternatives.add(v);
  }
}

/** Split of a question: `"test"` iff `fnv1a32("split:" + question) / 2³² < testFraction`. */
export function problemSplit(question: string, testFraction = 0.1): "train" | "test" {
  return fnv1a32(`split:${question}`) / 4294967296 < testFraction ? "test" : "train";
}

/**
 * Draws one problem from `rng`: a uniformly chosen template (among `opts.templates`) with uniformly drawn
 * parameters, redrawn until all constraints and the step-count range hold.
 */
export function generateProblem(rng: Rng, opts: GenerateProblemOptions = {}): ArithmeticProblem {
  const { minSteps = 2, maxSteps = 5 } = opts;
  const names = opts.templates ?? ARITHMETIC_TEMPLATES;
  const pool = TEMPLATES.filter((t) => names.includes(t.name));
  for (const n of names) {
    if (!ARITHMETIC_TEMPLATES.includes(n)) {
      throw new Error(
        `Cannot generate a problem: unknown template "${n}", expected one of ${
          ARITHMETIC_TEMPLATES.join(", ")
        }`,
      );
    }
  }
  if (pool.length === 0) throw new Error("Cannot generate a problem: no templates selected");
  for (let attempt = 0; attempt < 10_000; attempt++) {
    const template = rng.pick(pool);
    const b = new ProblemBuilder();
    let question: string;
    try {
      question = template.build(b, rng);
    } catch (e) {
      if (e instanceof Redraw) continue;
      throw e;
    }
    const n = b.steps.length;
    if (n < minSteps || n > maxSteps) continue;
    const finalAnswer = b.steps[n - 1].value;
    const accepted = new Set([...b.steps.map((s) => s.value), ...b.alternatives]);
    return {
      id: `${template.name}-${fnv1a32(question).toString(16).padStart(8, "0")}`,
      template: template.name,
      question,
      answer: renderSolution(b.steps.map((s) => s.text), finalAnswer),
      finalAnswer,
      steps: b.steps,
      quantities: [...b.quantities].sort((x, y) => x - y),
      acceptedValues: [...accepted].sort((x, y) => x - y),
    };
  }
  throw new Error(
    `Cannot generate a problem with ${minSteps}–${maxSteps} steps from templates ${names.join(", ")}`,
  );
}

/**
 * `count` distinct problems of one split, deterministic in `(seed, split, testFraction, templates, steps)`:
 * draws from `new Rng("arithmetic:" + seed)` and keeps the problems whose {@link problemSplit} is `split`,
 * skipping repeated questions.
 */
export function generateProblems(count: number, opts: GenerateProblemsOptions = {}): ArithmeticProblem[] {
  const { seed = 0, split = "train", testFraction = 0.1 } = opts;
  if (!Number.isInteger(count) || count < 0) {
    throw new Error(`Cannot generate problems: count must be a non-negative integer, got ${count}`);
  }
  if (!(testFraction > 0 && testFraction < 1)) {
    throw new Error(`Cannot generate problems: testFraction must be in (0, 1), got ${testFraction}`);
  }
  const rng = new Rng(`arithmetic:${seed}`);
  const seen = new Set<string>();
  const out: ArithmeticProblem[] = [];
  for (let misses = 0; out.length < count;) {
    const p = generateProblem(rng, opts);
    if (problemSplit(p.question, testFraction) !== split || seen.has(p.question)) {
      if (++misses > 1000 * (count + 10)) {
        throw new Error(`Cannot generate ${count} ${split} problems: only ${out.length} distinct ones found`);
      }
      continue;
    }
    seen.add(p.question);
    out.push(p);
  }
  return out;
}

/** The problem as a {@link MathExample} (GSM8K form). */
export function toMathExample(p: ArithmeticProblem): MathExample {
  return { question: p.question, answer: p.answer, finalAnswer: String(p.finalAnswer) };
}
