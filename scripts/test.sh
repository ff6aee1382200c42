#!/usr/bin/env bash
# The test job behind `make test` (the build is done by then). Each step names
# itself and its time; the first failure stops the run with its status.
#   1. the whole ctest suite on the best SIMD target of this CPU;
#   2. the whole suite again with the target capped at AVX2, then at scalar
#      (FLORA_CPU, see src/ops/ops.h), so an AVX-512 host also proves the paths
#      of lesser CPUs; a cap at or above the host's best target is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
JOBS=${JOBS:-$(nproc)}

passed=0
step() {  # step NAME COMMAND...: runs one step, timed; set -e ends the run at the first failure
  local name=$1; shift
  echo "== test: $name"
  local t0=$SECONDS
  "$@"
  echo "== test: $name: passed in $((SECONDS - t0)) s"
  passed=$((passed + 1))
}

suite() { (cd "$BUILD" && ctest --output-on-failure -j "$JOBS"); }
capped_suite() { (export FLORA_CPU=$1 && suite); }

native=$("$BUILD"/flora cpu)
step "suite, native target ($native)" suite
for cap in avx2 scalar; do
  capped=$(FLORA_CPU=$cap "$BUILD"/flora cpu)
  if [[ $capped == "$native" ]]; then
    echo "== test: FLORA_CPU=$cap is this host's best target ($native): covered above"
    continue
  fi
  step "suite, FLORA_CPU=$cap ($capped)" capped_suite "$cap"
done
# 3. the suite built with ASan + UBSan (build-asan; Makefile's test-sanitize, its exclusions stated there);
# 4. every libFuzzer target of tests/fuzz for FUZZ_SECONDS each (scripts/fuzz.sh, build-fuzz).
step "suite under ASan + UBSan (make test-sanitize)" make --no-print-directory test-sanitize JOBS="$JOBS"
step "fuzz targets (scripts/fuzz.sh)" env JOBS="$JOBS" bash scripts/fuzz.sh
echo "steps: $passed passed, 0 failed"
