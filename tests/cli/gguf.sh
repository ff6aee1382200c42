#!/usr/bin/env bash
# GGUF end to end: `flora quantize` writes the tiny model as f32, f16 and bf16
# GGUF files; flora runs them as it runs the directory (generate, logits,
# bench, train an adapter); llama.cpp itself (node-llama-cpp's prebuilt
# build, tests/cli/llama_cpp_check.mjs) loads each and computes flora's logits
# and token ids; bad flags and bad files get one clear error.
# Usage: FLORA_SOURCE_DIR=... gguf.sh PATH_TO_FLORA
set -uo pipefail
flora=$1
src=${FLORA_SOURCE_DIR:?FLORA_SOURCE_DIR must name the source tree}
source "$(dirname "$0")/lib/harness.sh"
[[ -f "$src/.deps/npm/node_modules/node-llama-cpp/package.json" ]] ||
  { echo "FAIL: the node-llama-cpp npm package is missing: run scripts/setup.sh"; exit 1; }
command -v node >/dev/null || { echo "FAIL: node is not on PATH: run scripts/setup.sh"; exit 1; }

check init-tiny "$flora" init-model --preset tiny --seed 3 --out "$work/tiny"
for t in f32 f16 bf16; do
  check "quantize-$t" "$flora" quantize -m "$work/tiny" --type $t --out "$work/tiny-$t.gguf"
done
grep -q "15 matrices" "$work/err" && pass || fail_check "quantize: no summary line"

expect_error bad-type "--type: expected f32, f16, bf16, q8_0, q4_0 or q4_k_m, found 'q9'" \
  "$flora" quantize -m "$work/tiny" --type q9 --out "$work/x.gguf"
expect_error no-dir "-m $work/none: not a model directory" "$flora" quantize -m "$work/none" --type f16 --out "$work/x.gguf"
[[ ! -e "$work/x.gguf" ]] && pass || fail_check "a refused quantize left $work/x.gguf"
head -c 1200 "$work/tiny-f16.gguf" >"$work/cut.gguf"
expect_error truncated "cut.gguf: byte [0-9]+: .*only [0-9]+ bytes are left in the file" \
  "$flora" generate -m "$work/cut.gguf" -p hi -n 2
expect_error not-gguf "config.json: not a GGUF file" "$flora" generate -m "$work/tiny/config.json" -p hi -n 2

# The bf16 file holds the directory's weights as they are: the same greedy text.
check gen-dir "$flora" generate -m "$work/tiny" -p "Once upon a time" -n 16 --temp 0 -t 1
cp "$work/out" "$work/gen-dir.out"
check gen-gguf "$flora" generate -m "$work/tiny-bf16.gguf" -p "Once upon a time" -n 16 --temp 0 -t 1
cmp -s "$work/out" "$work/gen-dir.out" && pass || fail_check "generate: the bf16 GGUF's text differs from the directory's"
check bench-gguf "$flora" bench -m "$work/tiny-f16.gguf" -p 8 -n 4 -r 1 -t 1
check train-gguf "$flora" train -m "$work/tiny-bf16.gguf" --data "$src/tests/fixtures/train/arith.jsonl" \
  --variant ffba --rank 2 --steps 2 --batch 2 --seq-len 256 -t 1 --out "$work/ffba"
[[ -f "$work/ffba/adapter/adapter_model.safetensors" ]] && pass || fail_check "train on a GGUF base wrote no adapter"
check gen-adapter "$flora" generate -m "$work/tiny-bf16.gguf" --adapter "$work/ffba/adapter" -p "Hi" -n 4 --temp 0 -t 1
expect_error full-gguf "--full on a GGUF file" "$flora" train -m "$work/tiny-bf16.gguf" \
  --data "$src/tests/fixtures/train/arith.jsonl" --full --steps 1 --out "$work/full"

# llama.cpp against flora: logits of 40 positions (past the RoPE's original context
# of the tiny preset when it has one), and the token ids of a few texts.
tokens=379
for i in $(seq 1 39); do tokens+=",$(( (i * 37 + 11) % 379 ))"; done
cases=""
# Tolerances, about 3x the largest difference measured (2026-12-02: f32 7.0e-3,
# f16 7.5e-3, bf16 3.6e-2, logits of magnitude up to about 4): llama.cpp keeps
# K and V in f16 (its default cache type) where flora keeps f32, and with f16
# and bf16 weights it also rounds the activations to the weights' type before
# each product (ggml's vec_dot_type); flora keeps them in f32.
for spec in "f32 0.02" "f16 0.03" "bf16 0.1"; do
  read -r t tol <<< "$spec"
  check "logits-$t" "$flora" logits -m "$work/tiny-$t.gguf" --tokens "$tokens" -o "$work/flora-$t.safetensors"
  cases+="${cases:+,}{\"gguf\": \"$work/tiny-$t.gguf\", \"flora_logits\": \"$work/flora-$t.safetensors\", \"tolerance\": $tol}"
done
# A LoRA trained here, exported as llama.cpp's GGUF LoRA: flora reads it back
# to the same logits, bit for bit (the same f32 values, q and k rows put back),
# and llama.cpp applies it to the f32 base as flora does (measured 3.0e-2 where
# the adapter moves the logits by up to 5.3: llama.cpp's f16 K and V cache
# again, on larger keys and values).
check init-lora "$flora" init-adapter -m "$work/tiny-f32.gguf" --variant lora --rank 4 --init random --seed 2 \
  --out "$work/lora"
check export-lora "$flora" export-lora -m "$work/tiny-f32.gguf" --adapter "$work/lora" --out "$work/lora.gguf"
check logits-lora "$flora" logits -m "$work/tiny-f32.gguf" --adapter "$work/lora" --tokens "$tokens" \
  -o "$work/flora-lora.safetensors"
check logits-lora-gguf "$flora" logits -m "$work/tiny-f32.gguf" --adapter "$work/lora.gguf" --tokens "$tokens" \
  -o "$work/flora-lora-gguf.safetensors"
cmp -s "$work/flora-lora.safetensors" "$work/flora-lora-gguf.safetensors" && pass ||
  fail_check "the exported LoRA read back gives other logits"
cases+=",{\"gguf\": \"$work/tiny-f32.gguf\", \"lora\": \"$work/lora.gguf\", \"flora_logits\": \"$work/flora-lora.safetensors\", \"tolerance\": 0.06}"
check init-ffba "$flora" init-adapter -m "$work/tiny" --variant ffba --rank 2 --out "$work/ffba2"
expect_error export-flora "a ffba adapter \(FLoRA\) has no llama.cpp format" \
  "$flora" export-lora -m "$work/tiny" --adapter "$work/ffba2" --out "$work/ffba2.gguf"
texts=""
for text in "Once upon a time" "The cat sat on the mat." "  two  spaces, 12345 digits" "naïve café"; do
  check "tokenize" "$flora" tokenize -m "$work/tiny-f32.gguf" --text "$text" --no-bos
  texts+="${texts:+,}{\"text\": \"$text\", \"flora\": $(cat "$work/out")}"
done
# The quantized files, of flora's own pretrained small model (rows of 256 and
# 768: whole blocks of every format; the tiny model's 200 are not): the type
# mix, flora running them (an adapter, training on the frozen quantized base),
# and llama.cpp computing the same logits. Tolerances, about 2.5x the largest
# difference measured (2026-12-02: q8_0 0.174, q4_0 0.212, q4_k_m 0.402, logits
# of magnitude up to about 17): besides the f16 K/V cache, llama.cpp rounds the
# activations to 8-bit blocks (Q8_0, Q8_K) before each product with quantized
# weights, where flora widens the weights and keeps the activations in f32.
small="$src/assets/flora-small"
small_texts=""
for spec in "q8_0 0.45" "q4_0 0.55" "q4_k_m 1.0"; do
  read -r t tol <<< "$spec"
  check "quantize-$t" "$flora" quantize -m "$small" --type $t --out "$work/small-$t.gguf"
  check "logits-$t" "$flora" logits -m "$work/small-$t.gguf" --tokens "$tokens" -o "$work/flora-$t.safetensors"
  if [[ -z "$small_texts" ]]; then
    for text in "Once upon a time" "The cat sat on the mat."; do
      check "tokenize-small" "$flora" tokenize -m "$work/small-$t.gguf" --text "$text" --no-bos
      small_texts+="${small_texts:+,}{\"text\": \"$text\", \"flora\": $(cat "$work/out")}"
    done
  fi
  cases+=",{\"gguf\": \"$work/small-$t.gguf\", \"flora_logits\": \"$work/flora-$t.safetensors\", \"tolerance\": $tol, \"texts\": [$small_texts]}"
done
check init-ffba-small "$flora" init-adapter -m "$work/small-q4_k_m.gguf" --variant ffba --rank 4 --init random \
  --seed 2 --out "$work/ffba-small"
check gen-q4km-adapter "$flora" generate -m "$work/small-q4_k_m.gguf" --adapter "$work/ffba-small" -p "Once" -n 4 \
  --temp 0 -t 1
check train-q4km "$flora" train -m "$work/small-q4_k_m.gguf" --data "$src/tests/fixtures/train/arith.jsonl" \
  --variant lora --rank 2 --steps 2 --batch 2 --seq-len 128 -t 1 --out "$work/lora-q4km"
[[ -f "$work/lora-q4km/adapter/adapter_model.safetensors" ]] && pass ||
  fail_check "train on a Q4_K_M base wrote no adapter"
expect_error merged-q4km "lora-merged: the base's weights are Q4_K blocks" "$flora" generate \
  -m "$work/small-q4_k_m.gguf" --adapter "$work/lora-q4km/adapter" --lora-variant lora-merged -p "Once" -n 2

cat >"$work/config.json" <<JSON
{"src": "$src", "tokens": [$tokens], "texts": [$texts], "cases": [$cases]}
JSON
if timeout 180 node "$src/tests/cli/llama_cpp_check.mjs" "$work/config.json" >"$work/check.out" 2>&1; then pass; else
  fail_check "llama_cpp_check:"; cat "$work/check.out"; fi
grep -E '^(llama_cpp_check|info):' "$work/check.out"
finish cli_gguf
