#!/usr/bin/env bash
# `make demo`: the paper's comparison, end to end, in minutes on 2 cores.
#
#  1. The task suite: `flora data synth` (seed 0) writes a small world's corpus
#     and three task families (multiple choice about its facts, arithmetic word
#     problems, summaries of stories and dialogues), split train/valid/test.
#  2. The base model: assets/flora-small, 3.4M parameters that flora pretrained
#     itself on that corpus (scripts/pretrain_base.sh, docs/results.md).
#  3. Fine-tuning: each adapter variant on the three tasks' training sets mixed.
#  4. Evaluation: the base and each variant on the three test sets.
#  5. Latency: TPOT of every variant at the real Llama-3.2-1B shape (random
#     weights: speed depends on shapes, not values), interleaved, rank 32.
#  6. One table with the paper's claims beside it, report.md, loss.svg, latency.svg.
#
# Knobs (environment): DEMO_OUT (out/demo), DEMO_VARIANTS (lora ffa ffba ffba-aorb),
# DEMO_STEPS (training steps per variant), DEMO_RANK (8), DEMO_EVAL_LIMIT (test
# items per task), DEMO_BENCH (1; 0 skips the 1B latency step), THREADS.
set -euo pipefail
cd "$(dirname "$0")/.."
flora=${FLORA:-./build/flora}
out=${DEMO_OUT:-out/demo}
variants=(${DEMO_VARIANTS:-lora ffa ffba ffba-aorb})
steps=${DEMO_STEPS:-60}
rank=${DEMO_RANK:-8}
limit=${DEMO_EVAL_LIMIT:-200}
threads=${THREADS:-$(nproc)}
base=assets/flora-small
t0=$(date +%s)
say() { printf '\n== %s (%ds)\n' "$*" $(($(date +%s) - t0)); }

mkdir -p "$out"
rm -rf "$out/base" && cp -r "$base" "$out/base"

say "1/6 task suite: flora data synth --seed 0"
"$flora" data synth --out "$out/data" --seed 0 >/dev/null
cat "$out/data/mcq/train.jsonl" "$out/data/math/train.jsonl" "$out/data/summary/train.jsonl" >"$out/train.jsonl"
{ head -n 100 "$out/data/mcq/valid.jsonl"; head -n 100 "$out/data/math/valid.jsonl"; } >"$out/valid.jsonl"
echo "train: $(wc -l <"$out/train.jsonl") records (mcq, math, summary mixed); test: $limit per task"

say "2/6 base model: $base ($(python3 -c "import json;c=json.load(open('$base/config.json'));print(c['hidden_size'],'wide,',c['num_hidden_layers'],'layers')"))"

n=${#variants[@]}
i=0
for v in "${variants[@]}"; do
  i=$((i + 1))
  say "3/6 fine-tuning $v ($i of $n): rank $rank, $steps steps of 16 sequences"
  "$flora" train -m "$out/base" --data "$out/train.jsonl" --eval-data "$out/valid.jsonl" --variant "$v" \
    --rank "$rank" --lr 3e-3 --steps "$steps" --batch 16 --warmup-steps 10 --seq-len 384 --seed 0 -t "$threads" \
    --out "$out/train/$v"
done

say "4/6 evaluation: base and ${variants[*]} on mcq, math, summary ($limit items each)"
evaluate() {  # evaluate NAME [--adapter DIR]
  local name=$1; shift
  "$flora" eval -m "$out/base" "$@" --task mcq --data "$out/data/mcq/test.jsonl" --limit "$limit" --batch 16 \
    -t "$threads" --out "$out/eval/$name/mcq" >/dev/null 2>&1
  "$flora" eval -m "$out/base" "$@" --task math --data "$out/data/math/test.jsonl" --limit "$limit" --batch 16 \
    --max-new-tokens 96 -t "$threads" --out "$out/eval/$name/math" >/dev/null 2>&1
  "$flora" eval -m "$out/base" "$@" --task rouge --data "$out/data/summary/test.jsonl" --limit "$limit" --batch 16 \
    --max-new-tokens 64 -t "$threads" --out "$out/eval/$name/rouge" >/dev/null 2>&1
  python3 -c "
import json
r = {t: json.load(open('$out/eval/$name/%s/results.json' % t))['metrics'] for t in ('mcq', 'math', 'rouge')}
print('%-10s mcq %5.1f%%   math %5.1f%%   ROUGE-L %5.1f' % ('$name', 100 * r['mcq']['accuracy'], 100 * r['math']['accuracy'], 100 * r['rouge']['rougeL']))"
}
evaluate base
for v in "${variants[@]}"; do evaluate "$v" --adapter "$out/train/$v/adapter"; done

if [[ ${DEMO_BENCH:-1} != 0 ]]; then
  say "5/6 latency at the Llama-3.2-1B shape: random weights, every variant interleaved, rank 32"
  [[ -f models/llama-3.2-1b/model.safetensors ]] || "$flora" init-model --preset llama-3.2-1b --out models/llama-3.2-1b
  "$flora" bench -m models/llama-3.2-1b --variants base,lora,pf-lora,lora-merged,ffa,ffba,ffba-aorb --rank 32 \
    -p 16 -n 32 -r 5 -t "$threads" --json-out "$out/bench.json"
fi

say "6/6 report"
python3 tools/demo_report.py "$out"
echo
echo "demo: done in $(($(date +%s) - t0)) s; report: $out/report.md, plots: $out/loss.svg, $out/latency.svg"
