#!/usr/bin/env bash
# tools/demo_report.py end to end on a small fake demo directory made with the tiny
# preset (two 2-step trainings, evaluations of 5 items, a short bench): a table row
# per variant with the numbers of the files, report.md, results.json and the figures
# (well-formed SVGs holding an element per variant), variants left to a study shown
# with its means marked and named, a missing file named and its cell shown as "—",
# and exit 1 when nothing is there.
# Usage: demo_report.sh PATH_TO_FLORA
set -uo pipefail
flora=$1
src=${FLORA_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
report=$src/tools/demo_report.py
source "$(dirname "$0")/lib/harness.sh"
export PYTHONIOENCODING=utf-8
py=${PYTHON:-/usr/bin/python3}  # Debian's, with python3-matplotlib (scripts/setup.sh)
demo=$work/demo
variants=(lora ffba)

# The fake DEMO_DIR, laid out as `make demo` lays it out.
check init-model "$flora" init-model --preset tiny --seed 1 --out "$demo/base"
check synth "$flora" data synth --out "$work/data"
head -n 8 "$work/data/mcq/valid.jsonl" >"$work/valid.jsonl"
for v in "${variants[@]}"; do
  check "train-$v" "$flora" train -m "$demo/base" --data "$work/data/mcq/train.jsonl" --eval-data "$work/valid.jsonl" \
    --variant "$v" --rank 4 --steps 2 --batch 2 --seq-len 256 -t 2 -q --out "$demo/train/$v"
done
for v in base "${variants[@]}"; do
  adapter=(); [[ $v != base ]] && adapter=(--adapter "$demo/train/$v/adapter")
  for task in mcq math rouge; do
    data=$work/data/$task/test.jsonl; [[ $task == rouge ]] && data=$work/data/summary/test.jsonl
    check "eval-$v-$task" "$flora" eval -m "$demo/base" "${adapter[@]}" --task "$task" --data "$data" --limit 5 \
      --max-new-tokens 16 -t 2 --out "$demo/eval/$v/$task"
  done
done
check bench "$flora" bench -m "$demo/base" --variants base,lora,pf-lora,lora-merged,ffa,ffba,ffba-aorb --rank 8 \
  -n 8 -p 4 -r 1 --json-out "$demo/bench.json"

# The report: exit 0, one row per variant, carrying the numbers of the files.
check report "$py" "$report" "$demo"
cp "$work/out" "$work/table.txt"
"$py" - "$demo" "$work/table.txt" >"$work/err" 2>&1 <<'EOF' && pass || fail_check "table rows"
import json, sys
demo, table = sys.argv[1], open(sys.argv[2], encoding="utf-8").read().splitlines()
def row(name):
    rows = [l for l in table if l.startswith(name + " ")]
    assert len(rows) == 1, f"expected one row for {name}, found {len(rows)}"
    return rows[0].split()
bench = {e["variant"]: e for e in json.load(open(f"{demo}/bench.json"))}
for v in ["lora", "ffba"]:
    cells = row(v)
    cfg = json.load(open(f"{demo}/train/{v}/train_config.json"))
    assert f"{cfg['trainable_parameters']:,}" == cells[1], (v, cells)
    for task in ["mcq", "math"]:
        acc = json.load(open(f"{demo}/eval/{v}/{task}/results.json"))["metrics"]["accuracy"]
        assert f"{100 * acc:.1f}%" in cells, (v, task, acc, cells)
    rl = json.load(open(f"{demo}/eval/{v}/rouge/results.json"))["metrics"]["rougeL"]
    assert f"{100 * rl:.1f}" in cells, (v, rl, cells)
    log = [json.loads(l) for l in open(f"{demo}/train/{v}/train_log.jsonl")]
    end = [l["eval_loss"] for l in log if "eval_loss" in l][-1]
    assert any(c.endswith(f"\u2192{end:.3f}") for c in cells), (v, end, cells)
for v, e in bench.items():
    cells = row("base (no adapter)" if v == "base" else v)
    if v != "base":
        assert f"{e['overhead_pct']:+.1f}%".replace("-", "\u2212") in cells, (v, e["overhead_pct"], cells)
    assert f"{e['sync_points_per_token']:.0f}" == cells[-1], (v, cells)
for v in ["pf-lora", "lora-merged", "ffa", "ffba-aorb"]:  # timed, not trained: no accuracy
    assert row(v).count("\u2014") >= 4, row(v)
base = row("base (no adapter)")
acc = json.load(open(f"{demo}/eval/base/mcq/results.json"))["metrics"]["accuracy"]
assert f"{100 * acc:.1f}%" in base, base
text = "\n".join(table)
for needle in ["21\u201330%", "20\u201350%", "What the table shows", "95% binomial interval"]:
    assert needle in text, needle
EOF

# The files: report.md with the table, well-formed SVGs with an element per variant, no .tmp left.
if [[ -s $demo/report.md ]] && grep -q '^| lora | ' "$demo/report.md" && grep -q 'loss.svg' "$demo/report.md"; then
  pass; else fail_check "report.md missing or without the table"; fi
for f in loss latency; do
  check "$f-xml" "$py" -c "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])" "$demo/$f.svg"
done
for v in "${variants[@]}"; do
  grep -q "id=\"loss-$v\"" "$demo/loss.svg" && grep -q "id=\"validation-$v\"" "$demo/loss.svg" \
    && pass || fail_check "loss.svg: no loss line or validation dots for $v"
done
for v in base lora pf-lora lora-merged ffa ffba ffba-aorb; do
  grep -q "id=\"overhead-$v\"" "$demo/latency.svg" && pass || fail_check "latency.svg: no bar for $v"
done
[[ -e $demo/categories.svg ]] && fail_check "categories.svg written without --study" || pass
ls "$demo"/*.tmp >/dev/null 2>&1 && fail_check "a .tmp file was left behind" || pass

# results.json: an object per variant carrying the files' numbers, and the host.
"$py" - "$demo" >"$work/err" 2>&1 <<'EOF' && pass || fail_check "results.json"
import json, sys
demo = sys.argv[1]
r = json.load(open(f"{demo}/results.json"))
by = {v["variant"]: v for v in r["variants"]}
bench = {e["variant"]: e for e in json.load(open(f"{demo}/bench.json"))}
assert set(by) == {"base", "lora", "pf-lora", "lora-merged", "ffa", "ffba", "ffba-aorb"}, sorted(by)
for v in ["lora", "ffba"]:
    cfg = json.load(open(f"{demo}/train/{v}/train_config.json"))
    assert by[v]["trainable_parameters"] == cfg["trainable_parameters"], by[v]
    assert by[v]["scores_from"] == "measured", by[v]
    for task, key in [("mcq", "mcq_accuracy"), ("math", "math_accuracy")]:
        assert by[v][key] == json.load(open(f"{demo}/eval/{v}/{task}/results.json"))["metrics"]["accuracy"]
    assert by[v]["rougeL"] == json.load(open(f"{demo}/eval/{v}/rouge/results.json"))["metrics"]["rougeL"]
    log = [json.loads(l) for l in open(f"{demo}/train/{v}/train_log.jsonl")]
    evals = [l["eval_loss"] for l in log if "eval_loss" in l]
    assert (by[v]["val_loss_start"], by[v]["val_loss_end"]) == (evals[0], evals[-1]), by[v]
for v, e in bench.items():
    assert by[v]["tpot_ms"] == e["tpot_ms"] and by[v]["sync_points_per_token"] == e["sync_points_per_token"]
    assert by[v]["tpot_over_bandwidth_limit"] == e["roofline_ratio"] > 0, (by[v], e)
    if v != "base":
        assert by[v]["tpot_overhead_pct"] == e["overhead_pct"]
assert by["pf-lora"]["mcq_accuracy"] is None and by["ffa"]["scores_from"] == "timed only", by["ffa"]
assert r["host"]["cpu_target"] == bench["base"]["cpu_target"] and r["host"]["threads"] == 2, r["host"]
assert r["host"]["bandwidth_gbs"] == bench["base"]["bandwidth_gbs"] > 0, r["host"]
EOF

# Variants the demo left to the study: the study's means, marked and named; categories.svg.
cp -r "$demo" "$work/budget"
cat >"$work/budget/run.json" <<'EOF'
{"budget_s": 600, "from_study": ["ffa", "ffba-aorb"], "why": "a test", "stages": [{"stage": "x", "seconds": 1}]}
EOF
cat >"$work/study.json" <<'EOF'
{"base": {"mcq": 0.0, "math": 0.015, "rougeL": 0.03},
 "configs": {"ffa": {"trainable": 1234, "seeds": [0, 1], "mcq": [0.5, 0.7], "math": [0.1, 0.2],
                     "rougeL": [0.3, 0.4], "val_loss_start": [2.0, 2.0], "val_loss": [0.5, 0.7]},
             "ffba-aorb": {"trainable": 99, "seeds": [0, 1], "mcq": [0.2, 0.4], "math": [0.0, 0.0],
                           "rougeL": [0.1, 0.3], "val_loss_start": [2.0, 2.0], "val_loss": [0.8, 1.0]},
             "ffba": {"trainable": 5, "seeds": [0, 1], "mcq": [0.3, 0.3], "math": [0.0, 0.0],
                      "rougeL": [0.2, 0.3], "val_loss_start": [2.0, 2.0], "val_loss": [0.6, 0.6]},
             "lora": {"trainable": 7, "seeds": [0, 1], "mcq": [0.9, 0.9], "math": [0.9, 0.9],
                      "rougeL": [0.9, 0.9], "val_loss_start": [2.0, 2.0], "val_loss": [0.1, 0.1]}}}
EOF
check budget "$py" "$report" "$work/budget" --study "$work/study.json"
"$py" - "$work/out" "$work/budget" >"$work/err" 2>&1 <<'EOF' && pass || fail_check "study cells"
import json, sys
out, demo = open(sys.argv[1], encoding="utf-8").read(), sys.argv[2]
rows = {l.split()[0]: l.split() for l in out.splitlines() if l.split() and l.split()[0] in ("ffa", "lora")}
dag = "\u2020"
assert rows["ffa"][1] == "1,234" + dag and "60.0%" + dag in rows["ffa"] and "15.0%" + dag in rows["ffa"], rows["ffa"]
assert "35.0" + dag in rows["ffa"] and "2.000\u21920.600" + dag in rows["ffa"], rows["ffa"]
assert not any(dag in c for c in rows["lora"]), rows["lora"]  # measured in this run: the study is not used
assert "NOT MEASURED IN THIS RUN: ffa and ffba-aorb" in out.replace("\n", " ") and "a test" in out, out
# ROUGE-L's noise from the study's seeds: 1.96 x sqrt(stdev(0.2, 0.3)^2 + 0) = 13.9 points.
assert "the \u00b113.9 that two single runs differ by from the seed alone, by the study's 2 seeds" in " ".join(out.split()), out
r = {v["variant"]: v for v in json.load(open(f"{demo}/results.json"))["variants"]}
assert r["ffa"]["scores_from"] == "study" and abs(r["ffa"]["mcq_accuracy"] - 0.6) < 1e-12, r["ffa"]
assert r["ffa"]["study_seeds"] == 2 and r["lora"]["scores_from"] == "measured", r
assert dag + " Not measured in this run" in open(f"{demo}/report.md", encoding="utf-8").read()
EOF
check categories-xml "$py" -c "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])" "$work/budget/categories.svg"
for k in mcq math rougeL val_loss; do
  grep -q "id=\"study-$k\"" "$work/budget/categories.svg" && pass || fail_check "categories.svg: no $k panel"
done
echo '{"configs": {}}' >"$work/study-empty.json"
check budget-missing "$py" "$report" "$work/budget" --study "$work/study-empty.json"
grep -q "no configuration 'ffa'" "$work/err" && pass || fail_check "a study without ffa: not named"

# A missing file: named on stderr, its cell "—", the rest reported, exit 0.
cp -r "$demo" "$work/partial"
rm "$work/partial/eval/ffba/math/results.json" "$work/partial/bench.json"
check partial "$py" "$report" "$work/partial"
grep -q 'missing .*partial/eval/ffba/math/results.json' "$work/err" && grep -q 'missing .*partial/bench.json' "$work/err" \
  && pass || fail_check "partial: the missing files are not named on stderr"
ffba_row=$(grep '^ffba ' "$work/out")
[[ $(awk '{print $5}' <<<"$ffba_row") == "—" ]] && pass || fail_check "partial: ffba's math cell is not —: $ffba_row"
grep -q '^pf-lora ' "$work/out" && fail_check "partial: pf-lora row without bench.json" || pass
[[ -s $work/partial/loss.svg && -s $work/partial/latency.svg ]] && pass || fail_check "partial: SVGs not written"
grep -q 'id="overhead-' "$work/partial/latency.svg" && fail_check "partial: bars without bench.json" || pass

# Nothing at all: exit 1 and a clear message; not a directory: the same.
mkdir "$work/empty"
expect_error empty 'nothing to report' "$py" "$report" "$work/empty"
expect_error not-a-dir 'not a directory' "$py" "$report" "$work/nope"

finish demo_report
