#!/usr/bin/env bash
# tools/demo_report.py end to end on a small fake demo directory made with the tiny
# preset (two 2-step trainings, evaluations of 5 items, a short bench): a table row
# per variant with the numbers of the files, report.md and two well-formed SVGs,
# a missing file named and its cell shown as "—", and exit 1 when nothing is there.
# Usage: demo_report.sh PATH_TO_FLORA
set -uo pipefail
flora=$1
src=${FLORA_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
report=$src/tools/demo_report.py
source "$(dirname "$0")/lib/harness.sh"
export PYTHONIOENCODING=utf-8
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
check report python3 "$report" "$demo"
cp "$work/out" "$work/table.txt"
python3 - "$demo" "$work/table.txt" >"$work/err" 2>&1 <<'EOF' && pass || fail_check "table rows"
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

# The files: report.md with the table, well-formed SVGs with a line per variant, no .tmp left.
if [[ -s $demo/report.md ]] && grep -q '^| lora | ' "$demo/report.md" && grep -q 'loss.svg' "$demo/report.md"; then
  pass; else fail_check "report.md missing or without the table"; fi
for f in loss latency; do
  check "$f-xml" python3 -c "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])" "$demo/$f.svg"
done
[[ $(grep -c '<polyline' "$demo/loss.svg") -ge 2 ]] && pass || fail_check "loss.svg: expected a polyline per variant"
[[ $(grep -c '<rect' "$demo/latency.svg") -ge 7 ]] && pass || fail_check "latency.svg: expected a bar per variant"
ls "$demo"/*.tmp >/dev/null 2>&1 && fail_check "a .tmp file was left behind" || pass

# A missing file: named on stderr, its cell "—", the rest reported, exit 0.
cp -r "$demo" "$work/partial"
rm "$work/partial/eval/ffba/math/results.json" "$work/partial/bench.json"
check partial python3 "$report" "$work/partial"
grep -q 'missing .*partial/eval/ffba/math/results.json' "$work/err" && grep -q 'missing .*partial/bench.json' "$work/err" \
  && pass || fail_check "partial: the missing files are not named on stderr"
ffba_row=$(grep '^ffba ' "$work/out")
[[ $(awk '{print $5}' <<<"$ffba_row") == "—" ]] && pass || fail_check "partial: ffba's math cell is not —: $ffba_row"
grep -q '^pf-lora ' "$work/out" && fail_check "partial: pf-lora row without bench.json" || pass
[[ -s $work/partial/loss.svg && -s $work/partial/latency.svg ]] && pass || fail_check "partial: SVGs not written"

# Nothing at all: exit 1 and a clear message; not a directory: the same.
mkdir "$work/empty"
expect_error empty 'nothing to report' python3 "$report" "$work/empty"
expect_error not-a-dir 'not a directory' python3 "$report" "$work/nope"

finish demo_report
