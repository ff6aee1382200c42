#!/usr/bin/env python3
"""The last step of `make demo`: one table of what the demo measured, its figures and results.json.

Usage: /usr/bin/python3 tools/demo_report.py DEMO_DIR [--study docs/study.json]

Reads (every file optional; a missing one is named on stderr and its cells show "—"):
  DEMO_DIR/base/config.json                      the small base model (for its parameter count)
  DEMO_DIR/train/<variant>/train_config.json     trainable_parameters, rank, ...
  DEMO_DIR/train/<variant>/train_log.jsonl       step lines (loss, ...) and validation lines (eval_loss)
  DEMO_DIR/eval/<variant|base>/<mcq|math|rouge>/results.json   flora eval's results
  DEMO_DIR/bench.json                            flora bench --variants ... --json-out (1B shape)
  DEMO_DIR/run.json                              scripts/demo.sh's plan: stage times, and the variants
                                                 it timed but left to the study ("from_study")
  --study FILE                                   experiments/summarize_study.py --json: the means shown,
                                                 marked †, for the from_study variants, and categories.svg
Writes:
  stdout                  the table, the paper's claims beside ours, what the numbers say
  DEMO_DIR/report.md      the same, plus details per variant and the figures
  DEMO_DIR/results.json   every number of the table, one object per variant, and the host
  DEMO_DIR/loss.svg       training loss per variant against the step (dots: validation loss)
  DEMO_DIR/latency.svg    TPOT overhead over the base per variant, with the paper's ranges
  DEMO_DIR/categories.svg (with --study) the study's scores per task category with error bars
Exit status: 0, or 1 when nothing at all was found (or DEMO_DIR is not a directory).
Needs matplotlib (Debian's python3-matplotlib, which scripts/setup.sh installs) for the figures.
"""
import json
import math
import os
import statistics
import sys
import textwrap

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
STUDY_MARK = "\u2020"  # a cell read from the committed study, not measured in this run

# Typography that falls back to ASCII when stdout cannot encode it (a C locale, a pipe to a
# Latin-1 terminal); the files are always UTF-8.
UNICODE = {"dash": "—", "arrow": "→", "times": "×", "pm": "±", "minus": "−", "ndash": "–", "dagger": "†"}
ASCII = {"dash": "-", "arrow": "->", "times": "x", "pm": "+/-", "minus": "-", "ndash": "-", "dagger": "#"}


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
        self.study = None      # docs/study.json's configs[name]: this run did not fine-tune it

    def study_mean(self, key):
        """The mean over the study's seeds of KEY (mcq, math, rougeL, val_loss_start, val_loss), or None."""
        values = [num(x) for x in (self.study or {}).get(key, [])]
        values = [x for x in values if x is not None]
        return sum(values) / len(values) if values else None

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
        mark = ""
        if v.study:  # not fine-tuned in this run: the study's means, marked
            mark = STUDY_MARK
            acc = [v.study_mean("mcq"), v.study_mean("math")]
            rougel = v.study_mean("rougeL")
            a, b = v.study_mean("val_loss_start"), v.study_mean("val_loss")
            loss = f"{f_num(a, 3)}\u2192{f_num(b, 3)}{mark}" if b is not None else D
            if num(v.study.get("trainable")) is not None and params == D:
                params = f_int(int(v.study["trainable"])) + mark
        if is_base:
            over, cut = ("ref." if tpot(v) is not None else D), D
        else:
            over = f_pct(overhead(v), 1, sign=True)
            cut = "ref." if v is lora and overhead(v) is not None else f_pct(cut_of_lora(v, lora), 0)
        rows.append([
            "base (no adapter)" if is_base else v.name, params,
            *(f_pct(None if a is None else 100.0 * a, 1) + (mark if a is not None else "") for a in acc),
            f_num(None if rougel is None else 100.0 * rougel, 1) + (mark if rougel is not None else ""),
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


def rouge_noise(study, a, b, diff):
    """ROUGE-L has no binomial noise: the study's seed-to-seed spread of each variant gives the 95%
    noise of a difference between two single runs, Z95 * sqrt(sd_a^2 + sd_b^2)."""
    configs = (study or {}).get("configs", {})
    runs = [configs.get(n, {}).get("rougeL") for n in (a, b)]
    if not all(isinstance(r, list) and len(r) >= 2 for r in runs):
        return " (no noise estimate: the study has no seeds of both)"
    noise = 100.0 * Z95 * math.sqrt(sum(statistics.stdev(r) ** 2 for r in runs))
    seeds = min(len(r) for r in runs)
    verdict = "inside" if abs(100.0 * diff) <= noise else "beyond"
    return (f" ({100 * diff:+.1f} points, {verdict} the \u00b1{noise:.1f} that two single runs differ by "
            f"from the seed alone, by the study's {seeds} seeds)")


def sentences(base, variants, base_params, meta, study=None):
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
                s += f"; ROUGE-L {100 * ra:.1f} vs {100 * rb:.1f}" + rouge_noise(study, flora.name, "lora", ra - rb)
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


# ---------------------------------------------------------------------------- the study and results.json

def read_study(inp, path, run, variants):
    """docs/study.json (experiments/summarize_study.py --json): attaches its numbers to the variants
    run.json lists under from_study (timed in this run, not fine-tuned). Returns the study or None."""
    if not path:
        return None
    study = inp.json(path, "the committed study")
    if not isinstance(study, dict) or not isinstance(study.get("configs"), dict):
        if study is not None:
            inp.problem(f"{path}: expected experiments/summarize_study.py's JSON (an object with \"configs\")")
        return None
    by_name = {v.name: v for v in variants}
    for name in (run or {}).get("from_study", []):
        entry = study["configs"].get(name)
        if not isinstance(entry, dict):
            inp.problem(f"{path}: no configuration {name!r}, which this run left to the study")
            continue
        v = by_name.get(name)
        if v is None:
            v = Variant(name)
            variants.append(v)
            variants.sort(key=lambda x: variant_key(x.name))
            by_name[name] = v
        v.study = entry
    return study


def study_seeds(study):
    counts = sorted({len(c.get("seeds", [])) for c in (study or {}).get("configs", {}).values()})
    return counts[0] if len(counts) == 1 else None


def results_json(base, variants, base_params, meta, run, study_path):
    """out/demo/results.json: every number of the table, one object per variant, and the host."""
    def entry(v):
        n, _ = trainable(v, {x.name: x for x in variants})
        if v.study:
            src = "study"
            score = {"mcq_accuracy": v.study_mean("mcq"), "math_accuracy": v.study_mean("math"),
                     "rougeL": v.study_mean("rougeL"), "val_loss_start": v.study_mean("val_loss_start"),
                     "val_loss_end": v.study_mean("val_loss"), "study_seeds": len(v.study.get("seeds", []))}
            n = num(v.study.get("trainable")) if n is None else n
        else:
            src = "measured" if (v.results or v.evals) else "timed only"
            score = {"mcq_accuracy": v.metric("mcq", "accuracy"), "math_accuracy": v.metric("math", "accuracy"),
                     "rouge1": v.metric("rouge", "rouge1"), "rouge2": v.metric("rouge", "rouge2"),
                     "rougeL": v.metric("rouge", "rougeL"), "val_loss_start": v.val_start, "val_loss_end": v.val_end}
        b = v.bench or {}
        return {"variant": v.name, "scores_from": src, "trainable_parameters": 0 if v is base else n, **score,
                "tpot_ms": tpot(v), "tpot_overhead_pct": 0.0 if v is base and b else overhead(v),
                "tpot_over_bandwidth_limit": num(b.get("roofline_ratio")),
                "sync_points_per_token": sync_points(v)}
    bench = base.bench or {}
    run = run or {}
    return {
        "made_by": "tools/demo_report.py",
        "study": study_path if any(v.study for v in variants) else None,
        "host": {"cpu_target": bench.get("cpu_target", run.get("cpu_target")),
                 "threads": meta.get("threads", run.get("threads")),
                 "bandwidth_gbs": num(bench.get("bandwidth_gbs")),
                 "bench_model": meta.get("model"), "base_model_parameters": base_params},
        "stages": run.get("stages", []),
        "variants": [entry(v) for v in [base] + variants],
    }


# ---------------------------------------------------------------------------- figures (matplotlib)

_UNLISTED = []  # variants without a colour of their own, in the order met


def color_of(name):
    if name in COLORS:
        return COLORS[name]
    if name not in _UNLISTED:
        _UNLISTED.append(name)
    return SPARE_COLORS[_UNLISTED.index(name) % len(SPARE_COLORS)]


def pyplot():
    """matplotlib's pyplot on the file-only backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        matplotlib.rcParams["svg.hashsalt"] = "flora"  # the same ids in every run of the same data
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def moving_average(ys, window):
    """Centred running mean, shrinking at the ends."""
    half = window // 2
    return [sum(ys[max(0, i - half):i + half + 1]) / len(ys[max(0, i - half):i + half + 1]) for i in range(len(ys))]


def save_svg(fig, path):
    """Writes the figure to PATH through a temporary name (a failed write leaves the old file)."""
    tmp = path + ".tmp"
    try:
        fig.savefig(tmp, format="svg", bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def empty(ax, message):
    ax.text(0.5, 0.5, message, ha="center", va="center", color="#777", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def loss_figure(plt, variants):
    """Training loss per step (faint), its running mean and the validation losses (dots)."""
    runs = [v for v in variants if v.trained and (v.steps or v.evals)]
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    longest = max((len(v.steps) for v in runs), default=0)
    window = max(1, longest // 25) if longest > 50 else 1
    line = f"faint: training loss per step; solid: its mean over {window} steps" if window > 1 \
        else "line: training loss per step"
    ax.set_title(f"Training loss per adapter variant\n{line}; dots: validation loss", fontsize=11)
    if not runs:
        empty(ax, "no training logs found")
        return fig
    for v in runs:
        c = color_of(v.name)
        label = v.name + (f"  ({v.val_end:.3f})" if v.val_end is not None else "")
        if v.steps:
            xs, ys = [s for s, _ in v.steps], [y for _, y in v.steps]
            if window > 1:
                ax.plot(xs, ys, color=c, alpha=0.28, lw=1)
                ys = moving_average(ys, window)
            ax.plot(xs, ys, color=c, lw=2, label=label, marker="s" if len(xs) == 1 else None,
                    gid=f"loss-{v.name}")
            label = None
        if v.evals:
            ax.plot([s for s, _ in v.evals], [y for _, y in v.evals], "o", color=c, mec="white", ms=7,
                    label=label, gid=f"validation-{v.name}")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (cross-entropy, nats per token)")
    ax.grid(alpha=0.3)
    ax.legend(title="variant (last validation loss)", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return fig


def latency_figure(plt, base, variants, meta):
    """TPOT overhead over the base per variant: bars, the range over repetitions, the paper's ranges."""
    by_name = {v.name: v for v in variants}
    lora = by_name.get("lora")
    rows = [v for v in [base] + variants if overhead(v) is not None or (v is base and tpot(v) is not None)]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.45 * max(len(rows), 2)))
    is1b, est = bench_is_1b(meta)
    sub = ["Llama-3.2-1B shape, random weights" if is1b else
           (f"bench model of about {model_size_words(est)} parameters (not the 1B shape)" if est else "bench model")]
    if lora and lora.bench and lora.bench.get("rank"):
        sub.append(f"rank {lora.bench['rank']}")
    if meta.get("threads"):
        sub.append(f"{meta['threads']} CPU threads")
    reps = meta.get("repetitions") or 1
    sub.append(f"median of {reps} repetitions" if reps != 1 else "1 repetition")
    ax.set_title("Decode time per token: overhead over the base model\n" + "; ".join(sub)
                 + ("; whiskers: range over repetitions" if reps > 1 else ""), fontsize=11)
    if not rows:
        empty(ax, "no bench.json results found")
        return fig
    names = ["base (no adapter)" if v is base else v.name for v in rows]
    y = list(range(len(rows)))[::-1]  # the first row on top
    band_label = {"lora": "the paper: unmerged LoRA +20\u201350% (GPUs)",
                  "ffba": "the paper's 1B claim: LoRA's overhead cut by 21\u201330%"}
    for yi, v in zip(y, rows):
        lo_hi = None
        if v.name == "lora":
            lo_hi = PAPER_LORA_OVERHEAD
        elif v.name in FFBA and overhead(lora) is not None and overhead(lora) > 0:
            lo_hi = (overhead(lora) * (1 - PAPER_CUT_1B[1] / 100), overhead(lora) * (1 - PAPER_CUT_1B[0] / 100))
        if lo_hi:
            key = "lora" if v.name == "lora" else "ffba"
            ax.barh(yi, lo_hi[1] - lo_hi[0], left=lo_hi[0], height=0.9, color="#8a8a8a", alpha=0.25,
                    edgecolor="#777", ls="--", label=band_label.pop(key, None), gid=f"paper-{v.name}")
        o = 0.0 if v is base else overhead(v)
        samples = repetition_overheads(v, base) if v is not base else []
        err = [[o - min(samples)], [max(samples) - o]] if len(samples) > 1 else None
        ax.barh(yi, o, height=0.5, color=color_of(v.name), xerr=err, capsize=4, gid=f"overhead-{v.name}")
        desc = "reference" if v is base else f_pct(o, 1, True)
        desc += f" \u00b7 {f_ms(tpot(v))} ms/token"
        if sync_points(v) is not None:
            desc += f" \u00b7 {sync_points(v):.0f} syncs"
        ax.annotate(desc, (max(o, 0.0, *(samples or [0.0])), yi), xytext=(6, 0), textcoords="offset points",
                    va="center", fontsize=9)
    ax.axvline(0, color="#222", lw=1)
    ax.set_yticks(y, names)
    for label in ax.get_yticklabels():
        label.set_fontweight("bold" if label.get_text() in FFBA else "normal")
    right = max([0.0, PAPER_LORA_OVERHEAD[1]] + [overhead(v) or 0.0 for v in rows]
                + [x for v in rows for x in repetition_overheads(v, base)])
    ax.set_xlim(right=right * 1.45)
    ax.xaxis.set_major_formatter(lambda x, _: f"{x:g}%")
    ax.set_xlabel("extra time per output token over the base model (%)")
    ax.grid(axis="x", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    return fig


STUDY_PANELS = (("mcq", "mcq accuracy (%)", 100.0), ("math", "math accuracy (%)", 100.0),
                ("rougeL", "summary ROUGE-L (F1\u00d7100)", 100.0), ("val_loss", "validation loss (nats)", 1.0))


def categories_figure(plt, study):
    """The study's score per task category and variant: mean over seeds, whiskers one standard deviation."""
    configs = study.get("configs", {}) if isinstance(study, dict) else {}
    names = [n for n in ORDER if n in configs] + sorted(n for n in configs if n not in ORDER)
    fig, axes = plt.subplots(1, len(STUDY_PANELS), figsize=(13, 3.9))
    seeds = sorted({len(c.get("mcq", [])) for c in configs.values()})
    fig.suptitle("The study, per task category: mean over "
                 + (f"{seeds[0]} seeds" if len(seeds) == 1 else "seeds") + "; whiskers: one standard deviation; "
                 "dashed: the base model without an adapter; dotted: chance", fontsize=11)
    base = study.get("base", {}) if isinstance(study, dict) else {}
    for ax, (key, title, scale) in zip(axes, STUDY_PANELS):
        ax.set_title(title, fontsize=10)
        values = [[x * scale for x in configs[n].get(key, []) if x is not None] for n in names]
        if not any(values):
            empty(ax, "not in the study")
            continue
        means = [sum(v) / len(v) if v else 0.0 for v in values]
        sds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        ax.bar(range(len(names)), means, yerr=sds, capsize=3, color=[color_of(n) for n in names],
               gid=f"study-{key}")
        if num(base.get(key)) is not None:
            ax.axhline(base[key] * scale, color="#555", ls="--", lw=1)
        if key == "mcq":
            ax.axhline(100.0 / 3, color="#999", ls=":", lw=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


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


def report_md(root, inp, base, variants, base_params, meta, header, rows, align, words, paper, figures,
              from_study, study_path):
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
    if from_study:
        out += ["", f"{STUDY_MARK} Not measured in this run: {and_list(from_study)} did not fit the demo's time "
                f"budget; the marked cells are the means of the committed study `{study_path}` (same recipe).", ""]
    captions = {"loss.svg": "training loss per variant", "latency.svg": "TPOT overhead over the base per variant",
                "categories.svg": "the study per task category, mean and standard deviation over seeds"}
    out += ["", "## Figures", ""]
    for f in figures:
        out += [f"![{captions[f]}]({f})", ""]
    if not figures:
        out += ["(none written: see the missing inputs below)", ""]
    out += ["## Details", ""]
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
    args = argv[1:]
    study_path = None
    if "--study" in args:
        i = args.index("--study")
        if i + 1 >= len(args):
            print(f"{PROG}: --study: expected a file (docs/study.json)", file=sys.stderr)
            return 2
        study_path = args[i + 1]
        del args[i:i + 2]
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr if len(args) != 1 else sys.stdout)
        return 0 if args in (["-h"], ["--help"]) else 2
    root = args[0].rstrip("/") or "/"
    if not os.path.isdir(root):
        print(f"{PROG}: {root}: not a directory (expected the output of `make demo`)", file=sys.stderr)
        return 1
    inp, base, variants, base_params, meta = read_all(root)
    if inp.found == 0:
        print(f"{PROG}: nothing to report: none of base/config.json, train/*/train_log.jsonl, "
              f"eval/*/*/results.json or bench.json under {root}", file=sys.stderr)
        return 1
    run_path = os.path.join(root, "run.json")
    run = inp.json(run_path, "the demo's plan and stage times") if os.path.exists(run_path) else None
    run = run if isinstance(run, dict) else None
    study = read_study(inp, study_path, run, variants)

    header, rows, align = build_table(base, variants, base_params)
    words = sentences(base, variants, base_params, meta, study)
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
    from_study = [v.name for v in variants if v.study]
    if from_study:
        seeds = study_seeds(study)
        note = (f"{STUDY_MARK} NOT MEASURED IN THIS RUN: {and_list(from_study)} did not fit the time budget "
                f"({(run or {}).get('why', 'see run.json')}), so their accuracy, ROUGE and loss cells are the "
                f"means over {f'{seeds} seeds' if seeds else 'the seeds'} of the committed study {study_path} "
                f"(same recipe); their TPOT was measured now.")
        out += [""] + [say(x) for x in textwrap.wrap(note, 100)]
    width = max(len(a) for a, _ in paper) + 3
    out += ["", "The paper claims".ljust(width + 2) + "Measured here"]
    for a, b in paper:
        out.append(say(f"  {a:<{width}}{b}"))
    out += ["", "What the table shows:"]
    for s in words:
        out += [say(x) for x in textwrap.wrap(s, 100, initial_indent="- ", subsequent_indent="  ")]

    files = []
    plt = pyplot()
    if plt is None:
        inp.problem("matplotlib is not installed (scripts/setup.sh installs python3-matplotlib): no figures")
    figures = [] if plt is None else [("loss.svg", lambda: loss_figure(plt, variants)),
                                      ("latency.svg", lambda: latency_figure(plt, base, variants, meta))]
    if plt is not None and study is not None:
        figures.append(("categories.svg", lambda: categories_figure(plt, study)))
    for name, make in figures:
        path = os.path.join(root, name)
        try:
            fig = make()
            save_svg(fig, path)
            plt.close(fig)
            files.append(path)
        except OSError as e:
            inp.problem(f"cannot write {path}: {e}")
    written = [os.path.basename(f) for f in files]
    for name, content in (("report.md", lambda: report_md(root, inp, base, variants, base_params, meta, header,
                                                          rows, align, words, paper, written, from_study,
                                                          study_path)),
                          ("results.json", lambda: json.dumps(results_json(base, variants, base_params, meta, run,
                                                                           study_path), indent=1) + "\n")):
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
