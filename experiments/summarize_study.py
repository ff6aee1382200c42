#!/usr/bin/env python3
"""Summarises experiments/study.sh's output directory as the markdown tables of
docs/results.md: per configuration, the mean and standard deviation over seeds
of mcq accuracy, math accuracy, ROUGE-L, validation loss and the step-0
validation loss, with the trainable parameter count.
Usage: python3 experiments/summarize_study.py OUT"""
import json
import os
import statistics
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def metric(results, name):
    if not results:
        return None
    m = results.get("metrics", {})
    return m.get(name)


def fmt(values, scale=1.0, digits=1):
    values = [v * scale for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def eval_losses(log_path):
    first = last = None
    try:
        for line in open(log_path):
            j = json.loads(line)
            if "eval_loss" in j:
                if first is None:
                    first = j["eval_loss"]
                last = j["eval_loss"]
    except OSError:
        pass
    return first, last


def main():
    out = sys.argv[1]
    rows = []
    base = {t: load(os.path.join(out, "base", t, "results.json")) for t in ("mcq", "math", "rouge")}
    print("| configuration | seeds | trainable | mcq acc % | math acc % | ROUGE-L | val loss step 0 | val loss end |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| base (no adapter) | — | 0 | {fmt([metric(base['mcq'], 'accuracy')], 100)} | "
          f"{fmt([metric(base['math'], 'accuracy')], 100)} | {fmt([metric(base['rouge'], 'rougeL')], 100)} | — | — |")
    for name in sorted(os.listdir(out)):
        d = os.path.join(out, name)
        if not os.path.isdir(d) or name in ("data", "base"):
            continue
        seeds = sorted(s for s in os.listdir(d) if s.startswith("seed"))
        mcq, math, rouge, l0, l1, params = [], [], [], [], [], None
        for s in seeds:
            sd = os.path.join(d, s)
            mcq.append(metric(load(os.path.join(sd, "mcq", "results.json")), "accuracy"))
            math.append(metric(load(os.path.join(sd, "math", "results.json")), "accuracy"))
            rouge.append(metric(load(os.path.join(sd, "rouge", "results.json")), "rougeL"))
            a, b = eval_losses(os.path.join(sd, "train", "train_log.jsonl"))
            l0.append(a)
            l1.append(b)
            cfg = load(os.path.join(sd, "train", "train_config.json"))
            if cfg:
                params = cfg.get("trainable_parameters")
        done = sum(1 for v in rouge if v is not None)
        print(f"| {name} | {done} | {params if params is not None else '—'} | {fmt(mcq, 100)} | {fmt(math, 100)} | "
              f"{fmt(rouge, 100)} | {fmt(l0, 1, 3)} | {fmt(l1, 1, 3)} |")


if __name__ == "__main__":
    main()
