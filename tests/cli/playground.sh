#!/usr/bin/env bash
# The playground page of flora serve (GET /) in a real browser: Debian's
# chromium, headless, driven by playwright-core (tests/cli/playground.mjs).
# Two servers of a tiny model with an FFBA, an FFBA-AorB and a LoRA adapter:
# one without an API key (the page's answers, chat and completion, against the
# API's own), one with a key (the page served without it, the key typed in,
# remembered, and a wrong one shown as the 401 in every column). Both must
# then exit 0 on SIGTERM.
# Usage: FLORA_SOURCE_DIR=... playground.sh PATH_TO_FLORA
set -uo pipefail
flora=$1
src=${FLORA_SOURCE_DIR:?FLORA_SOURCE_DIR must name the source tree}
source "$(dirname "$0")/lib/harness.sh"
# Set-up always provides these; their absence is a failure, not a skip.
[[ -f "$src/.deps/npm/node_modules/playwright-core/package.json" ]] ||
  { echo "FAIL: the playwright-core npm package is missing: run scripts/setup.sh"; exit 1; }
[[ -x /usr/bin/chromium ]] ||
  { echo "FAIL: /usr/bin/chromium is missing (Debian's chromium): run scripts/setup.sh"; exit 1; }
command -v node >/dev/null || { echo "FAIL: node is not on PATH: run scripts/setup.sh"; exit 1; }

check init-tiny "$flora" init-model --preset tiny --seed 3 --out "$work/tiny"
check init-ffba "$flora" init-adapter -m "$work/tiny" --variant ffba --rank 2 --init random --seed 1 --out "$work/ffba"
check init-aorb "$flora" init-adapter -m "$work/tiny" --variant ffba-aorb --rank 2 --init random --seed 4 \
  --out "$work/aorb"
check init-lora "$flora" init-adapter -m "$work/tiny" --variant lora --rank 2 --init random --seed 2 --out "$work/lora"

pids=()
ports=()
start_server() {  # start_server NAME [ARGS...]: a server in the background; its pid and port appended
  local name=$1; shift
  if ! start_serve "$name" "$flora" -m "$work/tiny" --adapter ffba="$work/ffba" --adapter aorb="$work/aorb" \
    --adapter lora="$work/lora" -t 1 --parallel 4 "$@"; then
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    finish cli_playground
  fi
  pids+=("$pid"); ports+=("$port")
}
start_server open
start_server keyed --api-key sk-play
open_url="http://127.0.0.1:${ports[0]}"
keyed_url="http://127.0.0.1:${ports[1]}"

# The page without the key, as HTML; the API behind it still asks for the key.
ctype=$(curl -s -o "$work/page.html" -w '%{content_type}' "$keyed_url/")
[[ $ctype == "text/html; charset=utf-8" ]] && pass || fail_check "GET / content type '$ctype'"
cmp -s "$work/page.html" "$src/src/serve/playground.html" && pass ||
  fail_check "GET / is not src/serve/playground.html (rebuild flora)"
[[ $(curl -s -o /dev/null -w '%{http_code}' "$keyed_url/v1/models") == 401 ]] && pass ||
  fail_check "models without the key"

cat >"$work/config.json" <<EOF
{"src": "$src", "open_url": "$open_url", "keyed_url": "$keyed_url", "api_key": "sk-play",
 "base": "tiny", "adapters": ["ffba", "aorb", "lora"], "max_tokens": 8}
EOF
if timeout 120 node "$src/tests/cli/playground.mjs" "$work/config.json" >"$work/client.out" 2>&1; then pass; else
  fail_check "playground.mjs:"; cat "$work/client.out"; fi
grep -E '^(playground|info):' "$work/client.out"

names=(open keyed)
for i in "${!pids[@]}"; do
  kill -TERM "${pids[$i]}"
  await_serve_exit "${names[$i]}" "${pids[$i]}"
done
finish cli_playground
