#!/usr/bin/env bash
# The accuracy study of docs/results.md on flora's own small world: every
# adapter variant fine-tuned from assets/flora-small on the mixed task suite,
# evaluated on the three test sets, over several seeds; plus the paper's open
# question on the nonlinearity (identity, ReLU, GELU, SiLU), PEFT's init for FFBA
# (the FLoRA default is zero), and LoRA at FFBA's trainable-parameter count.
# Usage: experiments/study.sh [OUT]   (environment: SEEDS, STEPS, LIMIT, CONFIGS)
# Then: python3 experiments/summarize_study.py OUT > table.md
set -euo pipefail
cd "$(dirname "$0")/.."
flora=${FLORA:-./build/flora}
out=${1:-out/study}
seeds=(${SEEDS:-0 1 2})
steps=${STEPS:-150}
limit=${LIMIT:-200}
# name:flags. Rank 8 everywhere except the matched-parameter LoRA (rank 5 has
# 24,320 parameters per layer against FFBA rank 8's 22,656).
configs=(${CONFIGS:-lora:--variant,lora ffa:--variant,ffa ffba:--variant,ffba ffba-aorb:--variant,ffba-aorb
  ffba-qg:--variant,ffba-qg ffba-relu:--variant,ffba-relu ffba-gelu:--variant,ffba,--nonlinearity,gelu
  ffba-silu:--variant,ffba,--nonlinearity,silu ffba-lora-init:--variant,ffba,--init,lora
  lora-r5:--variant,lora,--rank,5})
mkdir -p "$out"
[[ -d $out/data ]] || "$flora" data synth --out "$out/data" --seed 0 >/dev/null
cat "$out/data/mcq/train.jsonl" "$out/data/math/train.jsonl" "$out/data/summary/train.jsonl" >"$out/train.jsonl"
{ head -n 100 "$out/data/mcq/valid.jsonl"; head -n 100 "$out/data/math/valid.jsonl"; } >"$out/valid.jsonl"
run_eval() {  # run_eval DIR [--adapter A]
  local dir=$1; shift
  "$flora" eval -m assets/flora-small "$@" --task mcq --data "$out/data/mcq/test.jsonl" --limit "$limit" \
    --batch 16 --out "$dir/mcq" >/dev/null 2>&1
  "$flora" eval -m assets/flora-small "$@" --task math --data "$out/data/math/test.jsonl" --limit "$limit" \
    --batch 16 --max-new-tokens 96 --out "$dir/math" >/dev/null 2>&1
  "$flora" eval -m assets/flora-small "$@" --task rouge --data "$out/data/summary/test.jsonl" --limit "$limit" \
    --batch 16 --max-new-tokens 64 --out "$dir/rouge" >/dev/null 2>&1
}
[[ -f $out/base/rouge/results.json ]] || run_eval "$out/base"
for seed in "${seeds[@]}"; do
  for c in "${configs[@]}"; do
    name=${c%%:*}
    flags=(${c#*:})
    flags=(${flags[@]//,/ })
    dir=$out/$name/seed$seed
    [[ -f $dir/rouge/results.json ]] && continue
    echo "study: $name seed $seed"
    [[ " ${flags[*]} " == *" --rank "* ]] || flags+=(--rank 8)
    "$flora" train -m assets/flora-small --data "$out/train.jsonl" --eval-data "$out/valid.jsonl" \
      "${flags[@]}" --lr 3e-3 --steps "$steps" --batch 16 --warmup-steps 10 --seq-len 384 --seed "$seed" -q \
      --out "$dir/train" 2>&1 | tail -n 1
    run_eval "$dir" --adapter "$dir/train/adapter"
  done
done
