#!/usr/bin/env python3
"""Summarises experiments/quant_study.sh's output directory as the tables of
docs/results.md (issue 13, item 7): per variant, where it was fine-tuned (the
BF16 base or a quantized one) and which base it runs on, the mean and standard
deviation over seeds of mcq accuracy, math accuracy, ROUGE-L and the final
validation loss (measured by flora train on the base it trained on); then, paired
by seed with 95% t intervals, what running on a quantized base costs each variant,
what training on it gives back, and FFBA minus LoRA on every base.
Usage: python3 experiments/summarize_quant_study.py OUT [--json FILE]"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summarize_study import (eval_losses, fmt, interval_cell, load, metric, paired_interval,  # noqa: E402
                             take_option, write_json_atomic)

FORMATS = ("bf16", "q8_0", "q4_0", "q4_k_m")
METRICS = (("mcq", "accuracy", 100, 1), ("math", "accuracy", 100, 1), ("rouge", "rougeL", 100, 1))


def scores(run_dir):
    """{task: value} of one evaluation directory (run_dir/{mcq,math,rouge}/results.json)."""
    return {task: metric(load(os.path.join(run_dir, task, "results.json")), name) for task, name, _, _ in METRICS}


def collect(out):
    """runs[(variant, trained_on, run_on)] = {seed: {mcq, math, rouge, val_loss}}."""
    runs = {}
    for trained in sorted(d for d in os.listdir(out) if d.startswith("trained-on-")):
        t = trained[len("trained-on-"):]
        for variant in sorted(os.listdir(os.path.join(out, trained))):
            vdir = os.path.join(out, trained, variant)
            for seed in sorted(s for s in os.listdir(vdir) if s.startswith("seed")):
                sdir = os.path.join(vdir, seed)
                _, val = eval_losses(os.path.join(sdir, "train", "train_log.jsonl"))
                for run in sorted(r for r in os.listdir(sdir) if r.startswith("on-")):
                    s = scores(os.path.join(sdir, run))
                    if s["rouge"] is None:
                        continue
                    s["val_loss"] = val if run[3:] == t else None
                    runs.setdefault((variant, t, run[3:]), {})[int(seed[4:])] = s
    return runs


def column(per_seed, key, seeds):
    return [per_seed.get(s, {}).get(key) for s in seeds]


def main():
    args = sys.argv[1:]
    json_out = take_option(args, "--json", "summarize_quant_study")
    if len(args) != 1 or not os.path.isdir(args[0]):
        sys.exit(__doc__)
    out = args[0]
    runs = collect(out)
    order = {f: i for i, f in enumerate(FORMATS)}
    print("| variant | trained on | runs on | seeds | mcq acc % | math acc % | ROUGE-L | val loss end |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for f in FORMATS:
        b = scores(os.path.join(out, "base", f"on-{f}"))
        if b["rouge"] is not None:
            print(f"| base (no adapter) | — | {f} | — | {fmt([b['mcq']], 100)} | {fmt([b['math']], 100)} | "
                  f"{fmt([b['rouge']], 100)} | — |")
    keys = sorted(runs, key=lambda k: (k[0], order.get(k[1], 9), order.get(k[2], 9)))
    for k in keys:
        seeds = sorted(runs[k])
        cells = [fmt(column(runs[k], task, seeds), scale, digits) for task, _, scale, digits in METRICS]
        print(f"| {k[0]} | {k[1]} | {k[2]} | {len(seeds)} | " + " | ".join(cells) +
              f" | {fmt(column(runs[k], 'val_loss', seeds), 1, 3)} |")

    def diff_row(label, a, b):
        if a not in runs or b not in runs:
            return
        seeds = sorted(set(runs[a]) & set(runs[b]))
        cells, n = [], 0
        for task, _, scale, digits in METRICS:
            r = paired_interval(column(runs[a], task, seeds), column(runs[b], task, seeds))
            cells.append(interval_cell(r, scale, digits))
            n = r[2] if r else n
        print(f"| {label} | {n} | " + " | ".join(cells) + " |")

    variants = sorted({k[0] for k in runs})
    print()
    print("| difference (paired by seed) | seeds | mcq acc points | math acc points | ROUGE-L points |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for v in variants:
        for f in FORMATS[1:]:
            diff_row(f"{v}: trained on bf16, run on {f} − run on bf16", (v, "bf16", f), (v, "bf16", "bf16"))
            diff_row(f"{v} on {f}: trained on {f} − trained on bf16", (v, f, f), (v, "bf16", f))
    for f in FORMATS:
        for other in ("lora",):
            for v in variants:
                if v != other:
                    diff_row(f"{v} − {other}, trained on bf16, run on {f}", (v, "bf16", f), (other, "bf16", f))
                    if f != "bf16":
                        diff_row(f"{v} − {other}, trained and run on {f}", (v, f, f), (other, f, f))
    if json_out:
        data = {"made_by": f"python3 experiments/summarize_quant_study.py {out} --json {json_out}",
                "runs": [{"variant": k[0], "trained_on": k[1], "runs_on": k[2],
                          "seeds": {str(s): v for s, v in sorted(runs[k].items())}} for k in keys],
                "base": {f: scores(os.path.join(out, "base", f"on-{f}")) for f in FORMATS}}
        write_json_atomic(json_out, data)


if __name__ == "__main__":
    main()
