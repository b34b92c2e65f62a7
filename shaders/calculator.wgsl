// GSM8K calculator for batched decoding on the GPU (Cobbe et al. 2021, §"Calculator annotations"): when a
// sequence has written `<<expr=`, the calculator evaluates expr and forces the next tokens to be its value and
// `>>`, so arithmetic inside annotations is exact while the model still chooses every operand and operator.
// Wrapper: core/model/calculator.ts; plain-TS reference (the same state machine): calculatorStep there.
//
// Per-row state (S i32 words, see the constants below) is updated from the bytes of each new token:
// - outside an annotation, two consecutive `<` bytes (within or across tokens) open one;
// - inside, the expression is non-negative integers (≤ 9 digits) joined by + − * / with the usual precedence
//   (* and / bind tighter, left to right); spaces are skipped; `/` must divide exactly;
// - `=` ending a valid expression as the *last byte of its token* queues the value's digit tokens (a minus
//   token first when negative) and the closing tokens; any other byte, a bad number, an inexact division or a
//   value beyond ±2·10^9 closes the annotation without forcing anything (the model continues on its own).
// `force` (before sampling) raises the queued token's logit to 1e30, so every sampler setting picks it (its
// sampled log-prob is 0); `update` (after sampling) pops it, marks forced[row, step] = 1, and parses.
//
// table layout (i32): [0, 10) digit token ids 0–9, 10 minus id, 11 number of closing ids, [12, 16) closing
// ids, [16, 16 + V] byte offsets of each token in table (token t has bytes table[off[t] .. off[t+1])), then the
// bytes.

override WG: u32 = 64u;

const S: u32 = 32u; // state words per row
const PHASE: u32 = 0u; // 0 outside an annotation, 1 inside
const PREV_LT: u32 = 1u; // last byte seen outside was '<'
const SUM: u32 = 2u; // sum of the finished terms
const TERM: u32 = 3u; // value of the current term so far
const TERM_OP: u32 = 4u; // 0: the current number starts the term, 1: multiplies it, 2: divides it
const SIGN: u32 = 5u; // +1 / −1: sign the current term is added with
const NUM: u32 = 6u; // current number
const NDIG: u32 = 7u; // its digits
const QLEN: u32 = 8u; // queued forced tokens
const QPOS: u32 = 9u; // next queued token
const QUEUE: u32 = 10u; // queued token ids (QMAX)
const QMAX: u32 = 16u;
const MINUS_ID: u32 = 10u; // table word: token id of '-'
const N_CLOSE: u32 = 11u; // table word: number of closing ids
const CLOSE_IDS: u32 = 12u; // table words: the closing ids
const OFFSETS: u32 = 16u; // first offset word of the table
const LIMIT: f32 = 2e9;

struct Params {
  rows: u32, // rows of this dispatch
  row0: u32, // first row (force: of the logits shard)
  vocab: u32, // V
  max_new: u32, // columns of tokens / forced
  step: u32, // column just sampled (update)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<i32>;
@group(0) @binding(2) var<storage, read_write> state: array<i32>; // (B, S)
@group(0) @binding(3) var<storage, read_write> tokens: array<i32>; // (B, max_new)
@group(0) @binding(4) var<storage, read_write> done: array<i32>; // (B)
@group(0) @binding(5) var<storage, read_write> forced: array<i32>; // (B, max_new)
@group(0) @binding(6) var<storage, read_write> logits: array<f32>; // (rows, V) view of this shard

var<private> s0: u32; // first state word of the row

fn abort_expr() {
  state[s0 + PHASE] = 0;
  state[s0 + PREV_LT] = 0;
}

// Folds the current number into the current term; false when the annotation must close.
fn fold_number() -> bool {
  if (state[s0 + NDIG] == 0) {
    return false;
  }
  let num = state[s0 + NUM];
  let term = state[s0 + TERM];
  let op = state[s0 + TERM_OP];
  if (op == 0) {
    state[s0 + TERM] = num;
  } else if (op == 1) {
    if (abs(f32(term) * f32(num)) > LIMIT) {
      return false;
    }
    state[s0 + TERM] = term * num;
  } else {
    if (num == 0 || term % num != 0) {
      return false;
    }
    state[s0 + TERM] = term / num;
  }
  state[s0 + NUM] = 0;
  state[s0 + NDIG] = 0;
  return true;
}

// Adds the finished term to the sum; false on overflow.
fn fold_term() -> bool {
  let v = f32(state[s0 + SUM]) + f32(state[s0 + SIGN]) * f32(state[s0 + TERM]);
  if (abs(v) > LIMIT) {
    return false;
  }
  state[s0 + SUM] = state[s0 + SUM] + state[s0 + SIGN] * state[s0 + TERM];
  state[s0 + TERM_OP] = 0;
  return true;
}

fn push(id: i32) {
  let n = u32(state[s0 + QLEN]);
  state[s0 + QUEUE + n] = id;
  state[s0 + QLEN] = i32(n + 1u);
}

// Queues the tokens of `value` followed by the closing tokens.
fn queue_value(value: i32) {
  state[s0 + QLEN] = 0;
  state[s0 + QPOS] = 0;
  var v = value;
  if (v < 0) {
    push(table[MINUS_ID]);
    v = -v;
  }
  var digits: array<i32, 10>;
  var n = 0u;
  loop {
    digits[n] = v % 10;
    n += 1u;
    v = v / 10;
    if (v == 0) {
      break;
    }
  }
  for (var i = n; i > 0u; i -= 1u) {
    push(table[digits[i - 1u]]);
  }
  for (var j = 0u; j < u32(table[N_CLOSE]); j += 1u) {
    push(table[CLOSE_IDS + j]);
  }
}

// Raises the queued token's logit of every row that has one (one invocation per row of the shard).
@compute @workgroup_size(WG)
fn force(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = gid.x + gid.y * nwg.x * WG;
  if (r >= p.rows) {
    return;
  }
  let b = p.row0 + r;
  s0 = b * S;
  if (done[b] != 0 || state[s0 + QPOS] >= state[s0 + QLEN]) {
    return;
  }
  let t = state[s0 + QUEUE + u32(state[s0 + QPOS])];
  logits[r * p.vocab + u32(t)] = 1e30;
}

// Pops a forced token and parses the bytes of the token at column `step` (one invocation per row).
@compute @workgroup_size(WG)
fn update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let b = gid.x + gid.y * nwg.x * WG;
  if (b >= p.rows) {
    return;
  }
  s0 = b * S;
  let at = b * p.max_new + p.step;
  if (state[s0 + QPOS] < state[s0 + QLEN]) {
    if (done[b] != 0) {
      return;
    }
    forced[at] = 1;
    state[s0 + QPOS] += 1;
    if (state[s0 + QPOS] >= state[s0 + QLEN]) {
      state[s0 + QLEN] = 0;
      state[s0 + QPOS] = 0;
    }
  }
  let t = tokens[at];
  if (t < 0 || u32(t) >= p.vocab) {
    return;
  }
  let o0 = table[OFFSETS + u32(t)];
  let o1 = table[OFFSETS + u32(t) + 1u];
  var pending = false;
  for (var i = o0; i < o1; i += 1) {
    let c = table[i];
    if (pending) { // bytes after '=' in the same token: the model wrote the value itself
      pending = false;
      abort_expr();
    }
    if (state[s0 + PHASE] == 0) {
      if (c == 60) { // '<'
        if (state[s0 + PREV_LT] != 0) {
          state[s0 + PHASE] = 1;
          state[s0 + PREV_LT] = 0;
          state[s0 + SUM] = 0;
          state[s0 + TERM] = 0;
          state[s0 + TERM_OP] = 0;
          state[s0 + SIGN] = 1;
          state[s0 + NUM] = 0;
          state[s0 + NDIG] = 0;
        } else {
          state[s0 + PREV_LT] = 1;
        }
      } else {
        state[s0 + PREV_LT] = 0;
      }
      continue;
    }
    if (c >= 48 && c <= 57) {
      if (state[s0 + NDIG] >= 9) {
        abort_expr();
      } else {
        state[s0 + NUM] = state[s0 + NUM] * 10 + (c - 48);
        state[s0 + NDIG] += 1;
      }
    } else if (c == 32) { // ' '
    } else if (c == 42 || c == 47) { // '*' '/'
      if (fold_number()) {
        state[s0 + TERM_OP] = select(2, 1, c == 42);
      } else {
        abort_expr();
      }
    } else if (c == 43 || c == 45 || c == 61) { // '+' '-' '='
      if (fold_number() && fold_term()) {
        state[s0 + SIGN] = select(1, -1, c == 45);
        pending = c == 61;
      } else {
        abort_expr();
      }
    } else {
      abort_expr();
    }
  }
  if (pending) {
    queue_value(state[s0 + SUM]);
    abort_expr();
  }
}
