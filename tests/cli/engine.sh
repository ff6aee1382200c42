#!/usr/bin/env bash
# End to end through the flora binary: init-model (single file and sharded),
# generate, logits, tokenize, and one clear error (exit 1, no crash) for each
# kind of bad input (huge -n and token counts, NaN weights among them). Usage: engine.sh PATH_TO_FLORA
set -uo pipefail
flora=$1
source "$(dirname "$0")/lib/harness.sh"

check init-tiny "$flora" init-model --preset tiny --seed 3 --out "$work/tiny"
check init-tiny-sharded "$flora" init-model --preset tiny --seed 3 --out "$work/sharded" --max-shard-gb 0.0001
[[ -f "$work/sharded/model.safetensors.index.json" && -f "$work/sharded/model-00001-of-00003.safetensors" ]] \
  && passes=$((passes + 1)) || { echo "FAIL sharded layout: $(ls "$work/sharded")"; failures=$((failures + 1)); }

# Greedy generation is deterministic, and the same for one file and shards.
check generate "$flora" generate -m "$work/tiny" -p "Once upon a time" -n 12 --temp 0 -t 2
cp "$work/out" "$work/gen1"
grep -q "TTFT" "$work/err" && grep -q "TPOT" "$work/err" && passes=$((passes + 1)) || { echo "FAIL: no TTFT/TPOT on stderr"; failures=$((failures + 1)); }
check generate-sharded "$flora" generate -m "$work/sharded" -p "Once upon a time" -n 12 --temp 0 -t 1 --mmap
cmp -s "$work/out" "$work/gen1" && passes=$((passes + 1)) || { echo "FAIL: sharded model generates differently"; failures=$((failures + 1)); }
check generate-chat "$flora" generate -m "$work/tiny" -p "hi" --chat -n 4 --seed 5 --top-k 5 --top-p 0.9 --temp 0.7

check logits "$flora" logits -m "$work/tiny" --tokens 379,10,20,30 -o "$work/l1.safetensors"
check logits-sharded "$flora" logits -m "$work/sharded" --tokens 379,10,20,30 -o "$work/l2.safetensors" -t 3
cmp -s "$work/l1.safetensors" "$work/l2.safetensors" && passes=$((passes + 1)) || { echo "FAIL: logits differ between layouts"; failures=$((failures + 1)); }
# header (8 bytes + JSON) + 4 x 384 f32
size=$(stat -c %s "$work/l1.safetensors")
(( size > 4 * 384 * 4 )) && passes=$((passes + 1)) || { echo "FAIL: logits file too small ($size)"; failures=$((failures + 1)); }

# --products bf16: on a CPU with AVX512_BF16 the activations' rounding shows in the
# logits; elsewhere a warning says the products stay f32 (and the logits are the f32 ones).
check logits-bf16-products "$flora" logits -m "$work/tiny" --tokens 379,10,20,30 -o "$work/l3.safetensors" --products bf16
if "$flora" cpu --all | grep -q "BF16 dot products.*: yes"; then
  ! cmp -s "$work/l1.safetensors" "$work/l3.safetensors" && passes=$((passes + 1)) \
    || fail_check "--products bf16 gave the f32 logits on a CPU with AVX512_BF16"
else
  grep -q "the products stay f32" "$work/err" && cmp -s "$work/l1.safetensors" "$work/l3.safetensors" \
    && passes=$((passes + 1)) || fail_check "--products bf16 without AVX512_BF16: no warning, or other logits"
fi
# (a command line CLI11 refuses exits 2, the usage error, not 1)
"$flora" logits -m "$work/tiny" --tokens 1,2 -o "$work/x.safetensors" --products f16 >/dev/null 2>"$work/err"; rc=$?
[[ $rc -eq 2 ]] && grep -q -- "flora: error: --products: f16 not in {f32,bf16}" "$work/err" && passes=$((passes + 1)) \
  || fail_check "bad-products: rc $rc, or no clear refusal of --products f16"

check tokenize "$flora" tokenize -m "$work/tiny" --text "Hello world"
ids=$(cat "$work/out")
check detokenize "$flora" tokenize -m "$work/tiny" --decode --text "$ids"
grep -qx "<|begin_of_text|>Hello world" "$work/out" && passes=$((passes + 1)) || { echo "FAIL: round trip gave '$(cat "$work/out")'"; failures=$((failures + 1)); }

# Bad input: one clear message, exit 1.
expect_error missing-model "config.json" "$flora" generate -m "$work/nope" -p x
expect_error bad-token-list "--tokens: item 2" "$flora" logits -m "$work/tiny" --tokens 1,x,3 -o "$work/x.safetensors"
expect_error token-out-of-range "outside the vocabulary" "$flora" logits -m "$work/tiny" --tokens 1,384 -o "$work/x.safetensors"
[[ ! -e "$work/x.safetensors" ]] && passes=$((passes + 1)) || { echo "FAIL: a failed run left an output"; failures=$((failures + 1)); }
cp -r "$work/tiny" "$work/truncated"
truncate -s 1000 "$work/truncated/model.safetensors"
expect_error truncated "truncated/model.safetensors" "$flora" generate -m "$work/truncated" -p x
cp -r "$work/tiny" "$work/badconfig"
sed -i 's/"hidden_size": 64/"hidden_size": 32/' "$work/badconfig/config.json"
expect_error shape-mismatch "expected shape \[384, 32\], found \[384, 64\]" "$flora" generate -m "$work/badconfig" -p x
cp -r "$work/tiny" "$work/rope"
sed -i 's/"rope_type": "llama3"/"rope_type": "yarn"/' "$work/rope/config.json"
expect_error rope-type "rope_type \"yarn\" is not supported" "$flora" generate -m "$work/rope" -p x
"$flora" generate -m "$work/tiny" --bogus-flag >/dev/null 2>"$work/err"; rc=$?
[[ $rc -eq 2 ]] && grep -q "bogus-flag" "$work/err" && grep -q "Run with --help" "$work/err" && passes=$((passes + 1)) || { echo "FAIL: bad flag: rc $rc"; failures=$((failures + 1)); }

# Huge -n and token counts: clipped to the context or refused, never overflowing.
cp -r "$work/tiny" "$work/ctx32"
sed -i -E 's/"max_position_embeddings": [0-9]+/"max_position_embeddings": 32/' "$work/ctx32/config.json"
int64_max=9223372036854775807
check huge-n "$flora" generate -m "$work/ctx32" -p "Once upon a time" -n $int64_max --temp 0 --ignore-eos
grep -q "generating at most" "$work/err" && grep -qE "generated: [0-9]+ tokens" "$work/err" \
  && passes=$((passes + 1)) || fail_check "huge -n: no clipping note"
generated=$(grep -oE "generated: [0-9]+" "$work/err" | grep -oE "[0-9]+")
prompt_len=$(grep -oE "prompt: [0-9]+" "$work/err" | grep -oE "[0-9]+")
(( generated + prompt_len == 32 )) && passes=$((passes + 1)) || fail_check "huge -n: $prompt_len + $generated != 32"
check huge-n-sampled "$flora" generate -m "$work/ctx32" -p "hi" -n $int64_max --temp 0.8 --seed 3
"$flora" generate -m "$work/ctx32" -p x -n 9223372036854775808 >/dev/null 2>"$work/err"; rc=$?
[[ $rc -ne 0 && $rc -lt 128 ]] && grep -q -- "more than the largest token count" "$work/err" && passes=$((passes + 1)) \
  || fail_check "-n past int64: rc $rc"
"$flora" bench -m "$work/ctx32" -n 99999999999999999999999 >/dev/null 2>"$work/err"; rc=$?
[[ $rc -ne 0 && $rc -lt 128 ]] && grep -q -- "more than the largest token count" "$work/err" && passes=$((passes + 1)) \
  || fail_check "bench -n past int64: rc $rc"
"$flora" generate -m "$work/ctx32" -p x -n -1 >/dev/null 2>"$work/err"; rc=$?
[[ $rc -ne 0 && $rc -lt 128 ]] && passes=$((passes + 1)) || fail_check "-n -1: rc $rc"
long_prompt=$(printf 'word %.0s' $(seq 1 40))
expect_error prompt-over-context "the prompt has [0-9]+ tokens; the model's context is 32" \
  "$flora" generate -m "$work/ctx32" -p "$long_prompt" -n 1
expect_error logits-over-context "--tokens is 33 tokens: expected at most the model's context, 32" \
  "$flora" logits -m "$work/ctx32" --tokens "$(seq -s, 1 33)" -o "$work/x.safetensors"
expect_error bench-huge-n "-n is $int64_max tokens: expected at most the model's context, 32" \
  "$flora" bench -m "$work/ctx32" -p 4 -n $int64_max -r 1
expect_error bench-huge-p "-p is $int64_max tokens" "$flora" bench -m "$work/ctx32" -p $int64_max -n 4 -r 1
expect_error bench-variants-sum "-p \+ -n is 40 tokens" \
  "$flora" bench -m "$work/ctx32" -p 20 -n 20 -r 1 --variants base,lora --rank 2
expect_error eval-bench-gen "--bench-gen is $int64_max tokens" \
  "$flora" eval -m "$work/ctx32" --bench-batch 1 --bench-prompt 1 --bench-gen $int64_max --bench-reps 1
expect_error eval-bench-sum "--bench-prompt \+ --bench-gen is 40 tokens" \
  "$flora" eval -m "$work/ctx32" --bench-batch 1 --bench-prompt 20 --bench-gen 20 --bench-reps 1
printf '{"question": "What is 1 + 1?", "answer": "#### 2"}\n' >"$work/math.jsonl"
cp -r "$work/tiny" "$work/ctx160"  # room for the math prompt (112 tokens)
sed -i -E 's/"max_position_embeddings": [0-9]+/"max_position_embeddings": 160/' "$work/ctx160/config.json"
check eval-huge-max-new-tokens "$flora" eval -m "$work/ctx160" --task math --data "$work/math.jsonl" \
  --max-new-tokens $int64_max --out "$work/eval-huge" -t 1

# Non-finite weights: refused naming the file and the tensor, loaded with --allow-nonfinite.
cp -r "$work/tiny" "$work/nan"
header=$(od -An -tu8 -N8 "$work/nan/model.safetensors" | tr -d ' ')
printf '\xff\xff\xff\xff' | dd of="$work/nan/model.safetensors" bs=1 seek=$((8 + header)) conv=notrunc status=none
expect_error nonfinite "nan/model.safetensors: tensor '[^']+': element [01] is NaN.*--allow-nonfinite" \
  "$flora" generate -m "$work/nan" -p x -n 1
expect_error nonfinite-mmap "element [01] is NaN" "$flora" logits -m "$work/nan" --mmap --tokens 1,2 -o "$work/x.safetensors"
check nonfinite-allowed "$flora" logits -m "$work/nan" --allow-nonfinite --tokens 0,1,2 -o "$work/nan.safetensors"
[[ $(grep -c "warning: .*is NaN.*1 of the model's tensors" "$work/err") -eq 1 ]] && passes=$((passes + 1)) \
  || fail_check "nonfinite-allowed: expected one warning"
# Generating from it: a clear error (NaN logits) or tokens, never a crash.
"$flora" generate -m "$work/nan" --allow-nonfinite -p x -n 2 --temp 0 >/dev/null 2>"$work/err"; rc=$?
[[ $rc -eq 0 ]] || { [[ $rc -eq 1 ]] && grep -qE "logits: token [0-9]+ of [0-9]+ is NaN" "$work/err"; } \
  && passes=$((passes + 1)) || fail_check "generate --allow-nonfinite: rc $rc"

finish engine.sh
