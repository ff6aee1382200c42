#!/usr/bin/env bash
# Training speed at the Llama-3.2-1B shape (random BF16 weights: speed depends
# on shapes, not values): tokens/s and peak memory of `flora train` for each
# adapter variant (rank 32, sequence 512, micro-batch 1, AdamW, 2 threads),
# and the same LoRA step in PyTorch (tools/torch_train_bench.py, fp32, OpenBLAS)
# as the anchor. Variants and the anchor alternate, twice, so that drift of
# this shared machine hits all of them alike. Results: docs/benchmarks.md.
# Usage: bench/train_speed.sh [OUT] (needs scripts/setup.sh --torch for the anchor)
# Environment: FLORA (binary, default ./build/flora), STEPS (per run, default 4),
# ROUNDS (default 2), VARIANTS (default "lora ffba ffba-aorb"), ANCHOR=0 skips PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
flora=${FLORA:-./build/flora}
out=${1:-out/train-speed}
model=models/llama-3.2-1b
steps=${STEPS:-4}
variants=${VARIANTS:-lora ffba ffba-aorb}
mkdir -p "$out"
[[ -f $model/model.safetensors ]] || "$flora" init-model --preset llama-3.2-1b --out "$model"
# One record of 512 random token ids, every position in the loss.
python3 -c "
import json, random
random.seed(0)
ids = [128000] + [random.randrange(1000, 120000) for _ in range(511)]
print(json.dumps({'input_ids': ids}))" >"$out/seq512.jsonl"
for round in $(seq 1 "${ROUNDS:-2}"); do
  for v in $variants; do
    "$flora" train -m "$model" --data "$out/seq512.jsonl" --variant "$v" --rank 32 --steps "$steps" --batch 1 \
      --seq-len 512 --lr 1e-4 -t 2 -q --out "$out/$v-$round" 2>&1 | tail -n 1
  done
  if [[ ${ANCHOR:-1} != 0 ]]; then
    /usr/bin/python3 tools/torch_train_bench.py --model "$model" --rank 32 --seq-len 512 --threads 2 --steps 3 \
      --warmup 1 --json >"$out/torch-lora-$round.json"
    cat "$out/torch-lora-$round.json"
  fi
done
# Median tokens/s over the steps after the first of each run (the first touches cold memory).
for v in $variants; do
  for round in $(seq 1 "${ROUNDS:-2}"); do
    python3 -c "
import json, statistics, sys
steps = [json.loads(l) for l in open('$out/$v-$round/train_log.jsonl') if '\"loss\"' in l]
t = [b['elapsed_s'] - a['elapsed_s'] for a, b in zip(steps, steps[1:])]
print('$v round $round: median step %.1f s = %.1f tokens/s' % (statistics.median(t), 512 / statistics.median(t)))"
  done
done
