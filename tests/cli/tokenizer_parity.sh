#!/usr/bin/env bash
# Live tokenizer parity through the flora binary: `flora tokenize` against the
# independent @huggingface/tokenizers (via tools/tokenizer_parity.mjs), for the
# real Llama 3 tokenizer and the tiny trained one, on the parity corpus (invalid
# UTF-8 lines included, as raw bytes) followed by seeded random text in many
# scripts, and on a large real source file. The committed fixtures are
# checked by tests/test_tokenizer.cpp; this checks the same thing end to end.
# Usage: FLORA_SOURCE_DIR=... tokenizer_parity.sh PATH_TO_FLORA
set -uo pipefail
flora=$1
src=${FLORA_SOURCE_DIR:?FLORA_SOURCE_DIR must name the source tree}
parity="$src/tools/tokenizer_parity.mjs"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
passes=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

# Set-up always provides these; their absence is a failure, not a skip.
for need in "$src/.deps/llama3/tokenizer.json" "$src/.deps/npm/node_modules/@huggingface/tokenizers/package.json"; do
  [[ -f $need ]] || { echo "FAIL: $need is missing: run scripts/setup.sh"; exit 1; }
done
command -v node >/dev/null || { echo "FAIL: node is not on PATH: run scripts/setup.sh"; exit 1; }

mkdir -p "$work/llama3" "$work/tiny"
cp "$src/.deps/llama3/tokenizer.json" "$work/llama3/tokenizer.json"
cp "$src/tests/fixtures/tokenizer/tiny_tokenizer.json" "$work/tiny/tokenizer.json"
seed=${FLORA_PARITY_SEED:-1}  # another seed tries other random text
node "$parity" --make-text "$work/mixed.txt" --random-lines 2000 --seed "$seed" || fail "make-text"
inputs=("$work/mixed.txt" "$src/.deps/npm/node_modules/@huggingface/tokenizers/dist/tokenizers.mjs")

for name in llama3 tiny; do
  for input in "${inputs[@]}"; do
    for bos in "" --no-bos; do
      label="$name $(basename "$input") ${bos:-with-bos} (random seed $seed)"
      if ! "$flora" tokenize -m "$work/$name" --file "$input" $bos >"$work/ours" 2>"$work/err"; then
        fail "$label: flora tokenize exited $?"; cat "$work/err"; continue
      fi
      node "$parity" --encode "$input" --tokenizer "$work/$name/tokenizer.json" $bos >"$work/theirs" \
        || { fail "$label: node"; continue; }
      if cmp -s "$work/ours" "$work/theirs"; then passes=$((passes + 1)); else
        fail "$label: ids differ"
        node -e '
          const fs = require("fs");
          const [a, b] = process.argv.slice(1).map((f) => JSON.parse(fs.readFileSync(f, "utf8")));
          let i = 0; while (i < a.length && a[i] === b[i]) ++i;
          console.log(`  first difference at token ${i} of ${a.length} (flora) / ${b.length} (tokenizers.js)`);
          console.log(`  flora:          ${JSON.stringify(a.slice(i, i + 8))}`);
          console.log(`  tokenizers.js:  ${JSON.stringify(b.slice(i, i + 8))}`);' "$work/ours" "$work/theirs"
      fi
    done
  done
  # Decoding the same ids: the source file has no NUL bytes, which a C string would cut.
  "$flora" tokenize -m "$work/$name" --file "${inputs[1]}" >"$work/ids" 2>"$work/err" || fail "$name: tokenize"
  "$flora" tokenize -m "$work/$name" --decode --file "$work/ids" >"$work/ours" 2>"$work/err" || { fail "$name: decode"; cat "$work/err"; }
  node "$parity" --decode "$work/ids" --tokenizer "$work/$name/tokenizer.json" >"$work/theirs" || fail "$name: node decode"
  cmp -s "$work/ours" "$work/theirs" && passes=$((passes + 1)) || fail "$name: decoded text differs"
done

echo "tokenizer_parity.sh: $passes passed, $failures failed"
exit $((failures > 0))
