#!/bin/sh
# Runs each libFuzzer target for SECONDS on a scratch copy of its seed
# corpus (tests/fuzz/corpus/NAME), prints one line per target, and with a
# REPORT path writes the log of the run there (make fuzz: LAST-RUN.md).
# Exits non-zero when a target found something.
#   run.sh SECONDS SRCDIR [REPORT]
set -u
seconds=$1
srcdir=$2
report=${3:-}
status=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LSAN_OPTIONS="suppressions=$srcdir/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
{
  echo "# Last fuzzing run (make fuzz)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $seconds s per target"
  echo "- machine: $(nproc) cores, $(clang --version | head -n 1)"
  echo
  echo "| target | executions | coverage (cov / ft) | corpus | findings |"
  echo "| --- | ---: | --- | ---: | --- |"
} > "$work/report.md"
for t in response url multi_ev pool; do
  mkdir -p "$work/$t"
  cp "$srcdir/tests/fuzz/corpus/$t/"* "$work/$t/"
  log="$work/$t.log"
  if ./tests/fuzz/fuzz_$t -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="$work/$t-" "$work/$t" > "$log" 2>&1; then
    found=none
  else
    found="crash, see $(ls "$work/$t-"* 2>/dev/null | head -n 1)"
    status=1
    tail -n 40 "$log"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\).*/\1 \/ \2/p')
  corpus=$(ls "$work/$t" | wc -l)
  echo "fuzz_$t: ${execs:-?} executions, cov/ft ${cov:-?}, corpus $corpus, findings: $found"
  echo "| fuzz_$t | ${execs:-?} | ${cov:-?} | $corpus | $found |" >> "$work/report.md"
done
if [ -n "$report" ]; then
  cp "$work/report.md" "$report"
fi
exit $status
