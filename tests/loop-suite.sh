#!/bin/sh
# Runs the whole test suite (make check) N times beside two CPU hogs, as a
# loaded CI machine would, and counts the runs that failed. Not part of
# make check: a test that passes only on a quiet machine is caught here.
#
#   tests/loop-suite.sh [N]      (in a configured, built tree; default 20)
#
# Each run's log is kept in loop-suite-logs/ when it fails. Exits non-zero
# when any run failed.
set -u
runs=${1:-20}
jobs=$(nproc 2>/dev/null || echo 2)
logs=loop-suite-logs
hogs=""
failed=0

stop_hogs() {
  for pid in $hogs; do
    kill "$pid" 2>/dev/null
  done
  for pid in $hogs; do
    wait "$pid" 2>/dev/null
  done
  hogs=""
}
trap 'stop_hogs; exit 130' INT TERM
trap stop_hogs EXIT

if [ ! -f Makefile ]; then
  echo "loop-suite: run it in a configured tree (./bootstrap.sh first)" >&2
  exit 2
fi
make -s -j"$jobs" check TESTS= >/dev/null || exit 2 # build everything once
rm -rf "$logs" && mkdir -p "$logs"
for hog in 1 2; do
  sh -c 'while :; do :; done' &
  hogs="$hogs $!"
done
echo "loop-suite: $runs runs of make check beside 2 CPU hogs (pids$hogs)"
i=1
while [ "$i" -le "$runs" ]; do
  start=$(date +%s)
  if make -j"$jobs" check > "$logs/run-$i.log" 2>&1; then
    rm -f "$logs/run-$i.log"
    result=passed
  else
    failed=$((failed + 1))
    cp test-suite.log "$logs/run-$i.test-suite.log" 2>/dev/null
    result="FAILED: $(grep -E '^(FAIL|ERROR):' test-suite.log | head -n 3 |
      tr '\n' ' ')"
  fi
  echo "run $i: $result ($(( $(date +%s) - start )) s)"
  i=$((i + 1))
done
stop_hogs
echo "loop-suite: $runs runs, $failed failed"
[ "$failed" -eq 0 ]
