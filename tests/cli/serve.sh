#!/usr/bin/env bash
# flora serve end to end: refusals at start-up, then a real server on a free
# port (a tiny model, an FFBA and a LoRA adapter) driven by the official openai
# npm package (tests/cli/serve_client.mjs): models list, completions and chat
# whole and streamed, an adapter by `model`, greedy text equal to flora
# generate's with the same adapter and prompt, bad requests each followed by a
# good one, a full queue, a client gone mid-stream, SIGTERM during a stream;
# the server must then exit 0.
# Usage: FLORA_SOURCE_DIR=... serve.sh PATH_TO_FLORA
set -uo pipefail
flora=$1
src=${FLORA_SOURCE_DIR:?FLORA_SOURCE_DIR must name the source tree}
source "$(dirname "$0")/lib/harness.sh"
# Set-up always provides these; their absence is a failure, not a skip.
[[ -f "$src/.deps/npm/node_modules/openai/package.json" ]] || { echo "FAIL: the openai npm package is missing: run scripts/setup.sh"; exit 1; }
command -v node >/dev/null || { echo "FAIL: node is not on PATH: run scripts/setup.sh"; exit 1; }

check init-tiny "$flora" init-model --preset tiny --seed 3 --out "$work/tiny"
check init-ffba "$flora" init-adapter -m "$work/tiny" --variant ffba --rank 2 --init random --seed 1 --out "$work/ffba"
check init-lora "$flora" init-adapter -m "$work/tiny" --variant lora --rank 2 --init random --seed 2 --out "$work/lora"

# Refused at start-up, each with one clear message.
expect_error merged "a merged LoRA changes the base weights that every request shares" \
  "$flora" serve -m "$work/tiny" --adapter lora="$work/lora" --lora-variant lora-merged --port 0
expect_error no-dir "--adapter x: $work/none: not a directory" "$flora" serve -m "$work/tiny" --adapter x="$work/none" --port 0
expect_error taken "--adapter tiny: the name is already taken \(by the base model\)" \
  "$flora" serve -m "$work/tiny" --adapter tiny="$work/ffba" --port 0
expect_error bad-ctx "--ctx 5000: expected 2 to the model's context, 2048" "$flora" serve -m "$work/tiny" --ctx 5000 --port 0

# References: flora generate, greedy, with the same adapters and prompts.
refs=""
n=0
for spec in "completion base tiny -|Once upon a time|12" "completion ffba ffba $work/ffba|The cat sat|10" \
            "chat lora lora $work/lora|Hello there|9" "chat base-chat tiny -|What is two and two?|8"; do
  read -r endpoint name model dir <<< "${spec%%|*}"
  rest=${spec#*|}; prompt=${rest%|*}; max=${rest##*|}
  args=(-m "$work/tiny" -p "$prompt" -n "$max" --temp 0 -t 1)
  [[ $dir != - ]] && args+=(--adapter "$dir")
  [[ $endpoint == chat ]] && args+=(--chat)
  check "generate-$name" "$flora" generate "${args[@]}"
  cp "$work/out" "$work/ref$n.out"; cp "$work/err" "$work/ref$n.err"
  refs+="${refs:+,}{\"name\": \"$name\", \"endpoint\": \"$endpoint\", \"model\": \"$model\", \"prompt\": \"$prompt\","
  refs+=" \"max_tokens\": $max, \"out\": \"$work/ref$n.out\", \"err\": \"$work/ref$n.err\"}"
  n=$((n + 1))
done

# The server: 2 slots and 1 waiting (so that a burst is refused with 503), a small body limit, an API key.
"$flora" serve -m "$work/tiny" --adapter ffba="$work/ffba" --adapter lora="$work/lora" --port 0 -t 2 --parallel 2 \
  --queue 1 --max-body-bytes 65536 --api-key sk-test >"$work/serve.out" 2>"$work/serve.err" &
pid=$!
port=""
for _ in $(seq 100); do
  port=$(grep -oE 'listening on http://127\.0\.0\.1:[0-9]+' "$work/serve.err" | grep -oE '[0-9]+$')
  [[ -n $port ]] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
if [[ -z $port ]]; then
  fail_check "serve did not start:"; cat "$work/serve.err"; kill $pid 2>/dev/null; finish cli_serve
fi
pass
# /health needs no key; /v1/ does.
[[ $(curl -s "http://127.0.0.1:$port/health") == *'"status":"ok"'* ]] && pass || fail_check "health"

cat >"$work/config.json" <<EOF
{"src": "$src", "base_url": "http://127.0.0.1:$port/v1", "api_key": "sk-test", "pid": $pid, "ctx": 2048,
 "max_body": 65536, "refs": [$refs]}
EOF
if timeout 120 node "$src/tests/cli/serve_client.mjs" "$work/config.json" >"$work/client.out" 2>&1; then pass; else
  fail_check "serve_client:"; cat "$work/client.out"; fi
grep -E '^(serve_client|info):' "$work/client.out"

# The client sent SIGTERM during its last stream: the server finishes and exits 0.
for _ in $(seq 150); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $pid 2>/dev/null; then
  fail_check "serve still running 15 s after SIGTERM"; kill -KILL $pid
fi
wait $pid; rc=$?
[[ $rc -eq 0 ]] && pass || { fail_check "serve exit code $rc after SIGTERM:"; cat "$work/serve.err"; }
grep -q "SIGTERM: no new requests" "$work/serve.err" && pass || { fail_check "no shutdown message:"; cat "$work/serve.err"; }
finish cli_serve
