#!/usr/bin/env bash
# Data parallelism under MPI (issue 14) on one host, over TCP loopback: `mpirun -np N
# flora train` logs the losses and writes the adapter (and, with --full, the model) of
# one process bit for bit, a last step of fewer micro-batches included; N that do not
# divide a step's micro-batches are refused by name; a rank killed with SIGKILL after
# a checkpoint ends the job promptly naming the rank, and a resume with 2 ranks or 1
# continues to the uninterrupted run's losses (and a one-process checkpoint resumes
# under 2 ranks); bad data on one rank stops every rank with the file and line, and
# ranks started with different options are refused; `mpirun -np N flora eval` writes
# the single run's results.json (all but its `speed`) and examples.jsonl. Each rank
# runs 1 thread. Skipped where there is no mpirun (flora built without MPI).
# Usage: mpi.sh PATH_TO_FLORA
set -uo pipefail
flora=$1
source "$(dirname "$0")/lib/harness.sh"
libs=$(ldd "$flora" 2>/dev/null)  # read whole: grep -q under pipefail could kill ldd with SIGPIPE
if ! command -v mpirun >/dev/null || [[ $libs != *libmpi* ]]; then
  echo "mpi: skipped (no mpirun, or flora built without MPI)"
  finish mpi
fi
# As root Open MPI wants these; --oversubscribe: more ranks than this host's cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# The sanitizer build runs this too, where LeakSanitizer would report what
# Open MPI leaves allocated at MPI_Finalize, mostly from its plugins (dlclosed
# by then, so no suppression can name them). Leak checking stays on for
# flora's own code in every other test; here it is off (the last option wins).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
mpi=(mpirun --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)
data="$FLORA_SOURCE_DIR/tests/fixtures/train/arith.jsonl"  # 48 records
fixtures="$FLORA_SOURCE_DIR/tests/fixtures/eval"
# What must be equal in a log: every step's loss and gradient norm, every validation loss.
trajectory() { grep -oE '"(loss|grad_norm|eval_loss)":[^,}]*' "$1/train_log.jsonl"; }
same_run() {  # same_run NAME A B FILE: equal trajectories and equal FILE (the result's tensors)
  if diff <(trajectory "$2") <(trajectory "$3") >/dev/null && [[ $(trajectory "$2" | wc -l) -gt 2 ]] \
     && cmp -s "$2/$4" "$3/$4"; then pass; else fail_check "$1: $2 and $3 differ"; fi
}

check init-tiny "$flora" init-model --preset tiny --seed 3 --out "$work/tiny"
common=(train -m "$work/tiny" --seq-len 192 -t 1 -q --data "$data" --eval-data "$data")

# An adapter with dropout: 4 micro-batches a step, 2 on each rank; 48 sequences in
# steps of 20 leave a last step of 8 (2 micro-batches, 1 each).
ffba=("${common[@]}" --variant ffba --rank 4 --lr 5e-3 --epochs 2 --batch 20 --micro-batch 5 --dropout 0.1)
check ffba-1 "$flora" "${ffba[@]}" --out "$work/ffba-1"
check ffba-2 "${mpi[@]}" -np 2 "$flora" "${ffba[@]}" --out "$work/ffba-2"
same_run ffba "$work/ffba-1" "$work/ffba-2" adapter/adapter_model.safetensors
grep -q '"comm_s"' "$work/ffba-2/train_log.jsonl" && ! grep -q '"comm_s"' "$work/ffba-1/train_log.jsonl" && pass \
  || fail_check "comm_s: expected in the MPI run's log only"
grep -q "2 ranks; per step rank 0 spent" "$work/out" && pass || fail_check "no communication summary on stdout"
# LoRA on 3 ranks: 3 micro-batches a step; the last step's 2 leave rank 0 none.
lora=("${common[@]}" --variant lora --rank 4 --lr 5e-3 --steps 4 --batch 18 --micro-batch 6)
check lora-1 "$flora" "${lora[@]}" --out "$work/lora-1"
check lora-3 "${mpi[@]}" -np 3 "$flora" "${lora[@]}" --out "$work/lora-3"
same_run lora-3-ranks "$work/lora-1" "$work/lora-3" adapter/adapter_model.safetensors
# Full fine-tuning: the model's every tensor.
full=("${common[@]}" --full --lr 1e-3 --steps 3 --batch 16 --micro-batch 4)
check full-1 "$flora" "${full[@]}" --out "$work/full-1"
check full-2 "${mpi[@]}" -np 2 "$flora" "${full[@]}" --out "$work/full-2"
same_run full "$work/full-1" "$work/full-2" model/model.safetensors
# Only rank 0 writes: one log line per step.
[[ $(grep -c '"loss"' "$work/full-2/train_log.jsonl") -eq 3 ]] && pass || fail_check "full-2: expected 3 step lines"

# Ranks that do not divide the micro-batches of a step are refused by name.
expect_error ranks-3 "3 ranks \(mpirun -np 3\): expected a number of ranks that divides the 4 micro-batches of a step.*: 1, 2, 4" \
  timeout 60 "${mpi[@]}" -np 3 "$flora" "${full[@]}" --out "$work/x"

# SIGKILL of rank 1 after a checkpoint: the job ends within seconds, mpirun naming
# rank 1; resumed with 2 ranks and with 1, both give the uninterrupted run's
# losses and adapter. Each rank's shell records its pid before becoming flora.
run=("${common[@]}" --variant ffba --rank 4 --lr 5e-3 --steps 30 --batch 16 --micro-batch 8 --dropout 0.1 --save-every 2)
check whole "$flora" "${run[@]}" --out "$work/whole"
# shellcheck disable=SC2016
timeout 60 "${mpi[@]}" -np 2 bash -c 'echo $$ >"$0.pid.$OMPI_COMM_WORLD_RANK"; exec "$@"' "$work/killed" \
  "$flora" "${run[@]}" --out "$work/killed" >"$work/killed.out" 2>&1 &
job=$!
for _ in $(seq 1 3000); do [[ -f $work/killed/latest && -s $work/killed.pid.1 ]] && break; sleep 0.01; done
killed_at=$(date +%s%N)
kill -KILL "$(cat "$work/killed.pid.1")"
wait $job; rc=$?
took_ms=$((($(date +%s%N) - killed_at) / 1000000))
steps_before=$(grep -c '"loss"' "$work/killed/train_log.jsonl")
[[ $rc -ne 0 && $rc -ne 124 && $took_ms -lt 20000 && ! -d $work/killed/adapter && $steps_before -lt 30 ]] && pass \
  || fail_check "kill rank 1: exit $rc after $took_ms ms, $steps_before steps logged"
grep -qE "process rank 1 .*(signal 9|Killed)" "$work/killed.out" && pass \
  || { fail_check "kill rank 1: mpirun did not name rank 1:"; cat "$work/killed.out"; }
cp -r "$work/killed" "$work/killed-1"
check resume-2 timeout 120 "${mpi[@]}" -np 2 "$flora" "${run[@]}" --out "$work/killed" --resume
same_run resume-2-ranks "$work/whole" "$work/killed" adapter/adapter_model.safetensors
check resume-1 "$flora" "${run[@]}" --out "$work/killed-1" --resume
same_run resume-1-rank "$work/whole" "$work/killed-1" adapter/adapter_model.safetensors
# A one-process run's checkpoint (killed inside checkpoint 10: `latest` is 8) resumed on 2 ranks.
{ FLORA_TEST_DIE_IN_CHECKPOINT=10 "$flora" "${run[@]}" --out "$work/single" >/dev/null 2>&1; } 2>/dev/null
check resume-single-on-2 timeout 120 "${mpi[@]}" -np 2 "$flora" "${run[@]}" --out "$work/single" --resume
same_run resume-single-on-2 "$work/whole" "$work/single" adapter/adapter_model.safetensors

# Bad data on rank 1 only (each host reads its own copy): the file and line, the
# rank, and every rank stops.
printf '{"instruction": "a", "output": "b"}\n{"instruction": "a", "outptu": "b"}\n' >"$work/bad.jsonl"
short=(train -m "$work/tiny" --seq-len 192 -t 1 -q --variant ffba --rank 4 --steps 2 --batch 16 --micro-batch 8)
expect_error bad-data-rank-1 "error \(rank 1 of 2\): .*bad\.jsonl:2: .*outptu" timeout 60 "${mpi[@]}" \
  -np 1 "$flora" "${short[@]}" --data "$data" --out "$work/bad" : -np 1 "$flora" "${short[@]}" --data "$work/bad.jsonl" \
  --out "$work/bad"
expect_error options-differ "rank 1 has seed = 1, rank 0 has seed = 0" timeout 60 "${mpi[@]}" \
  -np 1 "$flora" "${short[@]}" --data "$data" --out "$work/seed" : -np 1 "$flora" "${short[@]}" --data "$data" \
  --seed 1 --out "$work/seed"

# Evaluation: the records split across ranks, one results.json and examples.jsonl.
same_eval() {  # same_eval NAME A B: results.json equal but for `speed`, examples.jsonl equal
  python3 - "$2/results.json" "$3/results.json" <<'EOF' && cmp -s "$2/examples.jsonl" "$3/examples.jsonl" && pass \
    || fail_check "eval $1: $2 and $3 differ"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for r in (a, b):
    r.pop("speed")
sys.exit(a != b)
EOF
}
eval_case() {  # eval_case NAME RANKS TASK FILE ARGS...
  local name=$1 ranks=$2 task=$3 file=$4; shift 4
  local e=(eval -m "$work/tiny" --task "$task" --data "$fixtures/$file" -t 1 "$@")
  check "eval-$name-1" "$flora" "${e[@]}" --out "$work/eval-$name-1"
  check "eval-$name-$ranks" timeout 60 "${mpi[@]}" -np "$ranks" "$flora" "${e[@]}" --out "$work/eval-$name-$ranks"
  same_eval "$name" "$work/eval-$name-1" "$work/eval-$name-$ranks"
}
eval_case mcq 2 mcq records_mcq_llm_adapters.jsonl --max-new-tokens 8 --batch 2
eval_case loglik 3 mcq records_mcq_llm_adapters.jsonl --mcq-mode loglik --batch 2
eval_case sampled 2 rouge records_samsum.jsonl --max-new-tokens 10 --temp 0.8 --seed 5
eval_case ppl 2 ppl records_ppl.jsonl --ppl-window 32 --ppl-stride 16
finish mpi
