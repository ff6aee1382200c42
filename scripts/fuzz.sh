#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang, ASan + UBSan, in build-fuzz) and
# runs each for FUZZ_SECONDS on a copy of its seed corpus tests/fuzz/corpus/<target>/
# (the committed corpus is only read). Fails when any target finds a crash, a sanitizer
# error, an exception other than flora::Error, a leak, a timeout or an out-of-memory;
# the crashing input is then kept under $FUZZ_OUT/<target>/ and named in the output.
#   FUZZ_SECONDS  seconds per target (default 10: about a minute for all of them)
#   FUZZ_TARGETS  the targets to run (default: every tests/fuzz/fuzz_*.cpp)
#   FUZZ_BUILD    build directory (default build-fuzz); FUZZ_OUT (default $FUZZ_BUILD/fuzz-out)
#   JOBS          build parallelism (default nproc)
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-10}
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
FUZZ_OUT=${FUZZ_OUT:-$FUZZ_BUILD/fuzz-out}
JOBS=${JOBS:-$(nproc)}
if [[ -z ${FUZZ_TARGETS:-} ]]; then
  FUZZ_TARGETS=$(for f in tests/fuzz/fuzz_*.cpp; do basename "$f" .cpp; done)
fi

command -v clang++ >/dev/null || { echo "fuzz: clang++ not found (scripts/setup.sh installs it)" >&2; exit 1; }
cmake -S . -B "$FUZZ_BUILD" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DFLORA_FUZZ=ON >/dev/null
# shellcheck disable=SC2086
if ! cmake --build "$FUZZ_BUILD" -j "$JOBS" --target $FUZZ_TARGETS >"$FUZZ_BUILD/build.log" 2>&1; then
  tail -n 40 "$FUZZ_BUILD/build.log" >&2
  echo "fuzz: the build failed (log $FUZZ_BUILD/build.log)" >&2
  exit 1
fi

max_len() {  # the largest input each target is given
  case $1 in
    fuzz_tokenizer_json) echo 32768 ;;
    *) echo 8192 ;;
  esac
}

failed=()
for t in $FUZZ_TARGETS; do
  out=$FUZZ_OUT/$t
  rm -rf "$out" && mkdir -p "$out/corpus" "$out/artifacts"
  cp -r "tests/fuzz/corpus/$t/." "$out/corpus/"
  seeds=$(find "$out/corpus" -type f | wc -l)
  t0=$SECONDS
  # ASan's leak check stays on; -timeout: one input taking longer is a finding too.
  if "$FUZZ_BUILD/$t" -max_total_time="$FUZZ_SECONDS" -max_len="$(max_len "$t")" -timeout=10 \
       -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/artifacts/" \
       "$out/corpus" >"$out/log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log")
    cov=$(grep -o 'cov: [0-9]*' "$out/log" | tail -1)
    echo "fuzz: $t: ok, ${execs:-?} executions in $((SECONDS - t0)) s ($cov, $seeds seeds -> $(find "$out/corpus" -type f | wc -l) inputs)"
  else
    echo "fuzz: $t: FAILED (log $out/log); the end of its log:" >&2
    tail -n 40 "$out/log" >&2
    ls "$out/artifacts/"* 2>/dev/null | sed 's/^/fuzz:   input: /' >&2 || true
    failed+=("$t")
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
