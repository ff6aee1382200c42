#!/usr/bin/env bash
# Reproduces assets/flora-small, the base model `make demo` fine-tunes: the
# synthetic world of `flora data synth` (seed 0), a 1024-token BPE trained on
# it, and a 3.4M-parameter Llama (preset flora-small) pretrained from scratch
# with `flora train --full` on its corpus. Usage: scripts/pretrain_base.sh [OUT]
# (default out/pretrain); the model lands in OUT/run/model, the log in
# OUT/run/train_log.jsonl. Took 14 minutes on 2 cores (docs/results.md).
set -euo pipefail
out=${1:-out/pretrain}
flora=${FLORA:-./build/flora}
mkdir -p "$out"
"$flora" data synth --out "$out/data" --seed 0
"$flora" tokenizer train --data "$out/data/corpus.txt" --data "$out/data/mcq/train.jsonl" \
  --data "$out/data/math/train.jsonl" --data "$out/data/summary/train.jsonl" --vocab 1024 --out "$out/tokenizer"
"$flora" init-model --preset flora-small --tokenizer "$out/tokenizer/tokenizer.json" --dtype f32 --seed 1 \
  --out "$out/init"
"$flora" train -m "$out/init" --full --data "$out/data/corpus.jsonl" --seq-len 256 --batch 32 --epochs 4 \
  --lr 3e-3 --schedule cosine --warmup-steps 50 --weight-decay 0.01 --clip-norm 1.0 --seed 0 \
  --save-every 100 --save-bf16 --out "$out/run"
