#!/usr/bin/env bash
# flora eval end to end on a tiny random model: every record form of every task
# (tests/fixtures/eval/records_*), the files written, metrics that `flora score`
# reproduces from the saved examples, outputs that do not depend on --batch,
# perplexity equal to exp(mean NLL) computed from `flora logits`, adapters,
# --limit, --skip-bad and clear errors. The random model's answers are wrong;
# the checks are about counts and consistency. Usage: eval.sh PATH_TO_FLORA
set -uo pipefail
flora=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")  # absolute: one check runs elsewhere
src=${FLORA_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
fixtures=$src/tests/fixtures/eval
source "$(dirname "$0")/lib/harness.sh"
ok() {  # ok NAME CONDITION...: a check that the condition (a command) holds
  local name=$1; shift
  if "$@"; then pass; else fail_check "$name"; fi
}
# The metric cells of a markdown table row starting with "| PREFIX" after SKIP leading cells.
metrics_of() { grep -E "^\| $2" "$1" | head -1 | awk -F'|' -v skip="$3" '{ s = ""; for (i = skip + 2; i < NF; i++) s = s $i; print s }'; }
json_num() { grep -oE "\"$2\": [-0-9.e+]+" "$1" | head -1 | awk '{ print $2 }'; }

check init-tiny "$flora" init-model --preset tiny --seed 3 --out "$work/tiny"
m=$work/tiny

# Every form: files, counts, progress, and `flora score` on examples.jsonl giving the same metrics.
run_form() {  # run_form NAME TASK FILE RECORDS [EXTRA ARGS...]
  local name=$1 task=$2 file=$3 n=$4; shift 4
  local out=$work/$name
  check "eval-$name" "$flora" eval -m "$m" --task "$task" --data "$fixtures/$file" --out "$out" -t 2 "$@"
  cp "$work/out" "$work/$name.stdout"
  ok "$name: files" test -f "$out/results.json" -a -f "$out/results.md" -a -f "$out/examples.jsonl"
  ok "$name: $n examples" test "$(wc -l <"$out/examples.jsonl")" -eq "$n"
  ok "$name: count" grep -q "\"count\": $n," "$out/results.json"
  ok "$name: progress" grep -qE "^example $n/$n " "$work/err"
  ok "$name: table" grep -qE "^\| $task .*tiny \| none \| $n \| 0 \|" "$out/results.md"
  if [[ $task != ppl ]]; then
    check "score-$name" "$flora" score --task "$task" --predictions "$out/examples.jsonl"
    local want got
    want=$(metrics_of "$work/$name.stdout" "$task" 5 | awk '{ $1 = $1; print }')
    got=$(metrics_of "$work/out" "$task" 3 | awk '{ $1 = $1; print }')
    # loglik mode reports accuracy and accuracy_norm, score accuracy and unparseable: compare the accuracy.
    if [[ " $* " == *" loglik "* ]]; then want=${want%% *}; got=${got%% *}; fi
    [[ -n $want && $want == "$got" ]] && pass || fail_check "$name: eval '$want' vs score '$got'"
  fi
}
run_form mcq-llm-adapters mcq records_mcq_llm_adapters.jsonl 5 --max-new-tokens 8
run_form mcq-plain mcq records_mcq_plain.jsonl 4 --max-new-tokens 8
run_form mcq-loglik mcq records_mcq_llm_adapters.jsonl 5 --mcq-mode loglik --batch 2
run_form mcq-plain-loglik mcq records_mcq_plain.jsonl 4 --mcq-mode loglik
run_form gsm8k math records_math_gsm8k.jsonl 3 --max-new-tokens 12
run_form math-llm-adapters math records_math_llm_adapters.json 3 --max-new-tokens 12
run_form samsum rouge records_samsum.jsonl 2 --max-new-tokens 12
run_form xsum rouge records_xsum.jsonl 2 --max-new-tokens 12
run_form ppl-jsonl ppl records_ppl.jsonl 2
run_form ppl-text ppl records_ppl.txt 1
ok "unparseable count = share" grep -q '"unparseable": 5' "$work/mcq-llm-adapters/results.json"
ok "examples hold prompt and verdict" grep -q '"prompt":"Below is an instruction.*"verdict":' "$work/mcq-plain/examples.jsonl"
ok "examples hold the choices" grep -q '"choices":\["green","blue","red"\]' "$work/mcq-plain/examples.jsonl"
ok "ids kept" grep -q '"id":"13818513"' "$work/samsum/examples.jsonl"
ok "loglik options" grep -q '"options":\[{"continuation":"the correct answer is answer1"' "$work/mcq-loglik/examples.jsonl"
ok "rouge in examples" grep -q '"rougeL":{"f1"' "$work/xsum/examples.jsonl"

# Batched generation gives every example the output it gets alone (greedy and seeded sampling).
for b in 1 3; do
  check "batch-$b" "$flora" eval -m "$m" --task mcq --data "$fixtures/records_mcq_llm_adapters.jsonl" --out "$work/b$b" \
    --batch $b --max-new-tokens 10 -t 2
  check "sampled-batch-$b" "$flora" eval -m "$m" --task rouge --data "$fixtures/records_samsum.jsonl" --out "$work/s$b" \
    --batch $b --max-new-tokens 10 --temp 0.8 --seed 5 -t 2
done
ok "greedy: batch 1 = batch 3" cmp -s "$work/b1/examples.jsonl" "$work/b3/examples.jsonl"
ok "sampled: batch 1 = batch 3" cmp -s "$work/s1/examples.jsonl" "$work/s3/examples.jsonl"
ok "sampling settings recorded" grep -q '"temperature": 0.8' "$work/s1/results.json"

# Perplexity = exp(mean NLL) of the text's tokens, computed here from `flora logits` (od + awk).
check tokenize "$flora" tokenize -m "$m" --file "$fixtures/records_ppl.txt"
ids=$(tr -d '[] \n' <"$work/out")
check logits "$flora" logits -m "$m" --tokens "$ids" -o "$work/ppl.safetensors"
hlen=$(od -An -t u8 -N 8 "$work/ppl.safetensors" | tr -d ' ')
want=$(od -An -v -t f4 -j $((8 + hlen)) "$work/ppl.safetensors" | awk -v ids="$ids" -v V=384 '
  BEGIN { n = split(ids, id, ",") }
  { for (i = 1; i <= NF; i++) x[k++] = $i }
  END {
    for (r = 0; r < n - 1; r++) {
      mx = -1e30; for (j = 0; j < V; j++) if (x[r * V + j] > mx) mx = x[r * V + j]
      s = 0; for (j = 0; j < V; j++) s += exp(x[r * V + j] - mx)
      nll += mx + log(s) - x[r * V + id[r + 2]]
    }
    printf "%.9g %.9g\n", nll / (n - 1), exp(nll / (n - 1))
  }')
got_nll=$(json_num "$work/ppl-text/results.json" nll)
got_ppl=$(json_num "$work/ppl-text/results.json" perplexity)
awk -v w="$want" -v n="$got_nll" -v p="$got_ppl" 'BEGIN { split(w, a, " "); d1 = n - a[1]; d2 = (p - a[2]) / a[2];
  exit !(d1 < 1e-5 && d1 > -1e-5 && d2 < 1e-5 && d2 > -1e-5) }' && pass || fail_check "ppl: eval $got_nll $got_ppl, logits $want"
ok "ppl scores every token but the first" grep -q "\"scored_tokens\": $(($(echo "$ids" | tr ',' '\n' | wc -l) - 1))" \
  "$work/ppl-text/results.json"
check ppl-window "$flora" eval -m "$m" --task ppl --data "$fixtures/records_ppl.txt" --ppl-window 32 --ppl-stride 16 \
  --out "$work/ppl-w" -t 2
ok "ppl window settings" grep -q '"ppl_window": 32' "$work/ppl-w/results.json"

# Adapters: FLoRA fused and a LoRA run partially fused.
check init-ffba "$flora" init-adapter -m "$m" --variant ffba --rank 2 --init random --seed 1 --out "$work/ffba"
check init-lora "$flora" init-adapter -m "$m" --variant lora --rank 2 --init random --seed 1 --out "$work/lora"
for a in none ffba; do
  check "eval-$a" "$flora" eval -m "$m" $([[ $a == none ]] || echo --adapter "$work/$a") --task math \
    --data "$fixtures/records_math_gsm8k.jsonl" --out "$work/$a-out" --max-new-tokens 6 --batch 2
done
ok "ffba recorded" grep -q '"adapter_variant": "ffba"' "$work/ffba-out/results.json"
ok "ffba changes outputs" bash -c "! cmp -s '$work/ffba-out/examples.jsonl' '$work/none-out/examples.jsonl'"
check eval-pf-lora "$flora" eval -m "$m" --adapter "$work/lora" --lora-variant pf-lora --task mcq --mcq-mode loglik \
  --data "$fixtures/records_mcq_plain.jsonl" --out "$work/pf-out"
ok "pf-lora recorded" grep -q '"adapter_variant": "pf-lora"' "$work/pf-out/results.json"

# --limit, --skip-bad, the default output directory.
check limit "$flora" eval -m "$m" --task mcq --data "$fixtures/records_mcq_llm_adapters.jsonl" --limit 2 \
  --max-new-tokens 4 --out "$work/limit"
ok "limit 2" grep -q '"count": 2,' "$work/limit/results.json"
printf '{"question": "1+1?", "answer": "#### 2"}\n{"question": "2+2?", "answer": "4", "hint": "x"}\nnope\n' >"$work/bad.jsonl"
expect_error bad-record "bad\.jsonl:2: unknown key 'hint': expected only the keys question, answer, id of a GSM8K record" \
  "$flora" eval -m "$m" --task math --data "$work/bad.jsonl"
check skip-bad "$flora" eval -m "$m" --task math --data "$work/bad.jsonl" --skip-bad --max-new-tokens 4 --out "$work/skip"
ok "skipped 2" grep -q '"skipped": 2,' "$work/skip/results.json"
ok "skip messages" grep -q "flora eval: skipped .*bad.jsonl:3: expected one JSON object per line" "$work/err"
mkdir -p "$work/cwd"
(cd "$work/cwd" && "$flora" eval -m "$m" --task rouge --data "$fixtures/records_xsum.jsonl" --max-new-tokens 2 \
  >/dev/null 2>&1) && ls "$work"/cwd/out/eval-rouge-*/results.json >/dev/null 2>&1 && pass || fail_check "default --out"

expect_error loglik-math "--mcq-mode loglik: expected --task mcq" \
  "$flora" eval -m "$m" --task math --mcq-mode loglik --data "$fixtures/records_math_gsm8k.jsonl"
expect_error wrong-task "records_samsum\.jsonl:1: expected an LLM-Adapters record" \
  "$flora" eval -m "$m" --task mcq --data "$fixtures/records_samsum.jsonl"
: >"$work/empty.jsonl"
expect_error empty "empty\.jsonl: expected JSON records, found an empty file" \
  "$flora" eval -m "$m" --task mcq --data "$work/empty.jsonl"
"$flora" eval -m "$m" --task mcq >"$work/out" 2>"$work/err"
[[ $? -ne 0 ]] && grep -q -- "--data is required" "$work/err" && pass || fail_check "missing --data"
expect_error no-model "config.json" "$flora" eval -m "$work/none" --task mcq --data "$fixtures/records_mcq_plain.jsonl"

# Speed measurement runs (figures are for docs/benchmarks.md, not for tests).
check bench "$flora" eval -m "$m" --bench-batch 1,2 --bench-prompt 4 --bench-gen 3 --bench-reps 1 -t 1
ok "bench table" grep -qE '^\| tiny \| 2 \| 4 \| 3 \|' "$work/out"

finish eval.sh
