#!/usr/bin/env bash
# flora score end to end: the three fixtures, the table, --out files, --skip-bad,
# and clear errors (exit 1) for bad input. Usage: score.sh PATH_TO_FLORA
set -uo pipefail
flora=$1
src=${FLORA_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
fixtures=$src/tests/fixtures/eval
source "$(dirname "$0")/lib/harness.sh"

expect_out mcq '^\| mcq \| 8 \| 0 \| 0\.6250 \| 0\.1250 \|$' "$flora" score --task mcq --predictions "$fixtures/mcq.jsonl"
expect_out math '^\| math \| 5 \| 0 \| 0\.6000 \| 0\.2000 \|$' "$flora" score --task math --predictions "$fixtures/math.jsonl"
expect_out rouge '^\| rouge \| 3 \| 0 \| 0\.6111 \| 0\.5333 \| 0\.6111 \|$' \
  "$flora" score --task rouge --predictions "$fixtures/rouge.jsonl" --out "$work/rouge"
if [[ -f "$work/rouge/results.json" && $(wc -l <"$work/rouge/examples.jsonl") -eq 3 ]] \
  && grep -q '"rougeL"' "$work/rouge/results.json"; then passes=$((passes + 1)); else
  echo "FAIL --out files: $(ls "$work/rouge" 2>&1)"; failures=$((failures + 1)); fi

printf '{"prediction": "4", "reference": 4}\nnot json\n' >"$work/bad.jsonl"
expect_error bad-line "bad\.jsonl:2: expected one JSON object per line" "$flora" score --task math --predictions "$work/bad.jsonl"
expect_out skip-bad '^\| math \| 1 \| 1 \| 1\.0000 \| 0\.0000 \|$' "$flora" score --task math --predictions "$work/bad.jsonl" --skip-bad
: >"$work/empty.jsonl"
expect_error empty "empty\.jsonl: expected JSON lines .*found an empty file" "$flora" score --task rouge --predictions "$work/empty.jsonl"
expect_error missing "nope\.jsonl" "$flora" score --task rouge --predictions "$work/nope.jsonl"

finish score.sh
