/**
 * Word-problem templates of the built-in arithmetic task (see arithmetic.ts). Each template draws its
 * parameters from the generator, records the reference steps on a {@link ProblemBuilder} (step lines use the
 * placeholders `{x}`, `{y}`, `{eq}`) and returns the question. Constraint violations redraw.
 *
 * | template   | steps | operations                        |
 * |------------|-------|-----------------------------------|
 * | shopping   | 2–3   | a·b − c (+ d)                     |
 * | sharing    | 3     | (a·b − c) / k                     |
 * | rates      | 3, 5  | r·h + r·g (+ r·f)                 |
 * | ages       | 2–3   | a·k − d (+ y)                     |
 * | savings    | 2–5   | a·w (+ b·v) (+ g) − c             |
 * | shop_total | 3–5   | q1·p1 + q2·p2 (+ q3·p3; bill − ·) |
 * | baking     | 3     | (d·12 − s) / b                    |
 * | reading    | 3–4   | a·2 − c, sums                     |
 * | teams      | 2–3   | (k·a (− e)) / t                   |
 * | travel     | 3     | s1·h1 ± s2·h2                     |
 * | garden     | 2–3   | r·c − d (· f)                     |
 *
 * @module
 */

import type { Operand, ProblemBuilder } from "./arithmetic.ts";
import type { Rng } from "./rng.ts";

/** A problem template: draws parameters, records steps, returns the question. */
export interface Template {
  name: string;
  build(b: ProblemBuilder, r: Rng): string;
}

interface Person {
  name: string;
  he: string;
  him: string;
  his: string;
}

const PEOPLE: readonly Person[] = [
  ...["Tom", "Sam", "Leo", "Ben", "Max", "Noah", "Jack", "Omar", "Ravi", "Luis"].map((name) => ({
    name,
    he: "he",
    him: "him",
    his: "his",
  })),
  ...["Mia", "Ana", "Ella", "Zoe", "Lily", "Emma", "Ava", "Nina", "Sara", "Yuki"].map((name) => ({
    name,
    he: "she",
    him: "her",
    his: "her",
  })),
];

const cap = (s: string) => s[0].toUpperCase() + s.slice(1);

/** `n` distinct people. */
function people(r: Rng, n: number): Person[] {
  return r.shuffle(PEOPLE).slice(0, n);
}

/** A uniformly drawn quotient e with rest = total − k·e in [1, maxRest]; redraws when there is none. */
function drawQuotient(b: ProblemBuilder, r: Rng, total: number, k: number, maxRest: number): number {
  const lo = Math.max(1, Math.ceil((total - maxRest) / k));
  const hi = Math.floor((total - 1) / k);
  b.require(lo <= hi);
  return r.int(lo, hi);
}

const shopping: Template = {
  name: "shopping",
  build(b, r) {
    const [p] = people(r, 1);
    const item = r.pick(["pens", "pencils", "stickers", "marbles", "cards", "balloons", "buttons"]);
    const rel = r.pick(["sister", "brother", "friend", "cousin"]);
    const packs = b.given(r.int(2, 9));
    const per = b.given(r.int(2, 12));
    const total = b.step(
      "*",
      packs,
      per,
      `${p.name} buys {x} packs of {y} ${item}, so ${p.he} has {eq} ${item}.`,
    );
    const give = b.given(r.int(1, Math.min(30, total.value - 1)));
    const left = b.step(
      "-",
      total,
      give,
      `After giving {y} ${item} to ${p.his} ${rel}, ${p.he} has {eq} ${item}.`,
    );
    let q = `${p.name} buys ${packs.value} packs of ${item}. Each pack has ${per.value} ${item}. ` +
      `${cap(p.he)} gives ${give.value} ${item} to ${p.his} ${rel}.`;
    if (r.chance(0.5)) {
      const more = b.given(r.int(1, 20));
      b.step("+", left, more, `After buying {y} more ${item}, ${p.he} has {eq} ${item}.`);
      b.alt(total.value + more.value);
      q += ` Then ${p.he} buys ${more.value} more ${item}.`;
    }
    return `${q} How many ${item} does ${p.name} have now?`;
  },
};

const sharing: Template = {
  name: "sharing",
  build(b, r) {
    const [p] = people(r, 1);
    const food = r.pick(["cookies", "candies", "grapes", "strawberries", "crackers", "cherries"]);
    const bags = b.given(r.int(2, 8));
    const per = b.given(r.int(3, 12));
    const total = b.step(
      "*",
      bags,
      per,
      `${p.name} has {x} bags of {y} ${food}, so ${p.he} has {eq} ${food}.`,
    );
    const k = r.int(2, 6);
    const each = drawQuotient(b, r, total.value, k, 40);
    const eaten = b.given(total.value - k * each);
    const rest = b.step("-", total, eaten, `After eating {y} ${food}, ${p.he} has {eq} ${food} left.`);
    const friends = b.given(k);
    b.step("/", rest, friends, `Each of the {y} friends gets {eq} ${food}.`);
    return `${p.name} has ${bags.value} bags of ${food} with ${per.value} ${food} in each bag. ` +
      `${cap(p.he)} eats ${eaten.value} ${food} and shares the rest equally among ${k} friends. ` +
      `How many ${food} does each friend get?`;
  },
};

const MACHINES = [
  ["machine", "makes", "make", "toys"],
  ["printer", "prints", "print", "pages"],
  ["factory", "builds", "build", "chairs"],
  ["robot", "packs", "pack", "boxes"],
  ["pump", "fills", "fill", "buckets"],
] as const;

const rates: Template = {
  name: "rates",
  build(b, r) {
    const [m, verb, base, things] = r.pick(MACHINES);
    const rate = b.given(r.int(2, 25));
    const three = r.chance(0.4);
    const hours = Array.from({ length: three ? 3 : 2 }, () => b.given(r.int(1, 9)));
    const mon = b.step("*", rate, hours[0], `On Monday it ${verb} {eq} ${things}.`);
    const tue = b.step("*", rate, hours[1], `On Tuesday it ${verb} {eq} ${things}.`);
    const [h0, h1] = [hours[0].value, hours[1].value];
    b.alt(h0 + h1);
    if (!three) {
      b.step("+", mon, tue, `In total it ${verb} {eq} ${things}.`);
      return `A ${m} ${verb} ${rate.value} ${things} every hour. It works ${h0} hours on Monday and ${h1} ` +
        `hours on Tuesday. How many ${things} does it ${base} in total?`;
    }
    const two = b.step("+", mon, tue, `On Monday and Tuesday it ${verb} {eq} ${things}.`);
    const wed = b.step("*", rate, hours[2], `On Wednesday it ${verb} {eq} ${things}.`);
    b.step("+", two, wed, `In total it ${verb} {eq} ${things}.`);
    const h2 = hours[2].value;
    b.alt(h0 + h2, h1 + h2, h0 + h1 + h2, mon.value + wed.value, tue.value + wed.value);
    return `A ${m} ${verb} ${rate.value} ${things} every hour. It works ${h0} hours on Monday, ${h1} hours ` +
      `on Tuesday and ${h2} hours on Wednesday. How many ${things} does it ${base} in total?`;
  },
};

const ages: Template = {
  name: "ages",
  build(b, r) {
    const [x, y, z] = people(r, 3);
    const age = b.given(r.int(2, 15));
    const k = b.given(r.int(2, 4));
    const older = b.step("*", age, k, `${y.name} is {eq} years old.`);
    const d = b.given(r.int(1, Math.min(40, older.value - 1)));
    const zAge = b.step("-", older, d, `${z.name} is {eq} years old.`);
    const q = `${x.name} is ${age.value} years old. ${y.name} is ${k.value} times as old as ${x.name}. ` +
      `${z.name} is ${d.value} years younger than ${y.name}.`;
    if (r.chance(0.5)) return `${q} How old is ${z.name}?`;
    const later = b.given(r.int(1, 20));
    b.step("+", zAge, later, `In {y} years, ${z.name} will be {eq} years old.`);
    b.alt(older.value + later.value);
    return `${q} How old will ${z.name} be in ${later.value} years?`;
  },
};

const savings: Template = {
  name: "savings",
  build(b, r) {
    const [p] = people(r, 1);
    const thing = r.pick(["bike", "game", "book", "kite", "watch", "backpack"]);
    const a = b.given(r.int(2, 20));
    const w = b.given(r.int(2, 10));
    const twoPhases = r.chance(0.5);
    let q = `${p.name} saves $${a.value} every week for ${w.value} weeks.`;
    let saved: Operand;
    if (twoPhases) {
      const first = b.step("*", a, w, `In the first {y} weeks, ${p.name} saves {eq} dollars.`);
      const a2 = b.given(r.int(2, 20));
      const w2 = b.given(r.int(2, 10));
      const second = b.step("*", a2, w2, `In the next {y} weeks, ${p.he} saves {eq} dollars.`);
      saved = b.step("+", first, second, `${cap(p.he)} saves {eq} dollars in all.`);
      q += ` After that, ${p.he} saves $${a2.value} every week for ${w2.value} more weeks.`;
    } else {
      saved = b.step("*", a, w, `${p.name} saves {eq} dollars in {y} weeks.`);
    }
    if (r.chance(0.5)) {
      const g = b.given(r.int(5, 50));
      saved = b.step("+", saved, g, `With the gift from ${p.his} grandma, ${p.he} has {eq} dollars.`);
      q += ` ${cap(p.his)} grandma gives ${p.him} $${g.value}.`;
      const spend = b.given(r.int(1, Math.min(60, saved.value - g.value - 1)));
      b.alt(saved.value - g.value - spend.value);
      b.step("-", saved, spend, `After buying the ${thing}, ${p.he} has {eq} dollars left.`);
      return `${q} Then ${p.he} spends $${spend.value} on a ${thing}. How many dollars does ${p.name} have left?`;
    }
    const spend = b.given(r.int(1, Math.min(60, saved.value - 1)));
    b.step("-", saved, spend, `After buying the ${thing}, ${p.he} has {eq} dollars left.`);
    return `${q} Then ${p.he} spends $${spend.value} on a ${thing}. How many dollars does ${p.name} have left?`;
  },
};

const shopTotal: Template = {
  name: "shop_total",
  build(b, r) {
    const [p] = people(r, 1);
    const [i1, i2, i3] = r.shuffle(["notebooks", "apples", "toy cars", "mugs", "socks", "candles", "plants"]);
    const q1 = b.given(r.int(2, 9)), p1 = b.given(r.int(1, 25));
    const q2 = b.given(r.int(2, 9)), p2 = b.given(r.int(1, 25));
    const kind = r.pick(["total", "change", "three"] as const);
    const c1 = b.step("*", q1, p1, `The ${i1} cost {eq} dollars.`);
    const c2 = b.step("*", q2, p2, `The ${i2} cost {eq} dollars.`);
    let q =
      `${p.name} buys ${q1.value} ${i1} for $${p1.value} each and ${q2.value} ${i2} for $${p2.value} each.`;
    if (kind === "three") {
      const q3 = b.given(r.int(2, 9)), p3 = b.given(r.int(1, 25));
      const both = b.step("+", c1, c2, `The ${i1} and ${i2} cost {eq} dollars.`);
      const c3 = b.step("*", q3, p3, `The ${i3} cost {eq} dollars.`);
      b.step("+", both, c3, `In total ${p.he} spends {eq} dollars.`);
      b.alt(c1.value + c3.value, c2.value + c3.value);
      q = `${p.name} buys ${q1.value} ${i1} for $${p1.value} each, ${q2.value} ${i2} for $${p2.value} each ` +
        `and ${q3.value} ${i3} for $${p3.value} each.`;
      return `${q} How many dollars does ${p.he} spend in total?`;
    }
    const total = b.step("+", c1, c2, `Together they cost {eq} dollars.`);
    if (kind === "total") return `${q} How many dollars does ${p.he} spend in total?`;
    const bills = [20, 50, 100, 200, 500].filter((x) => x > total.value);
    b.require(bills.length > 0);
    const bill = b.given(bills[0]);
    b.step("-", bill, total, `${p.name} gets {eq} dollars in change.`);
    b.alt(bill.value - c1.value, bill.value - c2.value);
    return `${q} ${cap(p.he)} pays with a $${bill.value} bill. How many dollars of change does ${p.he} get?`;
  },
};

const baking: Template = {
  name: "baking",
  build(b, r) {
    const [p] = people(r, 1);
    const goods = r.pick(["cookies", "muffins", "cupcakes", "bagels", "donuts", "rolls"]);
    const dozens = b.given(r.int(2, 8));
    const baked = b.step("*", dozens, b.constant(12), `${p.name} bakes {eq} ${goods}.`);
    const box = r.int(2, 12);
    const boxes = drawQuotient(b, r, baked.value, box, 60);
    const sold = b.given(baked.value - box * boxes);
    const rest = b.step("-", baked, sold, `After selling {y} ${goods}, ${p.he} has {eq} ${goods} left.`);
    b.step("/", rest, b.given(box), `${cap(p.he)} fills {eq} boxes.`);
    return `${p.name} bakes ${dozens.value} dozen ${goods}. ${cap(p.he)} sells ${sold.value} ${goods} and ` +
      `packs the rest into boxes of ${box}. How many boxes does ${p.he} fill?`;
  },
};

const reading: Template = {
  name: "reading",
  build(b, r) {
    const [p] = people(r, 1);
    const mon = b.given(r.int(3, 40));
    const tue = b.step("*", mon, b.constant(2), `On Tuesday ${p.he} reads {eq} pages.`);
    const fewer = b.given(r.int(1, Math.min(30, tue.value - 1)));
    const wed = b.step("-", tue, fewer, `On Wednesday ${p.he} reads {eq} pages.`);
    const q =
      `${p.name} reads ${mon.value} pages on Monday. On Tuesday ${p.he} reads twice as many pages as ` +
      `on Monday. On Wednesday ${p.he} reads ${fewer.value} fewer pages than on Tuesday.`;
    if (r.chance(0.5)) {
      b.step("+", tue, wed, `On Tuesday and Wednesday ${p.he} reads {eq} pages.`);
      return `${q} How many pages does ${p.he} read on Tuesday and Wednesday?`;
    }
    const two = b.step("+", mon, tue, `On Monday and Tuesday ${p.he} reads {eq} pages.`);
    b.step("+", two, wed, `In the three days ${p.he} reads {eq} pages.`);
    b.alt(tue.value + wed.value, mon.value + wed.value);
    return `${q} How many pages does ${p.he} read in the three days?`;
  },
};

const teams: Template = {
  name: "teams",
  build(b, r) {
    const k = b.given(r.int(2, 8));
    const a = b.given(r.int(10, 30));
    const students = b.step("*", k, a, `There are {eq} students in the school.`);
    const q = `A school has ${k.value} classes with ${a.value} students in each class.`;
    if (r.chance(0.5)) {
      const size = r.int(2, 10);
      const n = drawQuotient(b, r, students.value, size, 20);
      const absent = b.given(students.value - size * n);
      const present = b.step("-", students, absent, `Today {eq} students are present.`);
      b.step("/", present, b.given(size), `The students make {eq} teams.`);
      return `${q} ${absent.value} students are absent today. The teachers split the present students into ` +
        `teams of ${size}. How many teams are there?`;
    }
    const sizes = [2, 3, 4, 5, 6, 8, 10, 12].filter((s) => students.value % s === 0);
    b.require(sizes.length > 0);
    const size = b.given(r.pick(sizes));
    b.step("/", students, size, `The students make {eq} teams.`);
    return `${q} The teachers split the students into teams of ${size.value}. How many teams are there?`;
  },
};

const travel: Template = {
  name: "travel",
  build(b, r) {
    const veh = r.pick(["car", "bus", "train", "truck", "boat"]);
    const s1 = b.given(r.int(10, 50)), h1 = b.given(r.int(1, 9));
    const s2 = b.given(r.int(10, 50)), h2 = b.given(r.int(1, 9));
    const d1 = b.step("*", s1, h1, `In the first part it travels {eq} miles.`);
    const d2 = b.step("*", s2, h2, `In the second part it travels {eq} miles.`);
    const q =
      `A ${veh} travels at ${s1.value} miles per hour for ${h1.value} hours and then at ${s2.value} ` +
      `miles per hour for ${h2.value} hours.`;
    if (d1.value > d2.value && r.chance(0.5)) {
      b.step("-", d1, d2, `It travels {eq} more miles in the first part.`);
      return `${q} How many more miles does it travel in the first part than in the second part?`;
    }
    b.step("+", d1, d2, `In total it travels {eq} miles.`);
    return `${q} How many miles does it travel in total?`;
  },
};

const garden: Template = {
  name: "garden",
  build(b, r) {
    const [plants, fruit] = r.pick([
      ["apple trees", "apples"],
      ["tomato plants", "tomatoes"],
      ["orange trees", "oranges"],
      ["pepper plants", "peppers"],
    ]);
    const rows = b.given(r.int(2, 9)), per = b.given(r.int(3, 12));
    const n = b.step("*", rows, per, `The farmer plants {eq} ${plants}.`);
    const dead = b.given(r.int(1, Math.min(20, n.value - 1)));
    const grown = b.step("-", n, dead, `Of these, {eq} ${plants} grow.`);
    const q = `A farmer plants ${rows.value} rows of ${plants} with ${per.value} ${plants} in each row. ` +
      `${dead.value} of the ${plants} do not grow.`;
    if (r.chance(0.5)) return `${q} How many ${plants} grow?`;
    const f = b.given(r.int(2, 9));
    b.step("*", grown, f, `The farmer picks {eq} ${fruit}.`);
    return `${q} Each of the other ${plants} gives ${f.value} ${fruit}. How many ${fruit} does the farmer pick?`;
  },
};

/** All templates, in a fixed order (generation picks among them uniformly). */
export const TEMPLATES: readonly Template[] = [
  shopping,
  sharing,
  rates,
  ages,
  savings,
  shopTotal,
  baking,
  reading,
  teams,
  travel,
  garden,
];
