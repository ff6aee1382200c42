#!/usr/bin/env bash
# flora serve end to end: refusals at start-up, then a real server on a free
# port (a tiny model, an FFBA and a LoRA adapter) driven by the official openai
# npm package (tests/cli/serve_client.mjs): models list, completions and chat
# whole and streamed, an adapter by `model`, greedy text equal to flora
# generate's with the same adapter and prompt, bad requests each followed by a
# good one, a full queue, a client gone mid-stream, SIGTERM during a stream;
# the server must then exit 0. Before the client: adapters loaded and unloaded
# at run time (--adapter-dir) and GET /metrics, with curl.
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
expect_error no-dir "--adapter x: $work/none: no such adapter directory" "$flora" serve -m "$work/tiny" --adapter x="$work/none" --port 0
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

expect_error no-adapter-dir "--adapter-dir $work/none: not a directory" \
  "$flora" serve -m "$work/tiny" --adapter-dir "$work/none" --port 0

# Adapters loadable at run time: only from $work/adapters (a copy of ffba
# inside; a link inside that leads out; an adapter outside).
mkdir -p "$work/adapters" "$work/outside"
cp -r "$work/ffba" "$work/adapters/ffba2"
cp -r "$work/ffba" "$work/outside/ffba3"
ln -s "$work/outside/ffba3" "$work/adapters/link-out"

# The server: 2 slots and 1 waiting (so that a burst is refused with 503), a short keep-alive (so that
# answers longer than 0.05 s go out chunked, spaces first), a small body limit, an API key.
start_serve serve "$flora" -m "$work/tiny" --adapter ffba="$work/ffba" --adapter lora="$work/lora" -t 2 --parallel 2 \
  --queue 1 --keep-alive 0.05 --max-body-bytes 65536 --api-key sk-test --adapter-dir "$work/adapters" || finish cli_serve
# /health needs no key; /v1/ does.
[[ $(curl -s "http://127.0.0.1:$port/health") == *'"status":"ok"'* ]] && pass || fail_check "health"

# api METHOD PATH [BODY]: the status; the body in $work/resp.
api() {
  curl -s -o "$work/resp" -w '%{http_code}' -X "$1" -H 'Authorization: Bearer sk-test' \
    -H 'Content-Type: application/json' ${3:+--data "$3"} "http://127.0.0.1:$port$2"
}
expect_api() {  # expect_api NAME STATUS PATTERN METHOD PATH [BODY]: that status and a body matching PATTERN
  local name=$1 status=$2 pattern=$3; shift 3
  local got; got=$(api "$@")
  if [[ $got != "$status" ]]; then fail_check "$name: status $got, expected $status:"; cat "$work/resp"; echo; return; fi
  if ! grep -qE -- "$pattern" "$work/resp"; then fail_check "$name: body does not match '$pattern':"; cat "$work/resp"; echo; return; fi
  pass
}
complete() {  # complete MODEL: a greedy completion of 4 tokens that ignores EOS
  api POST /v1/completions "{\"model\": \"$1\", \"prompt\": \"The cat sat\", \"max_tokens\": 4, \"temperature\": 0, \"ignore_eos\": true}"
}

# Run-time adapters, vLLM's endpoints. The loaded copy of ffba gives ffba's text.
[[ $(complete ffba) == 200 ]] && pass || fail_check "ffba completion"; cp "$work/resp" "$work/ffba.json"
expect_api load 200 "Success: LoRA adapter 'hot' added" POST /v1/load_lora_adapter \
  '{"lora_name": "hot", "lora_path": "ffba2"}'
expect_api models-hot 200 '"id":"hot","object":"model".*"parent":"tiny"' GET /v1/models
[[ $(complete hot) == 200 ]] && pass || fail_check "hot completion"
ffba_text=$(grep -oE '"text":"[^"]*"' "$work/ffba.json"); hot_text=$(grep -oE '"text":"[^"]*"' "$work/resp")
[[ -n $hot_text && $hot_text == "$ffba_text" ]] && pass || fail_check "hot gave '$hot_text', ffba '$ffba_text'"
expect_api load-again 400 "'hot' is already served" POST /v1/load_lora_adapter '{"lora_name": "hot", "lora_path": "ffba2"}'
expect_api load-dotdot 400 "'lora_path': \.\./outside/ffba3 resolves to .*outside the adapter directory" \
  POST /v1/load_lora_adapter '{"lora_name": "x", "lora_path": "../outside/ffba3"}'
expect_api load-link-out 400 "'lora_path': link-out resolves to .*outside the adapter directory" \
  POST /v1/load_lora_adapter '{"lora_name": "x", "lora_path": "link-out"}'
expect_api load-merged 400 "a merged LoRA changes the base weights that every request shares" \
  POST /v1/load_lora_adapter '{"lora_name": "x", "lora_path": "ffba2", "lora_variant": "lora-merged"}'
expect_api unload 200 "Success: LoRA adapter 'hot' removed" POST /v1/unload_lora_adapter '{"lora_name": "hot"}'
expect_api use-unloaded 404 '"code":"model_not_found"' POST /v1/completions '{"model": "hot", "prompt": "x", "max_tokens": 1}'
expect_api unload-unknown 404 "no adapter named 'hot'" POST /v1/unload_lora_adapter '{"lora_name": "hot"}'
api GET /v1/models >/dev/null; grep -q '"id":"hot"' "$work/resp" && fail_check "hot still listed" || pass

# /metrics counts what ran above: ffba 1 and hot 1 request of 4 tokens ending
# with length; the 404 and refusals ran nothing. The key is needed there too.
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/metrics") == 401 ]] && pass || fail_check "metrics without the key"
[[ $(complete tiny) == 200 ]] && pass || fail_check "tiny completion"
[[ $(complete tiny) == 200 ]] && pass || fail_check "tiny completion"
ctype=$(curl -s -o "$work/metrics" -w '%{content_type}' -H 'Authorization: Bearer sk-test' "http://127.0.0.1:$port/metrics")
[[ $ctype == "text/plain; version=0.0.4"* ]] && pass || fail_check "metrics content type '$ctype'"
for want in 'flora_requests_total{model="tiny",finish_reason="length"} 2' \
            'flora_generation_tokens_total{model="tiny"} 8' 'flora_requests_total{model="hot",finish_reason="length"} 1' \
            'flora_requests_total{model="ffba",finish_reason="length"} 1' 'flora_generation_tokens_total{model="lora"} 0' \
            'flora_ttft_seconds_count{model="tiny"} 2' 'flora_ttft_seconds_bucket{model="tiny",le="+Inf"} 2' \
            'flora_tpot_seconds_count{model="hot"} 1' 'flora_queue_depth 0' 'flora_requests_running 0'; do
  grep -qxF -- "$want" "$work/metrics" && pass || { fail_check "metrics: no line '$want':"; cat "$work/metrics"; }
done

cat >"$work/config.json" <<EOF
{"src": "$src", "base_url": "http://127.0.0.1:$port/v1", "api_key": "sk-test", "pid": $pid, "ctx": 2048,
 "max_body": 65536, "refs": [$refs]}
EOF
if timeout 120 node "$src/tests/cli/serve_client.mjs" "$work/config.json" >"$work/client.out" 2>&1; then pass; else
  fail_check "serve_client:"; cat "$work/client.out"; fi
grep -E '^(serve_client|info):' "$work/client.out"

# The client sent SIGTERM during its last stream: the server finishes and exits 0.
await_serve_exit serve $pid
finish cli_serve
