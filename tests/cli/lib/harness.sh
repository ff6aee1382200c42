# Shared by the end-to-end scripts in tests/cli/: a scratch directory removed
# on exit, pass/fail counters, and the two checks every script makes. A script
# ends with `finish NAME`, which prints "NAME: N passed, M failed" and exits 1
# on any failure.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
passes=0
pass() { passes=$((passes + 1)); }
fail_check() {  # fail_check MESSAGE...: one failure, with the last command's stderr
  echo "FAIL $*"; [[ -f "$work/err" ]] && cat "$work/err"; failures=$((failures + 1))
}
check() {  # check NAME COMMAND...: the command must succeed
  local name=$1; shift
  if "$@" >"$work/out" 2>"$work/err"; then pass; else fail_check "$name: exit $?"; fi
}
expect_error() {  # expect_error NAME PATTERN COMMAND...: exit 1 and a message matching PATTERN
  local name=$1 pattern=$2; shift 2
  "$@" >"$work/out" 2>"$work/err"; local rc=$?
  if [[ $rc -ne 1 ]]; then fail_check "$name: expected exit 1, got $rc"; return; fi
  if ! grep -qE -- "$pattern" "$work/err"; then fail_check "$name: message does not match '$pattern':"; return; fi
  pass
}
expect_out() {  # expect_out NAME PATTERN COMMAND...: success and stdout matching PATTERN
  local name=$1 pattern=$2; shift 2
  if ! "$@" >"$work/out" 2>"$work/err"; then fail_check "$name: exit $?"; return; fi
  if ! grep -qE -- "$pattern" "$work/out"; then fail_check "$name: output does not match '$pattern':"; cat "$work/out"; return; fi
  pass
}
finish() {
  echo "$1: $passes passed, $failures failed"
  exit $((failures > 0))
}
