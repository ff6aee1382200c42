#!/usr/bin/env bash
# End to end through `flora train` on the tiny preset: an adapter and full
# fine-tuning lower the loss and write loadable results; a run killed with
# SIGKILL mid-way (after a checkpoint, inside one, inside the final result) or
# stopped by a full disk, and resumed, logs the same losses, bit for bit, as a
# run that was never interrupted; NaN in a checkpoint is refused at --resume;
# bad input gives one clear error. Usage: train.sh PATH_TO_FLORA
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
# --products bf16 (on a CPU with AVX512_BF16): the forward's base products round their
# inputs, so the losses move a little from the f32 run's, and train_config.json says so.
check train-lora-bf16 "$flora" train "${common[@]}" --variant lora --rank 4 --steps 3 --batch 8 --products bf16 \
  --out "$work/lora-bf16"
if "$flora" cpu --all | grep -q "BF16 dot products.*: yes"; then
  grep -q '"products": "bf16"' "$work/lora-bf16/train_config.json" && pass || fail_check "bf16: train_config.json"
  paste -d' ' <(losses "$work/lora" | cut -d: -f2) <(losses "$work/lora-bf16" | cut -d: -f2) \
    | awk '{ d = $1 - $2; if (d < 0) d = -d; if (d == 0) same++; if (d > 0.02 * $1) far++ } END { exit !(same < NR && far == 0) }' \
    && pass || fail_check "bf16 products: losses not near, or equal to, the f32 run's: $(losses "$work/lora-bf16" | tr '\n' ' ')"
else
  grep -q '"products": "f32"' "$work/lora-bf16/train_config.json" && pass || fail_check "no BF16 dot: train_config.json"
fi
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

killed_run() {  # killed_run COMMAND...: its exit status in $rc (137: killed), without the shell's "Killed" line
  { "$@" >"$work/out" 2>"$work/err"; } 2>/dev/null
  rc=$?
}

# Killed inside a checkpoint write (the test hook of trainer.h: after its tensors,
# before the optimizer state): `latest` still names the checkpoint before, the
# half-written one is not taken for complete, and the resume gives the same losses.
FLORA_TEST_DIE_IN_CHECKPOINT=10 killed_run "$flora" "${run[@]}" --lr 5e-3 --out "$work/inckpt"
[[ $rc -eq 137 && $(cat "$work/inckpt/latest") == checkpoint-8 && -d "$work/inckpt/checkpoint-10.tmp" \
   && ! -e "$work/inckpt/checkpoint-10.tmp/optimizer.safetensors" && ! -e "$work/inckpt/checkpoint-10" ]] && pass \
  || fail_check "die-in-checkpoint: exit $rc, latest '$(cat "$work/inckpt/latest")', $(ls "$work/inckpt" | tr '\n' ' ')"
check resume-in-checkpoint "$flora" "${run[@]}" --lr 5e-3 --out "$work/inckpt" --resume
diff <(losses "$work/whole") <(losses "$work/inckpt") >/dev/null && pass \
  || fail_check "resumed after a kill inside a checkpoint: losses differ from the uninterrupted run's"
cmp -s "$work/whole/adapter/adapter_model.safetensors" "$work/inckpt/adapter/adapter_model.safetensors" && pass \
  || fail_check "resumed after a kill inside a checkpoint: adapter differs"
[[ -z $(ls -d "$work/inckpt"/*.tmp "$work/inckpt"/*.old 2>/dev/null) ]] && pass \
  || fail_check "staging directories left: $(ls "$work/inckpt" | tr '\n' ' ')"

# Killed inside the final result: the last checkpoint stays (`latest` names it and
# it is complete) through a resume killed the same way, and a resume then writes
# the result; a finished run resumed and killed inside the result keeps its old
# result whole, and resumed once more replaces it with the same one.
same_as_whole() {  # same_as_whole NAME: the losses, validation losses and adapter of the uninterrupted run
  diff <(losses "$work/whole") <(losses "$work/$1") >/dev/null \
    && diff <(eval_losses "$work/whole") <(eval_losses "$work/$1") >/dev/null \
    && cmp -s "$work/whole/adapter/adapter_model.safetensors" "$work/$1/adapter/adapter_model.safetensors"
}
last_checkpoint_whole() {  # last_checkpoint_whole DIR: latest names checkpoint-30 and it is complete
  [[ $(cat "$1/latest") == checkpoint-30 && -f "$1/checkpoint-30/optimizer.safetensors" \
     && -f "$1/checkpoint-30/trainer_state.json" && -f "$1/checkpoint-30/adapter_model.safetensors" ]]
}
FLORA_TEST_DIE_IN_RESULT=1 killed_run "$flora" "${run[@]}" --lr 5e-3 --out "$work/inresult"
[[ $rc -eq 137 && ! -e "$work/inresult/adapter" ]] && last_checkpoint_whole "$work/inresult" && pass \
  || fail_check "die-in-result: exit $rc, $(ls "$work/inresult" | tr '\n' ' ')"
FLORA_TEST_DIE_IN_RESULT=1 killed_run "$flora" "${run[@]}" --lr 5e-3 --out "$work/inresult" --resume
[[ $rc -eq 137 ]] && last_checkpoint_whole "$work/inresult" && pass \
  || fail_check "die-in-result, resumed: exit $rc, the last checkpoint is gone: $(ls "$work/inresult" | tr '\n' ' ')"
check resume-in-result "$flora" "${run[@]}" --lr 5e-3 --out "$work/inresult" --resume
same_as_whole inresult && pass || fail_check "resumed after a kill inside the result: differs from the uninterrupted run"
FLORA_TEST_DIE_IN_RESULT=1 killed_run "$flora" "${run[@]}" --lr 5e-3 --out "$work/inresult" --resume
[[ $rc -eq 137 ]] && same_as_whole inresult && last_checkpoint_whole "$work/inresult" && pass \
  || fail_check "die-in-result over a finished run: exit $rc, the old result or checkpoint did not stand"
check resume-finished "$flora" "${run[@]}" --lr 5e-3 --out "$work/inresult" --resume
same_as_whole inresult && [[ -z $(ls -d "$work/inresult"/*.tmp "$work/inresult"/*.old 2>/dev/null) ]] && pass \
  || fail_check "a finished run resumed: differs from the uninterrupted run, or left $(ls "$work/inresult" | tr '\n' ' ')"

# A full disk: the run writes into a small tmpfs (mounted in a user and mount
# namespace of its own; skipped where none can be made) until a write fails. It
# ends with an error naming the file that did not fit: with room for two
# checkpoints, the third; with room for train_config.json only, the log's first
# line. `latest` names a complete checkpoint, and a resume of a copy, with room,
# gives the same losses.
on_small_disk() {  # on_small_disk SIZE NAME COMMAND...: COMMAND --out (a tmpfs of SIZE)/out, copied to $work/NAME
  mkdir -p "$work/mnt"
  # shellcheck disable=SC2016
  unshare -rm bash -c 'mount -t tmpfs -o size=$1 tmpfs "$2" || exit 2
    "${@:5}" --out "$2/out" >/dev/null 2>"$3/err"; echo $? >"$3/$4.rc"; cp -a "$2/out" "$3/$4"' \
    _ "$1" "$work/mnt" "$work" "$2" "${@:3}"
  rc=$(cat "$work/$2.rc" 2>/dev/null)
}
if unshare -rm true 2>/dev/null; then
  on_small_disk 200k fulldisk "$flora" "${run[@]}" --lr 5e-3
  latest=$(cat "$work/fulldisk/latest" 2>/dev/null)
  [[ $rc == 1 ]] && grep -qE "$work/mnt/out/checkpoint-[0-9]+\.tmp/[^ ]+: write failed: No space left on device" "$work/err" \
     && [[ -f "$work/fulldisk/$latest/optimizer.safetensors" && -f "$work/fulldisk/$latest/trainer_state.json" ]] && pass \
    || fail_check "full disk: exit '$rc', latest '$latest', $(ls "$work/fulldisk" 2>/dev/null | tr '\n' ' ')"
  check resume-full-disk "$flora" "${run[@]}" --lr 5e-3 --out "$work/fulldisk" --resume
  same_as_whole fulldisk && pass || fail_check "resumed after a full disk: differs from the uninterrupted run"
  on_small_disk 4k fulllog "$flora" "${run[@]}" --lr 5e-3
  [[ $rc == 1 ]] && grep -qE "$work/mnt/out/train_log\.jsonl: write failed: No space left on device" "$work/err" && pass \
    || fail_check "full disk at the log: exit '$rc'"
else
  echo "train: full-disk checks skipped (no user and mount namespace here)"
fi

# NaN in a checkpoint, or Inf in the adapter of --adapter-init, is refused naming
# the file and the tensor. The first tensor's first element is set to NaN: the
# data of a safetensors file begins after its 8-byte length and header.
poison() {  # poison FILE BYTES: the first 4 bytes of the data become BYTES (printf escapes)
  local header; header=$(od -An -tu8 -N8 "$1" | tr -d ' ')
  printf "$2" | dd of="$1" bs=1 seek=$((8 + header)) conv=notrunc status=none
}
cp -r "$work/inckpt" "$work/nan-opt"
poison "$work/nan-opt/checkpoint-30/optimizer.safetensors" '\x00\x00\xc0\x7f'
expect_error nan-optimizer "checkpoint-30/optimizer.safetensors: tensor '[mv]\..*': expected finite values, found nan" \
  "$flora" "${run[@]}" --lr 5e-3 --out "$work/nan-opt" --resume
cp -r "$work/inckpt" "$work/nan-adapter"
poison "$work/nan-adapter/checkpoint-30/adapter_model.safetensors" '\x00\x00\xc0\x7f'
expect_error nan-adapter "checkpoint-30/adapter_model.safetensors: tensor '.*'.*(nan|NaN|finite)" \
  "$flora" "${run[@]}" --lr 5e-3 --out "$work/nan-adapter" --resume
cp -r "$work/ffba/adapter" "$work/inf-adapter"
poison "$work/inf-adapter/adapter_model.safetensors" '\x00\x00\x80\x7f'
expect_error inf-adapter-init "inf-adapter/adapter_model.safetensors: tensor '.*'.*(inf|Inf|finite)" \
  "$flora" train "${common[@]}" --adapter-init "$work/inf-adapter" --steps 1 --out "$work/x"

# Errors.
printf '{"instruction": "a", "output": "b"}\n{"instruction": "a", "outptu": "b"}\n' >"$work/bad.jsonl"
expect_error bad-record 'bad.jsonl:2: .*outptu' "$flora" train "${base[@]}" --data "$work/bad.jsonl" --steps 1 \
  --out "$work/bad"
check skip-bad "$flora" train "${base[@]}" --data "$work/bad.jsonl" --skip-bad --steps 1 --out "$work/skip"
expect_error micro-batch 'micro-batch' "$flora" train "${common[@]}" --batch 4 --micro-batch 8 --steps 1 --out "$work/x"
expect_error no-checkpoint 'no checkpoint' "$flora" train "${common[@]}" --steps 1 --resume --out "$work/none"
expect_error resume-changed 'lr = 0.005.*0.001' "$flora" "${run[@]}" --lr 1e-3 --out "$work/killed" --resume
if "$flora" cpu --all | grep -q "BF16 dot products.*: yes"; then
  expect_error resume-products 'products = "f32", this run has "bf16"' \
    "$flora" "${run[@]}" --lr 5e-3 --products bf16 --out "$work/killed" --resume
fi
expect_error bad-variant 'ffbx' "$flora" train "${common[@]}" --variant ffbx --steps 1 --out "$work/x"
expect_error no-tokenizer 'tokenizer.json' "$flora" train -m "$FLORA_SOURCE_DIR/tests/fixtures/tiny_llama/f32" \
  --data "$data" --steps 1 --out "$work/x"

# The memory estimate comes before the first step; a run it says will not fit is refused
# before anything is written, naming a --micro-batch that fits; --ignore-memory-estimate
# starts it anyway. FLORA_TEST_MEMORY_AVAILABLE_MIB stands in for the machine's memory.
mem=(train "${common[@]}" --full --steps 1 --batch 16 --out "$work/mem")
check memory-estimate "$flora" "${mem[@]}"
grep -qE 'memory estimate [0-9]+ MiB \(weights [0-9]+, gradients and optimiser state [0-9]+, activations [0-9]+ MiB for a micro-batch of 16 x [0-9]+ tokens\); [0-9]+ MiB available' \
  "$work/err" && pass || fail_check "memory-estimate: no estimate line: $(cat "$work/err")"
rm -rf "$work/mem"
FLORA_TEST_MEMORY_AVAILABLE_MIB=20 expect_error memory-refused \
  'needs about [0-9]+ MiB .*more than the 20 MiB .*use --micro-batch [1-9][0-9]* \(each sequence .*or an adapter instead of --full.*--ignore-memory-estimate' \
  "$flora" "${mem[@]}"
[[ -e "$work/mem" ]] && fail_check "memory-refused: --out was created" || pass
FLORA_TEST_MEMORY_AVAILABLE_MIB=20 check memory-ignored "$flora" "${mem[@]}" --ignore-memory-estimate
FLORA_TEST_MEMORY_AVAILABLE_MIB=1 expect_error memory-no-sequence-fits 'use a shorter --seq-len' \
  "$flora" train "${common[@]}" --variant lora --rank 4 --steps 1 --batch 16 --out "$work/mem2"
finish train
