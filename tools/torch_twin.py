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
  /usr/bin/python3 tools/torch_twin.py logits --model DIR --tokens 379,1,2 --out FILE.safetensors [--adapter DIR]
  /usr/bin/python3 tools/torch_twin.py golden [--out tests/fixtures/tiny_llama]
  /usr/bin/python3 tools/torch_twin.py selfcheck --model DIR [--tokens ...] [--adapter DIR]
  /usr/bin/python3 tools/torch_twin.py adapter-golden [--out tests/fixtures/tiny_llama/adapters]
  /usr/bin/python3 tools/torch_twin.py train-golden [--out tests/fixtures/tiny_llama/train]
  /usr/bin/python3 tools/torch_twin.py blocks-golden [--out tests/fixtures/tiny_llama/blocks]
  /usr/bin/python3 tools/torch_twin.py bf16-products-golden [--model tests/fixtures/tiny_llama/blocks/bf16]

`logits` and `selfcheck` take --adapter DIR: a PEFT-style adapter directory (LoRA, or the
FLoRA family of docs/ADAPTERS.md in the shared docs), applied in float64 too.

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
# Adapters (the math and file format of docs/ADAPTERS.md in the shared docs): a PEFT-style
# directory with adapter_config.json and adapter_model.safetensors.
#   LoRA family:  y_m = W_m u + s * B_m (A_m u) on every target m.
#   FLoRA family: forward adapters A_m (z_m = A_m u), repeat-and-add (y_m += s * tile(z_m)),
#                 the sum z of a sub-block's z_m (+ the carry), phi, a backward adapter B on
#                 the exit (y += s * B phi(z)), and the carry A c + C phi(z) to the next
#                 sub-block (attention exit -> FFN sum, FFN exit -> next layer's attention sum).
# s = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora; r = rank of the STORED matrices.
# --------------------------------------------------------------------------------------------

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
          "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
EXITS = ("o_proj", "down_proj")        # the only projections that may have B (and C, carry)

# phi, applied to the sub-block's sum z before B and C consume it.
PHI = {
    "identity": lambda z: z,
    "relu": torch.relu,
    "gelu": lambda z: 0.5 * z * (1.0 + torch.erf(z / math.sqrt(2.0))),   # exact (erf) form
    "silu": lambda z: z * torch.sigmoid(z),
}

ENTRIES = ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"]
# FLoRA presets: (rank multiplier of the requested R, forward, repeat_add, backward, carry, phi)
FLORA_PRESETS = {
    "ffa":       (2, MODULES, MODULES, [], [], "identity"),
    "ffba":      (1, MODULES, ENTRIES, list(EXITS), list(EXITS), "identity"),
    "ffba-aorb": (1, ENTRIES, ENTRIES, list(EXITS), [], "identity"),
    "ffba-qg":   (1, MODULES, ["q_proj", "gate_proj"], list(EXITS), list(EXITS), "identity"),
    "ffba-relu": (1, MODULES, ENTRIES, list(EXITS), list(EXITS), "relu"),
}


def module_shape(cfg, m):
    """(out, in) of projection m, as PyTorch stores it."""
    qd, kvd = cfg.n_heads * cfg.head_dim, cfg.n_kv * cfg.head_dim
    return {"q_proj": (qd, cfg.d), "k_proj": (kvd, cfg.d), "v_proj": (kvd, cfg.d),
            "o_proj": (cfg.d, qd), "gate_proj": (cfg.ffn, cfg.d), "up_proj": (cfg.ffn, cfg.d),
            "down_proj": (cfg.d, cfg.ffn)}[m]


def adapter_tensor_name(i, m, mat, kind):
    """PEFT naming: base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight, and
    flora_A / flora_B / flora_C for the FLoRA family."""
    return f"base_model.model.model.layers.{i}.{PARENT[m]}.{m}.{kind}_{mat}.weight"


def lora_config(r, alpha, targets=MODULES, rslora=False):
    """PEFT's LoRA adapter_config.json, unchanged."""
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
            "use_rslora": rslora, "target_modules": list(targets), "lora_dropout": 0.0,
            "bias": "none", "fan_in_fan_out": False, "rank_pattern": {}, "alpha_pattern": {},
            "inference_mode": True, "base_model_name_or_path": ""}


def flora_config(variant, R, alpha, init="random", phi=None, rslora=False, preset=None):
    """FLoRA adapter_config.json for a preset (R = requested rank; ffa stores r = 2R).
    preset: which preset's lists to use (default: variant itself); phi overrides its phi."""
    mult, fwd, ra, bwd, car, ph = FLORA_PRESETS[preset or variant]
    return {"peft_type": "FLORA", "task_type": "CAUSAL_LM", "flora_variant": variant,
            "r": mult * R, "lora_alpha": alpha, "use_rslora": rslora,
            "target_modules": list(fwd), "repeat_add": list(ra), "backward_modules": list(bwd),
            "carry_modules": list(car), "nonlinearity": phi or ph, "init": init,
            "base_model_name_or_path": ""}


class Adapter:
    """A loaded adapter: kind "lora" or "flora", r, s, the module sets and float64 matrices
    mats[(layer, module, "A"|"B"|"C")]."""

    def __init__(self, cfg, conf, raw):
        pt = conf.get("peft_type")
        self.conf, self.r, self.alpha = conf, int(conf["r"]), float(conf["lora_alpha"])
        self.rslora = bool(conf.get("use_rslora", False))
        # s = alpha / r, or alpha / sqrt(r) with rsLoRA (r = the stored rank)
        self.s = self.alpha / (math.sqrt(self.r) if self.rslora else self.r)
        targets = conf.get("target_modules")
        if isinstance(targets, str):
            raise ValueError("adapter_config.json: target_modules given as a regex string "
                             "is not supported yet (give a list of module names)")
        bad = [t for t in targets if t not in MODULES]
        if bad:
            raise ValueError(f"adapter_config.json: unknown target_modules {bad}")
        self.forward = set(targets)   # LoRA: its targets; FLoRA: modules with a forward A
        if pt == "LORA":
            self.kind = "lora"
            if conf.get("rank_pattern") or conf.get("alpha_pattern"):
                raise ValueError("adapter_config.json: rank_pattern/alpha_pattern: "
                                 "not supported yet")
            if conf.get("fan_in_fan_out"):
                raise ValueError("adapter_config.json: fan_in_fan_out true is not supported")
            self.repeat_add = self.backward = self.carry = set()
            self.phi_name = "identity"
            need = [(m, mat) for m in MODULES if m in self.forward for mat in "AB"]
        elif pt == "FLORA":
            self.kind = "flora"
            self.repeat_add = set(conf.get("repeat_add", []))
            self.backward = set(conf.get("backward_modules", []))
            self.carry = set(conf.get("carry_modules", []))
            self.phi_name = conf.get("nonlinearity", "identity")
            if self.phi_name not in PHI:
                raise ValueError(f"adapter_config.json: nonlinearity {self.phi_name!r}")
            if not self.repeat_add <= self.forward:
                raise ValueError("adapter_config.json: repeat_add needs a forward adapter "
                                 f"(target_modules): {sorted(self.repeat_add - self.forward)}")
            if not (self.backward | self.carry) <= set(EXITS):
                raise ValueError("adapter_config.json: backward/carry only on o_proj, down_proj")
            if not self.carry <= self.forward:
                raise ValueError("adapter_config.json: carry needs A (target_modules) on "
                                 f"{sorted(self.carry - self.forward)}")
            v = conf.get("flora_variant")
            if v in FLORA_PRESETS:  # a preset name must mean that preset's lists and phi
                _, fwd, ra, bwd, car, ph = FLORA_PRESETS[v]
                mine = (self.forward, self.repeat_add, self.backward, self.carry, self.phi_name)
                if mine != (set(fwd), set(ra), set(bwd), set(car), ph):
                    raise ValueError(f"adapter_config.json: flora_variant {v!r} but the module "
                                     "lists or nonlinearity differ from that preset "
                                     "(use \"custom\")")
            need = ([(m, "A") for m in MODULES if m in self.forward]
                    + [(m, "B") for m in MODULES if m in self.backward]
                    + [(m, "C") for m in MODULES if m in self.carry])
        else:
            raise ValueError(f"adapter_config.json: peft_type {pt!r} (LORA or FLORA)")
        self.phi = PHI[self.phi_name]
        tag = "lora" if self.kind == "lora" else "flora"
        self.mats, used = {}, set()
        for i in range(cfg.n_layers):
            for m, mat in need:
                out, inn = module_shape(cfg, m)
                shape = {"A": (self.r, inn), "B": (out, self.r), "C": (self.r, self.r)}[mat]
                name = adapter_tensor_name(i, m, mat, tag)
                if name not in raw:
                    raise KeyError(f"adapter: tensor '{name}' missing")
                if tuple(raw[name].shape) != shape:
                    raise ValueError(f"adapter: tensor '{name}': expected {list(shape)}, "
                                     f"found {list(raw[name].shape)}")
                self.mats[(i, m, mat)] = torch.from_numpy(raw[name].astype(np.float64))
                used.add(name)
        extra = set(raw) - used
        if extra:
            raise ValueError(f"adapter: unexpected tensors {sorted(extra)[:4]} "
                             f"({len(extra)} in all)")

    def M(self, i, m, mat):
        return self.mats[(i, m, mat)]


def load_adapter(cfg, adapter_dir):
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        conf = json.load(f)
    raw = read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))[0]
    return Adapter(cfg, conf, raw)


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


def tile(z, n):
    """Repeat-and-add's widening: tile_n(z)[..., i] = z[..., i mod r], i < n. z [..., r]."""
    return z[..., torch.arange(n) % z.shape[-1]]


# flora's BF16 products (--products bf16, src/ops/ops.h) round the input of every product
# with a base weight matrix to bfloat16 (from its f32 value, nearest even) and multiply
# exactly; bf16-products-golden sets this to model that rounding. Adapter and attention
# products are untouched, as in flora.
ROUND_BASE_PRODUCT_INPUTS = False


def base_product(u, Wm):
    """u [..., in] @ Wm.T, the input rounded to bf16 first under ROUND_BASE_PRODUCT_INPUTS."""
    if ROUND_BASE_PRODUCT_INPUTS:
        u32 = u.numpy().astype(np.float32)
        u = torch.from_numpy(bf16_bits_to_f32(f32_to_bf16_bits(u32)).astype(np.float64)).reshape(u.shape)
    return u @ Wm.T


def adapted_entry(ad, i, m, u, Wm):
    """An entry projection (q, k, v, gate, up; also used for LoRA everywhere) on u [T, in]:
    returns (y [T, out], z [T, r] or None). Separate operations (the unfused form):
      LoRA:   y = W u + s * B (A u)
      FLoRA:  y = W u ; z = A u ; with repeat_add: y += s * tile(z)."""
    y = base_product(u, Wm)
    if ad is None or m not in ad.forward:
        return y, None
    z = u @ ad.M(i, m, "A").T                                           # A u   [T, r]
    if ad.kind == "lora":
        return y + ad.s * (z @ ad.M(i, m, "B").T), None                 # + s B (A u)
    if m in ad.repeat_add:
        y = y + ad.s * tile(z, y.shape[-1])                             # + s tile(A u)
    return y, z


def adapted_exit(ad, i, m, c, Wm, zsum):
    """An exit projection (o, down) on c [T, in] with the sub-block's sum zsum [T, r]:
    returns (y [T, out], carry [T, r] or None).
      FLoRA:  y = W c ; backward: y += s * B phi(z) ; forward+repeat_add (ffa): y += s tile(A c)
              carry: A c + C phi(z)."""
    if ad is None or ad.kind == "lora":
        return adapted_entry(ad, i, m, c, Wm)[0], None
    y = base_product(c, Wm)
    pz = ad.phi(zsum)                                                    # phi(z)
    if m in ad.backward:
        y = y + ad.s * (pz @ ad.M(i, m, "B").T)                         # + s B phi(z)
    if m in ad.forward and m in ad.repeat_add:
        y = y + ad.s * tile(c @ ad.M(i, m, "A").T, y.shape[-1])         # + s tile(A c)
    carry = None
    if m in ad.carry:
        carry = c @ ad.M(i, m, "A").T + pz @ ad.M(i, m, "C").T          # A c + C phi(z)
    return y, carry


def forward(cfg, W, tokens, adapter=None):
    """Full causal forward over the whole sequence. tokens: list of ints; adapter: an Adapter
    or None. Returns (logits float64 [T, V], cache) with cache[l] = (K [KV, T, hd] after
    RoPE, V)."""
    T, H, KV, hd = len(tokens), cfg.n_heads, cfg.n_kv, cfg.head_dim
    ad = adapter
    inv_freq, _ = rope_inv_freq(cfg)
    pos = torch.arange(T, dtype=F64)
    x = W["model.embed_tokens.weight"][torch.tensor(tokens)]      # [T, d] embedding lookup
    cache = []
    carry = None                                  # carry_in of layer 0 is 0
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        r = ad.r if ad is not None else 1
        xn = rms_norm(x, W[p + "input_layernorm.weight"], cfg.eps)      # [T, d]
        # attention entry: y_m = W_m x^ (+ adapter), z_attn = sum of z_m (+ carry_in)
        zsum = torch.zeros(T, r, dtype=F64) if carry is None else carry
        q, zq = adapted_entry(ad, i, "q_proj", xn, W[p + "self_attn.q_proj.weight"])
        k, zk = adapted_entry(ad, i, "k_proj", xn, W[p + "self_attn.k_proj.weight"])
        v, zv = adapted_entry(ad, i, "v_proj", xn, W[p + "self_attn.v_proj.weight"])
        for z in (zq, zk, zv):
            if z is not None:
                zsum = zsum + z
        q = q.view(T, H, hd).transpose(0, 1)                            # [H, T, hd]
        k = k.view(T, KV, hd).transpose(0, 1)                           # [KV, T, hd]
        v = v.view(T, KV, hd).transpose(0, 1)                           # [KV, T, hd]
        q = rope_rotate_half(q, pos, inv_freq)    # RoPE after the repeat-and-add
        k = rope_rotate_half(k, pos, inv_freq)
        cache.append((k, v))
        a = causal_gqa_attention(q, k, v, pos, pos)                     # [T, H*hd] = c
        y, carry = adapted_exit(ad, i, "o_proj", a, W[p + "self_attn.o_proj.weight"], zsum)
        x = x + y                                                       # residual
        xn = rms_norm(x, W[p + "post_attention_layernorm.weight"], cfg.eps)
        # FFN entry: z_ffn = z_gate + z_up + carry_attn
        zsum = torch.zeros(T, r, dtype=F64) if carry is None else carry
        g, zg = adapted_entry(ad, i, "gate_proj", xn, W[p + "mlp.gate_proj.weight"])  # [T, F]
        u, zu = adapted_entry(ad, i, "up_proj", xn, W[p + "mlp.up_proj.weight"])      # [T, F]
        for z in (zg, zu):
            if z is not None:
                zsum = zsum + z
        y, carry = adapted_exit(ad, i, "down_proj", silu(g) * u,
                                W[p + "mlp.down_proj.weight"], zsum)
        x = x + y                                                       # residual (SwiGLU)
        # carry (A_down h + C_down phi(z_ffn)) goes on to the next layer; dropped after the last
    x = rms_norm(x, W["model.norm.weight"], cfg.eps)
    return base_product(x, W["lm_head.weight"]), cache                  # [T, V]


def decode_step(cfg, W, cache, token, pos, adapter=None):
    """Independent one-token path with a KV cache (matrix-vector form, RoPE as explicit pair
    rotations, per-head attention over the cache). cache: list per layer of (K [KV, t, hd],
    V [KV, t, hd]) for positions 0..pos-1; it is extended in place. Returns logits [V].
    Adapters run here in the paper's FUSED form (a check on the separate-operations form of
    forward): an entry is one product with the stacked [W; A] split into y and z, an exit
    one product of [[W, s B], [A, C]] with [c; phi(z)] (the FFBL); LoRA runs W u + s B (A u)."""
    H, KV, hd, half = cfg.n_heads, cfg.n_kv, cfg.head_dim, cfg.head_dim // 2
    group = H // KV
    ad = adapter
    inv_freq, _ = rope_inv_freq(cfg)
    c, s = torch.cos(pos * inv_freq), torch.sin(pos * inv_freq)   # [hd/2] for this position

    def rotate_pairs(m):  # m [n, hd]; pair (j, j+half) rotated by angle pos * inv_freq[j]
        a, b = m[:, :half], m[:, half:]
        return torch.cat([a * c - b * s, b * c + a * s], dim=1)

    def norm(v, w):  # RMSNorm of one vector: v / sqrt(v.v / d + eps) * w
        return v / torch.sqrt(torch.dot(v, v) / v.numel() + cfg.eps) * w

    def rep(z, n):  # tile_n(z): z repeated end to end, cut to n
        return torch.cat([z] * (n // z.numel() + 1))[:n]

    def entry(i, m, Wm, u):  # -> (y, z or None)
        if ad is None or m not in ad.forward:
            return torch.mv(Wm, u), None
        A = ad.M(i, m, "A")
        if ad.kind == "lora":
            return torch.mv(Wm, u) + ad.s * torch.mv(ad.M(i, m, "B"), torch.mv(A, u)), None
        yz = torch.mv(torch.cat([Wm, A]), u)                 # FFL: [W; A] u
        y, z = yz[:Wm.shape[0]], yz[Wm.shape[0]:]
        if m in ad.repeat_add:
            y = y + ad.s * rep(z, y.numel())
        return y, z

    def exit_(i, m, Wm, cvec, z):  # -> (y, carry or None)
        if ad is None or ad.kind == "lora":
            return entry(i, m, Wm, cvec)[0], None
        out, r = Wm.shape[0], ad.r
        has_a = m in ad.forward
        B = ad.M(i, m, "B") if m in ad.backward else torch.zeros(out, r, dtype=F64)
        top = torch.cat([Wm, ad.s * B], dim=1)                   # [W, s B]
        rows = [top]
        if has_a:
            C = ad.M(i, m, "C") if m in ad.carry else torch.zeros(r, r, dtype=F64)
            rows.append(torch.cat([ad.M(i, m, "A"), C], dim=1))  # [A, C]
        yz = torch.mv(torch.cat(rows), torch.cat([cvec, ad.phi(z)]))   # FFBL on [c; phi(z)]
        y = yz[:out]
        if has_a and m in ad.repeat_add:     # ffa: repeat-and-add of A c alone
            y = y + ad.s * rep(torch.mv(ad.M(i, m, "A"), cvec), out)
        return y, (yz[out:] if m in ad.carry else None)

    r = ad.r if ad is not None else 1
    carry = torch.zeros(r, dtype=F64)
    x = W["model.embed_tokens.weight"][token].clone()                  # [d]
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        xn = norm(x, W[p + "input_layernorm.weight"])
        qv, zq = entry(i, "q_proj", W[p + "self_attn.q_proj.weight"], xn)
        kv_, zk = entry(i, "k_proj", W[p + "self_attn.k_proj.weight"], xn)
        v, zv = entry(i, "v_proj", W[p + "self_attn.v_proj.weight"], xn)
        z = carry + sum(t for t in (zq, zk, zv) if t is not None)
        q = rotate_pairs(qv.view(H, hd))
        k = rotate_pairs(kv_.view(KV, hd))
        v = v.view(KV, hd)
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
        y, cy = exit_(i, "o_proj", W[p + "self_attn.o_proj.weight"], torch.cat(heads), z)
        x = x + y
        carry = cy if cy is not None else torch.zeros(r, dtype=F64)
        xn = norm(x, W[p + "post_attention_layernorm.weight"])
        g, zg = entry(i, "gate_proj", W[p + "mlp.gate_proj.weight"], xn)
        u, zu = entry(i, "up_proj", W[p + "mlp.up_proj.weight"], xn)
        z = carry + sum(t for t in (zg, zu) if t is not None)
        y, cy = exit_(i, "down_proj", W[p + "mlp.down_proj.weight"],
                      g * torch.sigmoid(g) * u, z)
        x = x + y
        carry = cy if cy is not None else torch.zeros(r, dtype=F64)
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


def check_decode(cfg, W, tokens, prefill, full=None, adapter=None):
    """The decode path equals the full forward to 1e-10: (a) all tokens one at a time from an
    empty cache, (b) the full forward over tokens[:prefill], then decode the rest with its
    cache (what the C++ test does)."""
    if full is None:
        full = forward(cfg, W, tokens, adapter)[0]
    cache = [None] * cfg.n_layers
    stepped = torch.stack([decode_step(cfg, W, cache, t, i, adapter)
                           for i, t in enumerate(tokens)])
    d1 = (stepped - full).abs().max().item()
    pre_logits, cache = forward(cfg, W, tokens[:prefill], adapter)
    cache = list(cache)
    rest = [decode_step(cfg, W, cache, t, prefill + i, adapter)
            for i, t in enumerate(tokens[prefill:])]
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


def uniform_stream(seed, stream, n):
    """n uniforms in (0, 1] from a self-contained generator (splitmix64 of a counter), so that
    the fixtures do not depend on numpy's or torch's generator across versions."""
    mask = (1 << 64) - 1
    with np.errstate(over="ignore"):
        def splitmix(ctr):  # ctr uint64 array -> uint64 array
            z = ctr * np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            return z ^ (z >> np.uint64(31))
        key = (seed * 0x100000001B3 + stream * 0x1000193 + 1) & mask
        ctr = np.arange(n, dtype=np.uint64) + np.uint64(key)
        r = splitmix(ctr)
    return ((r >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0 ** -53   # uniform in (0, 1]


def normal_stream(seed, stream, n):
    """n standard normals: Box-Muller on 2n values of uniform_stream."""
    u = uniform_stream(seed, stream, 2 * n)
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

def write_logits(cfg, W, tokens, path, metadata, adapter=None):
    for t in tokens:
        if not 0 <= t < cfg.vocab:
            raise ValueError(f"token {t} outside [0, {cfg.vocab})")
    logits, _ = forward(cfg, W, tokens, adapter)
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
    ad = load_adapter(cfg, a.adapter) if a.adapter else None
    meta = {"command": cmd, "model": a.model}
    if a.adapter:
        meta["adapter"] = a.adapter
    logits = write_logits(cfg, W, tokens, a.out, meta, ad)
    print(f"logits: wrote {a.out} [{len(tokens)}, {cfg.vocab}]\n{logit_stats(logits)}")


def cmd_selfcheck(a):
    cfg, W = load_model(a.model)
    tokens = parse_tokens(a.tokens) if a.tokens else GOLDEN_TOKENS
    print(check_attention())
    ad = load_adapter(cfg, a.adapter) if a.adapter else None
    print(check_decode(cfg, W, tokens, min(a.prefill, len(tokens)), None, ad))


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


# --------------------------------------------------------------------------------------------
# adapter-golden: random adapters for the tiny f32 model and their golden logits.
# --------------------------------------------------------------------------------------------

ADAPTER_R = 4          # requested rank R (ffa stores 2R = 8)
ADAPTER_ALPHA = 8      # lora_alpha: s = 8 / 4 = 2 (ffa: 8 / 8 = 1)
ADAPTER_SEED = 3       # seed of uniform_stream for the adapter matrices
ADAPTER_GAIN = 1.0     # matrices uniform with std ADAPTER_GAIN / sqrt(fan_in); 1 was enough


def adapter_variants(r, alpha):
    """(directory, config): the five FLoRA presets, LoRA, and one custom variant (ffba, phi = gelu)."""
    return [
        ("lora", lora_config(r, alpha)),
        ("ffa", flora_config("ffa", r, alpha)),
        ("ffba", flora_config("ffba", r, alpha)),
        ("ffba-aorb", flora_config("ffba-aorb", r, alpha)),
        ("ffba-qg", flora_config("ffba-qg", r, alpha)),
        ("ffba-relu", flora_config("ffba-relu", r, alpha)),
        ("ffba-gelu", flora_config("custom", r, alpha, phi="gelu", preset="ffba")),
    ]


ADAPTER_VARIANTS = adapter_variants(ADAPTER_R, ADAPTER_ALPHA)


def random_adapter_tensors(cfg, conf, seed, gain=ADAPTER_GAIN):
    """The matrices an adapter_config needs, in file order (per layer; per module in MODULES
    order; A, B, C), each uniform on [-a, a] with a = gain * sqrt(3 / fan_in) (std
    gain / sqrt(fan_in), fan_in = number of columns). The stream of each matrix depends only
    on (layer, module, A|B|C), so variants that share a matrix name share its values (up to
    the rank): ffba, ffba-qg, ffba-relu and ffba-gelu differ only in their config."""
    lora = conf["peft_type"] == "LORA"
    r, fwd = conf["r"], set(conf["target_modules"])
    bwd = fwd if lora else set(conf["backward_modules"])
    car = set() if lora else set(conf["carry_modules"])
    out = []
    for i in range(cfg.n_layers):
        for mi, m in enumerate(MODULES):
            o, inn = module_shape(cfg, m)
            for ci, (mat, has, shape) in enumerate([("A", m in fwd, (r, inn)),
                                                    ("B", m in bwd, (o, r)),
                                                    ("C", m in car, (r, r))]):
                if not has:
                    continue
                u = uniform_stream(seed, 1000 + 100 * i + 10 * mi + ci, math.prod(shape))
                w = (2.0 * u - 1.0) * gain * math.sqrt(3.0 / shape[1])
                out.append((adapter_tensor_name(i, m, mat, "lora" if lora else "flora"),
                            "F32", w.reshape(shape).astype(np.float32)))
    return out


def with_changes(ad, zero=(), repeat_add=None, carry=None):
    """A copy of an Adapter with the matrices of the kinds in `zero` set to 0 and, when given,
    other repeat_add / carry sets (for the self-checks)."""
    new = Adapter.__new__(Adapter)
    new.__dict__.update(ad.__dict__)
    new.mats = {k: (torch.zeros_like(v) if k[2] in zero else v) for k, v in ad.mats.items()}
    if repeat_add is not None:
        new.repeat_add = set(repeat_add)
    if carry is not None:
        new.carry = set(carry)
    return new


def cmd_adapter_golden(a):
    model = os.path.join(ROOT, "tests", "fixtures", "tiny_llama", "f32")
    out = a.out or os.path.join(ROOT, "tests", "fixtures", "tiny_llama", "adapters")
    command = ("/usr/bin/python3 tools/torch_twin.py adapter-golden"
               + (f" --out {a.out}" if a.out else ""))
    cfg, W = load_model(model)
    base = forward(cfg, W, GOLDEN_TOKENS)[0]
    # The base golden file must be what this twin computes (same tokens, same model).
    g, _, _ = read_safetensors(os.path.join(model, "golden.safetensors"))
    assert g["tokens"].tolist() == GOLDEN_TOKENS
    assert np.array_equal(g["logits"], base.numpy().astype(np.float32)), "base golden stale"
    print(check_attention())
    results = {}
    for name, conf in ADAPTER_VARIANTS:
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "adapter_config.json.tmp"), "w") as f:
            json.dump(conf, f, indent=2)
            f.write("\n")
        os.replace(os.path.join(d, "adapter_config.json.tmp"),
                   os.path.join(d, "adapter_config.json"))
        tensors = random_adapter_tensors(cfg, conf, ADAPTER_SEED)
        assert all(np.all(t != 0) for _, _, t in tensors), "a zero entry in a random matrix"
        write_safetensors(os.path.join(d, "adapter_model.safetensors"), tensors,
                          {"format": "pt", "producer": "/usr/bin/python3 tools/torch_twin.py "
                           f"adapter-golden (seed {ADAPTER_SEED}, gain {ADAPTER_GAIN})"})
        ad = load_adapter(cfg, d)            # read back through the loader: what a user loads
        assert len(ad.mats) == len(tensors)
        logits = forward(cfg, W, GOLDEN_TOKENS, ad)[0]
        assert torch.isfinite(logits).all(), f"{name}: non-finite logits"
        print(f"{name}: {check_decode(cfg, W, GOLDEN_TOKENS, GOLDEN_PREFILL, logits, ad)}")
        delta = (logits - base).abs()
        results[name] = logits
        meta = {
            "command": command,
            "model": "tests/fixtures/tiny_llama/f32",
            "adapter": os.path.relpath(d, ROOT),
            "prefill": str(GOLDEN_PREFILL),
            "decode": str(len(GOLDEN_TOKENS) - GOLDEN_PREFILL),
            "compute": "float64 (weights and adapter widened from F32), logits rounded to F32",
            "max_abs_change_vs_base": f"{delta.max().item():.4f}",
        }
        path = os.path.join(d, "golden.safetensors")
        write_safetensors(path, [("tokens", "I64", np.array(GOLDEN_TOKENS, dtype=np.int64)),
                                 ("logits", "F32", logits.numpy().astype(np.float32))], meta)
        t, m, order = read_safetensors(path)
        assert order == ["tokens", "logits"] and t["tokens"].tolist() == GOLDEN_TOKENS
        assert np.array_equal(t["logits"], logits.numpy().astype(np.float32)) and m == meta
        print(f"  s = {ad.s:g}, r = {ad.r}, {sum(v.numel() for v in ad.mats.values())} "
              f"adapter parameters; |logits - base|: max {delta.max().item():.3f}, mean "
              f"{delta.mean().item():.3f}, max over the 4 decoded rows "
              f"{delta[GOLDEN_PREFILL:].max().item():.3f}; max|logit| "
              f"{logits.abs().max().item():.2f}")

        if name == "lora":
            # LoRA == merging W' = W + s B A into the base weights and running the base forward.
            Wm = dict(W)
            for (i, mod, mat), A in ad.mats.items():
                if mat == "A":
                    key = f"model.layers.{i}.{PARENT[mod]}.{mod}.weight"
                    Wm[key] = W[key] + ad.s * ad.M(i, mod, "B") @ A
            dm = (forward(cfg, Wm, GOLDEN_TOKENS)[0] - logits).abs().max().item()
            assert dm < 1e-10, f"lora vs merged weights: max diff {dm}"
            print(f"  lora == base forward with W + s B A merged (max diff {dm:.1e})")
        if name == "ffba":
            # B = C = 0 and no repeat-and-add: the adapter is invisible.
            z = with_changes(ad, zero="BC", repeat_add=[])
            dz = (forward(cfg, W, GOLDEN_TOKENS, z)[0] - base).abs().max().item()
            assert dz < 1e-12, f"ffba with B = C = 0, no repeat_add vs base: max diff {dz}"
            check_decode(cfg, W, GOLDEN_TOKENS, GOLDEN_PREFILL, None, z)
            # init "zero" (A = B = C = 0, repeat_add kept): the base model at step 0.
            z0 = with_changes(ad, zero="ABC")
            d0 = (forward(cfg, W, GOLDEN_TOKENS, z0)[0] - base).abs().max().item()
            assert d0 < 1e-12, f"ffba with A = B = C = 0 vs base: max diff {d0}"
            print(f"  ffba with B = C = 0 and no repeat_add == base (max diff {dz:.1e}); "
                  f"with A = B = C = 0 == base (max diff {d0:.1e})")
            # How much the carry matters (a C++ bug that drops it must fail the test).
            dc = (forward(cfg, W, GOLDEN_TOKENS, with_changes(ad, carry=[]))[0]
                  - logits).abs().max().item()
            dl = (forward(cfg, W, GOLDEN_TOKENS, with_changes(ad, zero="C"))[0]
                  - logits).abs().max().item()
            print(f"  sensitivity: carry dropped moves the logits by {dc:.3f}, C = 0 by {dl:.3f}")
    print("differences between variants that share matrices (max |logits_a - logits_b|):")
    for x, y in [("ffba", "ffba-qg"), ("ffba", "ffba-relu"), ("ffba", "ffba-gelu"),
                 ("ffba-relu", "ffba-gelu"), ("ffba", "ffba-aorb")]:
        print(f"  {x} vs {y}: {(results[x] - results[y]).abs().max().item():.3f}")


# --------------------------------------------------------------------------------------------
# train-golden: loss, gradients and short optimiser runs for testing flora's backward pass and
# optimisers. One case per adapter fixture (its matrices trainable, the model frozen) plus
# "full" (every model tensor trainable, no adapter).
# --------------------------------------------------------------------------------------------

# The batch: 2 sequences of 16 tokens, each bos 379 then 15 ids drawn once with
# numpy.random.default_rng(2025).integers(0, 384, (2, 15)) and frozen here (no numpy at run time).
TRAIN_TOKENS = [
    [379, 171, 381, 381, 146, 366, 317, 245, 321, 294, 374, 148, 29, 174, 121, 187],
    [379, 353, 370, 259, 244, 109, 5, 149, 174, 88, 305, 64, 184, 58, 133, 374],
]
# labels = tokens with -100 at these positions: a 5-token "prompt" in sequence 0, a 3-token
# prompt in sequence 1 and 2 positions of padding at its end.
TRAIN_IGNORED = [[0, 1, 2, 3, 4], [0, 1, 2, 14, 15]]
IGNORE_INDEX = -100
TRAIN_STEPS = 5
TRAIN_ADAMW = {"lr_adapter": 1e-2, "lr_full": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
               "weight_decay": 0.1}
TRAIN_SGD = {"lr": 0.05, "momentum": 0.0, "weight_decay": 0.0, "clip_max_norm": 0.5}
CLIP_EPS = 1e-6        # clip_grad_norm_: coef = max_norm / (total_norm + 1e-6), applied if < 1
FD_STEP = 1e-5         # central finite differences: (L(p + h) - L(p - h)) / 2h
FD_RANDOM = 3          # random elements per tensor (plus its element of largest |grad|)
FD_SEED = 11


def train_labels(tokens):
    labels = [list(t) for t in tokens]
    for b, ignored in enumerate(TRAIN_IGNORED):
        for t in ignored:
            labels[b][t] = IGNORE_INDEX
    return labels


def batch_loss(cfg, W, tokens, labels, ad=None):
    """Hugging Face LlamaForCausalLM's loss: logits[:, :-1] against labels[:, 1:], cross-entropy
    (logsumexp(logits) - logits[label]) summed over every position whose label is not -100 in
    the whole batch, divided by their number (one mean over the batch, not per sequence). Each
    sequence is its own causal context starting at position 0 (one forward per sequence)."""
    total, count = 0.0, 0
    for toks, labs in zip(tokens, labels):
        logits = forward(cfg, W, toks, ad)[0][:-1]                      # [T-1, V]
        target = torch.tensor(labs[1:])
        keep = target != IGNORE_INDEX
        lg, tg = logits[keep], target[keep]
        nll = torch.logsumexp(lg, dim=-1) - lg.gather(1, tg[:, None])[:, 0]
        total = total + nll.sum()
        count += int(keep.sum())
    return total / count


def train_case(cfg, W0, ad0, dtype=F64, tokens=None, labels=None):
    """Fresh trainable copies of a case's parameters (in `dtype`): returns (names, params,
    decay flags, loss_fn). Adapter case (ad0 an Adapter): its matrices, named as in
    adapter_model.safetensors, all decayed. Full case (ad0 None): every model tensor named as
    in model.safetensors (the embedding once: with tied embeddings lm_head.weight IS that
    tensor, so its gradient is the sum of both uses); 2-D tensors decayed, norms not."""
    if tokens is None:
        tokens, labels = TRAIN_TOKENS, train_labels(TRAIN_TOKENS)
    if ad0 is None:
        names = [n for n, _ in expected_tensors(cfg)]
        params = [W0[n].to(dtype).clone().requires_grad_(True) for n in names]
        W = dict(zip(names, params))
        if cfg.tie:
            W["lm_head.weight"] = W["model.embed_tokens.weight"]
        decay = [p.dim() == 2 for p in params]
        return names, params, decay, lambda: batch_loss(cfg, W, tokens, labels)
    tag = "lora" if ad0.kind == "lora" else "flora"
    keys = sorted(ad0.mats, key=lambda k: (k[0], MODULES.index(k[1]), k[2]))   # file order
    names = [adapter_tensor_name(i, m, mat, tag) for i, m, mat in keys]
    ad = with_changes(ad0)
    ad.mats = {k: ad0.mats[k].to(dtype).clone().requires_grad_(True) for k in keys}
    params = [ad.mats[k] for k in keys]
    Wd = {n: w.to(dtype) for n, w in W0.items()}
    if cfg.tie:
        Wd["lm_head.weight"] = Wd["model.embed_tokens.weight"]
    return names, params, [True] * len(params), lambda: batch_loss(cfg, Wd, tokens, labels, ad)


class FormulaAdamW:
    """AdamW written from its formulas (the cross-check of torch.optim.AdamW), per element:
      p <- p * (1 - lr * wd)                                   (decoupled decay, decayed only)
      m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2       (m = v = 0 before step 1)
      p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)."""

    def __init__(self, params, decay, lr, betas, eps, weight_decay):
        self.params, self.decay, self.lr, self.eps, self.wd = params, decay, lr, eps, weight_decay
        self.b1, self.b2 = betas
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        for p, dec, m, v in zip(self.params, self.decay, self.m, self.v):
            g = p.grad
            if dec:
                p.mul_(1 - self.lr * self.wd)
            m.mul_(self.b1).add_((1 - self.b1) * g)
            v.mul_(self.b2).add_((1 - self.b2) * g * g)
            mhat, vhat = m / (1 - self.b1 ** self.t), v / (1 - self.b2 ** self.t)
            p.sub_(self.lr * mhat / (vhat.sqrt() + self.eps))


class FormulaSGD:
    """p <- p - lr * g (the cross-check of torch.optim.SGD without momentum or decay)."""

    def __init__(self, params, lr):
        self.params, self.lr = params, lr

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p in self.params:
            p.sub_(self.lr * p.grad)


def formula_clip(params, max_norm):
    """Global-norm clipping from its formula: total = sqrt(sum of every g^2), and when
    coef = max_norm / (total + 1e-6) < 1 every gradient is multiplied by coef. Returns total."""
    total = math.sqrt(sum(float((p.grad * p.grad).sum()) for p in params))
    coef = max_norm / (total + CLIP_EPS)
    if coef < 1:
        for p in params:
            p.grad.mul_(coef)
    return total


def torch_clip(params, max_norm):
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


def train_run(params, loss_fn, opt, steps, clip=None):
    """`steps` optimiser steps on the same batch: returns (losses [steps + 1]: the loss before
    each step and after the last, total gradient norms before clipping [steps], or [] when
    clip is None). clip: None or (clip function, max_norm)."""
    losses, norms = [], []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        for p in params:       # a tensor that does not reach the loss has gradient 0 (not
            if p.grad is None:  # None, which torch.optim would skip, weight decay included)
                p.grad = torch.zeros_like(p)
        losses.append(loss.item())
        if clip is not None:
            norms.append(clip[0](params, clip[1]))
        opt.step()
    with torch.no_grad():
        losses.append(loss_fn().item())
    return losses, norms


def adamw_run(cfg, W0, ad0, formula=False, dtype=F64, decay_rule=None):
    names, params, decay, loss_fn = train_case(cfg, W0, ad0, dtype)
    if decay_rule is not None:                      # for the sensitivity report only
        decay = [decay_rule(n, p) for n, p in zip(names, params)]
    lr = TRAIN_ADAMW["lr_full" if ad0 is None else "lr_adapter"]
    hp = {k: TRAIN_ADAMW[k] for k in ("betas", "eps", "weight_decay")}
    if formula:
        opt = FormulaAdamW(params, decay, lr, **hp)
    else:
        groups = [{"params": [p for p, d in zip(params, decay) if d]},
                  {"params": [p for p, d in zip(params, decay) if not d], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        opt = torch.optim.AdamW(groups, lr=lr, foreach=False, **hp)
    return train_run(params, loss_fn, opt, TRAIN_STEPS)[0]


def sgd_run(cfg, W0, ad0, formula=False, dtype=F64, clip=True):
    _, params, _, loss_fn = train_case(cfg, W0, ad0, dtype)
    h = TRAIN_SGD
    if formula:
        opt, cl = FormulaSGD(params, h["lr"]), formula_clip
    else:
        opt = torch.optim.SGD(params, lr=h["lr"], momentum=h["momentum"],
                              weight_decay=h["weight_decay"], foreach=False)
        cl = torch_clip
    return train_run(params, loss_fn, opt, TRAIN_STEPS,
                     (cl, h["clip_max_norm"]) if clip else None)


def check_finite_differences(names, params, loss_fn, grads, seed=FD_SEED):
    """Autograd gradients against central differences (L(p + h) - L(p - h)) / 2h on FD_RANDOM
    random elements of every trainable tensor and on its element of largest |grad|. Returns
    (worst relative error, the same over the elements with |g| >= 1e-3 max|g| of all tensors,
    worst absolute error, number of elements checked); the relative error is
    |g - fd| / max(|g|, |fd|). At h = 1e-5 the truncation error (h^2/6 L''') and the rounding
    error (~1e-15 L / h) are both ~1e-9..1e-8, so tiny gradients show larger relative errors."""
    gen = torch.Generator().manual_seed(seed)
    big = 1e-3 * max(float(g.abs().max()) for g in grads)
    worst_rel, worst_big, worst_abs, n = 0.0, 0.0, 0.0, 0
    with torch.no_grad():
        for name, p, g in zip(names, params, grads):
            flat_p, flat_g = p.view(-1), g.reshape(-1)
            idx = torch.randint(0, p.numel(), (FD_RANDOM,), generator=gen).tolist()
            idx.append(int(flat_g.abs().argmax()))
            for j in idx:
                old = flat_p[j].item()
                flat_p[j] = old + FD_STEP
                up = loss_fn().item()
                flat_p[j] = old - FD_STEP
                down = loss_fn().item()
                flat_p[j] = old
                fd, ag = (up - down) / (2 * FD_STEP), flat_g[j].item()
                err = abs(fd - ag)
                rel = err / max(abs(fd), abs(ag), 1e-300)
                assert rel < 1e-4 or err < 1e-9, (f"{name}[{j}]: autograd {ag:.10g} vs finite "
                                                  f"differences {fd:.10g}")
                worst_rel, worst_abs, n = max(worst_rel, rel), max(worst_abs, err), n + 1
                if abs(ag) >= big:
                    worst_big = max(worst_big, rel)
    return worst_rel, worst_big, worst_abs, n


def rel_diff(a, b):
    """max |a - b| / max |b| over the elements of two lists."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def case_tensors(tokens, labels, loss, names, grads):
    """The tensors every training golden file starts with: the batch, the F64 loss, F32 gradients."""
    return ([("tokens", "I64", np.array(tokens, dtype=np.int64)),
             ("labels", "I64", np.array(labels, dtype=np.int64)),
             ("loss", "F64", np.array([loss.item()]))]
            + [("grad." + n, "F32", g.numpy().astype(np.float32)) for n, g in zip(names, grads)])


def checked_gradients(cfg, case, names, params, loss_fn, ad0):
    """The loss and its float64 autograd gradients (zeros where a tensor cannot reach the loss),
    with the self-checks every golden case makes: exactly the expected tensors are unused, no
    used gradient is all zero, and autograd agrees with central differences.
    Returns (loss, grads, the names of the unused tensors, (fd_rel, fd_big, fd_abs, fd_n))."""
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    # The last layer's carry is dropped, so where down_proj's A feeds only the carry (no
    # repeat-and-add on down_proj), the last layer's down_proj A and C do not reach the
    # loss: their gradient is exactly 0. Every other gradient is non-zero.
    unused = set()
    if ad0 is not None and "down_proj" in ad0.carry:
        last = cfg.n_layers - 1
        unused = {adapter_tensor_name(last, "down_proj", "C", "flora")}
        if "down_proj" not in ad0.repeat_add:
            unused.add(adapter_tensor_name(last, "down_proj", "A", "flora"))
    assert {n for n, g in zip(names, grads) if g is None} == unused, f"{case}: unused"
    assert all(bool((g != 0).any()) for g in grads if g is not None), f"{case}: zero grad"
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    used = [i for i, n in enumerate(names) if n not in unused]
    fd = check_finite_differences(
        [names[i] for i in used], [params[i] for i in used], loss_fn, [grads[i] for i in used])
    return loss, grads, unused, fd


def train_cases(root):
    """[(case, adapter directory or None)]: every adapter fixture, then "full"."""
    adir = os.path.join(root, "tests", "fixtures", "tiny_llama", "adapters")
    cases = [(n, os.path.join(adir, n)) for n, _ in ADAPTER_VARIANTS]
    return cases + [("full", None)]


def cmd_train_golden(a):
    model = os.path.join(ROOT, "tests", "fixtures", "tiny_llama", "f32")
    out = a.out or os.path.join(ROOT, "tests", "fixtures", "tiny_llama", "train")
    command = ("/usr/bin/python3 tools/torch_twin.py train-golden"
               + (f" --out {a.out}" if a.out else ""))
    tokens, labels = TRAIN_TOKENS, train_labels(TRAIN_TOKENS)
    assert len(tokens) == 2 and all(len(t) == 16 and t[0] == 379 for t in tokens)
    cfg, W0 = load_model(model)
    assert all(0 <= t < cfg.vocab for s in tokens for t in s)
    # The inputs must be what this twin computes: the base and the adapter golden logits.
    g, _, _ = read_safetensors(os.path.join(model, "golden.safetensors"))
    assert np.array_equal(g["logits"], forward(cfg, W0, GOLDEN_TOKENS)[0].numpy()
                          .astype(np.float32)), "tiny_llama/f32 golden logits stale"
    count = sum(l != IGNORE_INDEX for s in labels for l in s[1:])
    print(f"train-golden: batch [2, 16], {count} targets "
          f"({[sum(l != IGNORE_INDEX for l in s[1:]) for s in labels]} per sequence)")
    summary = []
    for case, adir in train_cases(ROOT):
        ad0 = None
        if adir is not None:
            ad0 = load_adapter(cfg, adir)
            g, _, _ = read_safetensors(os.path.join(adir, "golden.safetensors"))
            assert np.array_equal(g["logits"], forward(cfg, W0, GOLDEN_TOKENS, ad0)[0].numpy()
                                  .astype(np.float32)), f"{case}: adapter golden logits stale"
        names, params, decay, loss_fn = train_case(cfg, W0, ad0)
        if adir is not None:       # the trainable tensors are exactly the adapter file's
            assert names == read_safetensors(os.path.join(adir, "adapter_model.safetensors"))[2]
        loss, grads, unused, (fd_rel, fd_big, fd_abs, fd_n) = checked_gradients(cfg, case, names, params, loss_fn,
                                                                                 ad0)
        # The optimiser runs: torch.optim (stored) and the formulas (cross-check).
        adamw = adamw_run(cfg, W0, ad0)
        sgd, norms = sgd_run(cfg, W0, ad0)
        adamw_f = adamw_run(cfg, W0, ad0, formula=True)
        sgd_f, norms_f = sgd_run(cfg, W0, ad0, formula=True)
        d_opt = max(rel_diff(adamw_f, adamw), rel_diff(sgd_f, sgd), rel_diff(norms_f, norms))
        assert d_opt < 1e-12, f"{case}: torch.optim vs the formulas: {d_opt}"
        assert adamw[0] == sgd[0] == loss.item() and norms[0] > TRAIN_SGD["clip_max_norm"]
        assert adamw[-1] < adamw[0] and sgd[-1] < sgd[0], f"{case}: the loss did not go down"

        lr = TRAIN_ADAMW["lr_full" if ad0 is None else "lr_adapter"]
        meta = {
            "command": command,
            "case": case,
            "model": "tests/fixtures/tiny_llama/f32",
            "adapter": os.path.relpath(adir, ROOT) if adir else "none (full fine-tuning)",
            "trainable": ("the adapter matrices (grad.<name>: names of adapter_model.safetensors)"
                          if adir else "every model tensor (grad.<name>: names of "
                          "model.safetensors; the tied embedding's grad sums both uses)"),
            "loss": ("HF LlamaForCausalLM: logits[:, :-1] vs labels[:, 1:], cross-entropy "
                     "averaged over all non -100 targets of the batch; each sequence its own "
                     "causal context from position 0; adapter dropout 0"),
            "compute": "float64 parameters, activations and optimiser state; grads stored F32",
            "steps": str(TRAIN_STEPS),
            "adamw": (f"torch.optim.AdamW lr {lr:g} betas {TRAIN_ADAMW['betas'][0]:g},"
                      f"{TRAIN_ADAMW['betas'][1]:g} eps {TRAIN_ADAMW['eps']:g} weight_decay "
                      f"{TRAIN_ADAMW['weight_decay']:g} (decoupled), constant lr, no clipping"),
            "adamw_decay_rule": ("every adapter matrix" if adir else
                                 "2-D tensors (projections, embedding); not the 1-D norm weights"),
            "sgd": (f"torch.optim.SGD lr {TRAIN_SGD['lr']:g} momentum 0 weight_decay 0, after "
                    f"clip_grad_norm_ max_norm {TRAIN_SGD['clip_max_norm']:g}"),
            "clip": (f"total = global L2 norm of all grads (grad_norms); coef = "
                     f"{TRAIN_SGD['clip_max_norm']:g} / (total + 1e-6), grads *= coef if < 1"),
            "losses": "adamw_losses / sgd_losses: loss before each step and after the last",
            # the same numbers, one per key (exact Python reprs, for a test to parse)
            "adamw_lr": repr(lr),
            "adamw_beta1": repr(TRAIN_ADAMW["betas"][0]),
            "adamw_beta2": repr(TRAIN_ADAMW["betas"][1]),
            "adamw_eps": repr(TRAIN_ADAMW["eps"]),
            "adamw_weight_decay": repr(TRAIN_ADAMW["weight_decay"]),
            "adamw_decay": "all" if adir else "2d",
            "sgd_lr": repr(TRAIN_SGD["lr"]),
            "sgd_clip_max_norm": repr(TRAIN_SGD["clip_max_norm"]),
            "selfcheck": (f"autograd vs central differences (h {FD_STEP:g}) on {fd_n} elements: "
                          f"max rel err {fd_rel:.1e} ({fd_big:.1e} where |grad| >= 1e-3 "
                          f"max|grad|); torch.optim vs formulas: max rel diff {d_opt:.1e}"),
        }
        tensors = case_tensors(tokens, labels, loss, names, grads)
        tensors += [("adamw_losses", "F64", np.array(adamw)),
                    ("sgd_losses", "F64", np.array(sgd)),
                    ("grad_norms", "F64", np.array(norms))]
        d = os.path.join(out, case)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "golden.safetensors")
        write_safetensors(path, tensors, meta)
        t, m, order = read_safetensors(path)    # read back: the file round-trips
        assert order == [n for n, _, _ in tensors] and m == meta
        assert all(np.array_equal(t[n], np.asarray(v).astype(t[n].dtype)) for n, _, v in tensors)

        # Diagnostics (printed, not stored): the same math in float32, for test tolerances.
        global F64
        saved, F64 = F64, torch.float32       # forward() and rope_inv_freq() build in F64
        try:
            n32, p32, _, lf32 = train_case(cfg, W0, ad0, torch.float32)
            l32 = lf32()
            g32 = [torch.zeros_like(p) if g is None else g
                   for p, g in zip(p32, torch.autograd.grad(l32, p32, allow_unused=True))]
            adamw32 = adamw_run(cfg, W0, ad0, dtype=torch.float32)
            sgd32, norms32 = sgd_run(cfg, W0, ad0, dtype=torch.float32)
        finally:
            F64 = saved
        g_rel = max(float((a.double() - b).abs().max() / b.abs().max())
                    for a, b in zip(g32, grads) if bool((b != 0).any()))
        gmax = max(float(gr.abs().max()) for gr in grads)
        g_absmax = max(float((a.double() - b).abs().max()) for a, b in zip(g32, grads))
        print(f"{case}: {len(names)} tensors, {sum(p.numel() for p in params)} parameters; "
              f"loss {loss.item():.6f}; max|grad| {gmax:.4g}; grad norm {norms[0]:.4g}")
        print(f"  finite differences: {fd_n} elements, max rel err {fd_rel:.1e}, "
              f"{fd_big:.1e} where |grad| >= 1e-3 max|grad|, max abs err {fd_abs:.1e}; "
              f"torch.optim == formulas (max rel diff {d_opt:.1e})")
        if unused:
            print(f"  gradient exactly 0 (only feed the dropped last carry): {sorted(unused)}")
        print(f"  adamw_losses {' '.join(f'{x:.6f}' for x in adamw)}")
        print(f"  sgd_losses   {' '.join(f'{x:.6f}' for x in sgd)}")
        print(f"  grad_norms   {' '.join(f'{x:.6f}' for x in norms)}")
        print(f"  float32 twin: |loss diff| {abs(l32.item() - loss.item()):.1e}, grads max abs "
              f"diff {g_absmax:.1e} (max per-tensor diff / max|grad| {g_rel:.1e})\n"
              f"    |adamw_losses diff| per entry "
              f"{' '.join(f'{x:.1e}' for x in np.abs(np.array(adamw32) - adamw))}\n"
              f"    |sgd_losses diff| {np.abs(np.array(sgd32) - sgd).max():.1e}, "
              f"|grad_norms diff| {np.abs(np.array(norms32) - norms).max():.1e}")
        if ad0 is None:
            # Sensitivity: the bugs the full case must catch.
            emb = "model.embed_tokens.weight"
            both = grads[names.index(emb)]
            W1 = dict(W0)
            W1["lm_head.weight"] = W0[emb].clone()          # the head's use held constant
            pe = W0[emb].clone().requires_grad_(True)
            W1[emb] = pe
            ge = torch.autograd.grad(batch_loss(cfg, W1, tokens, labels), pe)[0]
            wrong = adamw_run(cfg, W0, None, decay_rule=lambda n, p: True)
            noclip = sgd_run(cfg, W0, None, clip=False)[0]
            print(f"  sensitivity: embedding grad with only the lookup use: max diff "
                  f"{float((both - ge).abs().max()):.3g}, only the LM head use: "
                  f"{float(ge.abs().max()):.3g}; adamw decay on the norms too: adamw_losses "
                  f"move {np.abs(np.array(wrong) - adamw).max():.2e}; no clipping: sgd_losses "
                  f"move {np.abs(np.array(noclip) - sgd).max():.3g}")
        summary.append((case, loss.item(), gmax, fd_rel, fd_big, fd_abs, os.path.getsize(path)))
    print("case        loss       max|grad|   fd rel err (all / |g| >= 1e-3 max)  abs err   bytes")
    for case, l, gm, fr, fb, fa, size in summary:
        print(f"{case:10s}  {l:.6f}   {gm:.4e}   {fr:.1e} / {fb:.1e}                 "
              f"{fa:.1e}   {size}")


# --------------------------------------------------------------------------------------------
# blocks-golden: a second tiny model whose shapes cross every block, chunk and tile boundary of
# flora's training pass and matrix kernel (tests/fixtures/tiny_llama/blocks): forward logits,
# losses and gradients for every adapter variant and full fine-tuning, on its F32 weights and on
# the same weights rounded to BF16.
# --------------------------------------------------------------------------------------------

# The boundaries this set must cross (each at least twice), from the C++ sources:
#   src/ops/backward.cpp   kCausalBlock 32 (attention rows, over T), kTransposeTile 32
#   src/model/train_pass.cpp  kHeadRows 64 (LM-head rows, over the rows with a target),
#                          kRowChunk 64 (output rows of a product: V, F, ... ), 64-wide column
#                          blocks of the transposes
#   src/ops/kernels.cpp    kTileTokens 64 (over N = B T and the "tokens" of weight gradients),
#                          register blocks 4 rows x 4 (AVX-512) or 2 (AVX2) tokens, SIMD lanes
#                          16 / 8 (widths that are not multiples of them take the scalar tail)
#   src/model/forward.cpp  kQueryBlock 16 (inference attention)
BLOCKS_B, BLOCKS_T = 2, 71
BLOCKS_R, BLOCKS_ALPHA = 3, 6            # s = 2 (ffa stores r = 6: s = 1)
BLOCKS_IGNORED = [list(range(6)), [0, 1, 70]]   # label -100 positions of each sequence
BLOCKS_MODEL_SEED, BLOCKS_ADAPTER_SEED, BLOCKS_TOKEN_SEED = 5, 7, 2026
# Adapter matrices with std 0.7 / sqrt(fan_in): at gain 1 the rank-3 LoRA (B's fan_in is 3)
# amplifies float32 rounding to 1.5e-4 in the logits (past the C++ tests' 1e-4); at 0.7 the
# float32 twin stays within 3.5e-5 for every variant and the adapters still move the logits by
# about 10.
BLOCKS_ADAPTER_GAIN = 0.7
BLOCKS_BF16_CASES = ["lora", "ffa", "ffba", "full"]   # training cases also run on the BF16 base
BLOCKS_VARIANTS = adapter_variants(BLOCKS_R, BLOCKS_ALPHA)


def blocks_config(dtype):
    """hidden 40 (= 4 heads x head_dim 10; 2 KV heads), intermediate 140, vocab 150, 2 layers.
    Neither 40, 140 nor the KV width 20 is a multiple of the ranks 3 and 6; 40, 140, 150 and 10
    are not multiples of 16 (150 and 10 not of 8 either). llama3 RoPE with original 128: at
    head_dim 10 the wavelengths are 6.3, 86.8, 1196, ...: kept, smoothed, divided."""
    j = tiny_config(dtype)
    j.update({"hidden_size": 40, "intermediate_size": 140, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 10,
              "vocab_size": 150, "max_position_embeddings": 256,
              "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 128, "rope_type": "llama3"},
              "bos_token_id": 148, "eos_token_id": 149})
    return j


def blocks_tokens(cfg):
    """B sequences of T tokens: bos, then ids uniform in [0, V) from uniform_stream."""
    out = []
    for b in range(BLOCKS_B):
        u = uniform_stream(BLOCKS_TOKEN_SEED, b, BLOCKS_T - 1)
        ids = np.minimum(np.floor(u * cfg.vocab), cfg.vocab - 1).astype(np.int64).tolist()
        out.append([cfg.raw["bos_token_id"]] + ids)
    return out


def blocks_labels(tokens):
    labels = [list(t) for t in tokens]
    for b, ignored in enumerate(BLOCKS_IGNORED):
        for t in ignored:
            labels[b][t] = IGNORE_INDEX
    return labels


def write_random_model(out, cfg_json, dtype, seed, producer):
    """make_tiny's weights (the same generator and scales) for any config."""
    cfg = Config(cfg_json)
    os.makedirs(out, exist_ok=True)
    tensors = []
    for idx, (name, shape) in enumerate(expected_tensors(cfg)):
        z = normal_stream(seed, idx, math.prod(shape)).reshape(shape)
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            w = 1.0 + 0.1 * z
        elif name == "model.embed_tokens.weight":
            w = EMBED_STD * z
        else:
            w = z / math.sqrt(shape[1])
        tensors.append((name, {"f32": "F32", "bf16": "BF16"}[dtype], w.astype(np.float32)))
    with open(os.path.join(out, "config.json.tmp"), "w") as f:
        json.dump(cfg_json, f, indent=2)
        f.write("\n")
    os.replace(os.path.join(out, "config.json.tmp"), os.path.join(out, "config.json"))
    write_safetensors(os.path.join(out, "model.safetensors"), tensors,
                      {"format": "pt", "producer": producer})


def to_f32_twin(cfg, W0, ad0):
    """The same weights and adapter as float32 tensors (for the float32 diagnostics)."""
    W = {n: w.float() for n, w in W0.items()}
    if cfg.tie:
        W["lm_head.weight"] = W["model.embed_tokens.weight"]
    ad = None
    if ad0 is not None:
        ad = with_changes(ad0)
        ad.mats = {k: v.float() for k, v in ad0.mats.items()}
    return W, ad


def f32_diagnostics(fn):
    """Runs fn() with the twin's F64 switched to float32 (as train-golden's diagnostics)."""
    global F64
    saved, F64 = F64, torch.float32
    try:
        return fn()
    finally:
        F64 = saved


def grad_ratio(got, want, atol=5e-5, rtol=1e-4):
    """The C++ test's measure: max |got - want| / (atol max|want| + rtol |want|)."""
    want, got = want.double(), got.double()
    den = atol * float(want.abs().max()) + rtol * want.abs()
    err = (got - want).abs()
    return float(torch.where(err == 0, torch.zeros_like(err), err / den).max())


def cmd_bf16_products_golden(a):
    """tiny_llama/blocks/bf16/golden_bf16_products.safetensors: the logits of the blocks
    model's BF16 weights with every base product's input rounded to bf16, as flora's
    --products bf16 computes them (the rest in float64)."""
    global ROUND_BASE_PRODUCT_INPUTS
    folder = a.model or os.path.join(ROOT, "tests", "fixtures", "tiny_llama", "blocks", "bf16")
    cfg, W = load_model(folder)
    tokens = blocks_tokens(cfg)
    plain = torch.stack([forward(cfg, W, t)[0] for t in tokens])
    ROUND_BASE_PRODUCT_INPUTS = True
    rounded = torch.stack([forward(cfg, W, t)[0] for t in tokens])           # [B, T, V]
    ROUND_BASE_PRODUCT_INPUTS = False
    path = os.path.join(folder, "golden_bf16_products.safetensors")
    meta = {"command": "/usr/bin/python3 tools/torch_twin.py bf16-products-golden"
            + (f" --model {a.model}" if a.model else ""),
            "products": "bf16 inputs of the base products, float64 otherwise"}
    tensors = [("tokens", "I64", np.array(tokens, dtype=np.int64)),
               ("logits", "F32", rounded.numpy().astype(np.float32))]
    write_safetensors(path, tensors, meta)
    print(f"bf16-products-golden: {tuple(rounded.shape)} logits; the rounding moves them by up to "
          f"{float((rounded - plain).abs().max()):.2e} from the plain float64 forward; wrote "
          f"{os.path.relpath(path, ROOT)}")


def cmd_blocks_golden(a):
    out = a.out or os.path.join(ROOT, "tests", "fixtures", "tiny_llama", "blocks")
    shown = os.path.relpath(out, ROOT)
    command = ("/usr/bin/python3 tools/torch_twin.py blocks-golden"
               + (f" --out {a.out}" if a.out else ""))
    print(check_attention(H=4, KV=2, T=9, hd=10))
    # The two models: F32 and the same values rounded to BF16 (RNE, write_safetensors).
    for dtype in ("f32", "bf16"):
        write_random_model(os.path.join(out, dtype), blocks_config(dtype), dtype,
                           BLOCKS_MODEL_SEED, f"{command} (seed {BLOCKS_MODEL_SEED}, {dtype})")
    cfg, W32 = load_model(os.path.join(out, "f32"))
    cfg16, W16 = load_model(os.path.join(out, "bf16"))
    for n in W32:    # the BF16 file holds exactly the RNE rounding of the F32 file
        want = bf16_bits_to_f32(f32_to_bf16_bits(W32[n].numpy().astype(np.float32)))
        assert np.array_equal(W16[n].numpy(), want.astype(np.float64)), n
    d_round = max(float((W16[n] - W32[n]).abs().max()) for n in W32)
    _, branch = rope_inv_freq(cfg)
    assert {"kept", "smoothed", "divided"} <= set(branch), branch
    tokens = blocks_tokens(cfg)
    labels = blocks_labels(tokens)
    B, T, V = BLOCKS_B, BLOCKS_T, cfg.vocab
    N = B * T
    count = sum(l != IGNORE_INDEX for s in labels for l in s[1:])
    qd, kvd = cfg.n_heads * cfg.head_dim, cfg.n_kv * cfg.head_dim
    # The shapes cross each boundary at least twice (see the comment above BLOCKS_B).
    assert T > 2 * 32 and N > 2 * 64 and count > 2 * 64 and V > 2 * 64 and cfg.ffn > 2 * 64
    for r in (BLOCKS_R, 2 * BLOCKS_R):
        assert all(w % r for w in (cfg.d, cfg.ffn, kvd, qd)), r
    print(f"blocks-golden: d {cfg.d}, F {cfg.ffn}, V {V}, head_dim {cfg.head_dim}, heads "
          f"{cfg.n_heads}/{cfg.n_kv}; batch [{B}, {T}] (N = {N}), {count} targets "
          f"({[sum(l != IGNORE_INDEX for l in s[1:]) for s in labels]} per sequence); rope "
          f"{branch}; bf16 rounding moves weights by up to {d_round:.2e}")
    files = []

    def logits_of(cfg_, W, ad):
        return torch.stack([forward(cfg_, W, t, ad)[0] for t in tokens])     # [B, T, V]

    def write_logits_golden(path, logits, meta):
        tensors = [("tokens", "I64", np.array(tokens, dtype=np.int64)),
                   ("logits", "F32", logits.numpy().astype(np.float32))]
        write_safetensors(path, tensors, meta)
        t, m, order = read_safetensors(path)
        assert order == ["tokens", "logits"] and m == meta
        assert np.array_equal(t["logits"], tensors[1][2])
        files.append(path)

    def logits_f32_diff(cfg_, W0, ad0, want):
        W, ad = to_f32_twin(cfg_, W0, ad0)
        got = f32_diagnostics(lambda: torch.stack([forward(cfg_, W, t, ad)[0] for t in tokens]))
        return float((got.double() - want).abs().max())

    # Base logits of each model (each sequence its own context from position 0).
    for dtype, W in (("f32", W32), ("bf16", W16)):
        logits = logits_of(cfg, W, None)
        assert torch.isfinite(logits).all()
        msgs = [check_decode(cfg, W, t, 40, logits[b]) for b, t in enumerate(tokens)]
        meta = {"command": command, "model": f"{shown}/{dtype}",
                "compute": ("float64 (weights widened from their stored dtype: for bf16 the "
                            "RNE-rounded values), logits rounded to F32"),
                "layout": "logits[b, t]: sequence b (own context from position 0), position t"}
        write_logits_golden(os.path.join(out, dtype, "golden.safetensors"), logits, meta)
        print(f"base {dtype}: {msgs[0]}\n  max|logit| {float(logits.abs().max()):.2f}, std "
              f"{float(logits.std()):.2f}; float32 twin |logits diff| "
              f"{logits_f32_diff(cfg, W, None, logits):.1e}")

    # Adapters (F32 files) and their logits on the F32 base.
    ads = {}
    for name, conf in BLOCKS_VARIANTS:
        d = os.path.join(out, "adapters", name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "adapter_config.json.tmp"), "w") as f:
            json.dump(conf, f, indent=2)
            f.write("\n")
        os.replace(os.path.join(d, "adapter_config.json.tmp"),
                   os.path.join(d, "adapter_config.json"))
        tensors = random_adapter_tensors(cfg, conf, BLOCKS_ADAPTER_SEED, BLOCKS_ADAPTER_GAIN)
        assert all(np.all(t != 0) for _, _, t in tensors)
        write_safetensors(os.path.join(d, "adapter_model.safetensors"), tensors,
                          {"format": "pt", "producer": f"{command} (seed {BLOCKS_ADAPTER_SEED}, "
                           f"gain {BLOCKS_ADAPTER_GAIN})"})
        files.append(os.path.join(d, "adapter_model.safetensors"))
        ad = load_adapter(cfg, d)
        ads[name] = (d, ad)
        logits = logits_of(cfg, W32, ad)
        assert torch.isfinite(logits).all()
        msg = check_decode(cfg, W32, tokens[1], 40, logits[1], ad)
        meta = {"command": command, "model": f"{shown}/f32", "adapter": f"{shown}/adapters/{name}",
                "compute": "float64 (weights and adapter widened from F32), logits rounded to F32",
                "layout": "logits[b, t]: sequence b (own context from position 0), position t"}
        write_logits_golden(os.path.join(d, "golden.safetensors"), logits, meta)
        base = logits_of(cfg, W32, None)
        print(f"{name}: s = {ad.s:g}, r = {ad.r}; {msg}\n  |logits - base| max "
              f"{float((logits - base).abs().max()):.2f}; float32 twin |logits diff| "
              f"{logits_f32_diff(cfg, W32, ad, logits):.1e}")

    # Training cases: loss and gradients (F64 loss, F32 gradients).
    summary = []
    cases = [(dt, c) for dt in ("f32", "bf16")
             for c in ([n for n, _ in BLOCKS_VARIANTS] + ["full"])
             if dt == "f32" or c in BLOCKS_BF16_CASES]
    for dtype, case in cases:
        W0 = W32 if dtype == "f32" else W16
        adir, ad0 = ads.get(case, (None, None))
        names, params, _, loss_fn = train_case(cfg, W0, ad0, tokens=tokens, labels=labels)
        if adir is not None:
            assert names == read_safetensors(os.path.join(adir, "adapter_model.safetensors"))[2]
        loss, grads, unused, (fd_rel, fd_big, fd_abs, fd_n) = checked_gradients(cfg, case, names, params, loss_fn,
                                                                                 ad0)
        # float32 twin (diagnostic): the C++ test's tolerance measures on it.
        W, ad = to_f32_twin(cfg, W0, ad0)

        def f32_run():
            n32, p32, _, lf = train_case(cfg, W, ad, torch.float32, tokens=tokens, labels=labels)
            l32 = lf()
            g32 = torch.autograd.grad(l32, p32, allow_unused=True)
            return l32, [torch.zeros_like(p) if g is None else g for p, g in zip(p32, g32)]
        l32, g32 = f32_diagnostics(f32_run)
        ratio = max(grad_ratio(a_, b_) for a_, b_ in zip(g32, grads) if bool((b_ != 0).any()))
        dl = abs(l32.item() - loss.item())
        meta = {
            "command": command, "case": case, "model": f"{shown}/{dtype}",
            "adapter": f"{shown}/adapters/{case}" if adir else "none (full fine-tuning)",
            "trainable": ("the adapter matrices (grad.<name>: names of adapter_model.safetensors)"
                          if adir else "every model tensor (grad.<name>: names of "
                          "model.safetensors; the tied embedding's grad sums both uses)"),
            "loss": ("HF LlamaForCausalLM: logits[:, :-1] vs labels[:, 1:], cross-entropy "
                     "averaged over all non -100 targets of the batch; each sequence its own "
                     "causal context from position 0; adapter dropout 0"),
            "compute": ("float64 parameters and activations (weights widened from their stored "
                        "dtype); loss F64, grads stored F32"),
            "selfcheck": (f"autograd vs central differences (h {FD_STEP:g}) on {fd_n} elements: "
                          f"max rel err {fd_rel:.1e} ({fd_big:.1e} where |grad| >= 1e-3 "
                          f"max|grad|)"),
            "float32_twin": (f"|loss diff| {dl:.1e}; grads worst |g32 - g| / (5e-5 max|g| + "
                             f"1e-4 |g|) {ratio:.3f}"),
        }
        tensors = case_tensors(tokens, labels, loss, names, grads)
        sub = "train" if dtype == "f32" else "train-bf16"
        d = os.path.join(out, sub, case)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "golden.safetensors")
        write_safetensors(path, tensors, meta)
        t, m, order = read_safetensors(path)
        assert order == [n for n, _, _ in tensors] and m == meta
        assert all(np.array_equal(t[n], np.asarray(v).astype(t[n].dtype)) for n, _, v in tensors)
        files.append(path)
        gmax = max(float(g.abs().max()) for g in grads)
        print(f"{sub}/{case}: {len(names)} tensors, {sum(p.numel() for p in params)} parameters; "
              f"loss {loss.item():.6f}; max|grad| {gmax:.4g}\n  finite differences: {fd_n} "
              f"elements, max rel err {fd_rel:.1e} ({fd_big:.1e} where |g| >= 1e-3 max), abs "
              f"{fd_abs:.1e}\n  float32 twin: |loss diff| {dl:.1e}, grad ratio {ratio:.3f}"
              + (f"\n  gradient exactly 0: {sorted(unused)}" if unused else ""))
        summary.append((f"{sub}/{case}", loss.item(), gmax, dl, ratio, os.path.getsize(path)))
    print("case                  loss       max|grad|   f32 twin |dloss|  grad ratio  bytes")
    for c, l, gm, dl, ra, size in summary:
        print(f"{c:20s}  {l:.6f}   {gm:.4e}   {dl:.1e}           {ra:.3f}       {size}")
    for dtype in ("f32", "bf16"):
        files.append(os.path.join(out, dtype, "model.safetensors"))
    total = sum(os.path.getsize(f) for f in files)
    print(f"{len(files)} tensor files, {total} bytes")


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
    p.add_argument("--adapter", default=None, help="PEFT-style adapter directory (optional)")
    p.set_defaults(fn=cmd_logits)
    p = sub.add_parser("golden", help="regenerate tests/fixtures/tiny_llama/{f32,bf16}")
    p.add_argument("--out", default=None,
                   help="output folder (default: <repo>/tests/fixtures/tiny_llama)")
    p.set_defaults(fn=cmd_golden)
    p = sub.add_parser("selfcheck", help="attention vs naive loop, decode vs full forward")
    p.add_argument("--model", required=True)
    p.add_argument("--tokens", default="")
    p.add_argument("--prefill", type=int, default=GOLDEN_PREFILL)
    p.add_argument("--adapter", default=None, help="PEFT-style adapter directory (optional)")
    p.set_defaults(fn=cmd_selfcheck)
    p = sub.add_parser("adapter-golden",
                       help="regenerate tests/fixtures/tiny_llama/adapters/<variant>")
    p.add_argument("--out", default=None,
                   help="output folder (default: <repo>/tests/fixtures/tiny_llama/adapters)")
    p.set_defaults(fn=cmd_adapter_golden)
    p = sub.add_parser("train-golden",
                       help="regenerate tests/fixtures/tiny_llama/train/<case>: loss, grads, "
                       "AdamW and SGD runs")
    p.add_argument("--out", default=None,
                   help="output folder (default: <repo>/tests/fixtures/tiny_llama/train)")
    p.set_defaults(fn=cmd_train_golden)
    p = sub.add_parser("bf16-products-golden",
                       help="tests/fixtures/tiny_llama/blocks/bf16/golden_bf16_products.safetensors: "
                       "logits with the base products' inputs rounded to bf16 (--products bf16)")
    p.add_argument("--model", default=None,
                   help="model folder (default: <repo>/tests/fixtures/tiny_llama/blocks/bf16)")
    p.set_defaults(fn=cmd_bf16_products_golden)
    p = sub.add_parser("blocks-golden",
                       help="regenerate tests/fixtures/tiny_llama/blocks: a model whose shapes "
                       "cross every block/chunk/tile boundary; logits, losses and grads")
    p.add_argument("--out", default=None,
                   help="output folder (default: <repo>/tests/fixtures/tiny_llama/blocks)")
    p.set_defaults(fn=cmd_blocks_golden)
    a = ap.parse_args()
    torch.set_num_threads(1)  # deterministic reductions
    a.fn(a)


if __name__ == "__main__":
    main()
