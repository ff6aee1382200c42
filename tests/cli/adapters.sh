#!/usr/bin/env bash
# End to end through the flora binary: init-adapter for every variant, merge of a
# LoRA adapter (the merged model runs), and one clear error (exit 1) for each
# kind of bad input. Usage: adapters.sh PATH_TO_FLORA
set -uo pipefail
flora=$1
source "$(dirname "$0")/lib/harness.sh"
expect_last_out() {  # expect_last_out NAME PATTERN: the last command's stdout matches PATTERN
  if grep -qE -- "$2" "$work/out"; then passes=$((passes + 1)); else
    echo "FAIL $1: stdout does not match '$2':"; cat "$work/out"; failures=$((failures + 1)); fi
}

check init-tiny "$flora" init-model --preset tiny --seed 3 --out "$work/tiny"

# lora rank 4 on all 7 projections of tiny: 2 x 4 x (128 + 96 + 96 + 128 + 264 + 264 + 264) = 9920.
check init-lora "$flora" init-adapter -m "$work/tiny" --variant lora --rank 4 --out "$work/lora"
expect_last_out lora-count "trainable parameters: 9920 .*39680 bytes"
[[ -f "$work/lora/adapter_config.json" && -f "$work/lora/adapter_model.safetensors" ]] \
  && passes=$((passes + 1)) || { echo "FAIL lora files: $(ls "$work/lora")"; failures=$((failures + 1)); }
grep -q '"peft_type": "LORA"' "$work/lora/adapter_config.json" && grep -q '"lora_alpha": 8' "$work/lora/adapter_config.json" \
  && passes=$((passes + 1)) || { echo "FAIL lora config:"; cat "$work/lora/adapter_config.json"; failures=$((failures + 1)); }
for v in pf-lora lora-merged ffa ffba ffba-aorb ffba-qg ffba-relu; do
  check "init-$v" "$flora" init-adapter -m "$work/tiny" --variant $v --rank 2 --init random --seed 1 --out "$work/$v"
done
grep -q '"r": 4' "$work/ffa/adapter_config.json" && passes=$((passes + 1)) || { echo "FAIL ffa stores rank 2R"; failures=$((failures + 1)); }
check init-qv "$flora" init-adapter -m "$work/tiny" --variant lora --rank 2 --targets q,v --alpha 16 --init random --out "$work/qv"
grep -q '"target_modules": \[' "$work/qv/adapter_config.json" && ! grep -q '"o_proj"' "$work/qv/adapter_config.json" \
  && passes=$((passes + 1)) || { echo "FAIL --targets q,v:"; cat "$work/qv/adapter_config.json"; failures=$((failures + 1)); }

# Merge: a model directory that runs; a zero-init LoRA leaves the weights (and so the logits) as they were.
check merge "$flora" merge -m "$work/tiny" --adapter "$work/qv" --out "$work/merged"
check generate-merged "$flora" generate -m "$work/merged" -p "Once upon a time" -n 4 --temp 0
[[ -f "$work/merged/tokenizer.json" ]] && passes=$((passes + 1)) || { echo "FAIL merged tokenizer.json"; failures=$((failures + 1)); }
check init-zero "$flora" init-adapter -m "$work/tiny" --variant lora --rank 2 --init zero --out "$work/zero"
check merge-zero "$flora" merge -m "$work/tiny" --adapter "$work/zero" --out "$work/merged0"
cmp -s "$work/tiny/model.safetensors" "$work/merged0/model.safetensors" && passes=$((passes + 1)) \
  || { echo "FAIL: a zero adapter changed the weights"; failures=$((failures + 1)); }
check merge-ffa "$flora" merge -m "$work/tiny" --adapter "$work/ffa" --out "$work/merged_ffa"

# Errors.
expect_error bad-variant "unknown adapter variant 'fba'" "$flora" init-adapter -m "$work/tiny" --variant fba --rank 2 --out "$work/x"
expect_error bad-target "unknown projection 'qq'" "$flora" init-adapter -m "$work/tiny" --variant lora --rank 2 --targets q,qq --out "$work/x"
expect_error empty-targets "--targets: empty list" "$flora" init-adapter -m "$work/tiny" --variant lora --rank 2 --targets "" --out "$work/x"
expect_error flora-targets "--targets applies to the LoRA variants" "$flora" init-adapter -m "$work/tiny" --variant ffba --rank 2 --targets q --out "$work/x"
expect_error no-model "config.json" "$flora" init-adapter -m "$work/none" --variant lora --rank 2 --out "$work/x"
expect_error merge-ffba "cannot be merged" "$flora" merge -m "$work/tiny" --adapter "$work/ffba" --out "$work/x"
expect_error merge-in-place "model directory itself" "$flora" merge -m "$work/tiny" --adapter "$work/lora" --out "$work/tiny"
expect_error merge-no-adapter "adapter_config.json: not found" "$flora" merge -m "$work/tiny" --adapter "$work/none" --out "$work/x"
cp -r "$work/lora" "$work/regex"
sed -i 's/"target_modules": \[/"target_modules": ".*proj", "old": [/' "$work/regex/adapter_config.json"
expect_error regex "target_modules.*regular expression" "$flora" merge -m "$work/tiny" --adapter "$work/regex" --out "$work/x"
# An adapter made for another shape (intermediate_size 100) does not load against tiny.
mkdir -p "$work/other"
sed 's/"intermediate_size": 200/"intermediate_size": 100/' "$work/tiny/config.json" >"$work/other/config.json"
check init-other "$flora" init-adapter -m "$work/other" --variant lora --rank 2 --out "$work/lora_other"
expect_error other-model "adapter_model.safetensors: tensor '.*gate_proj.lora_B.weight': expected shape \\[200, 2\\], found \\[100, 2\\]" \
  "$flora" merge -m "$work/tiny" --adapter "$work/lora_other" --out "$work/x"
[[ ! -e "$work/x" ]] && passes=$((passes + 1)) || { echo "FAIL: a failed command left $work/x"; failures=$((failures + 1)); }

# Running with an adapter: a zero-initialised FLoRA adapter leaves every logit
# bit for bit as the base computes it (its terms add exact zeros); a random one
# changes them; every LoRA way of running works, and `bench --variants` runs.
tokens=379,10,20,30,40
check logits-base "$flora" logits -m "$work/tiny" --tokens $tokens -o "$work/base.st"
check init-ffba-zero "$flora" init-adapter -m "$work/tiny" --variant ffba --rank 4 --init zero --out "$work/ffba-zero"
check logits-ffba-zero "$flora" logits -m "$work/tiny" --adapter "$work/ffba-zero" --tokens $tokens -o "$work/zero.st"
cmp -s "$work/base.st" "$work/zero.st" && pass || fail_check "a zero FLoRA adapter changed the logits"
check logits-ffba "$flora" logits -m "$work/tiny" --adapter "$work/ffba" --tokens $tokens -o "$work/ffba.st"
cmp -s "$work/base.st" "$work/ffba.st" && fail_check "a random FLoRA adapter left the logits unchanged" || pass
for lv in lora pf-lora lora-merged; do
  check "generate-$lv" "$flora" generate -m "$work/tiny" --adapter "$work/qv" --lora-variant $lv -p "Once" -n 4 --temp 0
  grep -q "adapter: .*($lv, rank 2" "$work/err" && pass || fail_check "generate-$lv: no adapter line on stderr"
done
check bench-variants "$flora" bench -m "$work/tiny" --variants base,lora,lora-merged,ffba --rank 2 -p 4 -n 2 -r 1 -t 1
expect_last_out bench-variants-table '^\| tiny \| ffba \| 2 \|'
# A merged LoRA's decode reads the merged base and no adapter bytes (its bandwidth limit is the base's).
expect_last_out bench-variants-merged-bytes '^\| tiny \| lora-merged \| 2 \| [0-9]+ \| 0\.0 \| 0\.00 \|'
expect_last_out bench-variants-bandwidth '^Memory bandwidth [0-9]+\.[0-9] GB/s .*TPOT is [0-9]+\.[0-9]+x the time'
# --adapter in bench runs a LoRA file unfused unless told otherwise.
check bench-adapter "$flora" bench -m "$work/tiny" --variants base --adapter "$work/qv" --rank 2 -p 4 -n 2 -r 1 -t 1
expect_last_out bench-adapter-table '^\| tiny \| lora \| 2 \|'
expect_error bench-bad-variant "unknown|variant" "$flora" bench -m "$work/tiny" --variants base,nope --rank 2 -p 4 -n 2 -r 1
# bench --serve: the scheduler with 1 and 3 streams, base / one FFBA / four mixed.
check bench-serve "$flora" bench -m "$work/tiny" --serve --variants ffba --streams 1,3 --rank 2 -p 3 -n 3 -r 1 -t 1
expect_last_out bench-serve-table '^\| tiny \| 3 \| ffba x4 \| 3 \|'
expect_error bench-serve-merged "merged LoRA" "$flora" bench -m "$work/tiny" --serve --variants lora-merged -r 1

finish adapters.sh
