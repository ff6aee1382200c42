#!/usr/bin/env bash
# The quantization study of docs/results.md (issue 13, item 7) on flora's own
# small world: LoRA, FFBA and FFBA (AorB), rank 8, the recipe of study.sh,
#   (a) fine-tuned on the BF16 base (assets/flora-small) and run on it and on
#       its Q8_0, Q4_0 and Q4_K_M quantizations (flora quantize);
#   (b) fine-tuned on each quantized base (its frozen blocks, input gradients
#       through them: QLoRA's setting) and run on that base;
# and each base without an adapter. Scores on the three test sets.
# Usage: experiments/quant_study.sh [OUT]
#   environment: SEEDS, STEPS, LIMIT, VARIANTS, FORMATS (the bases run on),
#   TRAIN_FORMATS (the quantized bases also trained on; default FORMATS)
# Then: python3 experiments/summarize_quant_study.py OUT > table.md
set -euo pipefail
cd "$(dirname "$0")/.."
flora=${FLORA:-./build/flora}
out=${1:-out/quant-study}
seeds=(${SEEDS:-0 1 2})
steps=${STEPS:-150}
limit=${LIMIT:-200}
variants=(${VARIANTS:-lora ffba ffba-aorb})
formats=(${FORMATS:-q8_0 q4_0 q4_k_m})
train_formats=(${TRAIN_FORMATS:-${formats[*]}})
mkdir -p "$out"
[[ -d $out/data ]] || "$flora" data synth --out "$out/data" --seed 0 >/dev/null
cat "$out/data/mcq/train.jsonl" "$out/data/math/train.jsonl" "$out/data/summary/train.jsonl" >"$out/train.jsonl"
{ head -n 100 "$out/data/mcq/valid.jsonl"; head -n 100 "$out/data/math/valid.jsonl"; } >"$out/valid.jsonl"
base_of() {  # base_of FORMAT: the model flora loads for it
  if [[ $1 == bf16 ]]; then echo assets/flora-small; else echo "$out/bases/flora-small-$1.gguf"; fi
}
mkdir -p "$out/bases"
for f in "${formats[@]}"; do
  [[ -f $(base_of "$f") ]] || "$flora" quantize -m assets/flora-small --type "$f" --out "$(base_of "$f")" >/dev/null
done
run_eval() {  # run_eval DIR FORMAT [--adapter A]
  local dir=$1 model; model=$(base_of "$2"); shift 2
  [[ -f $dir/rouge/results.json ]] && return
  "$flora" eval -m "$model" "$@" --task mcq --data "$out/data/mcq/test.jsonl" --limit "$limit" \
    --batch 16 --out "$dir/mcq" >/dev/null 2>&1
  "$flora" eval -m "$model" "$@" --task math --data "$out/data/math/test.jsonl" --limit "$limit" \
    --batch 16 --max-new-tokens 96 --out "$dir/math" >/dev/null 2>&1
  "$flora" eval -m "$model" "$@" --task rouge --data "$out/data/summary/test.jsonl" --limit "$limit" \
    --batch 16 --max-new-tokens 64 --out "$dir/rouge" >/dev/null 2>&1
}
train() {  # train DIR FORMAT VARIANT SEED
  local dir=$1 model; model=$(base_of "$2")
  [[ -f $dir/adapter/adapter_config.json ]] && return
  "$flora" train -m "$model" --data "$out/train.jsonl" --eval-data "$out/valid.jsonl" --variant "$3" --rank 8 \
    --lr 3e-3 --steps "$steps" --batch 16 --warmup-steps 10 --seq-len 384 --seed "$4" -q --out "$dir" 2>&1 | tail -n 1
}
for f in bf16 "${formats[@]}"; do run_eval "$out/base/on-$f" "$f"; done
for seed in "${seeds[@]}"; do
  for v in "${variants[@]}"; do
    echo "quant-study: $v seed $seed, trained on bf16"
    dir=$out/trained-on-bf16/$v/seed$seed
    train "$dir/train" bf16 "$v" "$seed"
    for f in bf16 "${formats[@]}"; do run_eval "$dir/on-$f" "$f" --adapter "$dir/train/adapter"; done
    for f in "${train_formats[@]}"; do
      echo "quant-study: $v seed $seed, trained on $f"
      dir=$out/trained-on-$f/$v/seed$seed
      train "$dir/train" "$f" "$v" "$seed"
      run_eval "$dir/on-$f" "$f" --adapter "$dir/train/adapter"
    done
  done
done
