#!/usr/bin/env python3
"""Summarises experiments/study.sh's output directory as the markdown tables of
docs/results.md: per configuration, the mean and standard deviation over seeds
of mcq accuracy, math accuracy, ROUGE-L, validation loss and the step-0
validation loss, with the trainable parameter count.
Usage: python3 experiments/summarize_study.py OUT [--json FILE] [--diff A,B ...]
With --diff A,B, also a table of A minus B per metric, paired by seed: the mean
difference and its 95% t interval (an interval that excludes 0 is a difference
these seeds resolve).
With --json, also writes every seed's numbers to FILE (docs/study.json: what
`make demo` shows for the variants it has no time to train, and the per-category
figure of tools/demo_report.py)."""
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


# Two-sided 95% quantiles of Student's t for 1..10 degrees of freedom.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]


def paired_interval(a, b):
    """Mean of a - b over the seeds both have, and the half-width of its 95% t interval."""
    d = [x - y for x, y in zip(a, b) if x is not None and y is not None]
    if len(d) < 2 or len(d) > len(T975) + 1:
        return None
    return statistics.mean(d), T975[len(d) - 2] * statistics.stdev(d) / len(d) ** 0.5, len(d)


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


def interval_cell(r, scale, digits):
    """A paired_interval result as 'mean [low, high]' in the table's units, or '—'."""
    if r is None:
        return "—"
    mean, half, _ = r
    return f"{mean * scale:+.{digits}f} [{(mean - half) * scale:+.{digits}f}, {(mean + half) * scale:+.{digits}f}]"


def write_json_atomic(path, data):
    """data as indented JSON at path, through a temporary name renamed when complete."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def take_option(args, name, prog):
    """The value after `name` in args (both removed from args), or None when absent."""
    if name not in args:
        return None
    i = args.index(name)
    if i + 1 >= len(args):
        sys.exit(f"{prog}: {name}: expected a file name")
    value = args[i + 1]
    del args[i:i + 2]
    return value


def main():
    args = sys.argv[1:]
    diffs = []
    while "--diff" in args:
        i = args.index("--diff")
        if i + 1 >= len(args) or args[i + 1].count(",") != 1:
            sys.exit("summarize_study: --diff: expected A,B (two configuration names)")
        diffs.append(args[i + 1].split(","))
        del args[i:i + 2]
    json_out = take_option(args, "--json", "summarize_study")
    if len(args) != 1 or not os.path.isdir(args[0]):
        sys.exit(__doc__)
    out = args[0]
    base = {t: load(os.path.join(out, "base", t, "results.json")) for t in ("mcq", "math", "rouge")}
    study = {"made_by": f"python3 experiments/summarize_study.py {out} --json {json_out}",
             "base": {"mcq": metric(base["mcq"], "accuracy"), "math": metric(base["math"], "accuracy"),
                      "rougeL": metric(base["rouge"], "rougeL")},
             "configs": {}}
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
                study.setdefault("recipe", {k: cfg.get(k) for k in ("rank", "lr", "batch", "seq_len", "max_steps")})
            count = (load(os.path.join(sd, "mcq", "results.json")) or {}).get("count")
            if count:
                study["items_per_task"] = count
        done = sum(1 for v in rouge if v is not None)
        print(f"| {name} | {done} | {params if params is not None else '—'} | {fmt(mcq, 100)} | {fmt(math, 100)} | "
              f"{fmt(rouge, 100)} | {fmt(l0, 1, 3)} | {fmt(l1, 1, 3)} |")
        study["configs"][name] = {"trainable": params, "seeds": [int(s[4:]) for s in seeds], "mcq": mcq,
                                  "math": math, "rougeL": rouge, "val_loss_start": l0, "val_loss": l1}
    if diffs:
        print()
        print("| difference (paired by seed) | seeds | mcq acc points | math acc points | ROUGE-L points | val loss end |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for a, b in diffs:
        ca, cb = study["configs"].get(a), study["configs"].get(b)
        if not ca or not cb:
            sys.exit(f"summarize_study: --diff {a},{b}: no such configuration in {out}")
        cells, n = [], 0
        for key, scale, digits in (("mcq", 100, 1), ("math", 100, 1), ("rougeL", 100, 1), ("val_loss", 1, 3)):
            r = paired_interval(ca[key], cb[key])
            cells.append(interval_cell(r, scale, digits))
            n = r[2] if r else n
        print(f"| {a} − {b} | {n} | " + " | ".join(cells) + " |")
    if json_out:
        write_json_atomic(json_out, study)


if __name__ == "__main__":
    main()
