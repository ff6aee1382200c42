#!/usr/bin/env bash
# End to end through `flora train` on the tiny preset: an adapter and full
# fine-tuning lower the loss and write loadable results; a run killed with
# SIGKILL mid-way and resumed logs the same losses, bit for bit, as a run that
# was never interrupted; bad input gives one clear error. Usage: train.sh PATH_TO_FLORA
set -uo pipefail
flora=$1
source "$(dirname "$0")/lib/harness.sh"
data="$FLORA_SOURCE_DIR/tests/fixtures/train/arith.jsonl"
losses() { grep -o '"loss":[^,}]*' "$1/train_log.jsonl"; }
eval_losses() { grep -o '"eval_loss":[^,}]*' "$1/train_log.jsonl" | cut -d: -f2; }

check init-tiny "$flora" init-model --preset tiny --seed 3 --out "$work/tiny"
base=(-m "$work/tiny" --seq-len 192 -t 2 -q)
common=("${base[@]}" --data "$data" --eval-data "$data")

# An adapter: the validation loss falls, and the adapter runs in generate.
check train-ffba "$flora" train "${common[@]}" --variant ffba --rank 4 --lr 1e-2 --epochs 2 --batch 8 --micro-batch 4 \
  --out "$work/ffba"
first=$(eval_losses "$work/ffba" | head -1); last=$(eval_losses "$work/ffba" | tail -1)
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.5) }' && pass \
  || fail_check "ffba: validation loss did not fall ($first -> $last)"
check generate-trained "$flora" generate -m "$work/tiny" --adapter "$work/ffba/adapter" -p "What is" -n 4 --temp 0
[[ $(grep -c '"loss"' "$work/ffba/train_log.jsonl") -eq 12 ]] && pass || fail_check "ffba: expected 12 step lines"

# --adapter-init continues from a trained adapter: its step-0 validation loss is the
# last one of the run that made it.
check adapter-init "$flora" train "${common[@]}" --adapter-init "$work/ffba/adapter" --lr 1e-3 --steps 1 --batch 8 \
  --out "$work/cont"
[[ $(eval_losses "$work/cont" | head -1) == "$last" ]] && pass \
  || fail_check "adapter-init: step-0 loss $(eval_losses "$work/cont" | head -1) is not the trained adapter's $last"

# LoRA as PEFT writes it, and full fine-tuning (a model directory that loads).
check train-lora "$flora" train "${common[@]}" --variant lora --rank 4 --steps 3 --batch 8 --out "$work/lora"
grep -q '"peft_type": "LORA"' "$work/lora/adapter/adapter_config.json" && pass || fail_check "lora: not a PEFT config"
check train-full "$flora" train "${common[@]}" --full --lr 1e-3 --steps 3 --batch 8 --optim sgd --out "$work/full"
check generate-full "$flora" generate -m "$work/full/model" -p "What is" -n 4 --temp 0

# Killed with SIGKILL after a checkpoint, then resumed: the same losses as a
# run that was never interrupted (checkpoints every 2 steps, 30 steps).
run=(train "${common[@]}" --variant ffba --rank 4 --steps 30 --batch 16 --micro-batch 8 --dropout 0.1 \
  --save-every 2)
check uninterrupted "$flora" "${run[@]}" --lr 5e-3 --out "$work/whole"
"$flora" "${run[@]}" --lr 5e-3 --out "$work/killed" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 2000); do [[ -f "$work/killed/latest" ]] && break; sleep 0.01; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
steps_before=$(grep -c '"loss"' "$work/killed/train_log.jsonl")
[[ ! -d "$work/killed/adapter" && $steps_before -lt 30 ]] && pass \
  || fail_check "the run finished before it was killed ($steps_before steps): make it longer"
check resume "$flora" "${run[@]}" --lr 5e-3 --out "$work/killed" --resume
if diff <(losses "$work/whole") <(losses "$work/killed") >"$work/err"; then pass; else
  fail_check "resumed losses differ from the uninterrupted run's"; fi
cmp -s "$work/whole/adapter/adapter_model.safetensors" "$work/killed/adapter/adapter_model.safetensors" && pass \
  || fail_check "resumed adapter differs"

# Errors.
printf '{"instruction": "a", "output": "b"}\n{"instruction": "a", "outptu": "b"}\n' >"$work/bad.jsonl"
expect_error bad-record 'bad.jsonl:2: .*outptu' "$flora" train "${base[@]}" --data "$work/bad.jsonl" --steps 1 \
  --out "$work/bad"
check skip-bad "$flora" train "${base[@]}" --data "$work/bad.jsonl" --skip-bad --steps 1 --out "$work/skip"
expect_error micro-batch 'micro-batch' "$flora" train "${common[@]}" --batch 4 --micro-batch 8 --steps 1 --out "$work/x"
expect_error no-checkpoint 'no checkpoint' "$flora" train "${common[@]}" --steps 1 --resume --out "$work/none"
expect_error resume-changed 'lr = 0.005.*0.001' "$flora" "${run[@]}" --lr 1e-3 --out "$work/killed" --resume
expect_error bad-variant 'ffbx' "$flora" train "${common[@]}" --variant ffbx --steps 1 --out "$work/x"
expect_error no-tokenizer 'tokenizer.json' "$flora" train -m "$FLORA_SOURCE_DIR/tests/fixtures/tiny_llama/f32" \
  --data "$data" --steps 1 --out "$work/x"
finish train
