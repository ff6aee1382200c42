#!/usr/bin/python3
"""torch_twin: an independent float64 PyTorch reference of the Llama 3.x forward pass.

It is the "twin" that checks flora's C++ code, so it is written from the math (the Hugging
Face LlamaForCausalLM forward) and shares nothing with the C++ sources. It reads a Hugging
Face model directory (config.json plus model.safetensors, or model.safetensors.index.json
with shards) and computes in float64: every weight is widened from its stored dtype
(F32/F16/BF16/F64) to float64 first, so its logits are more exact than any float32 engine.

Run it with Debian's python3 (which has python3-torch and python3-numpy; pyenv's python may
not have torch). It needs no transformers/safetensors packages: safetensors is parsed and
written here.

  /usr/bin/python3 tools/torch_twin.py make-tiny --out DIR --dtype f32|bf16 --seed N
  /usr/bin/python3 tools/torch_twin.py logits --model DIR --tokens 379,1,2 --out FILE.safetensors
  /usr/bin/python3 tools/torch_twin.py golden [--out tests/fixtures/tiny_llama]
  /usr/bin/python3 tools/torch_twin.py selfcheck --model DIR [--tokens ...]

Notation: T tokens, d = hidden_size, H = num_attention_heads, KV = num_key_value_heads,
hd = head_dim, F = intermediate_size, V = vocab_size. Shapes are in the comments.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

F64 = torch.float64
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root

# --------------------------------------------------------------------------------------------
# safetensors: [u64 little-endian N][N bytes of JSON header][raw little-endian data]
# header = {"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}}
# with offsets relative to the start of the data block.
# --------------------------------------------------------------------------------------------

# safetensors dtype name -> numpy dtype of the stored element (BF16 is read as raw uint16).
ST_NUMPY = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4"}


def bf16_bits_to_f32(bits):
    """BF16 is the upper 16 bits of a float32: widen by shifting back into place (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(a):
    """Round float32 to bfloat16, round-to-nearest-even on the 16 dropped bits."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise ValueError("f32_to_bf16_bits: non-finite value")
    u = a.view(np.uint32).astype(np.uint64)
    u = u + 0x7FFF + ((u >> 16) & 1)  # +half-ulp (minus 1 unless the kept lsb is odd) => RNE
    return (u >> 16).astype(np.uint16)


def read_safetensors(path):
    """Returns (tensors {name: numpy array}, metadata {str: str}, names in file-data order).
    BF16 tensors come back as float32 (exact); others in their stored dtype."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: file too short for a safetensors header")
    n = int.from_bytes(blob[:8], "little")
    if 8 + n > len(blob):
        raise ValueError(f"{path}: header length {n} exceeds the file size {len(blob)}")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n:]
    meta = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        dt = info["dtype"]
        if dt not in ST_NUMPY:
            raise ValueError(f"{path}: tensor '{name}': unsupported dtype {dt}")
        shape = tuple(info["shape"])
        begin, end = info["data_offsets"]
        itemsize = np.dtype(ST_NUMPY[dt]).itemsize
        if end - begin != itemsize * math.prod(shape) or end > len(data) or begin < 0:
            raise ValueError(f"{path}: tensor '{name}': data_offsets {begin},{end} do not fit "
                             f"shape {list(shape)} of {dt} in {len(data)} data bytes")
        arr = np.frombuffer(data[begin:end], dtype=ST_NUMPY[dt]).reshape(shape).copy()
        tensors[name] = bf16_bits_to_f32(arr) if dt == "BF16" else arr
    order = sorted(header, key=lambda k: header[k]["data_offsets"][0])
    return tensors, meta, order


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, dtype name, numpy array) written in that order. For "BF16" the
    array is float32 and is rounded here (RNE). Header padded with spaces to 8 bytes.
    Written to a temporary name and renamed, so a reader never sees half a file."""
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, dt, arr in tensors:
        if dt == "BF16":
            raw = f32_to_bf16_bits(arr).tobytes()
        else:
            raw = np.ascontiguousarray(arr, dtype=ST_NUMPY[dt]).tobytes()
        header[name] = {"dtype": dt, "shape": list(np.shape(arr)),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Model: config.json and the tensors of a Hugging Face Llama directory.
# --------------------------------------------------------------------------------------------

class Config:
    def __init__(self, j):
        self.raw = j
        self.d = j["hidden_size"]
        self.ffn = j["intermediate_size"]
        self.n_layers = j["num_hidden_layers"]
        self.n_heads = j["num_attention_heads"]
        self.n_kv = j.get("num_key_value_heads") or self.n_heads
        self.head_dim = j.get("head_dim") or self.d // self.n_heads  # HF default: d / H
        self.vocab = j["vocab_size"]
        self.eps = float(j["rms_norm_eps"])
        self.theta = float(j.get("rope_theta", 10000.0))
        self.rope_scaling = j.get("rope_scaling")
        self.tie = bool(j.get("tie_word_embeddings", False))  # LlamaConfig default: False
        if j.get("hidden_act", "silu") != "silu":
            raise ValueError(f"config.json: hidden_act {j.get('hidden_act')!r}: only 'silu'")
        if j.get("attention_bias") or j.get("mlp_bias"):
            raise ValueError("config.json: attention_bias/mlp_bias true is not supported")
        if self.n_heads % self.n_kv or self.head_dim % 2:
            raise ValueError("config.json: H must be a multiple of KV and head_dim even")


def expected_tensors(cfg):
    """Parameter names and shapes, in the order flora's files store them."""
    d, F, hd, V = cfg.d, cfg.ffn, cfg.head_dim, cfg.vocab
    out = [("model.embed_tokens.weight", (V, d))]
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (d,)),
                (p + "self_attn.q_proj.weight", (cfg.n_heads * hd, d)),
                (p + "self_attn.k_proj.weight", (cfg.n_kv * hd, d)),
                (p + "self_attn.v_proj.weight", (cfg.n_kv * hd, d)),
                (p + "self_attn.o_proj.weight", (d, cfg.n_heads * hd)),
                (p + "post_attention_layernorm.weight", (d,)),
                (p + "mlp.gate_proj.weight", (F, d)),
                (p + "mlp.up_proj.weight", (F, d)),
                (p + "mlp.down_proj.weight", (d, F))]
    out.append(("model.norm.weight", (d,)))
    if not cfg.tie:
        out.append(("lm_head.weight", (V, d)))
    return out


def load_model(model_dir):
    """Returns (cfg, W) with W {name: float64 torch tensor}; "lm_head.weight" is always set
    (it is embed_tokens when tie_word_embeddings is true)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = Config(json.load(f))
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    raw = {}
    if os.path.exists(single):
        raw = read_safetensors(single)[0]
    elif os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        for shard in sorted(set(weight_map.values())):
            t = read_safetensors(os.path.join(model_dir, shard))[0]
            raw.update({k: v for k, v in t.items() if weight_map.get(k) == shard})
    else:
        raise FileNotFoundError(f"{model_dir}: neither model.safetensors nor "
                                "model.safetensors.index.json")
    W = {}
    for name, shape in expected_tensors(cfg):
        if name not in raw:
            raise KeyError(f"{model_dir}: tensor '{name}' missing")
        if tuple(raw[name].shape) != shape:
            raise ValueError(f"{model_dir}: tensor '{name}': expected shape {list(shape)}, "
                             f"found {list(raw[name].shape)}")
        W[name] = torch.from_numpy(raw[name].astype(np.float64))  # widen to float64
    extra = set(raw) - set(W)
    if extra:
        print(f"torch_twin: ignoring tensors {sorted(extra)}", file=sys.stderr)
    if cfg.tie:
        W["lm_head.weight"] = W["model.embed_tokens.weight"]
    return cfg, W


# --------------------------------------------------------------------------------------------
# The math.
# --------------------------------------------------------------------------------------------

def rope_inv_freq(cfg):
    """inv_freq_i = 1 / theta^(2i/hd), i = 0..hd/2-1, then the "llama3" rope_scaling.
    Returns (inv_freq float64 [hd/2], branch name per frequency)."""
    hd = cfg.head_dim
    base = [1.0 / cfg.theta ** (2 * i / hd) for i in range(hd // 2)]
    rs = cfg.rope_scaling
    kind = None if rs is None else rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return torch.tensor(base, dtype=F64), ["unscaled"] * len(base)
    if kind != "llama3":
        raise ValueError(f"config.json: rope_scaling type {kind!r} is not supported")
    factor = float(rs["factor"])
    lo, hi = float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
    orig = float(rs["original_max_position_embeddings"])
    out, branch = [], []
    for f in base:
        wavelen = 2 * math.pi / f                      # wavelength in positions
        if wavelen < orig / hi:                         # high frequency: keep
            out.append(f); branch.append("kept")
        elif wavelen > orig / lo:                       # low frequency: divide by factor
            out.append(f / factor); branch.append("divided")
        else:                                           # in between: interpolate
            smooth = (orig / wavelen - lo) / (hi - lo)
            out.append((1 - smooth) * f / factor + smooth * f); branch.append("smoothed")
    return torch.tensor(out, dtype=F64), branch


def rms_norm(x, w, eps):
    """x / sqrt(mean(x^2) + eps) * w over the last axis."""
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w


def rope_rotate_half(x, pos, inv_freq):
    """HF convention: the pairs are (j, j + hd/2). x [n, T, hd], pos [T] float64.
    out = x * cos(angle) + rotate_half(x) * sin(angle), rotate_half(x) = [-x2, x1],
    angle[t, j] = pos[t] * inv_freq[j mod hd/2]."""
    half = x.shape[-1] // 2
    angle = pos[:, None] * inv_freq[None, :]             # [T, hd/2]
    angle = torch.cat([angle, angle], dim=-1)            # [T, hd]
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat([-x2, x1], dim=-1)               # rotate_half(x)
    return x * torch.cos(angle) + rotated * torch.sin(angle)


def causal_gqa_attention(q, k, v, q_pos, k_pos):
    """q [H, Tq, hd], k/v [KV, Tk, hd]; query head h reads kv head h // (H / KV).
    softmax(q k^T / sqrt(hd) + causal mask) v -> [Tq, H * hd] (heads concatenated)."""
    H, Tq, hd = q.shape
    group = H // k.shape[0]
    k = k.repeat_interleave(group, dim=0)                # [H, Tk, hd]: row h = kv head h//group
    v = v.repeat_interleave(group, dim=0)
    scores = q @ k.transpose(1, 2) / math.sqrt(hd)       # [H, Tq, Tk]
    future = k_pos[None, :] > q_pos[:, None]             # key after query: masked
    scores = scores.masked_fill(future[None], float("-inf"))
    p = torch.softmax(scores, dim=-1)
    return (p @ v).transpose(0, 1).reshape(Tq, H * hd)   # [Tq, H*hd]


def silu(x):
    return x / (1 + torch.exp(-x))                       # x * sigmoid(x)


def forward(cfg, W, tokens):
    """Full causal forward over the whole sequence. tokens: list of ints.
    Returns (logits float64 [T, V], cache) with cache[l] = (K [KV, T, hd] after RoPE, V)."""
    T, H, KV, hd = len(tokens), cfg.n_heads, cfg.n_kv, cfg.head_dim
    inv_freq, _ = rope_inv_freq(cfg)
    pos = torch.arange(T, dtype=F64)
    x = W["model.embed_tokens.weight"][torch.tensor(tokens)]      # [T, d] embedding lookup
    cache = []
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        xn = rms_norm(x, W[p + "input_layernorm.weight"], cfg.eps)      # [T, d]
        q = xn @ W[p + "self_attn.q_proj.weight"].T                     # [T, H*hd]
        k = xn @ W[p + "self_attn.k_proj.weight"].T                     # [T, KV*hd]
        v = xn @ W[p + "self_attn.v_proj.weight"].T                     # [T, KV*hd]
        q = q.view(T, H, hd).transpose(0, 1)                            # [H, T, hd]
        k = k.view(T, KV, hd).transpose(0, 1)                           # [KV, T, hd]
        v = v.view(T, KV, hd).transpose(0, 1)                           # [KV, T, hd]
        q = rope_rotate_half(q, pos, inv_freq)
        k = rope_rotate_half(k, pos, inv_freq)
        cache.append((k, v))
        a = causal_gqa_attention(q, k, v, pos, pos)                     # [T, H*hd]
        x = x + a @ W[p + "self_attn.o_proj.weight"].T                  # residual
        xn = rms_norm(x, W[p + "post_attention_layernorm.weight"], cfg.eps)
        g = xn @ W[p + "mlp.gate_proj.weight"].T                        # [T, F]
        u = xn @ W[p + "mlp.up_proj.weight"].T                          # [T, F]
        x = x + (silu(g) * u) @ W[p + "mlp.down_proj.weight"].T         # residual (SwiGLU)
    x = rms_norm(x, W["model.norm.weight"], cfg.eps)
    return x @ W["lm_head.weight"].T, cache                             # [T, V]


def decode_step(cfg, W, cache, token, pos):
    """Independent one-token path with a KV cache (matrix-vector form, RoPE as explicit pair
    rotations, per-head attention over the cache). cache: list per layer of (K [KV, t, hd],
    V [KV, t, hd]) for positions 0..pos-1; it is extended in place. Returns logits [V]."""
    H, KV, hd, half = cfg.n_heads, cfg.n_kv, cfg.head_dim, cfg.head_dim // 2
    group = H // KV
    inv_freq, _ = rope_inv_freq(cfg)
    c, s = torch.cos(pos * inv_freq), torch.sin(pos * inv_freq)   # [hd/2] for this position

    def rotate_pairs(m):  # m [n, hd]; pair (j, j+half) rotated by angle pos * inv_freq[j]
        a, b = m[:, :half], m[:, half:]
        return torch.cat([a * c - b * s, b * c + a * s], dim=1)

    def norm(v, w):  # RMSNorm of one vector: v / sqrt(v.v / d + eps) * w
        return v / torch.sqrt(torch.dot(v, v) / v.numel() + cfg.eps) * w

    x = W["model.embed_tokens.weight"][token].clone()                  # [d]
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        xn = norm(x, W[p + "input_layernorm.weight"])
        q = rotate_pairs(torch.mv(W[p + "self_attn.q_proj.weight"], xn).view(H, hd))
        k = rotate_pairs(torch.mv(W[p + "self_attn.k_proj.weight"], xn).view(KV, hd))
        v = torch.mv(W[p + "self_attn.v_proj.weight"], xn).view(KV, hd)
        if cache[i] is None:
            Kc, Vc = k[:, None, :], v[:, None, :]
        else:
            Kc = torch.cat([cache[i][0], k[:, None, :]], dim=1)        # [KV, pos+1, hd]
            Vc = torch.cat([cache[i][1], v[:, None, :]], dim=1)
        cache[i] = (Kc, Vc)
        heads = []
        for h in range(H):                      # every cached position is <= pos: no mask
            kv = h // group
            sc = torch.mv(Kc[kv], q[h]) / math.sqrt(hd)                # [pos+1]
            e = torch.exp(sc - sc.max())
            heads.append(torch.mv(Vc[kv].T, e / e.sum()))              # [hd]
        x = x + torch.mv(W[p + "self_attn.o_proj.weight"], torch.cat(heads))
        xn = norm(x, W[p + "post_attention_layernorm.weight"])
        g = torch.mv(W[p + "mlp.gate_proj.weight"], xn)
        u = torch.mv(W[p + "mlp.up_proj.weight"], xn)
        x = x + torch.mv(W[p + "mlp.down_proj.weight"], g * torch.sigmoid(g) * u)
    x = norm(x, W["model.norm.weight"])
    return torch.mv(W["lm_head.weight"], x)


# --------------------------------------------------------------------------------------------
# Self-checks of the twin.
# --------------------------------------------------------------------------------------------

def check_attention(H=4, KV=2, T=9, hd=16, seed=0):
    """causal_gqa_attention against a naive double loop over (query, key) for every head;
    against torch's scaled_dot_product_attention too where it exists (torch >= 2.0)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(H, T, hd, generator=g, dtype=F64)
    k = torch.randn(KV, T, hd, generator=g, dtype=F64)
    v = torch.randn(KV, T, hd, generator=g, dtype=F64)
    pos = torch.arange(T, dtype=F64)
    got = causal_gqa_attention(q, k, v, pos, pos).view(T, H, hd)
    worst = 0.0
    for h in range(H):
        kv = h // (H // KV)
        for t in range(T):
            w = [math.exp(sum(q[h, t, j].item() * k[kv, s, j].item() for j in range(hd))
                          / math.sqrt(hd)) for s in range(t + 1)]  # keys 0..t only
            z = sum(w)
            for j in range(hd):
                ref = sum(w[s] / z * v[kv, s, j].item() for s in range(t + 1))
                worst = max(worst, abs(ref - got[t, h, j].item()))
    assert worst < 1e-12, f"attention vs naive loop: max diff {worst}"
    msg = f"attention == naive double loop (all {H} heads, max diff {worst:.1e})"
    sdpa = getattr(torch.nn.functional, "scaled_dot_product_attention", None)
    if sdpa is not None:
        ref = sdpa(q, k.repeat_interleave(H // KV, 0), v.repeat_interleave(H // KV, 0),
                   is_causal=True).transpose(0, 1)
        d = (ref - got).abs().max().item()
        assert d < 1e-12, f"attention vs scaled_dot_product_attention: max diff {d}"
        msg += f"; == scaled_dot_product_attention (max diff {d:.1e})"
    else:
        msg += f"; torch {torch.__version__} has no scaled_dot_product_attention"
    return msg


def check_decode(cfg, W, tokens, prefill, full=None):
    """The decode path equals the full forward to 1e-10: (a) all tokens one at a time from an
    empty cache, (b) the full forward over tokens[:prefill], then decode the rest with its
    cache (what the C++ test does)."""
    if full is None:
        full = forward(cfg, W, tokens)[0]
    cache = [None] * cfg.n_layers
    stepped = torch.stack([decode_step(cfg, W, cache, t, i) for i, t in enumerate(tokens)])
    d1 = (stepped - full).abs().max().item()
    pre_logits, cache = forward(cfg, W, tokens[:prefill])
    cache = list(cache)
    rest = [decode_step(cfg, W, cache, t, prefill + i) for i, t in enumerate(tokens[prefill:])]
    hybrid = torch.cat([pre_logits, torch.stack(rest)])
    d2 = (hybrid - full).abs().max().item()
    assert d1 < 1e-10, f"decode-one-by-one vs full forward: max diff {d1}"
    assert d2 < 1e-10, f"prefill+decode vs full forward: max diff {d2}"
    return (f"decode one by one == full forward (max diff {d1:.1e}); prefill {prefill} + "
            f"decode {len(tokens) - prefill} == full forward (max diff {d2:.1e})")


def logit_stats(logits):
    std = logits.std(dim=1)
    lines = [f"  pos {t:2d}: std {std[t].item():.3f}  max|logit| {logits[t].abs().max().item():.3f}"
             for t in range(logits.shape[0])]
    lines.append(f"  all: std min {std.min().item():.3f} max {std.max().item():.3f}, "
                 f"max|logit| {logits.abs().max().item():.3f}, "
                 f"finite {bool(torch.isfinite(logits).all())}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# make-tiny: a tiny random Llama 3 directory.
# --------------------------------------------------------------------------------------------

def tiny_config(dtype):
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 200,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 384,
        "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0,
        # At head_dim 16 the 8 wavelengths 2*pi*theta^(2i/16) are 6.3, 32.4, 167, ...: with
        # original 64 the bounds are 64/4 = 16 and 64/1 = 64, so i=0 is kept, i=1 smoothed
        # and i>=2 divided (printed by make-tiny).
        "rope_scaling": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64, "rope_type": "llama3"},
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
        "bos_token_id": 379,
        "eos_token_id": 380,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": {"f32": "float32", "bf16": "bfloat16"}[dtype],
    }


def normal_stream(seed, stream, n):
    """n standard normals from a self-contained generator (splitmix64 + Box-Muller), so that
    the fixture weights do not depend on numpy's or torch's generator across versions."""
    mask = (1 << 64) - 1
    with np.errstate(over="ignore"):
        def splitmix(ctr):  # ctr uint64 array -> uint64 array
            z = ctr * np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            return z ^ (z >> np.uint64(31))
        key = (seed * 0x100000001B3 + stream * 0x1000193 + 1) & mask
        ctr = np.arange(2 * n, dtype=np.uint64) + np.uint64(key)
        r = splitmix(ctr)
    u = ((r >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0 ** -53   # uniform in (0, 1]
    u1, u2 = u[0::2], u[1::2]
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)


# Embedding std: with tied embeddings the LM head is the embedding, and logit std is about
# EMBED_STD * sqrt(d) (final-norm output has rms ~1). 0.3 * 8 = 2.4: well spread, not peaked.
EMBED_STD = 0.3


def make_tiny(out, dtype, seed):
    cfg_json = tiny_config(dtype)
    cfg = Config(cfg_json)
    os.makedirs(out, exist_ok=True)
    tensors = []
    for idx, (name, shape) in enumerate(expected_tensors(cfg)):
        z = normal_stream(seed, idx, math.prod(shape)).reshape(shape)
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            w = 1.0 + 0.1 * z                                   # norm weights near 1
        elif name == "model.embed_tokens.weight":
            w = EMBED_STD * z
        else:
            w = z / math.sqrt(shape[1])                         # normal(0, 1/sqrt(in_features))
        tensors.append((name, {"f32": "F32", "bf16": "BF16"}[dtype], w.astype(np.float32)))
    with open(os.path.join(out, "config.json.tmp"), "w") as f:
        json.dump(cfg_json, f, indent=2)
        f.write("\n")
    os.replace(os.path.join(out, "config.json.tmp"), os.path.join(out, "config.json"))
    producer = f"/usr/bin/python3 tools/torch_twin.py make-tiny --dtype {dtype} --seed {seed}"
    write_safetensors(os.path.join(out, "model.safetensors"), tensors,
                      {"format": "pt", "producer": producer})
    inv_freq, branch = rope_inv_freq(cfg)
    base = [1.0 / cfg.theta ** (2 * i / cfg.head_dim) for i in range(cfg.head_dim // 2)]
    print(f"make-tiny: wrote {out} ({dtype}, seed {seed}, "
          f"{sum(math.prod(s) for _, s in expected_tensors(cfg))} parameters)")
    for i, (b, f, br) in enumerate(zip(base, inv_freq.tolist(), branch)):
        print(f"  rope i={i}: inv_freq {b:.6g} wavelen {2 * math.pi / b:9.2f} -> {br:8s} {f:.6g}")
    assert {"kept", "smoothed", "divided"} <= set(branch), "tiny preset must hit all branches"


# --------------------------------------------------------------------------------------------
# Commands.
# --------------------------------------------------------------------------------------------

def write_logits(cfg, W, tokens, path, metadata):
    for t in tokens:
        if not 0 <= t < cfg.vocab:
            raise ValueError(f"token {t} outside [0, {cfg.vocab})")
    logits, _ = forward(cfg, W, tokens)
    assert torch.isfinite(logits).all(), "non-finite logits"
    write_safetensors(path, [("tokens", "I64", np.array(tokens, dtype=np.int64)),
                             ("logits", "F32", logits.numpy().astype(np.float32))], metadata)
    return logits


def parse_tokens(s):
    return [int(t) for t in s.replace(" ", "").split(",") if t]


def cmd_make_tiny(a):
    make_tiny(a.out, a.dtype, a.seed)


def cmd_logits(a):
    cfg, W = load_model(a.model)
    tokens = parse_tokens(a.tokens)
    cmd = "/usr/bin/python3 tools/torch_twin.py " + " ".join(sys.argv[1:])
    logits = write_logits(cfg, W, tokens, a.out, {"command": cmd, "model": a.model})
    print(f"logits: wrote {a.out} [{len(tokens)}, {cfg.vocab}]\n{logit_stats(logits)}")


def cmd_selfcheck(a):
    cfg, W = load_model(a.model)
    tokens = parse_tokens(a.tokens) if a.tokens else GOLDEN_TOKENS
    print(check_attention())
    print(check_decode(cfg, W, tokens, min(a.prefill, len(tokens))))


# The golden sequence: bos 379, then 23 ids drawn once with numpy.random.default_rng(2024)
# .integers(0, 384, 23) and frozen here so that regeneration never depends on numpy.
GOLDEN_TOKENS = [379, 92, 259, 35, 82, 121, 118, 348, 306, 351, 382, 30, 54, 333, 30, 63,
                 69, 350, 138, 101, 65, 176, 226, 307]
GOLDEN_PREFILL = 20  # the C++ test prefills 20 tokens, then decodes the last 4 one by one
GOLDEN_SEED = 1      # same seed for f32 and bf16: the bf16 weights are the f32 ones rounded


def cmd_golden(a):
    assert len(GOLDEN_TOKENS) == 24 and GOLDEN_TOKENS[0] == 379
    # Default: the repository's tests/fixtures/tiny_llama, whatever the working directory.
    out = a.out or os.path.join(ROOT, "tests", "fixtures", "tiny_llama")
    shown = os.path.relpath(out, ROOT)  # paths in the metadata: relative to the repo root
    command = "/usr/bin/python3 tools/torch_twin.py golden" + (f" --out {a.out}" if a.out else "")
    print(check_attention())
    for dtype in ("f32", "bf16"):
        d, dshown = os.path.join(out, dtype), os.path.join(shown, dtype)
        make_tiny(d, dtype, GOLDEN_SEED)
        cfg, W = load_model(d)
        meta = {
            "command": command,
            "equivalent": (f"/usr/bin/python3 tools/torch_twin.py make-tiny --out {dshown} "
                           f"--dtype {dtype} --seed {GOLDEN_SEED} && /usr/bin/python3 "
                           f"tools/torch_twin.py logits --model {dshown} --tokens "
                           f"{','.join(map(str, GOLDEN_TOKENS))} "
                           f"--out {dshown}/golden.safetensors"),
            "prefill": str(GOLDEN_PREFILL),
            "decode": str(len(GOLDEN_TOKENS) - GOLDEN_PREFILL),
            "compute": "float64 (weights widened from their stored dtype), logits rounded to F32",
        }
        logits = write_logits(cfg, W, GOLDEN_TOKENS, os.path.join(d, "golden.safetensors"), meta)
        print(check_decode(cfg, W, GOLDEN_TOKENS, GOLDEN_PREFILL, logits))
        # Read back what was written: the file round-trips through the parser.
        t, m, order = read_safetensors(os.path.join(d, "golden.safetensors"))
        assert order == ["tokens", "logits"] and t["tokens"].tolist() == GOLDEN_TOKENS
        assert np.array_equal(t["logits"], logits.numpy().astype(np.float32)) and m == meta
        print(f"golden {dtype}: logits of {len(GOLDEN_TOKENS)} positions\n{logit_stats(logits)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-tiny", help="write a tiny random Llama 3 model directory")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(fn=cmd_make_tiny)
    p = sub.add_parser("logits", help="float64 logits of every position of one forward pass")
    p.add_argument("--model", required=True)
    p.add_argument("--tokens", required=True, help="comma-separated token ids")
    p.add_argument("--out", required=True, help="output .safetensors (tokens I64, logits F32)")
    p.set_defaults(fn=cmd_logits)
    p = sub.add_parser("golden", help="regenerate tests/fixtures/tiny_llama/{f32,bf16}")
    p.add_argument("--out", default=None,
                   help="output folder (default: <repo>/tests/fixtures/tiny_llama)")
    p.set_defaults(fn=cmd_golden)
    p = sub.add_parser("selfcheck", help="attention vs naive loop, decode vs full forward")
    p.add_argument("--model", required=True)
    p.add_argument("--tokens", default="")
    p.add_argument("--prefill", type=int, default=GOLDEN_PREFILL)
    p.set_defaults(fn=cmd_selfcheck)
    a = ap.parse_args()
    torch.set_num_threads(1)  # deterministic reductions
    a.fn(a)


if __name__ == "__main__":
    main()
