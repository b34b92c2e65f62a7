#!/usr/bin/env python3
"""Independent float64 PyTorch reference for Qwen2ForCausalLM; writes tests/fixtures/**.

Implements Hugging Face transformers' Qwen2 math (modeling_qwen2.py) in plain torch (no transformers, no
safetensors package), writes safetensors files by hand, and dumps forward / greedy / gradient / SGD fixtures
that the TypeScript + WebGPU side compares against. See tests/reference/README.md for conventions.

Run: python3 tests/reference/make_fixtures.py   (re-executes itself with /usr/bin/python3 if torch is missing)
"""

import json
import math
import os
import shutil
import struct
import sys

try:
    import numpy as np
    import torch
except ImportError:  # the pyenv shim python has no torch; the system python does
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != "/usr/bin/python3":
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

torch.set_default_dtype(torch.float64)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/
OUT_DIR = os.path.join(ROOT, "fixtures")
FORMAT_VERSION = 1
MAX_NEW_TOKENS = 8
SGD_LR = 0.1
PAD_TOKEN_ID = 0
MIN_GREEDY_MARGIN = 2e-3  # top1 − top2 logit gap required at every greedy step (robust to f32 kernels)
MIN_GREEDY_DISTINCT = 4
MAX_TOTAL_BYTES = 3 * 1024 * 1024

# Checkpoint variants. head_dim = hidden_size / num_attention_heads (Qwen2 has no separate head_dim field).
VARIANTS = [
    dict(name="tiny_tied_f32", dtype="F32", tie=True, hidden=40, heads=4, kv_heads=2, inter=59, vocab=83,
         theta=10000.0, eps=1e-6, T=9, lens=[6, 7, 9], seed=11, sgd=True, fd_check=True,
         about="smallest; tied lm_head; GQA 4/2; head_dim 10; FD-checked gradients"),
    dict(name="gqa3_untied_f32", dtype="F32", tie=False, hidden=48, heads=6, kv_heads=2, inter=71, vocab=101,
         theta=1e6, eps=1e-6, T=11, lens=[7, 9, 11], seed=23, sgd=True, fd_check=False,
         about="untied lm_head; GQA 6/2 (ratio 3); head_dim 8; rope_theta 1e6"),
    dict(name="mha_tied_bf16", dtype="BF16", tie=True, hidden=72, heads=6, kv_heads=6, inter=61, vocab=113,
         theta=1e6, eps=1e-6, T=13, lens=[8, 11, 13], seed=37, sgd=False, fd_check=False,
         about="BF16 weights; tied; MHA (kv = heads); head_dim 12"),
    dict(name="gqa2_untied_bf16", dtype="BF16", tie=False, hidden=40, heads=4, kv_heads=2, inter=67,
         vocab=127, theta=10000.0, eps=1e-5, T=10, lens=[5, 8, 10], seed=41, sgd=False, fd_check=False,
         about="BF16 weights; untied; GQA 4/2; rms_norm_eps 1e-5"),
    dict(name="wide_mqa_tied_f32", dtype="F32", tie=True, hidden=80, heads=5, kv_heads=1, inter=103,
         vocab=151, theta=1e6, eps=1e-6, T=40, lens=[29, 37, 40], seed=53, sgd=False, fd_check=False,
         about="hidden 80 (>= 64), T 40 for tiled kernels; MQA 5/1; head_dim 16"),
]

# ----------------------------------------------------------------------------------------------------------
# safetensors (hand-written writer and reader)

DTYPE_INFO = {  # safetensors dtype -> (torch dtype, bytes per element)
    "F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
    "I32": (torch.int32, 4), "I64": (torch.int64, 8),
}


def tensor_bytes(t, dtype):
    """Little-endian raw bytes of `t` converted to safetensors `dtype` (round-to-nearest-even casts)."""
    t = t.detach().to(DTYPE_INFO[dtype][0]).contiguous()
    if dtype == "BF16":
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    np_dt = {"F32": "<f4", "F16": "<f2", "I32": "<i4", "I64": "<i8"}[dtype]
    return t.numpy().astype(np_dt).tobytes()


def write_safetensors(path, tensors):
    """tensors: {name: (dtype, tensor)}. Layout: u64 LE header length N, N-byte JSON header padded with spaces
    to a multiple of 8, then tensor bytes in sorted-name order."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        dtype, t = tensors[name]
        b = tensor_bytes(t, dtype)
        assert len(b) == t.numel() * DTYPE_INFO[dtype][1]
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Reads a safetensors file back into {name: (dtype, float64/int64 tensor)} (used for round-trip asserts)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    body, out = data[8 + n:], {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = body[a:b]
        dt = info["dtype"]
        if dt == "BF16":
            arr = torch.from_numpy(np.frombuffer(raw, dtype="<i2").copy()).view(torch.bfloat16)
        else:
            np_dt = {"F32": "<f4", "F16": "<f2", "I32": "<i4", "I64": "<i8"}[dt]
            arr = torch.from_numpy(np.frombuffer(raw, dtype=np_dt).copy())
        arr = arr.reshape(info["shape"])
        out[name] = (dt, arr.to(torch.float64) if arr.is_floating_point() else arr.to(torch.int64))
    return out


# ----------------------------------------------------------------------------------------------------------
# Qwen2 model (HF semantics, float64)


def param_shapes(cfg):
    """HF Qwen2ForCausalLM parameter names -> shapes (Linear weights are (out_features, in_features))."""
    C, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    D = C // cfg["num_attention_heads"]
    KVD = cfg["num_key_value_heads"] * D
    s = {"model.embed_tokens.weight": [V, C], "model.norm.weight": [C]}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        s.update({
            p + "input_layernorm.weight": [C], p + "post_attention_layernorm.weight": [C],
            p + "self_attn.q_proj.weight": [C, C], p + "self_attn.q_proj.bias": [C],
            p + "self_attn.k_proj.weight": [KVD, C], p + "self_attn.k_proj.bias": [KVD],
            p + "self_attn.v_proj.weight": [KVD, C], p + "self_attn.v_proj.bias": [KVD],
            p + "self_attn.o_proj.weight": [C, C],
            p + "mlp.gate_proj.weight": [I, C], p + "mlp.up_proj.weight": [I, C],
            p + "mlp.down_proj.weight": [C, I],
        })
    if not cfg["tie_word_embeddings"]:
        s["lm_head.weight"] = [V, C]
    return s


def init_params(cfg, rng):
    """Random weights with O(1) activations/logits: Linear std 1/sqrt(in), biases std 0.1, norms 1 ± 0.1."""
    C = cfg["hidden_size"]
    out = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith("norm.weight"):
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            w = 0.1 * rng.standard_normal(shape)
        elif name == "model.embed_tokens.weight":
            w = (1.2 / math.sqrt(C) if cfg["tie_word_embeddings"] else 0.2) * rng.standard_normal(shape)
        elif name == "lm_head.weight":
            w = 1.2 / math.sqrt(C) * rng.standard_normal(shape)
        else:
            w = 1.0 / math.sqrt(shape[1]) * rng.standard_normal(shape)
        out[name] = torch.tensor(w, dtype=torch.float32)
    return out


def rms_norm(x, w, eps):
    """y = x * rsqrt(mean(x², -1) + eps) * w."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    """HF convention: rotate_half([x1, x2]) = [-x2, x1] with x1, x2 the two halves of the last dim."""
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_cos_sin(positions, D, theta):
    """positions (B,T) -> cos, sin (B,1,T,D): inv_freq = 1/theta^(arange(0,D,2)/D), emb = cat(freqs, freqs)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    freqs = positions.to(torch.float64)[..., None] * inv_freq  # (B,T,D/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos()[:, None], emb.sin()[:, None]


def repeat_kv(x, n_rep):
    """HF repeat_kv: (B,KV,T,D) -> (B,KV*n_rep,T,D); query head h reads kv head h // n_rep."""
    B, KV, T, D = x.shape
    return x[:, :, None].expand(B, KV, n_rep, T, D).reshape(B, KV * n_rep, T, D)


def positions_from_mask(mask):
    """position of a real token = number of real tokens before it in its row (cumsum(mask) − 1); pads get 0."""
    return ((mask.cumsum(-1) - 1) * mask).clamp(min=0)


def attention_allowed(mask):
    """(B,T,T) bool: query i may attend key j iff j <= i and key j is real. Pad query rows attend only to
    themselves (keeps them finite; they never feed real rows and are ignored in all outputs)."""
    T = mask.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    allowed = causal[None] & mask.bool()[:, None, :]
    return allowed | torch.eye(T, dtype=torch.bool)[None]


def attention(x, W, p, cfg, cos, sin, allowed):
    """x: (B,T,C) normed input -> (B,T,C) o_proj output. q/k/v with bias, RoPE, GQA, softmax(qkᵀ/sqrt(D))."""
    B, T, C = x.shape
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = C // H
    q = (x @ W[p + "q_proj.weight"].T + W[p + "q_proj.bias"]).view(B, T, H, D).transpose(1, 2)
    k = (x @ W[p + "k_proj.weight"].T + W[p + "k_proj.bias"]).view(B, T, KV, D).transpose(1, 2)
    v = (x @ W[p + "v_proj.weight"].T + W[p + "v_proj.bias"]).view(B, T, KV, D).transpose(1, 2)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    k, v = repeat_kv(k, H // KV), repeat_kv(v, H // KV)
    scores = (q @ k.transpose(-1, -2)) * (D ** -0.5)  # (B,H,T,T)
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v  # (B,H,T,D)
    return y.transpose(1, 2).reshape(B, T, C) @ W[p + "o_proj.weight"].T


def forward(W, cfg, ids, mask, positions=None, attn_fn=None):
    """Qwen2ForCausalLM forward. ids, mask: (B,T) int64. Returns logits (B,T,V), last_hidden (B,T,C) after the
    final norm, and the residual stream after each decoder layer. Pad rows are NOT zeroed here."""
    attn_fn = attn_fn or attention
    eps = cfg["rms_norm_eps"]
    C, H = cfg["hidden_size"], cfg["num_attention_heads"]
    pos = positions_from_mask(mask) if positions is None else positions
    cos, sin = rope_cos_sin(pos, C // H, cfg["rope_theta"])
    allowed = attention_allowed(mask)
    h = W["model.embed_tokens.weight"][ids]  # (B,T,C)
    layers = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = h + attn_fn(rms_norm(h, W[p + "input_layernorm.weight"], eps), W, p + "self_attn.", cfg, cos, sin,
                        allowed)
        x = rms_norm(h, W[p + "post_attention_layernorm.weight"], eps)
        act = torch.nn.functional.silu(x @ W[p + "mlp.gate_proj.weight"].T) * (x @ W[p + "mlp.up_proj.weight"].T)
        h = h + act @ W[p + "mlp.down_proj.weight"].T
        layers.append(h)
    last = rms_norm(h, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return {"logits": last @ head.T, "last_hidden": last, "layers": layers}


def naive_attention(x, W, p, cfg, cos, sin, allowed):
    """Loop-per-(row, head, query) attention with explicit kv = h // (H/KV) indexing; cross-check only."""
    B, T, C = x.shape
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = C // H
    out = torch.zeros(B, T, C)
    for b in range(B):
        q = x[b] @ W[p + "q_proj.weight"].T + W[p + "q_proj.bias"]
        k = x[b] @ W[p + "k_proj.weight"].T + W[p + "k_proj.bias"]
        v = x[b] @ W[p + "v_proj.weight"].T + W[p + "v_proj.bias"]
        for h in range(H):
            g = h // (H // KV)
            qh = q[:, h * D:(h + 1) * D] * cos[b, 0] + rotate_half(q[:, h * D:(h + 1) * D]) * sin[b, 0]
            kh = k[:, g * D:(g + 1) * D] * cos[b, 0] + rotate_half(k[:, g * D:(g + 1) * D]) * sin[b, 0]
            for i in range(T):
                js = [j for j in range(T) if allowed[b, i, j]]
                s = torch.stack([qh[i] @ kh[j] for j in js]) / math.sqrt(D)
                w = torch.exp(s - s.max())
                w = w / w.sum()
                out[b, i, h * D:(h + 1) * D] = sum(w[n] * v[j, g * D:(g + 1) * D] for n, j in enumerate(js))
    return out.reshape(B, T, C) @ W[p + "o_proj.weight"].T


def completion_loss(logits, ids, completion):
    """Mean over all completion tokens in the batch of −log p(x_t | x_<t), predicted from logits[:, t−1]."""
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    tok = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (B,T−1)
    m = completion[:, 1:].to(torch.float64)
    return -(tok * m).sum() / m.sum()


# ----------------------------------------------------------------------------------------------------------
# fixtures


def make_config(v):
    return {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "hidden_size": v["hidden"], "initializer_range": 0.02,
        "intermediate_size": v["inter"], "max_position_embeddings": 128, "max_window_layers": 2,
        "model_type": "qwen2", "num_attention_heads": v["heads"], "num_hidden_layers": 2,
        "num_key_value_heads": v["kv_heads"], "rms_norm_eps": v["eps"], "rope_scaling": None,
        "rope_theta": v["theta"], "sliding_window": None, "tie_word_embeddings": v["tie"],
        "torch_dtype": {"F32": "float32", "BF16": "bfloat16"}[v["dtype"]], "transformers_version": "4.43.0",
        "use_cache": True, "use_sliding_window": False, "vocab_size": v["vocab"],
    }


def greedy(W, cfg, prompt):
    """8 greedy tokens by full re-forward (no cache), one sequence. Returns tokens and min top1−top2 gap."""
    ids, margin = list(prompt), float("inf")
    for _ in range(MAX_NEW_TOKENS):
        t = torch.tensor([ids])
        logits = forward(W, cfg, t, torch.ones_like(t))["logits"][0, -1]
        top = torch.topk(logits, 2).values
        margin = min(margin, float(top[0] - top[1]))
        ids.append(int(torch.argmax(logits)))
    return ids[len(prompt):], margin


def make_batch(v, W, cfg, rng):
    """Draws 3 prompts (row 0 right-padded, row 1 left-padded, row 2 full), each redrawn until its greedy run has
    no near-tie (top1 − top2 >= MIN_GREEDY_MARGIN), >= MIN_GREEDY_DISTINCT distinct tokens (random tied models
    otherwise tend to repeat one token, which would hide generation-loop bugs) and no special id (0, 1, 2)."""
    T, lens = v["T"], v["lens"]
    prompts, runs = [], []
    for n in lens:
        for _ in range(1000):
            p = rng.randint(3, cfg["vocab_size"], size=n).tolist()
            toks, margin = greedy(W, cfg, p)
            ok = margin >= MIN_GREEDY_MARGIN and len(set(toks)) >= MIN_GREEDY_DISTINCT
            if ok and min(toks) >= 3:  # ids 0..2 (pad, bos, eos) never appear, so EOS stopping cannot matter
                break
        else:
            raise RuntimeError(f"{v['name']}: no prompt of length {n} gives a clear, varied greedy run")
        prompts.append(p)
        runs.append((toks, margin))
    ids = torch.full((3, T), PAD_TOKEN_ID, dtype=torch.int64)
    mask = torch.zeros(3, T, dtype=torch.int64)
    ids[0, :lens[0]] = torch.tensor(prompts[0])
    mask[0, :lens[0]] = 1
    ids[1, T - lens[1]:] = torch.tensor(prompts[1])
    mask[1, T - lens[1]:] = 1
    ids[2] = torch.tensor(prompts[2])
    mask[2] = 1
    # completion tokens: targets t with t and t−1 both real. Row 0: last 4 real; row 1: 3 scattered; row 2:
    # a middle span of 4 plus the last token.
    comp = torch.zeros(3, T, dtype=torch.int64)
    comp[0, lens[0] - 4:lens[0]] = 1
    start1 = T - lens[1]
    for t in sorted(rng.choice(np.arange(start1 + 1, T), size=3, replace=False).tolist()):
        comp[1, t] = 1
    comp[2, T // 2 - 2:T // 2 + 2] = 1
    comp[2, T - 1] = 1
    return ids, mask, comp, prompts, runs


def self_checks(v, W, cfg, ids, mask, prompts):
    """Asserts: padding convention, causality, RoPE relativity, naive-attention agreement."""
    out = forward(W, cfg, ids, mask)
    real = mask.bool()
    # (1) each batch row equals the prompt run alone (no pads) at its real positions
    for b, p in enumerate(prompts):
        alone = forward(W, cfg, torch.tensor([p]), torch.ones(1, len(p), dtype=torch.int64))["logits"][0]
        diff = (out["logits"][b][real[b]] - alone).abs().max().item()
        assert diff < 1e-12, f"{v['name']}: row {b} differs from unpadded run by {diff}"
    # (2) explicit left- and right-padded copies of the same sequence agree at real positions
    p, T, n = prompts[0], v["T"], len(prompts[0])
    pair = torch.full((2, T), PAD_TOKEN_ID, dtype=torch.int64)
    pm = torch.zeros(2, T, dtype=torch.int64)
    pair[0, :n], pm[0, :n] = torch.tensor(p), 1
    pair[1, T - n:], pm[1, T - n:] = torch.tensor(p), 1
    lo = forward(W, cfg, pair, pm)["logits"]
    diff = (lo[0, :n] - lo[1, T - n:]).abs().max().item()
    assert diff < 1e-12, f"{v['name']}: left vs right padding differ by {diff}"
    # (3) causality: changing the last token of row 2 leaves all earlier positions unchanged
    ids2 = ids.clone()
    ids2[2, -1] = (ids2[2, -1] + 1) % cfg["vocab_size"]
    lo2 = forward(W, cfg, ids2, mask)["logits"]
    assert (lo2[2, :-1] - out["logits"][2, :-1]).abs().max().item() < 1e-12, "causal mask leaks the future"
    assert (lo2[2, -1] - out["logits"][2, -1]).abs().max().item() > 1e-6, "last token has no effect"
    # (4) RoPE is relative: shifting every position by 7 changes nothing (checks q/k rotation pairing)
    shifted = forward(W, cfg, ids, mask, positions=positions_from_mask(mask) + 7)["logits"]
    diff = (shifted - out["logits"])[real].abs().max().item()
    assert diff < 1e-10, f"{v['name']}: RoPE shift changed logits by {diff}"
    # (5) vectorised attention (HF repeat_kv) equals a naive per-head loop
    if v["T"] <= 16:
        naive = forward(W, cfg, ids, mask, attn_fn=naive_attention)["logits"]
        diff = (naive - out["logits"])[real].abs().max().item()
        assert diff < 1e-12, f"{v['name']}: naive attention differs by {diff}"
    return out


def fd_check(v, W, cfg, ids, mask, comp, grads, rng):
    """Central finite differences (float64, h=1e-5) vs autograd on 3 random entries of every parameter."""
    worst = 0.0
    for name in sorted(W):
        w = W[name]
        for _ in range(3):
            idx = tuple(int(rng.randint(0, s)) for s in w.shape)
            orig = w[idx].item()
            vals = []
            for s in (+1, -1):
                with torch.no_grad():
                    w[idx] = orig + s * 1e-5
                vals.append(completion_loss(forward(W, cfg, ids, mask)["logits"], ids, comp).item())
            with torch.no_grad():
                w[idx] = orig
            fd = (vals[0] - vals[1]) / 2e-5
            ag = grads[name][idx].item()
            err = abs(fd - ag) / (1e-6 + abs(ag))
            worst = max(worst, err)
            assert abs(fd - ag) <= 1e-8 + 1e-5 * abs(ag), f"{v['name']} {name}{idx}: fd {fd} vs autograd {ag}"
    return worst


def describe(name, dtype, shape, text):
    return {"name": name, "dtype": dtype, "shape": list(shape), "description": text}


CONVENTIONS = {
    "padding": "attention_mask 1 = real token, 0 = pad; pads hold pad_token_id. Row 0 is right-padded, row 1 "
    "left-padded, row 2 full.",
    "positions": "RoPE position of a real token = number of real tokens before it in its row = cumsum(mask) - 1 "
    "(position_ids holds it, 0 at pads); left and right padding give identical per-sequence results.",
    "attention": "causal by index; keys at pads are masked out; pad query rows are ignored (outputs zeroed).",
    "logits": "logits (B,T,V) and last_hidden (B,T,C, after model.norm) are zero at pad positions; hidden.<i> "
    "is the residual stream after decoder layer i (before model.norm), zero at pads.",
    "token_logprobs": "token_logprobs[b,t] = log p(input_ids[b,t+1] | input_ids[b,<=t]) = log_softmax(logits[b,t])"
    "[input_ids[b,t+1]]; 0 where position t or t+1 is a pad.",
    "loss": "loss = mean over all (b,t) with completion_mask[b,t] = 1 of -log p(input_ids[b,t] | input_ids[b,<t])"
    " (predicted from position t-1); completion tokens are always real and never the first real token of a row.",
    "gradients": "grad.<param> = d loss / d param for every stored parameter, evaluated at the stored weights "
    "upcast to float64 (BF16 checkpoints: the bf16 values). Tied checkpoints have no lm_head.weight; "
    "grad.model.embed_tokens.weight includes the lm_head contribution.",
    "sgd": "sgd_delta.<param> = w_new - w_old in float32 after one torch.optim.SGD step (lr, no momentum, no "
    "weight decay) with the float32 weights and float32(grad); equals -lr * grad up to float32 rounding. "
    "loss_after is the loss re-evaluated (float64) at w_new.",
    "greedy": "greedy_tokens[b] = 8 argmax tokens continuing the unpadded prompt of row b, recomputed by a full "
    "forward each step (no KV cache). Prompts and greedy tokens never contain ids 0..2 (pad/bos/eos), so EOS "
    "stopping cannot change the result. greedy_min_margin = smallest top1-top2 logit gap over all steps.",
    "precision": "all references computed in float64 (RoPE inv_freq in float64 too); stored as float32.",
}


def build(v):
    rng = np.random.RandomState(v["seed"])
    cfg = make_config(v)
    stored = init_params(cfg, rng)  # float32 masters
    if v["dtype"] == "BF16":
        stored = {k: t.to(torch.bfloat16) for k, t in stored.items()}
    W = {k: t.to(torch.float64).requires_grad_(True) for k, t in stored.items()}
    with torch.no_grad():
        ids, mask, comp, prompts, runs = make_batch(v, W, cfg, rng)
        out = self_checks(v, W, cfg, ids, mask, prompts)
    logits = forward(W, cfg, ids, mask)["logits"]
    loss = completion_loss(logits, ids, comp)
    grads = dict(zip(W, torch.autograd.grad(loss, list(W.values()))))
    fd_worst = None
    if v["fd_check"]:
        with torch.no_grad():
            fd_worst = fd_check(v, W, cfg, ids, mask, comp, grads, np.random.RandomState(v["seed"] + 1))

    B, T = ids.shape
    zero_pads = lambda x, m: torch.where(m.bool()[..., None] if x.dim() == 3 else m.bool(), x, torch.zeros(()))
    logp = torch.log_softmax(out["logits"][:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    pair = mask[:, :-1] * mask[:, 1:]
    exp = {
        "input_ids": ("I32", ids), "attention_mask": ("I32", mask), "completion_mask": ("I32", comp),
        "position_ids": ("I32", positions_from_mask(mask)),
        "logits": ("F32", zero_pads(out["logits"], mask)),
        "last_hidden": ("F32", zero_pads(out["last_hidden"], mask)),
        "token_logprobs": ("F32", zero_pads(logp, pair)),
        "greedy_tokens": ("I32", torch.tensor([r for r, _ in runs])),
    }
    for i, h in enumerate(out["layers"]):
        exp[f"hidden.{i}"] = ("F32", zero_pads(h, mask))
    for k, g in grads.items():
        exp["grad." + k] = ("F32", g)
    sgd = None
    if v["sgd"]:
        assert v["dtype"] == "F32"
        params = {k: torch.nn.Parameter(t.clone()) for k, t in stored.items()}
        for k, p in params.items():
            p.grad = grads[k].to(torch.float32)
        torch.optim.SGD(list(params.values()), lr=SGD_LR).step()
        for k, p in params.items():
            d = p.detach() - stored[k]
            assert d.dtype == torch.float32
            exp["sgd_delta." + k] = ("F32", d)
        with torch.no_grad():
            Wn = {k: p.detach().to(torch.float64) for k, p in params.items()}
            loss_after = completion_loss(forward(Wn, cfg, ids, mask)["logits"], ids, comp).item()
        assert loss_after < loss.item(), "one SGD step did not reduce the loss"
        sgd = {"lr": SGD_LR, "momentum": 0.0, "weight_decay": 0.0, "loss_after": loss_after}

    d = os.path.join(OUT_DIR, v["name"])
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(d, "model.safetensors"), {k: (v["dtype"], t) for k, t in stored.items()})
    write_safetensors(os.path.join(d, "expected.safetensors"), exp)
    # round-trip: files read back bit-exactly
    back = read_safetensors(os.path.join(d, "model.safetensors"))
    assert set(back) == set(stored)
    for k, t in stored.items():
        assert torch.equal(back[k][1], t.to(torch.float64)), f"round-trip mismatch {k}"
    back = read_safetensors(os.path.join(d, "expected.safetensors"))
    for k, (dt, t) in exp.items():
        ref = t.detach().to(DTYPE_INFO[dt][0]).to(back[k][1].dtype)
        assert torch.equal(back[k][1], ref), f"round-trip mismatch {k}"

    real = mask.bool()
    manifest = {
        "format_version": FORMAT_VERSION, "name": v["name"], "description": v["about"],
        "config": "config.json", "weights_file": "model.safetensors", "weights_dtype": v["dtype"],
        "expected_file": "expected.safetensors", "tied": v["tie"],
        "batch": B, "seq_len": T, "seq_lengths": v["lens"], "padding": ["right", "left", "none"],
        "pad_token_id": PAD_TOKEN_ID, "max_new_tokens": MAX_NEW_TOKENS,
        "loss": loss.item(), "num_completion_tokens": int(comp.sum()),
        "greedy_min_margin": min(m for _, m in runs), "sgd": sgd, "fd_check_worst_rel_err": fd_worst,
        "weights": [describe(k, v["dtype"], t.shape, "parameter") for k, t in sorted(stored.items())],
        "tensors": [describe(k, dt, t.shape, tensor_doc(k)) for k, (dt, t) in sorted(exp.items())],
        "conventions": CONVENTIONS,
    }
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    row = {
        "name": v["name"], "dtype": v["dtype"], "tied": v["tie"], "C": v["hidden"],
        "H/KV": f"{v['heads']}/{v['kv_heads']}", "D": v["hidden"] // v["heads"], "I": v["inter"], "V": v["vocab"],
        "theta": v["theta"], "T": T, "loss": loss.item(), "logit_std": out["logits"][real].std().item(),
        "max|g|": max(g.abs().max().item() for g in grads.values()), "margin": manifest["greedy_min_margin"],
        "fd": fd_worst, "bytes": sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)),
    }
    return row, {"name": v["name"], "dir": v["name"], "weights_dtype": v["dtype"], "tied": v["tie"],
                 "has_sgd": sgd is not None, "description": v["about"]}


def tensor_doc(k):
    if k.startswith("grad."):
        return "d loss / d " + k[5:]
    if k.startswith("sgd_delta."):
        return "w_new - w_old after one SGD step for " + k[10:]
    if k.startswith("hidden."):
        return "residual stream after decoder layer " + k[7:] + " (zeros at pads)"
    return {
        "input_ids": "token ids (B,T); pads hold pad_token_id", "attention_mask": "1 = real token, 0 = pad",
        "completion_mask": "1 = token is a loss target (predicted from position t-1)",
        "position_ids": "cumsum(attention_mask) - 1 at real tokens, 0 at pads",
        "logits": "(B,T,V) logits, zeros at pads", "last_hidden": "(B,T,C) after model.norm, zeros at pads",
        "token_logprobs": "(B,T-1) log p(x_{t+1} | x_<=t), zero if t or t+1 is a pad",
        "greedy_tokens": "(B,8) greedy continuation of each unpadded prompt",
    }[k]


def main():
    # Remove only what this script owns: previously indexed checkpoint dirs, current ones, and index.json.
    index_path = os.path.join(OUT_DIR, "index.json")
    stale = [v["name"] for v in VARIANTS]
    if os.path.exists(index_path):
        with open(index_path) as f:
            stale += [c["dir"] for c in json.load(f)["checkpoints"]]
        os.remove(index_path)
    for name in stale:
        shutil.rmtree(os.path.join(OUT_DIR, name), ignore_errors=True)
    os.makedirs(OUT_DIR, exist_ok=True)
    rows, index = [], []
    for v in VARIANTS:
        r, e = build(v)
        rows.append(r)
        index.append(e)
    with open(index_path, "w") as f:
        json.dump({"format_version": FORMAT_VERSION, "generator": "tests/reference/make_fixtures.py",
                   "torch_version": torch.__version__, "checkpoints": index, "conventions": CONVENTIONS}, f,
                  indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT_DIR) for f in fs)
    cols = list(rows[0])
    fmt = lambda x: f"{x:.4g}" if isinstance(x, float) else ("-" if x is None else str(x))
    widths = [max(len(c), *(len(fmt(r[c])) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(fmt(r[c]).ljust(w) for c, w in zip(cols, widths)))
    print(f"total fixture bytes: {total} (limit {MAX_TOTAL_BYTES})")
    assert total < MAX_TOTAL_BYTES, "fixtures exceed the size budget"


if __name__ == "__main__":
    main()
