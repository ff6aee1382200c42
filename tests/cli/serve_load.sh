#!/usr/bin/env bash
# flora serve under a bounded load: 300 requests, 16 at a time, across the base
# and three adapters (ffba, ffba-aorb, lora), completions and chat, whole and
# streamed (tests/cli/serve_load.mjs). Every request must succeed, every
# greedy text must equal the first answer to the same request (a request's
# output does not depend on what shares its steps), the counters of /metrics
# must add up, and the server's resident memory after the run must be back
# within a few MiB of where it was after a warm-up of the same mix.
# Usage: FLORA_SOURCE_DIR=... serve_load.sh PATH_TO_FLORA
set -uo pipefail
flora=$1
src=${FLORA_SOURCE_DIR:?FLORA_SOURCE_DIR must name the source tree}
source "$(dirname "$0")/lib/harness.sh"
command -v node >/dev/null || { echo "FAIL: node is not on PATH: run scripts/setup.sh"; exit 1; }

check init-tiny "$flora" init-model --preset tiny --seed 5 --out "$work/tiny"
for v in ffba ffba-aorb lora; do
  check "init-$v" "$flora" init-adapter -m "$work/tiny" --variant $v --rank 4 --init random --seed 7 --out "$work/$v"
done
# Under AddressSanitizer freed memory waits in a quarantine (RSS would grow by
# design) and the allocator caches more per thread: the quarantine is turned
# off and the slack widened to 16 MiB; LeakSanitizer checks leaks at exit there.
# (ldd's output is read whole first: under pipefail, grep -q quitting early
# would make ldd die of SIGPIPE and the test fail to see the sanitizer.)
libs=$(ldd "$flora" 2>/dev/null)
if [[ $libs == *libasan* ]]; then
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
  export FLORA_LOAD_RSS_SLACK_KIB=16384
fi
# 4 slots and room for every waiting request, so that none is refused.
start_serve serve "$flora" -m "$work/tiny" --adapter ffba="$work/ffba" --adapter aorb="$work/ffba-aorb" \
  --adapter lora="$work/lora" -t 2 --parallel 4 --queue 32 --ctx 256 || finish cli_serve_load

if timeout 240 node "$src/tests/cli/serve_load.mjs" "http://127.0.0.1:$port" "$pid" >"$work/load.out" 2>&1; then
  pass
else
  fail_check "serve_load:"; cat "$work/load.out"
fi
grep -E '^(serve_load|info):' "$work/load.out"
kill -TERM $pid
await_serve_exit serve $pid
finish cli_serve_load
