#!/usr/bin/env bash
# `make demo`: the paper's comparison, end to end, within a time budget on 2 cores.
#
#  1. The task suite: `flora data synth` (seed 0) writes a small world's corpus
#     and three task families (multiple choice about its facts, arithmetic word
#     problems, summaries of stories and dialogues), split train/valid/test.
#  2. The base model: assets/flora-small, 3.4M parameters that flora pretrained
#     itself on that corpus (scripts/pretrain_base.sh, docs/results.md), evaluated
#     without an adapter on the three test sets.
#  3. Latency: TPOT of every variant at the real Llama-3.2-1B shape (random
#     weights: speed depends on shapes, not values), interleaved, rank 32.
#  4. Fine-tuning and evaluation: each adapter variant, in the order given, on the
#     three tasks' training sets mixed, then on the three test sets, while the
#     budget lasts. The first variant is always trained; a later one only when the
#     time the previous one took still fits. Variants that do not fit are shown
#     with the committed study's means (docs/study.json, same recipe), marked †
#     and named on screen: never as numbers measured now.
#  5. One table with the paper's claims beside it, report.md, results.json and
#     the figures (loss.svg, latency.svg, categories.svg).
#
# Knobs (environment): DEMO_OUT (out/demo), DEMO_VARIANTS (lora ffba ffa ffba-aorb, in
# priority order), DEMO_BUDGET_S (600: the seconds after which no further variant is
# started; the build is not counted), DEMO_STEPS (60 training steps per variant; the
# study's recipe, so that its means stand for the same thing), DEMO_RANK (8),
# DEMO_EVAL_LIMIT (200 test items per task), DEMO_BENCH (1; 0 skips the 1B latency step),
# THREADS, PYTHON (/usr/bin/python3, which has Debian's matplotlib).
set -euo pipefail
cd "$(dirname "$0")/.."
flora=${FLORA:-./build/flora}
py=${PYTHON:-/usr/bin/python3}
out=${DEMO_OUT:-out/demo}
variants=(${DEMO_VARIANTS:-lora ffba ffa ffba-aorb})
budget=${DEMO_BUDGET_S:-600}
steps=${DEMO_STEPS:-60}
rank=${DEMO_RANK:-8}
limit=${DEMO_EVAL_LIMIT:-200}
threads=${THREADS:-$(nproc)}
base=assets/flora-small
study=docs/study.json
t0=$(date +%s)
stages=()        # "name<TAB>seconds" of every finished stage, for run.json
stage_name="" stage_t=$t0
elapsed() { echo $(($(date +%s) - t0)); }
say() {  # say STAGE: closes the previous stage's clock and opens this one
  local now; now=$(date +%s)
  [[ -n $stage_name ]] && stages+=("$stage_name	$((now - stage_t))")
  stage_name=$1 stage_t=$now
  printf '\n== %s (%ds of the %ds budget)\n' "$1" $((now - t0)) "$budget"
}

# What an earlier run wrote here goes (a variant trained then must not show as trained now).
mkdir -p "$out"
rm -rf "$out"/{base,data,train,eval} "$out"/{bench,run,results}.json "$out"/*.svg "$out"/report.md
cp -r "$base" "$out/base"

say "1/5 task suite: flora data synth --seed 0"
"$flora" data synth --out "$out/data" --seed 0 >/dev/null
cat "$out/data/mcq/train.jsonl" "$out/data/math/train.jsonl" "$out/data/summary/train.jsonl" >"$out/train.jsonl"
{ head -n 100 "$out/data/mcq/valid.jsonl"; head -n 100 "$out/data/math/valid.jsonl"; } >"$out/valid.jsonl"
echo "train: $(wc -l <"$out/train.jsonl") records (mcq, math, summary mixed); test: $limit per task"

evaluate() {  # evaluate NAME [--adapter DIR]
  local name=$1; shift
  "$flora" eval -m "$out/base" "$@" --task mcq --data "$out/data/mcq/test.jsonl" --limit "$limit" --batch 16 \
    -t "$threads" --out "$out/eval/$name/mcq" >/dev/null 2>&1
  "$flora" eval -m "$out/base" "$@" --task math --data "$out/data/math/test.jsonl" --limit "$limit" --batch 16 \
    --max-new-tokens 96 -t "$threads" --out "$out/eval/$name/math" >/dev/null 2>&1
  "$flora" eval -m "$out/base" "$@" --task rouge --data "$out/data/summary/test.jsonl" --limit "$limit" --batch 16 \
    --max-new-tokens 64 -t "$threads" --out "$out/eval/$name/rouge" >/dev/null 2>&1
  "$py" -c "
import json
r = {t: json.load(open('$out/eval/$name/%s/results.json' % t))['metrics'] for t in ('mcq', 'math', 'rouge')}
print('%-10s mcq %5.1f%%   math %5.1f%%   ROUGE-L %5.1f' % ('$name', 100 * r['mcq']['accuracy'], 100 * r['math']['accuracy'], 100 * r['rouge']['rougeL']))"
}

say "2/5 base model: $base ($("$py" -c "import json;c=json.load(open('$base/config.json'));print(c['hidden_size'],'wide,',c['num_hidden_layers'],'layers')")), evaluated without an adapter"
evaluate base

if [[ ${DEMO_BENCH:-1} != 0 ]]; then
  say "3/5 latency at the Llama-3.2-1B shape: random weights, every variant interleaved, rank 32"
  [[ -f models/llama-3.2-1b/model.safetensors ]] || "$flora" init-model --preset llama-3.2-1b --out models/llama-3.2-1b
  "$flora" bench -m models/llama-3.2-1b --variants base,lora,pf-lora,lora-merged,ffa,ffba,ffba-aorb --rank 32 \
    -p 16 -n 32 -r 5 -t "$threads" --json-out "$out/bench.json"
fi

trained=() skipped=() last=0 why=""
n=${#variants[@]}
for v in "${variants[@]}"; do
  if ((${#trained[@]} > 0 && $(elapsed) + last > budget)); then
    skipped+=("$v")
    continue
  fi
  say "4/5 fine-tuning and evaluating $v ($((${#trained[@]} + 1)) of $n): rank $rank, $steps steps of 16 sequences"
  started=$(date +%s)
  "$flora" train -m "$out/base" --data "$out/train.jsonl" --eval-data "$out/valid.jsonl" --variant "$v" \
    --rank "$rank" --lr 3e-3 --steps "$steps" --batch 16 --warmup-steps 10 --seq-len 384 --seed 0 -t "$threads" \
    --out "$out/train/$v"
  evaluate "$v" --adapter "$out/train/$v/adapter"
  trained+=("$v")
  last=$(($(date +%s) - started))
done
from_study=()
if ((${#skipped[@]})); then
  why="the last fine-tune and its evaluation took ${last} s, and ${budget} s minus the $(elapsed) s used leaves less"
  echo
  # The study's means stand for these variants only if it ran this recipe.
  recipe=$("$py" -c "
import json; s = json.load(open('$study')); r = s['recipe']
print('same' if (r['max_steps'], r['rank'], s['items_per_task']) == ($steps, $rank, $limit) else
      '%d steps, rank %d, %d test items per task' % (r['max_steps'], r['rank'], s['items_per_task']))")
  if [[ $recipe == same ]]; then
    from_study=("${skipped[@]}")
    echo "NOT fine-tuned in this run: ${skipped[*]} ($why). The table shows the committed study's"
    echo "means for them ($study, same recipe), marked †; their TPOT above was measured now."
  else
    echo "NOT fine-tuned in this run: ${skipped[*]} ($why). The committed study ran another recipe"
    echo "($recipe; this run: $steps steps, rank $rank, $limit items), so they show no scores, only their TPOT."
  fi
fi

say "5/5 report"
stages_json=$(printf '%s\n' "${stages[@]}" | "$py" -c "
import json, sys
print(json.dumps([{'stage': l.split('\t')[0], 'seconds': int(l.split('\t')[1])} for l in sys.stdin.read().splitlines() if l]))")
"$py" - "$out/run.json" <<EOF
import json, os, sys
run = {"budget_s": $budget, "cpu_target": "$("$flora" cpu)", "threads": $threads, "steps": $steps, "rank": $rank,
       "trained": "${trained[*]}".split(), "from_study": "${from_study[*]}".split(),
       "not_trained": "${skipped[*]}".split(), "why": "$why",
       "stages": $stages_json}
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump(run, f, indent=1)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
EOF
"$py" tools/demo_report.py "$out" --study "$study"
echo
echo "demo: done in $(elapsed) s (budget $budget s; stages in $out/run.json); report: $out/report.md," \
  "results: $out/results.json, plots: $out/loss.svg, $out/latency.svg, $out/categories.svg"
