#!/usr/bin/env python3
"""The last step of `make demo`: one table of what the demo measured, and two figures.

Usage: python3 tools/demo_report.py DEMO_DIR

Reads (every file optional; a missing one is named on stderr and its cells show "—"):
  DEMO_DIR/base/config.json                      the small base model (for its parameter count)
  DEMO_DIR/train/<variant>/train_config.json     trainable_parameters, rank, ...
  DEMO_DIR/train/<variant>/train_log.jsonl       step lines (loss, ...) and validation lines (eval_loss)
  DEMO_DIR/eval/<variant|base>/<mcq|math|rouge>/results.json   flora eval's results
  DEMO_DIR/bench.json                            flora bench --variants ... --json-out (1B shape)
Writes:
  stdout                  the table, the paper's claims beside ours, what the numbers say
  DEMO_DIR/report.md      the same, plus details per variant and the two figures
  DEMO_DIR/loss.svg       training loss per variant against the step (dots: validation loss)
  DEMO_DIR/latency.svg    TPOT overhead over the base per variant, with the paper's ranges
Exit status: 0, or 1 when nothing at all was found (or DEMO_DIR is not a directory).
Python 3 standard library only.
"""
import json
import math
import os
import sys
import textwrap
from xml.sax.saxutils import escape

PROG = "demo_report"
TASKS = ("mcq", "math", "rouge")
ORDER = ["lora", "pf-lora", "lora-merged", "ffa", "ffba", "ffba-aorb", "ffba-qg", "ffba-relu"]
FLORA = {"ffa", "ffba", "ffba-aorb", "ffba-qg", "ffba-relu"}  # the paper's family (fused)
FFBA = {"ffba", "ffba-aorb", "ffba-qg", "ffba-relu"}          # the claim "FFBA cuts ... 21-30%"
# What the paper (FLoRA, arXiv 2511.00050; /work/shared/seed summary) claims.
PAPER_LORA_OVERHEAD = (20.0, 50.0)   # % extra time per output token of unmerged LoRA, GPUs
PAPER_CUT_1B = (21.0, 30.0)          # % of LoRA's TPOT overhead removed by FFBA, 1B
PAPER_CUT_3B = (31.0, 48.0)          # same, 3B
COLORS = {"base": "#555555", "lora": "#D55E00", "pf-lora": "#E69F00", "lora-merged": "#CC79A7",
          "ffa": "#56B4E9", "ffba": "#0072B2", "ffba-aorb": "#009E73", "ffba-qg": "#332288",
          "ffba-relu": "#882255"}
SPARE_COLORS = ["#117733", "#AA4499", "#44AA99", "#999933", "#661100", "#6699CC"]
Z95 = 1.959964

# Typography that falls back to ASCII when stdout cannot encode it (a C locale, a pipe to a
# Latin-1 terminal); the files are always UTF-8.
UNICODE = {"dash": "—", "arrow": "→", "times": "×", "pm": "±", "minus": "−", "ndash": "–"}
ASCII = {"dash": "-", "arrow": "->", "times": "x", "pm": "+/-", "minus": "-", "ndash": "-"}


def stdout_symbols():
    try:
        "".join(UNICODE.values()).encode(sys.stdout.encoding or "ascii")
        return UNICODE
    except (UnicodeEncodeError, LookupError):
        return ASCII


def to_ascii(text):
    for key, sym in UNICODE.items():
        text = text.replace(sym, ASCII[key])
    return text


# ---------------------------------------------------------------------------- reading

class Inputs:
    """Everything found under DEMO_DIR, and what was missing."""

    def __init__(self, root):
        self.root = root
        self.problems = []   # one line each, printed on stderr and listed in report.md
        self.found = 0       # files read successfully

    def problem(self, msg):
        self.problems.append(msg)
        line = f"{PROG}: {msg}"
        try:
            line.encode(sys.stderr.encoding or "ascii")
        except (UnicodeEncodeError, LookupError):
            line = to_ascii(line)
        print(line, file=sys.stderr)

    def json(self, path, what):
        if not os.path.isfile(path):
            self.problem(f"missing {path} ({what}); its cells show \u2014")
            return None
        try:
            with open(path, encoding="utf-8") as f:
                value = json.load(f)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            self.problem(f"{path}: cannot read it as JSON ({e}); its cells show \u2014")
            return None
        self.found += 1
        return value

    def jsonl(self, path, what):
        if not os.path.isfile(path):
            self.problem(f"missing {path} ({what}); its cells show \u2014")
            return None
        rows, bad = [], []
        try:
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError:
                        bad.append(n)
                        continue
                    if isinstance(row, dict):
                        rows.append(row)
                    else:
                        bad.append(n)
        except (OSError, UnicodeDecodeError) as e:
            self.problem(f"{path}: cannot read it ({e}); its cells show \u2014")
            return None
        if bad:
            self.problem(f"{path}:{bad[0]}: {len(bad)} line(s) are not JSON objects; skipped")
        self.found += 1
        return rows


def subdirs(path):
    try:
        return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    except OSError:
        return []


def num(x):
    """A finite float, or None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def llama_parameters(cfg):
    """Parameters of a Llama model from its Hugging Face config.json, or None."""
    try:
        d = int(cfg["hidden_size"])
        f = int(cfg["intermediate_size"])
        layers = int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
        kv = int(cfg.get("num_key_value_heads") or heads)
        hd = int(cfg.get("head_dim") or d // heads)
        vocab = int(cfg["vocab_size"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    per_layer = d * heads * hd * 2 + d * kv * hd * 2 + 3 * d * f + 2 * d
    lm_head = 0 if cfg.get("tie_word_embeddings", False) else vocab * d
    return vocab * d + layers * per_layer + d + lm_head


def variant_key(name):
    return (ORDER.index(name), name) if name in ORDER else (len(ORDER), name)


class Variant:
    def __init__(self, name):
        self.name = name
        self.trained = False
        self.config = None     # train_config.json
        self.steps = []        # (step, loss)
        self.evals = []        # (step, eval_loss)
        self.last_step = None  # the last step line (dict)
        self.results = {}      # task -> results.json
        self.bench = None      # bench.json entry

    @property
    def val_start(self):
        return self.evals[0][1] if self.evals and self.evals[0][0] == 0 else None

    @property
    def val_end(self):
        return self.evals[-1][1] if self.evals else None

    def metric(self, task, key):
        r = self.results.get(task)
        if not isinstance(r, dict) or not isinstance(r.get("metrics"), dict):
            return None
        return num(r["metrics"].get(key))

    def count(self, task):
        r = self.results.get(task)
        n = num(r.get("count")) if isinstance(r, dict) else None
        return int(n) if n else None


def read_all(root):
    inp = Inputs(root)
    base_cfg = inp.json(os.path.join(root, "base", "config.json"), "the base model's config")
    base_params = llama_parameters(base_cfg) if isinstance(base_cfg, dict) else None

    variants = {}

    def get(name):
        return variants.setdefault(name, Variant(name))

    train_dir, eval_dir = os.path.join(root, "train"), os.path.join(root, "eval")
    trained = subdirs(train_dir)
    evaluated = [v for v in subdirs(eval_dir) if v != "base"]
    if not os.path.isdir(train_dir):
        inp.problem(f"missing {train_dir} (the fine-tuning runs); no loss or parameter counts")
    if not os.path.isdir(eval_dir):
        inp.problem(f"missing {eval_dir} (the evaluations); no accuracies")

    for name in sorted(set(trained) | set(evaluated), key=variant_key):
        v = get(name)
        v.trained = True
        d = os.path.join(train_dir, name)
        if not os.path.isdir(train_dir):
            continue  # already said once
        if name not in trained and name in ("pf-lora", "lora-merged"):
            continue  # evaluated with lora's adapter: nothing of its own to train
        cfg = inp.json(os.path.join(d, "train_config.json"), f"{name}'s training configuration")
        v.config = cfg if isinstance(cfg, dict) else None
        log = inp.jsonl(os.path.join(d, "train_log.jsonl"), f"{name}'s training log")
        for row in log or []:
            step = num(row.get("step"))
            if step is None:
                continue
            if num(row.get("eval_loss")) is not None:
                v.evals.append((step, num(row["eval_loss"])))
            elif num(row.get("loss")) is not None:
                v.steps.append((step, num(row["loss"])))
                v.last_step = row
        v.evals.sort(key=lambda e: e[0])
        v.steps.sort(key=lambda s: s[0])

    base = Variant("base")
    for v in [base] + list(variants.values()):
        if v.name != "base" and not v.trained:
            continue
        if not os.path.isdir(eval_dir):
            break  # already said once
        for task in TASKS:
            path = os.path.join(eval_dir, v.name, task, "results.json")
            r = inp.json(path, f"{v.name} on {task}")
            if isinstance(r, dict):
                v.results[task] = r

    bench_meta = {}
    bench = inp.json(os.path.join(root, "bench.json"), "decode latency of every variant")
    if isinstance(bench, dict):  # tolerate {"results": [...]} or a single object
        bench = next((x for x in bench.values() if isinstance(x, list)), [bench])
    if bench is not None and not isinstance(bench, list):
        inp.problem(f"{os.path.join(root, 'bench.json')}: expected a JSON array of variants")
        bench = None
    for entry in bench or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("variant"), str):
            continue
        name = entry["variant"]
        target = base if name == "base" else get(name)
        if target.bench is None:
            target.bench = entry
        for key in ("model", "threads", "repetitions", "n_gen", "weight_bytes"):
            if key in entry and key not in bench_meta:
                bench_meta[key] = entry[key]
    if bench is not None and base.bench is None:
        inp.problem("bench.json has no \"base\" entry; overheads are taken as written")

    ordered = [variants[k] for k in sorted(variants, key=variant_key)]
    return inp, base, ordered, base_params, bench_meta


# ---------------------------------------------------------------------------- numbers

def overhead(v):
    return num(v.bench.get("overhead_pct")) if v and v.bench else None


def tpot(v):
    return num(v.bench.get("tpot_ms")) if v and v.bench else None


def sync_points(v):
    return num(v.bench.get("sync_points_per_token")) if v and v.bench else None


def repetition_overheads(v, base):
    """Per-repetition overhead (%) from the interleaved samples, or []."""
    if not (v and v.bench and base and base.bench):
        return []
    a, b = v.bench.get("tpot_samples_ms"), base.bench.get("tpot_samples_ms")
    if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
        return []
    out = []
    for x, y in zip(a, b):
        x, y = num(x), num(y)
        if x is not None and y:
            out.append(100.0 * (x / y - 1.0))
    return out


def repetition_cuts(v, lora, base):
    """Per-repetition share (%) of LoRA's overhead removed, or []."""
    a, b = repetition_overheads(v, base), repetition_overheads(lora, base)
    if len(a) != len(b):
        return []
    return [100.0 * (1.0 - x / y) for x, y in zip(a, b) if y > 0]


def cut_of_lora(v, lora):
    """1 - overhead(v) / overhead(lora), in %; None when undefined."""
    o, ol = overhead(v), overhead(lora)
    if o is None or ol is None or ol <= 0:
        return None
    return 100.0 * (1.0 - o / ol)


def trainable(v, by_name):
    if v.config and num(v.config.get("trainable_parameters")) is not None:
        return int(v.config["trainable_parameters"]), False
    # pf-lora and lora-merged run lora's adapter file: same parameters.
    if v.name in ("pf-lora", "lora-merged"):
        lora = by_name.get("lora")
        if lora and lora.config and num(lora.config.get("trainable_parameters")) is not None:
            return int(lora.config["trainable_parameters"]), True
    return None, False


def half_width(n, p=0.5):
    """Half-width (points) of the normal-approximation 95% binomial interval."""
    return 100.0 * Z95 * math.sqrt(p * (1.0 - p) / n) if n else None


def and_list(words):
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def model_size_words(params):
    if params >= 1e9:
        return f"{params / 1e9:.2f}B"
    if params >= 1e6:
        return f"{params / 1e6:.1f}M"
    if params >= 1e3:
        return f"{params / 1e3:.0f}k"
    return str(int(params))


# ---------------------------------------------------------------------------- formatting

D = "\u2014"


def f_pct(x, digits=1, sign=False):
    if x is None:
        return D
    s = f"{x:+.{digits}f}%" if sign else f"{x:.{digits}f}%"
    return s.replace("-", "\u2212")


def f_num(x, digits):
    return D if x is None else f"{x:.{digits}f}"


def f_int(x):
    return D if x is None else f"{int(round(x)):,}"


def f_ms(x):
    if x is None:
        return D
    return f"{x:.2f}" if x >= 1 else f"{x:.3f}" if x >= 0.01 else f"{x:.2g}"


def build_table(base, variants, base_params):
    """(header lines, rows, alignments): the table of stdout and report.md."""
    by_name = {v.name: v for v in variants}
    lora = by_name.get("lora")
    header = [
        ("variant", ""), ("trainable", "params"), ("mcq", "acc."), ("math", "acc."),
        ("ROUGE-L", "F1\u00d7100"), ("val. loss", "start\u2192end"), ("TPOT", "ms"),
        ("TPOT vs", "base"), ("cut of", "LoRA's"), ("syncs", "/token"),
    ]
    align = "<>>>>>>>>>"
    rows = []
    for v in [base] + variants:
        is_base = v is base
        if is_base:
            params = "none"
        else:
            n, borrowed = trainable(v, by_name)
            params = f_int(n)
            if n is not None and base_params:
                share = 100.0 * n / base_params
                params += f" ({share:.1f}%)" if share >= 1 else f" ({share:.2g}%)"
            if borrowed:
                params += "*"
        loss = D
        if v.val_end is not None:
            start = f_num(v.val_start, 3) if v.val_start is not None else "?"
            loss = f"{start}\u2192{v.val_end:.3f}"
        rougel = v.metric("rouge", "rougeL")
        acc = [v.metric(t, "accuracy") for t in ("mcq", "math")]
        if is_base:
            over, cut = ("ref." if tpot(v) is not None else D), D
        else:
            over = f_pct(overhead(v), 1, sign=True)
            cut = "ref." if v is lora and overhead(v) is not None else f_pct(cut_of_lora(v, lora), 0)
        rows.append([
            "base (no adapter)" if is_base else v.name, params,
            *(f_pct(None if a is None else 100.0 * a, 1) for a in acc),
            f_num(None if rougel is None else 100.0 * rougel, 1),
            loss, f_ms(tpot(v)), over, cut, f_int(sync_points(v)),
        ])
    return header, rows, align


def text_table(header, rows, align):
    cols = len(header)
    widths = [max(len(header[i][0]), len(header[i][1]), *(len(r[i]) for r in rows)) for i in range(cols)]

    def line(cells):
        out = []
        for i, c in enumerate(cells):
            out.append(c.ljust(widths[i]) if align[i] == "<" else c.rjust(widths[i]))
        return "  ".join(out).rstrip()

    rule = "  ".join("\u2500" * w for w in widths)
    return "\n".join([line([h[0] for h in header]), line([h[1] for h in header]), rule]
                     + [line(r) for r in rows])


def md_table(header, cells_rows, align):
    names = [(f"{a} {b}".strip()) for a, b in header]
    out = ["| " + " | ".join(names) + " |",
           "| " + " | ".join("---" if a == "<" else "---:" for a in align) + " |"]
    for r in cells_rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------------------- the words

def bench_is_1b(meta):
    """(True/False/None, estimated parameters): is bench.json's model of the 1B shape?"""
    wb = num(meta.get("weight_bytes"))
    if not wb:
        return None, None
    # The matrices read per token (embedding rows aside, the LM head counted), in bf16/f16 or f32.
    for width in (2.0, 4.0):
        if 1.0e9 <= wb / width <= 1.5e9:
            return True, wb / width
    return False, wb / 2.0


def shape_words(meta):
    is1b, est = bench_is_1b(meta)
    if is1b:
        return "at the Llama-3.2-1B shape (random weights)"
    if est:
        return f"on bench.json's model of about {model_size_words(est)} parameters (NOT the 1B shape)"
    return "on bench.json's model"


def task_n(base, variants, task):
    ns = sorted({n for v in [base] + variants for n in [v.count(task)] if n})
    return ns


def sentences(base, variants, base_params, meta):
    """What the table shows, in plain words: a list of short paragraphs."""
    by_name = {v.name: v for v in variants}
    lora = by_name.get("lora")
    out = []

    # 1. Speed.
    timed = [v for v in variants if overhead(v) is not None]
    if timed:
        unmerged = [v for v in timed if v.name != "lora-merged"]
        fastest = min(unmerged or timed, key=overhead)
        slowest = max(timed, key=overhead)
        s = (f"At decode, {fastest.name} was the fastest "
             f"{'unmerged ' if unmerged and 'lora-merged' in by_name else ''}adapter "
             f"({f_pct(overhead(fastest), 1, True)} time per token over the base model)")
        fr = repetition_overheads(fastest, base)
        close = [v.name for v in (unmerged or timed) if v is not fastest and fr
                 and len(repetition_overheads(v, base)) > 1
                 and min(repetition_overheads(v, base)) <= max(fr)]
        if len(fr) > 1 and close:
            s += (f", though its lead over {and_list(close)} is inside the spread between "
                  f"repetitions")
        merged = by_name.get("lora-merged")
        if merged and overhead(merged) is not None:
            s += (f"; merged LoRA ran at {f_pct(overhead(merged), 1, True)}, as merging should "
                  f"(but it fixes one adapter per model copy)")
        if slowest is not fastest:
            s += f"; the slowest was {slowest.name} at {f_pct(overhead(slowest), 1, True)}"
        if lora is not None and overhead(lora) is not None:
            lo, hi = PAPER_LORA_OVERHEAD
            o = overhead(lora)
            where = "inside" if lo <= o <= hi else "above" if o > hi else "below"
            s += (f". Unmerged LoRA's {f_pct(o, 1, True)} is {where} the paper's "
                  f"{lo:.0f}\u2013{hi:.0f}% on GPUs (this bench runs on CPU cores, where the "
                  f"cost shows as extra synchronisation points: "
                  f"{f_int(sync_points(lora))} per token against the base's "
                  f"{f_int(sync_points(base))})")
        reps = repetition_overheads(lora, base)
        if len(reps) > 1:
            s += (f"; its overhead moved between {f_pct(min(reps), 1, True)} and "
                  f"{f_pct(max(reps), 1, True)} across the {len(reps)} repetitions")
        out.append(s + ".")

    # 2. The paper's headline: FFBA's cut of LoRA's overhead.
    cuts = [(v, cut_of_lora(v, lora)) for v in variants if v.name in FLORA]
    cuts = [(v, c) for v, c in cuts if c is not None]
    if cuts:
        lo, hi = PAPER_CUT_1B

        def where(c):
            return "within" if lo <= c <= hi else "above" if c > hi else "below"

        parts = []
        for v, c in cuts:
            part = f"{v.name} {c:.0f}%"
            reps = repetition_cuts(v, lora, base)
            if len(reps) > 1:
                part += f" (per repetition {min(reps):.0f} to {max(reps):.0f}%)"
            parts.append(part)
        places = {where(c) for _, c in cuts}
        if len(places) == 1:
            verdict = {"above": "all more than", "within": "all within",
                       "below": "all less than"}[places.pop()] + " the paper's 21\u201330% at 1B"
        else:
            verdict = ("against the paper's 21\u201330% at 1B: "
                       + ", ".join(f"{v.name} {where(c)}" for v, c in cuts))
        s = f"Share of LoRA's overhead that the FLoRA variants remove: {', '.join(parts)}; {verdict}"
        o = overhead(lora)
        if o is not None and o < 15:
            s += (f" (LoRA's own overhead is only {f_pct(o, 1, True)} here, so these shares rest "
                  f"on differences of a few percent of the token time)")
        out.append(s + ".")
    elif lora is not None and overhead(lora) is not None and overhead(lora) <= 0:
        out.append("LoRA showed no overhead over the base in this bench, so the share of LoRA's "
                   "overhead removed is undefined here.")

    # 3. Accuracy: FFBA (or the first FLoRA variant trained) against LoRA, within the noise?
    trained = [v for v in variants if v.trained]
    flora = next((v for v in trained if v.name == "ffba"), None) or \
        next((v for v in trained if v.name in FLORA), None)
    if flora and lora and lora.trained:
        items, inside, outside, zeros = [], [], [], []
        for task in ("mcq", "math"):
            a, b = flora.metric(task, "accuracy"), lora.metric(task, "accuracy")
            na, nb = flora.count(task), lora.count(task)
            if a is None or b is None or not na or not nb:
                continue
            if a == b == 0:
                zeros.append(task)
                continue
            diff = 100.0 * (a - b)
            p = (a * na + b * nb) / (na + nb)
            noise = 100.0 * Z95 * math.sqrt(p * (1 - p) * (1.0 / na + 1.0 / nb))
            items.append(f"{task} {100 * a:.1f}% vs {100 * b:.1f}% ({diff:+.1f} points; "
                         f"95% noise of the difference \u00b1{noise:.1f})")
            (inside if abs(diff) <= noise else outside).append((task, diff))
        if items or zeros:
            s = f"Accuracy, {flora.name} against lora: " + ", ".join(items)
            if inside and not outside:
                s += (f"; {'both differences are' if len(inside) > 1 else 'the difference is'} "
                      f"inside the noise, so {flora.name} matched lora within what these test sets "
                      f"can resolve (neither better nor worse)")
            for task, diff in outside:
                s += (f"; on {task} {flora.name} did {'better' if diff > 0 else 'worse'} than lora, "
                      f"beyond the noise")
            if zeros:
                s += (f"{'; ' if items else ''}on {' and '.join(zeros)} both scored 0% (no answer "
                      f"right, which says nothing about the adapters)")
            ra, rb = flora.metric("rouge", "rougeL"), lora.metric("rouge", "rougeL")
            if ra is not None and rb is not None:
                s += f"; ROUGE-L {100 * ra:.1f} vs {100 * rb:.1f} (no noise estimate)"
            out.append(s + ".")

    # 4. The noise of N test items.
    ns = sorted(set(task_n(base, variants, "mcq")) | set(task_n(base, variants, "math")))
    if ns:
        n = ns[0]
        hw = half_width(n)
        n_words = f"N = {n}" if len(ns) == 1 else f"N = {ns[0]}\u2013{ns[-1]}"
        out.append(f"The accuracies are noisy: with {n_words} test items per task, a 95% "
                   f"binomial interval on one accuracy is up to \u00b1{hw:.1f} points "
                   f"({2 * hw:.1f} points wide, at 50% accuracy), and two variants must differ by about "
                   f"{hw * math.sqrt(2):.0f} points before the difference means anything.")

    # 5. Validation loss.
    with_loss = [v for v in trained if v.val_end is not None]
    if with_loss:
        fell = [v for v in with_loss if v.val_start is not None and v.val_end < v.val_start]
        rose = [v for v in with_loss if v.val_start is not None and v.val_end >= v.val_start]
        best = min(with_loss, key=lambda v: v.val_end)
        s = f"Fine-tuning lowered the validation loss for {len(fell)} of {len(with_loss)} variants"
        if rose:
            s += f" (not for {', '.join(v.name for v in rose)})"
        s += f"; the lowest at the end was {best.name} ({best.val_end:.3f})"
        out.append(s + ".")

    # 6. Where the numbers come from.
    is1b, est = bench_is_1b(meta)
    where = []
    if any(v.bench for v in [base] + variants):
        threads = meta.get("threads")
        reps = meta.get("repetitions")
        how = ", ".join(x for x in [
            f"{threads} CPU threads" if threads else "",
            (f"median of {reps} repetitions" if reps != 1 else "1 repetition, no spread measured")
            if reps else "",
            "random adapters of rank " + str(lora.bench.get("rank")) if lora and lora.bench else ""] if x)
        if is1b:
            where.append(f"the latency columns come from random-weight models of the exact "
                         f"Llama-3.2-1B shape ({how}), not from the fine-tuned adapters")
        elif est:
            where.append(f"the latency columns come from bench.json's model \"{meta.get('model')}\" "
                         f"of about {model_size_words(est)} parameters, NOT the Llama-3.2-1B "
                         f"shape, so they cannot be compared with the paper ({how})")
        else:
            where.append(f"the latency columns come from bench.json ({how}); its model size "
                         f"is not recorded")
    if trained:
        size = f" ({model_size_words(base_params)} parameters)" if base_params else ""
        steps = sorted({int(v.last_step["step"]) for v in trained if v.last_step})
        steps_words = ""
        if steps:
            steps_words = f", fine-tuned for {steps[0]}" + (f"\u2013{steps[-1]}" if len(steps) > 1 else "") + " steps"
        where.append(f"the accuracy and loss columns come from the small model flora pretrained "
                     f"itself{size}{steps_words}, so they show how the adapters learn at that "
                     f"scale, not how they would do on a real 1B model")
    if where:
        joined = "; ".join(where)
        out.append(joined[0].upper() + joined[1:] + ".")
    return out


def paper_lines(base, variants):
    """(claim, ours) pairs for the block beside the table."""
    by_name = {v.name: v for v in variants}
    lora = by_name.get("lora")
    o = overhead(lora)
    ours_lora = f"lora: {f_pct(o, 1, True)}" if o is not None else f"lora: {D} (not measured)"
    cuts = [f"{v.name}: {f_pct(cut_of_lora(v, lora), 0)}" for v in variants
            if v.name in FLORA and overhead(v) is not None]
    ffba_acc = []
    for v in variants:
        if v.name in FFBA and v.trained:
            ffba_acc.append(v)
    acc_words = D
    if ffba_acc and lora and lora.trained:
        v = ffba_acc[0]
        parts = []
        for task, key, scale, unit in (("mcq", "accuracy", 100, "%"), ("math", "accuracy", 100, "%"),
                                       ("rouge", "rougeL", 100, "")):
            a, b = v.metric(task, key), lora.metric(task, key)
            if a is not None and b is not None:
                label = "ROUGE-L" if task == "rouge" else task
                parts.append(f"{label} {scale * a:.1f}{unit} vs {scale * b:.1f}{unit}")
        if parts:
            acc_words = f"{v.name} vs lora: " + ", ".join(parts)
    return [
        ("Unmerged LoRA adds 20\u201350% time per output token (GPUs)", ours_lora),
        ("FFBA cuts LoRA's TPOT overhead by 21\u201330% (1B)",
         ", ".join(cuts) if cuts else D),
        ("... and by 31\u201348% (3B)", "not measured (no 3B run in the demo)"),
        ("... at equal or better accuracy than LoRA", acc_words),
    ]


COLUMN_NOTES = [
    ("trainable parameters", "adapter weights fine-tuned on the small model, as % of its own "
     "parameters ({base}); * = pf-lora and lora-merged run lora's adapter file, executed differently"),
    ("mcq / math acc.", "share of test items answered exactly right (N per task below)"),
    ("ROUGE-L", "overlap of the generated summary with the reference, F1 \u00d7 100"),
    ("val. loss", "validation loss on held-out data, before (step 0) \u2192 after fine-tuning; lower is better"),
    ("TPOT", "time per output token when decoding, in ms, {shape}"),
    ("TPOT vs base", "extra time per token against the same model without adapter"),
    ("cut of LoRA's", "how much of LoRA's overhead the variant removes: "
     "1 \u2212 overhead(variant) / overhead(lora), the paper's headline figure"),
    ("syncs /token", "thread barriers per generated token (the CPU counterpart of extra GPU kernel launches)"),
]


# ---------------------------------------------------------------------------- SVG

_UNLISTED = []  # variants without a colour of their own, in the order met


def color_of(name):
    if name in COLORS:
        return COLORS[name]
    if name not in _UNLISTED:
        _UNLISTED.append(name)
    return SPARE_COLORS[_UNLISTED.index(name) % len(SPARE_COLORS)]


def nice_ticks(lo, hi, count=5):
    """Round tick values covering [lo, hi]: (ticks, step)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi - lo <= 0:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9) * step
    last = math.ceil(hi / step - 1e-9) * step
    n = int(round((last - first) / step))
    return [first + i * step for i in range(n + 1)], step


def tick_label(x, step):
    if step >= 1:
        s = f"{x:.0f}"
    else:
        digits = max(0, -int(math.floor(math.log10(step) + 1e-9)))
        if abs(round(step * 10 ** digits) - step * 10 ** digits) > 1e-6:
            digits += 1
        s = f"{x:.{digits}f}"
    return "0" if s in ("-0", "-0.0", "-0.00") else s.replace("-", "\u2212")


FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'


def svg_open(width, height, title):
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" {FONT} font-size="12">',
            f"<title>{escape(title)}</title>",
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>']


def text(x, y, s, anchor="start", size=12, fill="#222", weight=None, extra=""):
    w = f' font-weight="{weight}"' if weight else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{fill}"{w}{extra}>{escape(s)}</text>')


def moving_average(points, window):
    """Centred running mean of (x, y) points, shrinking at the ends."""
    ys = [y for _, y in points]
    half = window // 2
    out = []
    for i, (x, _) in enumerate(points):
        lo, hi = max(0, i - half), min(len(ys), i + half + 1)
        out.append((x, sum(ys[lo:hi]) / (hi - lo)))
    return out


def loss_svg(variants):
    W, H = 760, 460
    left, right, top, bottom = 70, 190, 62, 56
    pw, ph = W - left - right, H - top - bottom
    runs = [v for v in variants if v.trained and (v.steps or v.evals)]
    out = svg_open(W, H, "Training loss per adapter variant")
    out.append(text(left, 24, "Training loss per adapter variant", size=16, weight="bold"))
    longest = max((len(v.steps) for v in runs), default=0)
    window = max(1, longest // 25) if longest > 50 else 1
    line = (f"faint: training loss per step; solid: its mean over {window} steps" if window > 1
            else "line: training loss per step")
    out.append(text(left, 44, f"small base model flora pretrained; {line}; dots: validation loss",
                    size=12, fill="#555"))
    if not runs:
        out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
        out.append(text(left + pw / 2, top + ph / 2, "no training logs found", "middle", 14, "#777"))
        out.append("</svg>")
        return "\n".join(out) + "\n"
    xs = [s for v in runs for s, _ in v.steps + v.evals]
    ys = [y for v in runs for _, y in v.steps + v.evals]
    xticks, xstep = nice_ticks(0, max(max(xs), 1), 6)
    xstep = max(xstep, 1)
    xticks, xstep = [t for t in xticks if t >= 0], xstep
    ylo, yhi = min(ys), max(ys)
    pad = (yhi - ylo) * 0.05 or max(abs(yhi) * 0.02, 0.01)
    yticks, ystep = nice_ticks(ylo - pad, yhi + pad, 6)
    x0, x1, y0, y1 = xticks[0], xticks[-1], yticks[0], yticks[-1]

    def px(x):
        return left + (x - x0) / (x1 - x0) * pw

    def py(y):
        return top + ph - (y - y0) / (y1 - y0) * ph

    for t in yticks:
        out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + pw}" y2="{py(t):.1f}" stroke="#e6e6e6"/>')
        out.append(text(left - 8, py(t) + 4, tick_label(t, ystep), "end", 11, "#444"))
    for t in xticks:
        out.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + ph}" stroke="#f0f0f0"/>')
        out.append(f'<line x1="{px(t):.1f}" y1="{top + ph}" x2="{px(t):.1f}" y2="{top + ph + 5}" stroke="#444"/>')
        out.append(text(px(t), top + ph + 19, tick_label(t, xstep), "middle", 11, "#444"))
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#444"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#444"/>')
    out.append(text(left + pw / 2, H - 14, "optimiser step", "middle", 12, "#222"))
    out.append(text(18, top + ph / 2, "loss (cross-entropy, nats per token)", "middle", 12, "#222",
                    extra=f' transform="rotate(-90 18 {top + ph / 2:.1f})"'))

    for v in runs:
        c = color_of(v.name)
        if len(v.steps) > 1:
            pts = " ".join(f"{px(s):.1f},{py(y):.1f}" for s, y in v.steps)
            faint = ' stroke-opacity="0.28" stroke-width="1"' if window > 1 else ' stroke-width="1.8"'
            out.append(f'<polyline points="{pts}" fill="none" stroke="{c}"{faint} '
                       f'stroke-linejoin="round" stroke-linecap="round"><title>{escape(v.name)} '
                       f'training loss per step</title></polyline>')
            if window > 1:
                pts = " ".join(f"{px(s):.1f},{py(y):.1f}" for s, y in moving_average(v.steps, window))
                out.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2" '
                           f'stroke-linejoin="round" stroke-linecap="round"><title>{escape(v.name)} '
                           f'training loss, mean of {window} steps</title></polyline>')
        elif v.steps:
            s, y = v.steps[0]
            out.append(f'<rect x="{px(s) - 3:.1f}" y="{py(y) - 3:.1f}" width="6" height="6" fill="{c}"/>')
        for s, y in v.evals:
            out.append(f'<circle cx="{px(s):.1f}" cy="{py(y):.1f}" r="4" fill="{c}" stroke="#fff" '
                       f'stroke-width="1.2"><title>{escape(v.name)} validation loss at step '
                       f'{s:.0f}: {y:.4f}</title></circle>')

    lx, ly = left + pw + 22, top + 6
    out.append(text(lx, ly, "variant (last validation loss)", size=11, fill="#555"))
    for i, v in enumerate(runs):
        y = ly + 22 + i * 22
        c = color_of(v.name)
        out.append(f'<line x1="{lx}" y1="{y - 4}" x2="{lx + 22}" y2="{y - 4}" stroke="{c}" stroke-width="2.5"/>')
        out.append(f'<circle cx="{lx + 11}" cy="{y - 4}" r="3.5" fill="{c}" stroke="#fff" stroke-width="1"/>')
        label = v.name + (f"  ({v.val_end:.3f})" if v.val_end is not None else "")
        out.append(text(lx + 30, y, label, size=12))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def latency_svg(base, variants, meta):
    by_name = {v.name: v for v in variants}
    lora = by_name.get("lora")
    rows = [v for v in [base] + variants if overhead(v) is not None or (v is base and tpot(v) is not None)]
    row_h, top, left, right = 34, 92, 150, 210
    W = 860
    legend_h = 62
    H = top + max(len(rows), 1) * row_h + 44 + legend_h
    pw = W - left - right
    is1b, est = bench_is_1b(meta)
    title = "Decode time per token: overhead over the base model"
    out = svg_open(W, H, title)
    out.append(text(left, 24, title, size=16, weight="bold"))
    if not rows:
        out.append(text(left + pw / 2, top + 30, "no bench.json results found", "middle", 14, "#777"))
        out.append("</svg>")
        return "\n".join(out) + "\n"
    shape = "Llama-3.2-1B shape, random weights" if is1b else \
        (f"bench model of about {model_size_words(est)} parameters (not the 1B shape)" if est else "bench model")
    sub = [shape]
    if lora and lora.bench and lora.bench.get("rank"):
        sub.append(f"rank {lora.bench['rank']}")
    if meta.get("threads"):
        sub.append(f"{meta['threads']} CPU threads")
    if meta.get("repetitions"):
        reps = meta["repetitions"]
        sub.append(f"median of {reps} repetitions" if reps != 1 else "1 repetition")
    out.append(text(left, 44, "; ".join(sub), size=12, fill="#555"))
    whiskers = "whiskers: range over repetitions; " if (meta.get("repetitions") or 1) > 1 else ""
    out.append(text(left, 62, f"bars: TPOT overhead (%); {whiskers}shaded: the paper's ranges",
                    size=12, fill="#555"))

    # What goes on the axis: bars, whiskers, the paper's bands.
    vals = [0.0, PAPER_LORA_OVERHEAD[1]]
    bands = {}  # name -> (lo, hi, label)
    if lora is not None and overhead(lora) is not None:
        bands["lora"] = (*PAPER_LORA_OVERHEAD, "paper: +20\u201350% (GPUs)")
        if overhead(lora) > 0:
            lo = overhead(lora) * (1 - PAPER_CUT_1B[1] / 100)
            hi = overhead(lora) * (1 - PAPER_CUT_1B[0] / 100)
            for v in variants:
                if v.name in FFBA and overhead(v) is not None:
                    bands[v.name] = (lo, hi, "paper: LoRA's \u221221\u201330%")
    for v in rows:
        vals.append(overhead(v) or 0.0)
        vals.extend(repetition_overheads(v, base))
    for lo, hi, _ in bands.values():
        vals.extend([lo, hi])
    ticks, step = nice_ticks(min(vals), max(vals) * 1.04, 6)
    a1 = ticks[-1]
    a0 = 0.0 if min(vals) >= 0 else min(vals) - 0.03 * (a1 - min(vals))
    ticks = [t for t in ticks if t >= a0 - 1e-9]

    def px(x):
        return left + (x - a0) / (a1 - a0) * pw

    plot_bottom = top + len(rows) * row_h
    for t in ticks:
        out.append(f'<line x1="{px(t):.1f}" y1="{top - 4}" x2="{px(t):.1f}" y2="{plot_bottom}" stroke="#ececec"/>')
        out.append(text(px(t), plot_bottom + 18, tick_label(t, step) + "%", "middle", 11, "#444"))
    out.append(f'<line x1="{left}" y1="{plot_bottom}" x2="{left + pw}" y2="{plot_bottom}" stroke="#444"/>')
    out.append(text(left + pw / 2, plot_bottom + 36, "extra time per output token over the base model (%)",
                    "middle", 12))

    for i, v in enumerate(rows):
        yc = top + i * row_h + row_h / 2
        c = color_of(v.name)
        label = "base (no adapter)" if v is base else v.name
        out.append(text(left - 10, yc + 4, label, "end", 12, weight="bold" if v.name in FFBA else None))
        if v.name in bands:
            lo, hi, blabel = bands[v.name]
            out.append(f'<rect x="{px(lo):.1f}" y="{yc - row_h / 2 + 2:.1f}" width="{max(px(hi) - px(lo), 2):.1f}" '
                       f'height="{row_h - 4}" fill="#8a8a8a" fill-opacity="0.25" stroke="#777" '
                       f'stroke-dasharray="3 2"><title>{escape(blabel)}</title></rect>')
        o = overhead(v) if v is not base else 0.0
        o = 0.0 if o is None else o
        x_a, x_b = sorted((px(0), px(o)))
        bar_h = row_h * 0.5
        out.append(f'<rect x="{x_a:.1f}" y="{yc - bar_h / 2:.1f}" width="{max(x_b - x_a, 1.5):.1f}" '
                   f'height="{bar_h:.1f}" fill="{c}"><title>{escape(label)}: '
                   f'{escape(f_pct(o, 1, True))}, TPOT {escape(f_ms(tpot(v)))} ms</title></rect>')
        reps = repetition_overheads(v, base) if v is not base else []
        if len(reps) > 1:
            r0, r1 = px(min(reps)), px(max(reps))
            out.append(f'<line x1="{r0:.1f}" y1="{yc:.1f}" x2="{r1:.1f}" y2="{yc:.1f}" stroke="#222" stroke-width="1.2"/>')
            for r in (r0, r1):
                out.append(f'<line x1="{r:.1f}" y1="{yc - 5:.1f}" x2="{r:.1f}" y2="{yc + 5:.1f}" stroke="#222" stroke-width="1.2"/>')
        ends = [px(max(o, 0.0))] + ([px(max(reps))] if len(reps) > 1 else [])
        val = "reference" if v is base else f_pct(o, 1, True)
        desc = f"{val} \u00b7 {f_ms(tpot(v))} ms/token"
        s = sync_points(v)
        if s is not None:
            desc += f" \u00b7 {s:.0f} syncs"
        tx = max(ends) + 8
        if tx > W - 8 - 7 * len(desc):
            out.append(text(min(ends) - 8 if min(ends) > left + 150 else px(0) + 6, yc + 4, desc, "end"
                            if min(ends) > left + 150 else "start", 11, "#fff" if min(ends) <= left + 150 else "#222"))
        else:
            out.append(text(tx, yc + 4, desc, "start", 11, "#222"))
    out.append(f'<line x1="{px(0):.1f}" y1="{top - 6}" x2="{px(0):.1f}" y2="{plot_bottom}" stroke="#222" stroke-width="1.2"/>')

    ly = plot_bottom + 58
    out.append(f'<rect x="{left}" y="{ly - 10}" width="22" height="12" fill="#8a8a8a" fill-opacity="0.25" '
               f'stroke="#777" stroke-dasharray="3 2"/>')
    out.append(text(left + 30, ly, "on lora: the paper's unmerged-LoRA overhead on GPUs, +20\u201350%", size=11))
    out.append(f'<rect x="{left}" y="{ly + 8}" width="22" height="12" fill="#8a8a8a" fill-opacity="0.25" '
               f'stroke="#777" stroke-dasharray="3 2"/>')
    out.append(text(left + 30, ly + 18, "on FFBA rows: where the paper's 1B claim puts them "
                    "(our LoRA overhead cut by 21\u201330%)", size=11))
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- report.md

def details_md(base, variants, meta):
    out = []
    trained = [v for v in variants if v.trained]
    if trained:
        out += ["### Fine-tuning", "",
                "| variant | rank | steps | batch | seq len | lr | last training loss | validation loss start \u2192 end | tokens/s | time s |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for v in trained:
            c = v.config or {}
            last = v.last_step or {}
            out.append("| " + " | ".join([
                v.name, f_int(num(c.get("rank"))), f_int(num(last.get("step"))), f_int(num(c.get("batch"))),
                f_int(num(c.get("seq_len"))), D if num(c.get("lr")) is None else f"{c['lr']:g}",
                f_num(num(last.get("loss")), 4),
                (f"{f_num(v.val_start, 4)} \u2192 {f_num(v.val_end, 4)}" if v.val_end is not None else D),
                f_int(num(last.get("tokens_per_s"))), f_num(num(last.get("elapsed_s")), 1)]) + " |")
        out.append("")
    evaluated = [v for v in [base] + variants if v.results]
    if evaluated:
        out += ["### Evaluation", "",
                "| variant | mcq N | mcq accuracy | mcq unparseable | math N | math accuracy | math unparseable | rouge N | ROUGE-1 | ROUGE-2 | ROUGE-L |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for v in evaluated:
            cells = ["base (no adapter)" if v is base else v.name]
            for t in ("mcq", "math"):
                a, u = v.metric(t, "accuracy"), v.metric(t, "unparseable")
                cells += [f_int(v.count(t)), f_pct(None if a is None else 100 * a),
                          f_pct(None if u is None else 100 * u)]
            cells.append(f_int(v.count("rouge")))
            for k in ("rouge1", "rouge2", "rougeL"):
                m = v.metric("rouge", k)
                cells.append(f_num(None if m is None else 100 * m, 1))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    timed = [v for v in [base] + variants if v.bench]
    if timed:
        out += ["### Decode latency (bench.json)", "",
                "| variant | rank | adapter params (bench shape) | TTFT ms | TPOT ms | TPOT over base | per repetition | sync points / token |",
                "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
        for v in timed:
            b = v.bench
            reps = repetition_overheads(v, base) if v is not base else []
            out.append("| " + " | ".join([
                "base (no adapter)" if v is base else v.name, f_int(num(b.get("rank"))),
                f_int(num(b.get("adapter_params"))), f_ms(num(b.get("ttft_ms"))), f_ms(tpot(v)),
                f_pct(overhead(v), 1, True),
                " ".join(f_pct(r, 1, True) for r in reps) if reps else D,
                f_int(sync_points(v))]) + " |")
        is1b, est = bench_is_1b(meta)
        if est:
            out += ["", f"bench model: `{meta.get('model')}`, about {model_size_words(est)} parameters "
                    f"(weights read per token: {num(meta['weight_bytes']) / 1e6:,.1f} MB); "
                    f"{meta.get('n_gen', '?')} decode steps per repetition."]
        out.append("")
    return out


def report_md(root, inp, base, variants, base_params, meta, header, rows, align, words, paper):
    out = ["# flora demo: adapters fine-tuned, evaluated and timed", "",
           f"Made by `python3 tools/demo_report.py {root}` from the files in that directory.", "",
           md_table(header, rows, align), ""]
    out.append("Columns:")
    out.append("")
    for name, what in COLUMN_NOTES:
        what = what.format(base=f_int(base_params) if base_params else "count unknown",
                           shape=shape_words(meta))
        out.append(f"- **{name}**: {what}")
    out += ["", "## Against the paper (FLoRA, arXiv 2511.00050)", "",
            "| the paper claims | measured here |", "| --- | --- |"]
    out += [f"| {a} | {b} |" for a, b in paper]
    out += ["", "## What the table shows", ""]
    out += [f"- {s}" for s in words] or ["- (no numbers to describe)"]
    out += ["", "## Figures", "",
            "![training loss per variant](loss.svg)", "",
            "![TPOT overhead over the base per variant](latency.svg)", "",
            "## Details", ""]
    out += details_md(base, variants, meta)
    if inp.problems:
        out += ["## Missing or unreadable inputs", ""]
        out += [f"- {escape_md(p)}" for p in inp.problems]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def escape_md(s):
    return s.replace("|", "\\|")


# ---------------------------------------------------------------------------- main

def write_atomic(path, content):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(content)
    os.replace(tmp, path)


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr if len(argv) != 2 else sys.stdout)
        return 0 if len(argv) == 2 else 2
    root = argv[1].rstrip("/") or "/"
    if not os.path.isdir(root):
        print(f"{PROG}: {root}: not a directory (expected the output of `make demo`)", file=sys.stderr)
        return 1
    inp, base, variants, base_params, meta = read_all(root)
    if inp.found == 0:
        print(f"{PROG}: nothing to report: none of base/config.json, train/*/train_log.jsonl, "
              f"eval/*/*/results.json or bench.json under {root}", file=sys.stderr)
        return 1

    header, rows, align = build_table(base, variants, base_params)
    words = sentences(base, variants, base_params, meta)
    paper = paper_lines(base, variants)

    sym = stdout_symbols()
    say = (lambda s: s) if sym is UNICODE else to_ascii
    out = [say(f"flora demo: {root}"), ""]
    table = text_table([(say(a), say(b)) for a, b in header], [[say(c) for c in r] for r in rows], align)
    out.append(table if sym is UNICODE else table.replace("\u2500", "-"))
    ns = {t: task_n(base, variants, t) for t in TASKS}
    n_words = ", ".join(f"{t} N={ns[t][0] if len(ns[t]) == 1 else f'{ns[t][0]}-{ns[t][-1]}'}"
                        for t in TASKS if ns[t])
    out.append("")
    share = f"% of its {f_int(base_params)} parameters; " if base_params else ""
    legend = ("Columns: trainable params = adapter weights fine-tuned on the small model "
              f"({share}* = runs lora's adapter, executed differently); acc. = share of test items answered right "
              f"({n_words or 'N unknown'}); ROUGE-L = summary overlap F1\u00d7100; val. loss = "
              f"validation loss before\u2192after fine-tuning; TPOT = time per output token "
              f"{shape_words(meta)}, and its extra over the base; cut of LoRA's = share of LoRA's "
              "overhead removed, 1 \u2212 overhead/LoRA's overhead; syncs = thread barriers per "
              "token (CPU counterpart of extra GPU kernel launches); \u2014 = not measured.")
    out += [say(x) for x in textwrap.wrap(legend, 100)]
    width = max(len(a) for a, _ in paper) + 3
    out += ["", "The paper claims".ljust(width + 2) + "Measured here"]
    for a, b in paper:
        out.append(say(f"  {a:<{width}}{b}"))
    out += ["", "What the table shows:"]
    for s in words:
        out += [say(x) for x in textwrap.wrap(s, 100, initial_indent="- ", subsequent_indent="  ")]
    files = []
    for name, content in (("report.md", lambda: report_md(root, inp, base, variants, base_params, meta,
                                                          header, rows, align, words, paper)),
                          ("loss.svg", lambda: loss_svg(variants)),
                          ("latency.svg", lambda: latency_svg(base, variants, meta))):
        path = os.path.join(root, name)
        try:
            write_atomic(path, content())
            files.append(path)
        except OSError as e:
            print(f"{PROG}: cannot write {path}: {e}", file=sys.stderr)
    out += ["", "Written: " + ", ".join(files) if files else "Nothing written."]
    if inp.problems:
        out.append(f"{len(inp.problems)} input(s) missing or unreadable (listed above on stderr "
                   f"and in report.md); their cells show {sym['dash']}.")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
