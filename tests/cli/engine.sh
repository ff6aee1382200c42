#!/usr/bin/env bash
# End to end through the flora binary: init-model (single file and sharded),
# generate, logits, tokenize, and one clear error (exit 1, no crash) for each
# kind of bad input. Usage: engine.sh PATH_TO_FLORA
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
[[ $rc -ne 0 && $rc -lt 128 ]] && grep -q "bogus-flag" "$work/err" && passes=$((passes + 1)) || { echo "FAIL: bad flag: rc $rc"; failures=$((failures + 1)); }

finish engine.sh
