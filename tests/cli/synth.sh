#!/usr/bin/env bash
# flora data synth and flora tokenizer train end to end: the files and their
# sizes, byte-identical output for a seed, a tokenizer trained on the corpus
# that flora loads and that @huggingface/tokenizers (tools/tokenizer_parity.mjs)
# encodes to the same ids on held-out synth text, a tokenize round trip, and one
# clear error (exit 1) for each kind of bad flag. Usage: synth.sh PATH_TO_FLORA
set -uo pipefail
flora=$1
src=${FLORA_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$(dirname "$0")/lib/harness.sh"
same() {  # same NAME A B: the two files are byte-identical
  if cmp -s "$2" "$3"; then pass; else fail_check "$1: $2 and $3 differ"; fi
}

# --- data synth ---
expect_out synth '^\| mcq/test\.jsonl \| 200 \| [0-9]+ \|$' "$flora" data synth --out "$work/d" --seed 5
files=(corpus.jsonl corpus.txt README.md)
for task in mcq math summary; do for split in train valid test; do files+=("$task/$split.jsonl"); done; done
for f in "${files[@]}"; do [[ -s "$work/d/$f" ]] && pass || fail_check "missing or empty: $f"; done
for task in mcq math summary; do
  [[ $(wc -l <"$work/d/$task/train.jsonl") -eq 2000 && $(wc -l <"$work/d/$task/test.jsonl") -eq 200 ]] \
    && pass || fail_check "$task: expected 2000 train and 200 test records"
done
grep -q 'seed 5, scale small' "$work/d/README.md" && pass || fail_check "README.md does not name the seed and scale"
# Same seed: the same bytes (into a fresh directory, and over the old files); another seed: another corpus.
check synth-again "$flora" data synth --out "$work/d2" --seed 5
diff -r "$work/d" "$work/d2" >"$work/err" && pass || fail_check "seed 5 twice: the files differ"
check synth-over "$flora" data synth --out "$work/d2" --seed 5
diff -r "$work/d" "$work/d2" >"$work/err" && pass || fail_check "seed 5 over its own files: the files differ"
ls -a "$work/d2" | grep -q '\.tmp' && fail_check "temporary files left in --out" || pass
check synth-seed6 "$flora" data synth --out "$work/d6" --seed 6
cmp -s "$work/d/corpus.txt" "$work/d6/corpus.txt" && fail_check "seeds 5 and 6 give the same corpus" || pass

# --- tokenizer train on the corpus ---
expect_out tok-train '"vocab_size": 512, "bos_token_id": 507, "eos_token_id": 508' \
  "$flora" tokenizer train --data "$work/d/corpus.txt" --vocab 512 --out "$work/tok"
# JSONL input (text records and Alpaca records) trains too.
check tok-train-jsonl "$flora" tokenizer train --data "$work/d/corpus.jsonl" --data "$work/d/mcq/train.jsonl" \
  --vocab 600 --out "$work/tok2"

# Held-out text: the test splits, which the tokenizer never saw.
held_out="$work/held-out.txt"
cat "$work/d/summary/test.jsonl" "$work/d/mcq/test.jsonl" "$work/d/math/test.jsonl" >"$held_out"
# Round trip: ids, then the same text back (decode prints a newline after it).
"$flora" tokenize -m "$work/tok" --file "$held_out" --no-bos >"$work/ids" 2>"$work/err" || fail_check "tokenize"
"$flora" tokenize -m "$work/tok" --decode --file "$work/ids" >"$work/decoded" 2>"$work/err" || fail_check "decode"
{ cat "$held_out"; echo; } >"$work/expected"
same "round trip" "$work/expected" "$work/decoded"
# Well under a token per byte: the merges learnt from the corpus apply to held-out text.
tokens=$(tr ',' '\n' <"$work/ids" | wc -l); bytes=$(wc -c <"$held_out")
(( tokens * 3 < bytes * 2 )) && pass || fail_check "$tokens tokens for $bytes bytes"

# Parity with @huggingface/tokenizers (set-up always provides it; its absence is a failure).
parity="$src/tools/tokenizer_parity.mjs"
if [[ -f "$src/.deps/npm/node_modules/@huggingface/tokenizers/package.json" ]] && command -v node >/dev/null; then
  for bos in "" --no-bos; do
    label="parity ${bos:-with-bos}"
    "$flora" tokenize -m "$work/tok" --file "$held_out" $bos >"$work/ours" 2>"$work/err" || { fail_check "$label: flora"; continue; }
    node "$parity" --encode "$held_out" --tokenizer "$work/tok/tokenizer.json" $bos >"$work/theirs" 2>"$work/err" \
      || { fail_check "$label: node"; continue; }
    same "$label" "$work/ours" "$work/theirs"
  done
  node "$parity" --decode "$work/ids" --tokenizer "$work/tok/tokenizer.json" >"$work/theirs" 2>"$work/err" \
    || fail_check "parity decode: node"
  same "parity decode" "$work/decoded" "$work/theirs"
else
  fail_check "parity: node or .deps/npm/node_modules/@huggingface/tokenizers is missing: run scripts/setup.sh"
fi

# --- errors ---
expect_error bad-scale "--scale huge: expected small or full" "$flora" data synth --out "$work/x" --scale huge
: >"$work/plain-file"
expect_error synth-unwritable "--out .*plain-file/sub.*cannot create directory" \
  "$flora" data synth --out "$work/plain-file/sub"
expect_error vocab-small "--vocab 100: expected at least 261" \
  "$flora" tokenizer train --data "$work/d/corpus.txt" --vocab 100 --out "$work/x"
expect_error vocab-large "--vocab 100000: .*yields only [0-9]+ tokens" \
  "$flora" tokenizer train --data "$work/d/math/test.jsonl" --vocab 100000 --out "$work/x"
expect_error tok-unwritable "--out .*plain-file/sub.*cannot create directory" \
  "$flora" tokenizer train --data "$work/d/math/test.jsonl" --vocab 300 --out "$work/plain-file/sub"
expect_error tok-missing-data "nope\.txt: cannot open" \
  "$flora" tokenizer train --data "$work/nope.txt" --vocab 300 --out "$work/x"
printf '{"text": "fine"}\n{"question": "no text here"}\n' >"$work/bad.jsonl"
expect_error tok-bad-record "bad\.jsonl:2: expected a \"text\" field" \
  "$flora" tokenizer train --data "$work/bad.jsonl" --vocab 300 --out "$work/x"
[[ ! -e "$work/x" ]] && pass || fail_check "a failed command left $work/x behind"

finish synth.sh
