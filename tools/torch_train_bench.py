#!/usr/bin/python3
"""torch_train_bench: the PyTorch anchor for flora's training-speed benchmark.

It times one LoRA fine-tuning step of a Llama model the way PEFT + PyTorch run it on a CPU:
float32, micro-batch 1, LoRA (y = W x + s * B(A(x))) on all seven projections of every layer,
base weights frozen, AdamW over the adapter parameters, cross-entropy over all positions.
Weights are random (seeded): the speed of a step depends on the shapes, not on the values, so no
checkpoint is needed. It prints the per-step wall time, the median tokens/s (seq_len / median
step time), the peak RSS, the torch version and the BLAS torch really calls.

The model is written here from the math of Hugging Face's LlamaForCausalLM (RMSNorm, RoPE
rotate-half with llama3 frequency scaling, causal grouped-query attention, SwiGLU MLP, tied LM
head) with plain nn.Linear modules, so neither transformers nor peft is needed.

Run it with Debian's python3 (python3-torch, python3-numpy). Debian's torch calls the system
libblas.so.3, which is the slow reference BLAS (about 20x slower) unless an optimised one is
installed: `apt-get install libopenblas0-pthread` makes OpenBLAS the libblas.so.3 alternative.
A number measured on the reference BLAS is meaningless; the script warns when it sees one.

  /usr/bin/python3 tools/torch_train_bench.py                          # Llama-3.2-1B shape
  /usr/bin/python3 tools/torch_train_bench.py --preset tiny --steps 3  # quick check
  /usr/bin/python3 tools/torch_train_bench.py --model DIR              # shape of DIR/config.json
  /usr/bin/python3 tools/torch_train_bench.py --config FILE.json --rank 16 --seq-len 256
  /usr/bin/python3 tools/torch_train_bench.py --variant ffba --json    # FLoRA FFBA adapter

Options: --rank R (32), --alpha (2R, so s = alpha/R = 2), --seq-len T (512), --threads N (2),
--steps N (6 timed) after --warmup N (2 untimed), --seed S, --lr, --attn auto|sdpa|eager
(sdpa needs torch >= 2.0; Debian 12's torch 1.13 runs eager matmul + softmax), --variant
lora|ffba, --profile (top ops of one extra step, on stderr), --system-malloc (see MALLOC
below), --json (one JSON object on stdout; progress always goes to stderr).

Reading the number: on a machine shared with other work the step time grows with the load;
the per-step CPU seconds and the "cpu share" (CPU time / (wall time * threads)) say how much of
the requested cores the step really had. By default the script re-executes itself with glibc
malloc settings that keep large freed blocks for reuse (see MALLOC below; measured here: -25%
step time at 1B width, +20% peak RSS).

--variant ffba runs the same step with FLoRA's FFBA (A&B) adapter of docs/ADAPTERS.md (shared
docs), written as separate torch ops (no fusion): forward adapters A on q, k, v, gate, up with
repeat-and-add y_m += s * tile(z_m), their sum z per sub-block (plus the carry), the exits o and
down as FFBL: y = W c + s * B z, carry = A c + C z into the next sub-block.

Notation: T tokens, d = hidden_size, H = num_attention_heads, KV = num_key_value_heads,
hd = head_dim, F = intermediate_size, V = vocab_size, r = rank.
"""
import argparse
import glob
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root

# Where the published Llama config.json files live: the checkout's shared/ if it has one,
# else the shared folder beside the checkout.
CONFIG_DIRS = [os.path.join(ROOT, "shared", "configs"),
               os.path.join(os.path.dirname(ROOT), "shared", "configs"),
               "/work/shared/configs"]

# --preset tiny: the shape of flora's tiny test model (a quick check of the script, seconds).
TINY = {"hidden_size": 64, "intermediate_size": 200, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 384,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "initializer_range": 0.02}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=["1b", "3b", "tiny"],
                     help="1b/3b: the published Llama-3.2 config.json from shared/configs; "
                          "tiny: flora's tiny test shape (default: 1b)")
    src.add_argument("--model", metavar="DIR", help="a model directory: its config.json gives "
                                                    "the shape (its weights are not read)")
    src.add_argument("--config", metavar="FILE", help="a config.json file")
    p.add_argument("--variant", choices=["lora", "ffba"], default="lora")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--alpha", type=float, default=None, help="default 2 * rank")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=6, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--attn", choices=["auto", "sdpa", "eager"], default="auto",
                   help="sdpa: torch.nn.functional.scaled_dot_product_attention (torch >= 2.0); "
                        "eager: matmul + softmax as HF's eager attention; auto: sdpa if present")
    p.add_argument("--system-malloc", action="store_true",
                   help="keep glibc's default malloc settings (see MALLOC below)")
    p.add_argument("--profile", action="store_true",
                   help="after the timed steps, profile one more step and print the top ops")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    a = p.parse_args(argv)
    if a.rank < 1 or a.seq_len < 1 or a.threads < 1 or a.steps < 1 or a.warmup < 0:
        p.error("--rank, --seq-len, --threads and --steps must be >= 1, --warmup >= 0")
    return a


# MALLOC: glibc serves every allocation of 32 MiB or more (the [1, H, T, T] attention scores at
# 1B, the [T, V] logits) with a fresh mmap and unmaps it on free, so each such tensor is
# page-faulted in again on every step. In a VM that backs guest memory lazily a fault costs
# ~30 us instead of ~0.5 us: measured here, a 32 MiB softmax took 240 ms instead of 16 ms. No
# allocator-owning engine (flora included) pays that, so by default the benchmark makes glibc
# keep freed memory in its heap for reuse (no mmap, no trim). glibc reads these variables at
# process start only, hence the re-exec. --system-malloc measures torch as it comes.
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}
REEXEC_MARK = "TORCH_TRAIN_BENCH_REEXEC"

# Parsed before torch is imported (see below); None when imported as a module (tests).
args = parse_args() if __name__ == "__main__" else None
if args is not None:
    # OpenBLAS (pthread build) sizes its own thread pool from the environment when the library
    # is loaded, independently of torch.set_num_threads (which sets OpenMP's): both must be set
    # before torch is imported, or BLAS would use every core while element-wise ops use
    # --threads.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if not args.system_malloc and os.environ.get(REEXEC_MARK) != "1":
        os.environ.update(MALLOC_ENV)
        os.environ[REEXEC_MARK] = "1"
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:])

import torch  # noqa: E402  (after the thread variables, see above)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def log(*a):
    """Progress: to stderr, so that --json keeps stdout to one object."""
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

def find_shared_config(size):
    """The published config.json of Llama-3.2-<size> (e.g. llama-3.2-1b.config.json)."""
    for d in CONFIG_DIRS:
        # "1b" as a whole word, so that a llama-3.2-11b file would not match
        hits = sorted(h for h in glob.glob(os.path.join(d, "*config.json"))
                      if re.search(rf"(^|[-_.]){size}([-_.]|$)", os.path.basename(h)))
        if hits:
            return hits[0]
    raise SystemExit(f"torch_train_bench: no *{size}*config.json in {CONFIG_DIRS}; "
                     "pass --model DIR or --config FILE")


def load_config(a):
    """(config dict, where it came from)."""
    if a.preset == "tiny":
        return dict(TINY), "preset tiny"
    path = (os.path.join(a.model, "config.json") if a.model else a.config
            or find_shared_config(a.preset or "1b"))
    with open(path) as f:
        return json.load(f), path


class Shape:
    """The fields of a Llama config.json that set the cost of a step."""

    def __init__(self, j):
        self.d = j["hidden_size"]
        self.ffn = j["intermediate_size"]
        self.n_layers = j["num_hidden_layers"]
        self.n_heads = j["num_attention_heads"]
        self.n_kv = j.get("num_key_value_heads") or self.n_heads
        self.head_dim = j.get("head_dim") or self.d // self.n_heads
        self.vocab = j["vocab_size"]
        self.eps = j.get("rms_norm_eps", 1e-5)
        self.theta = j.get("rope_theta", 10000.0)
        self.rope_scaling = j.get("rope_scaling")
        self.tied = j.get("tie_word_embeddings", False)
        self.init_std = j.get("initializer_range", 0.02)
        if self.n_heads % self.n_kv:
            raise SystemExit("config: num_attention_heads must be a multiple of "
                             "num_key_value_heads")

    def describe(self):
        return (f"d={self.d} F={self.ffn} layers={self.n_layers} H={self.n_heads} "
                f"KV={self.n_kv} hd={self.head_dim} V={self.vocab} tied={self.tied}")


# --------------------------------------------------------------------------------------------
# Llama building blocks (as HF's LlamaForCausalLM computes them)
# --------------------------------------------------------------------------------------------

def rope_inv_freq(sh):
    """RoPE inverse frequencies [hd/2], with Llama 3's frequency-dependent scaling when the
    config asks for it (it changes values only, not the cost)."""
    hd = sh.head_dim
    inv = 1.0 / (sh.theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    rs = sh.rope_scaling or {}
    if rs.get("rope_type", rs.get("type")) == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)   # long waves: / factor
        smooth = (old / wavelen - lo) / (hi - lo)                     # in between: blend
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old / hi) & (wavelen <= old / lo)
        inv = torch.where(medium, blended, scaled)
    return inv.float()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        # Frozen, as PEFT leaves every non-adapter parameter.
        self.weight = nn.Parameter(torch.ones(d), requires_grad=False)
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def frozen_linear(n_in, n_out, std):
    """A base projection: nn.Linear without bias, weights N(0, std) as HF initialises them,
    frozen. skip_init avoids nn.Linear's own Kaiming init, which would be overwritten anyway
    (seconds at 1B)."""
    m = nn.utils.skip_init(nn.Linear, n_in, n_out, bias=False)
    with torch.no_grad():
        m.weight.normal_(0.0, std)
    m.weight.requires_grad_(False)
    return m


def adapter_linear(n_in, n_out, zero):
    """A trainable adapter matrix: nn.Linear's default init is PEFT's lora_A init
    (kaiming_uniform_(a=sqrt(5))); B (and FFBA's C) start at zero as in PEFT."""
    m = nn.Linear(n_in, n_out, bias=False)
    if zero:
        nn.init.zeros_(m.weight)
    return m


def tile_add(y, z, s):
    """Repeat-and-add: y[..., i] += s * z[..., i mod r]. When r divides the width this is a
    broadcast add on a [.., n/r, r] view (no tiled copy of z); otherwise the tiled copy."""
    n, r = y.shape[-1], z.shape[-1]
    if n % r == 0:
        return (y.unflatten(-1, (n // r, r)) + s * z.unsqueeze(-2)).flatten(-2)
    reps = -(-n // r)
    return y + s * z.repeat(*([1] * (z.dim() - 1)), reps)[..., :n]


class LoRALinear(nn.Module):
    """PEFT's LoRA layer, unmerged: y = W x + s * B(A(x)) as separate ops (lora_dropout = 0)."""

    def __init__(self, n_in, n_out, r, s, std):
        super().__init__()
        self.base_layer = frozen_linear(n_in, n_out, std)
        self.lora_A = adapter_linear(n_in, r, zero=False)
        self.lora_B = adapter_linear(r, n_out, zero=True)
        self.s = s

    def entry(self, x):
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * self.s, None

    def exit(self, c, z):
        return self.entry(c)[0], None


class FFBAEntry(nn.Module):
    """FFBA entry projection (q, k, v, gate, up): y = W u + s * tile(A u); z = A u is returned
    for the sub-block's sum."""

    def __init__(self, n_in, n_out, r, s, std):
        super().__init__()
        self.base_layer = frozen_linear(n_in, n_out, std)
        self.flora_A = adapter_linear(n_in, r, zero=False)
        self.s = s

    def entry(self, u):
        z = self.flora_A(u)
        return tile_add(self.base_layer(u), z, self.s), z


class FFBAExit(nn.Module):
    """FFBA exit projection (o, down), the FFBL: y = W c + s * B z, carry = A c + C z (z is the
    sub-block's sum; phi = identity)."""

    def __init__(self, n_in, n_out, r, s, std):
        super().__init__()
        self.base_layer = frozen_linear(n_in, n_out, std)
        self.flora_A = adapter_linear(n_in, r, zero=False)
        self.flora_B = adapter_linear(r, n_out, zero=True)
        self.flora_C = adapter_linear(r, r, zero=True)
        self.s = s

    def exit(self, c, z):
        y = self.base_layer(c) + self.s * self.flora_B(z)
        return y, self.flora_A(c) + self.flora_C(z)


def make_proj(variant, kind, n_in, n_out, r, s, std):
    if variant == "lora":
        return LoRALinear(n_in, n_out, r, s, std)
    return (FFBAEntry if kind == "entry" else FFBAExit)(n_in, n_out, r, s, std)


class DecoderLayer(nn.Module):
    def __init__(self, sh, variant, r, s, attn):
        super().__init__()
        d, qd, kvd, std = sh.d, sh.n_heads * sh.head_dim, sh.n_kv * sh.head_dim, sh.init_std
        self.sh, self.attn = sh, attn
        self.input_layernorm = RMSNorm(d, sh.eps)
        self.post_attention_layernorm = RMSNorm(d, sh.eps)
        self.q_proj = make_proj(variant, "entry", d, qd, r, s, std)
        self.k_proj = make_proj(variant, "entry", d, kvd, r, s, std)
        self.v_proj = make_proj(variant, "entry", d, kvd, r, s, std)
        self.o_proj = make_proj(variant, "exit", qd, d, r, s, std)
        self.gate_proj = make_proj(variant, "entry", d, sh.ffn, r, s, std)
        self.up_proj = make_proj(variant, "entry", d, sh.ffn, r, s, std)
        self.down_proj = make_proj(variant, "exit", sh.ffn, d, r, s, std)

    def attention(self, q, k, v, mask):
        """q [B, H, T, hd], k/v [B, KV, T, hd] -> [B, T, H*hd]. GQA: each KV head serves
        H/KV query heads; like HF's repeat_kv it is expanded to H heads first."""
        B, H, T, hd = q.shape
        rep = H // k.shape[1]
        if rep > 1:
            k = k[:, :, None].expand(B, k.shape[1], rep, T, hd).reshape(B, H, T, hd)
            v = v[:, :, None].expand(B, v.shape[1], rep, T, hd).reshape(B, H, T, hd)
        if self.attn == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(hd) + mask    # [B, H, T, T]
            o = torch.matmul(torch.softmax(w, dim=-1), v)                   # [B, H, T, hd]
        return o.transpose(1, 2).reshape(B, T, H * hd)

    def forward(self, x, cos, sin, mask, carry):
        """x [B, T, d]; carry: FFBA's low-rank state from the previous sub-block (None for
        LoRA and for layer 0). Returns (x, carry)."""
        sh = self.sh
        B, T, _ = x.shape
        # attention sub-block
        xn = self.input_layernorm(x)
        q, zq = self.q_proj.entry(xn)
        k, zk = self.k_proj.entry(xn)
        v, zv = self.v_proj.entry(xn)
        z = sum_z(carry, zq, zk, zv)                       # FFBA: sum of augmented outputs
        q = q.view(B, T, sh.n_heads, sh.head_dim).transpose(1, 2)
        k = k.view(B, T, sh.n_kv, sh.head_dim).transpose(1, 2)
        v = v.view(B, T, sh.n_kv, sh.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin                 # RoPE
        k = k * cos + rotate_half(k) * sin
        y, carry = self.o_proj.exit(self.attention(q, k, v, mask), z)
        x = x + y
        # MLP sub-block (SwiGLU)
        xn = self.post_attention_layernorm(x)
        g, zg = self.gate_proj.entry(xn)
        u, zu = self.up_proj.entry(xn)
        z = sum_z(carry, zg, zu)
        y, carry = self.down_proj.exit(F.silu(g) * u, z)
        return x + y, carry


def sum_z(*zs):
    """The sub-block's low-rank sum (FFBA); None when there is none (LoRA)."""
    zs = [z for z in zs if z is not None]
    return sum(zs[1:], zs[0]) if zs else None


class Llama(nn.Module):
    def __init__(self, sh, variant, r, s, attn):
        super().__init__()
        self.sh = sh
        self.embed_tokens = nn.Embedding(sh.vocab, sh.d, _weight=torch.empty(sh.vocab, sh.d))
        with torch.no_grad():
            self.embed_tokens.weight.normal_(0.0, sh.init_std)
        self.embed_tokens.weight.requires_grad_(False)
        self.layers = nn.ModuleList(DecoderLayer(sh, variant, r, s, attn)
                                    for _ in range(sh.n_layers))
        self.norm = RMSNorm(sh.d, sh.eps)
        # Tied head (Llama-3.2): the LM head is the embedding matrix, no second copy.
        self.lm_head = None if sh.tied else frozen_linear(sh.d, sh.vocab, sh.init_std)
        self.register_buffer("inv_freq", rope_inv_freq(sh), persistent=False)

    def forward(self, tokens):
        """tokens [B, T] -> logits [B, T, V]."""
        T = tokens.shape[1]
        pos = torch.arange(T, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)            # [T, hd], HF's rotate-half layout
        cos, sin = emb.cos(), emb.sin()
        # Additive causal mask for the eager path (HF builds one per forward too).
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.embed_tokens(tokens)
        carry = None
        for layer in self.layers:
            x, carry = layer(x, cos, sin, mask, carry)     # the last layer's carry is dropped
        x = self.norm(x)
        return F.linear(x, self.embed_tokens.weight if self.lm_head is None
                        else self.lm_head.weight)


# --------------------------------------------------------------------------------------------
# Environment: which BLAS, memory
# --------------------------------------------------------------------------------------------

def blas_info():
    """What torch really calls for float32 GEMM. Debian's torch links libblas.so.3, an
    update-alternatives link: the library mapped into this process is the ground truth, the
    alternatives and torch's build config are reported beside it."""
    torch.mm(torch.ones(64, 64), torch.ones(64, 64))      # make sure the BLAS is loaded
    mapped = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()                            # addr perms offset dev inode path
            if len(parts) >= 6 and re.search(r"blas|mkl|blis", os.path.basename(parts[5])):
                mapped.add(parts[5])
    alt = None
    try:
        out = subprocess.run(["update-alternatives", "--query", "libblas.so.3-x86_64-linux-gnu"],
                             capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"^Value:\s*(\S+)", out, re.M)
        alt = m.group(1) if m else None
    except (OSError, subprocess.SubprocessError):
        pass
    if alt is None and os.path.exists("/etc/alternatives/libblas.so.3-x86_64-linux-gnu"):
        alt = os.path.realpath("/etc/alternatives/libblas.so.3-x86_64-linux-gnu")
    cfg = torch.__config__.show()
    m = re.search(r"BLAS_INFO=([^,\s]+)", cfg)
    build = m.group(1) if m else ("mkl" if "Intel(R) Math Kernel Library" in cfg else "unknown")
    # The library answering to libblas.so.3 decides (torch's sgemm calls resolve there); an
    # OpenBLAS mapped beside a reference libblas.so.3 (pulled in by liblapack) does not count.
    libblas = [p for p in mapped if os.path.basename(p).startswith("libblas.so")]
    decisive = libblas or sorted(mapped)
    if any("openblas" in p for p in decisive):
        kind = "openblas"
    elif any("mkl" in p for p in decisive):
        kind = "mkl"
    elif any("blis" in p for p in decisive):
        kind = "blis"
    elif libblas:
        kind = "reference"          # netlib libblas3 (Debian's default): ~20x slower
    elif build == "mkl":
        kind = "mkl"                # MKL linked statically (pip wheels): nothing to map
    else:
        kind = "unknown"
    # The ground truth, whatever the names say: a 1024^3 float32 product, best of 3.
    x = torch.randn(1024, 1024)
    best = min(_timed(lambda: torch.mm(x, x)) for _ in range(3))
    return {"kind": kind, "mapped": sorted(mapped), "alternative": alt, "torch_build": build,
            "sgemm_1024_gflops": round(2 * 1024**3 / best / 1e9, 1)}


def _timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def malloc_mode():
    on = all(os.environ.get(k) == v for k, v in MALLOC_ENV.items())
    return "heap-reuse (MALLOC_MMAP_MAX_=0, no trim)" if on else "glibc default"


def rss_mib():
    """Current resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


# --------------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------------

def main(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    j, source = load_config(a)
    sh = Shape(j)
    alpha = a.alpha if a.alpha is not None else 2.0 * a.rank
    s = alpha / a.rank
    has_sdpa = hasattr(F, "scaled_dot_product_attention")
    if a.attn == "sdpa" and not has_sdpa:
        raise SystemExit(f"torch_train_bench: torch {torch.__version__} has no "
                         "scaled_dot_product_attention (needs torch >= 2.0); use --attn eager")
    attn = "sdpa" if a.attn == "sdpa" or (a.attn == "auto" and has_sdpa) else "eager"

    blas = blas_info()
    if blas["kind"] in ("reference", "unknown"):
        log(f"WARNING: torch uses the {blas['kind']} BLAS ({', '.join(blas['mapped']) or '?'}):"
            " the timing is not meaningful; apt-get install libopenblas0-pthread")

    log(f"shape ({source}): {sh.describe()}")
    log(f"variant {a.variant}, rank {a.rank}, alpha {alpha:g}, seq {a.seq_len}, "
        f"threads {a.threads}, attention {attn}, torch {torch.__version__}, BLAS {blas['kind']}")
    t0 = time.perf_counter()
    model = Llama(sh, a.variant, a.rank, s, attn)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in trainable)
    n_total = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(trainable, lr=a.lr)
    # T+1 random tokens: inputs are the first T, targets the last T (loss on all T positions).
    seq = torch.randint(0, sh.vocab, (1, a.seq_len + 1))
    inputs, targets = seq[:, :-1], seq[:, 1:]
    rss_model = rss_mib()
    log(f"built in {time.perf_counter() - t0:.1f} s: {n_total / 1e6:.2f} M parameters, "
        f"{n_train / 1e6:.3f} M trainable; RSS {rss_model:.0f} MiB")

    # cpu: this process's CPU seconds per step. On a quiet machine cpu ~ threads * wall; much
    # less means other processes took the cores and the tokens/s is understated.
    times, cpus, losses = [], [], []
    for i in range(a.warmup + a.steps):
        t, c = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = F.cross_entropy(logits.view(-1, sh.vocab), targets.reshape(-1))
        loss.backward()
        opt.step()
        dt, dc = time.perf_counter() - t, time.process_time() - c
        timed = i >= a.warmup
        if timed:
            times.append(dt)
            cpus.append(dc)
        losses.append(loss.item())
        log(f"step {i + 1 - a.warmup if timed else 'warmup ' + str(i + 1)}: {dt:.3f} s "
            f"(cpu {dc:.1f} s), loss {losses[-1]:.4f}, {a.seq_len / dt:.1f} tokens/s")
        del logits, loss

    if a.profile:
        # One extra, untimed step under the profiler: where the time goes, by op.
        from torch.profiler import profile
        with profile() as prof:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(inputs).view(-1, sh.vocab), targets.reshape(-1))
            loss.backward()
            opt.step()
        log(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
        del loss

    med = statistics.median(times)
    cpu_share = sum(cpus) / (sum(times) * a.threads)   # 1.0: every thread busy all the time
    res = {
        "variant": a.variant, "shape_source": source,
        "shape": {"hidden_size": sh.d, "intermediate_size": sh.ffn,
                  "num_hidden_layers": sh.n_layers, "num_attention_heads": sh.n_heads,
                  "num_key_value_heads": sh.n_kv, "head_dim": sh.head_dim,
                  "vocab_size": sh.vocab, "tie_word_embeddings": sh.tied},
        "rank": a.rank, "alpha": alpha, "seq_len": a.seq_len, "micro_batch": 1,
        "dtype": "float32", "threads": a.threads, "attention": attn, "optimizer": "AdamW",
        "params_total": n_total, "params_trainable": n_train,
        "warmup": a.warmup, "steps": a.steps, "step_seconds": [round(x, 4) for x in times],
        "step_cpu_seconds": [round(x, 3) for x in cpus], "cpu_share": round(cpu_share, 3),
        "median_step_seconds": round(med, 4), "tokens_per_second": round(a.seq_len / med, 3),
        "losses": [round(x, 5) for x in losses],
        "rss_after_build_mib": round(rss_model), "peak_rss_mib": round(peak_rss_mib()),
        "torch": torch.__version__, "blas": blas, "malloc": malloc_mode(),
    }
    if a.json:
        print(json.dumps(res))
    else:
        print(f"torch {torch.__version__}, BLAS {blas['kind']} "
              f"({blas['sgemm_1024_gflops']} GFLOP/s on a 1024^3 sgemm; mapped: {', '.join(blas['mapped']) or 'none'}; libblas.so.3 -> "
              f"{blas['alternative']}; torch build BLAS_INFO={blas['torch_build']})")
        print(f"{a.variant} rank {a.rank} on {sh.describe()}, seq {a.seq_len}, "
              f"threads {a.threads}, fp32, AdamW, attention {attn}")
        print(f"step seconds: {' '.join(f'{x:.3f}' for x in times)}")
        print(f"median {med:.3f} s/step -> {a.seq_len / med:.2f} tokens/s "
              f"(cpu share {cpu_share:.0%} of {a.threads} threads"
              f"{'; the machine was busy, the number is low' if cpu_share < 0.8 else ''})")
        print(f"peak RSS {peak_rss_mib():.0f} MiB (after build {rss_model:.0f} MiB), "
              f"malloc {malloc_mode()}")


if __name__ == "__main__":
    main(args)
