#!/usr/bin/python3
"""Is flora's training why the small base cannot look things up in context? (docs/results.md,
"Why two of the three columns cannot separate the variants"). The flora-small architecture is
trained from scratch on documents that reward nothing but in-context copying, once by `flora
train --full` and once by an independent PyTorch implementation with the same data, batch and
AdamW, and both are probed greedily on held-out documents.

  /usr/bin/python3 experiments/copy_twin.py data OUT_DIR          # train.jsonl (20,000), valid.jsonl (200)
  /usr/bin/python3 experiments/copy_twin.py torch OUT_DIR STEPS LR  # OUT_DIR/torch.pt, a log line per 100 steps
  /usr/bin/python3 experiments/copy_twin.py probe MODEL [N]        # MODEL: a flora directory or a torch .pt

Documents: "List: a, b, c, d. Again: a, b, c, d." and "(1) a (2) b (3) c Which number is b? It is
2.", with 3-6 words of the world's corpus (`flora data synth --seed 0`; CORPUS, default
out/study/data/corpus.jsonl). The probe gives the first word of the repetition and asks for the
rest ("copy"), and asks for the number of a listed word ("number", chance 1 in 4).
Needs Debian's python3-torch (scripts/setup.sh --torch) for `torch` and `probe` of a .pt."""
import json, math, os, random, re, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLORA = os.environ.get("FLORA", os.path.join(ROOT, "build/flora"))
BASE = os.path.join(ROOT, "assets/flora-small")  # its tokenizer and config
CORPUS = os.environ.get("CORPUS", os.path.join(ROOT, "out/study/data/corpus.jsonl"))
BOS, EOS, DOT, DOT_NEWLINE = 1019, 1020, 46, 275  # flora-small's ids of <|begin|>, <|end|>, ".", ".\n"


def world_words():
    corpus = [json.loads(l)["text"] for l in open(CORPUS)]
    return sorted({w for d in corpus for w in re.findall(r"\b[a-z]{3,9}\b", d)})


def make_data(out):
    rng, words = random.Random(1), world_words()
    def doc():
        items = rng.sample(words, rng.choice([3, 4, 5, 6]))
        if rng.randrange(2) == 0:
            return "List: " + ", ".join(items) + ". Again: " + ", ".join(items) + "."
        t = rng.randrange(len(items))
        return " ".join(f"({j + 1}) {x}" for j, x in enumerate(items)) + f" Which number is {items[t]}? It is {t + 1}."
    os.makedirs(out, exist_ok=True)
    for name, n in (("train", 20000), ("valid", 200)):
        with open(os.path.join(out, name + ".jsonl"), "w") as f:
            for _ in range(n):
                f.write(json.dumps({"text": doc()}) + "\n")


def flora_tokens(text, bos=True):
    cmd = [FLORA, "tokenize", "-m", BASE, "--text", text] + ([] if bos else ["--no-bos"])
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def tokenize_docs(path):
    """Each document as `flora train` feeds a {"text"} record: BOS, its tokens, EOS. One call for the
    whole file: every document ends with ".", which the tokenizer merges with the newline after it."""
    docs = [json.loads(l)["text"] for l in open(path)]
    tmp = path + ".txt"
    with open(tmp, "w") as f:
        f.write("\n".join(docs) + "\n")
    ids = json.loads(subprocess.run([FLORA, "tokenize", "-m", BASE, "--no-bos", "--file", tmp], capture_output=True,
                                    text=True, check=True).stdout)
    os.remove(tmp)
    seqs, cur = [], []
    for t in ids:
        if t == DOT_NEWLINE:
            seqs.append([BOS] + cur + [DOT, EOS])
            cur = []
        else:
            cur.append(t)
    assert len(seqs) == len(docs), (len(seqs), len(docs))
    return seqs


def torch_model():
    """The Llama of flora-small's config.json, from the Hugging Face definition: RMSNorm, RoPE
    (rotate-half), grouped-query attention, SwiGLU, tied embeddings, N(0, 0.02) init as flora's."""
    import torch, torch.nn as nn, torch.nn.functional as F
    c = json.load(open(os.path.join(BASE, "config.json")))
    d, H, KV, hd, Fd = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["intermediate_size"]
    V, L, eps, theta = c["vocab_size"], c["num_hidden_layers"], c["rms_norm_eps"], c["rope_theta"]
    class Norm(nn.Module):
        def __init__(s): super().__init__(); s.w = nn.Parameter(torch.ones(d))
        def forward(s, x): return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * s.w
    def lin(i, o):
        l = nn.Linear(i, o, bias=False); nn.init.normal_(l.weight, 0, 0.02); return l
    class Layer(nn.Module):
        def __init__(s):
            super().__init__(); s.n1, s.n2 = Norm(), Norm()
            s.q, s.k, s.v, s.o = lin(d, H * hd), lin(d, KV * hd), lin(d, KV * hd), lin(H * hd, d)
            s.g, s.u, s.dn = lin(d, Fd), lin(d, Fd), lin(Fd, d)
        def forward(s, x, cos, sin):
            B, T, _ = x.shape; h = s.n1(x)
            q = s.q(h).view(B, T, H, hd).transpose(1, 2)
            k = s.k(h).view(B, T, KV, hd).transpose(1, 2); v = s.v(h).view(B, T, KV, hd).transpose(1, 2)
            rot = lambda t: torch.cat([-t[..., hd // 2:], t[..., :hd // 2]], -1)
            q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
            k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
            sc = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
            sc = sc.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            x = x + s.o((sc.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * hd))
            h = s.n2(x)
            return x + s.dn(F.silu(s.g(h)) * s.u(h))
    class Model(nn.Module):
        def __init__(s):
            super().__init__(); s.emb = nn.Embedding(V, d); nn.init.normal_(s.emb.weight, 0, 0.02)
            s.layers = nn.ModuleList(Layer() for _ in range(L)); s.norm = Norm()
        def forward(s, ids):
            T = ids.shape[1]; inv = 1.0 / (theta ** (torch.arange(0, hd, 2).double() / hd))
            e = torch.outer(torch.arange(T).double(), inv); e = torch.cat([e, e], -1)
            cos, sin = e.cos().float(), e.sin().float()
            x = s.emb(ids)
            for l in s.layers: x = l(x, cos, sin)
            return s.norm(x) @ s.emb.weight.T
    return Model()


def train_torch(data, steps, lr_peak):
    """As `flora train --full --seq-len 64 --batch 32 --steps STEPS --lr LR --schedule constant
    --warmup-steps 30 --clip-norm 1.0`: AdamW (0.9, 0.999, 1e-8, no decay), mean loss of the step."""
    import torch, torch.nn.functional as F
    torch.manual_seed(0); torch.set_num_threads(2)
    train, valid = tokenize_docs(os.path.join(data, "train.jsonl")), tokenize_docs(os.path.join(data, "valid.jsonl"))
    m = torch_model(); V = m.emb.weight.shape[0]
    opt = torch.optim.AdamW(m.parameters(), lr=lr_peak, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    def batch(seqs):
        T = max(len(s) for s in seqs)
        x, y = torch.full((len(seqs), T), EOS), torch.full((len(seqs), T), -100)
        for i, s in enumerate(seqs):
            x[i, :len(s)] = torch.tensor(s); y[i, :len(s) - 1] = torch.tensor(s[1:])
        return x, y
    loss_of = lambda x, y: F.cross_entropy(m(x)[:, :-1].reshape(-1, V), y[:, :-1].reshape(-1), ignore_index=-100)
    rng, order, t0 = random.Random(0), [], time.time()
    for step in range(1, steps + 1):
        if len(order) < 32: order += rng.sample(range(len(train)), len(train))
        idx, order = order[:32], order[32:]
        for g in opt.param_groups: g["lr"] = lr_peak * min(1.0, step / 30)
        loss = loss_of(*batch([train[i] for i in idx]))
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step()
        if step % 100 == 0:
            with torch.no_grad(): vl = loss_of(*batch(valid)).item()
            print(f"step {step} loss {loss.item():.4f} valid {vl:.4f} {time.time() - t0:.0f}s", flush=True)
    torch.save(m.state_dict(), os.path.join(data, "torch.pt"))


def probe(model, n):
    if model.endswith(".pt"):
        import torch
        m = torch_model(); m.load_state_dict(torch.load(model)); m.eval()
        def complete(prompt):
            ids, gen = flora_tokens(prompt), []
            with torch.no_grad():
                for _ in range(12):
                    gen.append(int(m(torch.tensor([ids + gen]))[0, -1].argmax()))
                    if gen[-1] == EOS: break
            return subprocess.run([FLORA, "tokenize", "-m", BASE, "--decode", "--text", json.dumps(gen)],
                                  capture_output=True, text=True, check=True).stdout
    else:
        def complete(prompt):  # `flora generate` prints the prompt, then the continuation
            out = subprocess.run([FLORA, "generate", "-m", model, "-p", prompt, "-n", "12", "--temp", "0"],
                                 capture_output=True, text=True, check=True).stdout
            return out[len(prompt):] if out.startswith(prompt) else out
    rng, words, ok = random.Random(99), world_words(), [0, 0]
    for i in range(n):
        items = rng.sample(words, 4)
        t = rng.randrange(4)
        cases = [("List: " + ", ".join(items) + ". Again: " + items[0] + ",", " " + ", ".join(items[1:])),
                 (" ".join(f"({j + 1}) {x}" for j, x in enumerate(items)) + f" Which number is {items[t]}? It is",
                  f" {t + 1}")]
        for kind, (prompt, want) in enumerate(cases):
            got = complete(prompt)
            ok[kind] += got.startswith(want)
            if i < 2: print(repr(prompt), "->", repr(got[:40]))
    print(f"copy {ok[0]}/{n}, number {ok[1]}/{n} (chance {n / 4:.0f})")


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[:1] == ["data"] and len(a) == 2: make_data(a[1])
    elif a[:1] == ["torch"] and len(a) == 4: train_torch(a[1], int(a[2]), float(a[3]))
    elif a[:1] == ["probe"] and len(a) in (2, 3): probe(a[1], int(a[2]) if len(a) == 3 else 20)
    else: sys.exit(__doc__)
