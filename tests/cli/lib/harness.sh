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
# start_serve NAME FLORA ARGS...: `flora serve ARGS --port 0` in the background,
# its output in $work/NAME.{out,err}; sets $pid and $port once it listens.
# Returns 1, with the failure counted, when it does not start within 30 s.
start_serve() {
  local name=$1 flora=$2; shift 2
  "$flora" serve "$@" --port 0 >"$work/$name.out" 2>"$work/$name.err" &
  pid=$!
  port=""
  for _ in $(seq 300); do
    port=$(grep -oE 'listening on http://127\.0\.0\.1:[0-9]+' "$work/$name.err" | grep -oE '[0-9]+$')
    [[ -n $port ]] && { pass; return 0; }
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  fail_check "$name: serve did not start:"; cat "$work/$name.err"; kill $pid 2>/dev/null; return 1
}
# await_serve_exit NAME PID: the server started as NAME, already sent SIGTERM or
# SIGINT, must exit 0 within 15 s and say that it stopped on the signal.
await_serve_exit() {
  local name=$1 p=$2
  for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then
    fail_check "$name: serve still running 15 s after the signal"; kill -KILL "$p"
  fi
  wait "$p"; local rc=$?
  [[ $rc -eq 0 ]] && pass || { fail_check "$name: serve exit code $rc after the signal:"; cat "$work/$name.err"; }
  grep -qE "(SIGTERM|SIGINT): no new requests" "$work/$name.err" && pass ||
    { fail_check "$name: no shutdown message:"; cat "$work/$name.err"; }
}
