#!/usr/bin/env bash
# docs/benchmarks.md, "Data parallelism with MPI": 2 ranks x 1 thread against 1 rank x 2
# threads, FFBA and full fine-tuning of flora-small, alternating, 2 rounds. Usage: bench/mpi_speed.sh [OUT]
set -u
cd "$(dirname "$0")/.."
F=${FLORA:-./build/flora}; M=assets/flora-small; D=tests/fixtures/train/arith.jsonl; out=${1:-out/mpi-speed}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi=(mpirun -np 2 --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)
for round in 1 2; do
  for what in ffba full; do
    if [[ $what == ffba ]]; then t=(--variant ffba --rank 8 --lr 5e-3); else t=(--full --lr 1e-4); fi
    a=(train -m "$M" --data "$D" "${t[@]}" --steps 20 --batch 16 --micro-batch 4 --seq-len 256 -q)
    echo "== $what round $round: 1 rank x 2 threads"; "$F" "${a[@]}" -t 2 --out "$out"/$what-1x2-$round 2>/dev/null
    echo "== $what round $round: 2 ranks x 1 thread"; "${mpi[@]}" "$F" "${a[@]}" -t 1 --out "$out/$what-2x1-$round" 2>/dev/null
  done
done
