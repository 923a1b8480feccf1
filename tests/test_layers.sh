#!/bin/sh
# The layering check checked (tests/check-layers.sh; docs/internals/
# layers.md): it passes on the real lib/, and it fails on a copy of lib/
# in the build tree with `#include "multi.h"` planted in timer.c, naming
# the edge; with a table that allows that edge, it fails on the circle
# (timer -> multi -> timer); a new module not in the table fails. TAP.
srcdir=${srcdir:-.}
check="$srcdir/tests/check-layers.sh"
work=tests/layers-work
rm -rf "$work" && mkdir -p "$work/lib" || exit 1
trap 'rm -rf "$work"' EXIT
echo "1..5"
status=0
ok() { echo "ok $1 - $2"; }
not_ok() { echo "not ok $1 - $2"; status=1; }

if out=$(sh "$check" "$srcdir/lib" 2>&1); then
  ok 1 "the real lib/ keeps its layers"
else
  not_ok 1 "the real lib/ keeps its layers"
  echo "$out" | sed 's/^/# /'
fi

cp "$srcdir"/lib/*.c "$srcdir"/lib/*.h "$work/lib/"
printf '#include "multi.h"\n' >> "$work/lib/timer.c"
out=$(sh "$check" "$work/lib" 2>&1)
rc=$?
if [ $rc -eq 1 ] && echo "$out" | grep -q 'timer.c includes multi.h'; then
  ok 2 "timer.c including multi.h fails the check, named"
else
  not_ok 2 "timer.c including multi.h fails the check, named (exit $rc)"
  echo "$out" | sed 's/^/# /'
fi

# The same edge allowed by the table: the circle check catches it.
sed -n "/^table='/,/^'/p" "$check" | sed '1d;$d' |
  sed 's/^timer: .*/timer: now mem multi/' > "$work/table"
out=$(sh "$check" "$work/lib" "$work/table" 2>&1)
rc=$?
if [ $rc -eq 1 ] && echo "$out" | grep -q 'include each other (a circle)'; then
  ok 3 "an allowed edge that closes a circle fails the check"
else
  not_ok 3 "an allowed edge that closes a circle fails the check (exit $rc)"
  echo "$out" | sed 's/^/# /'
fi

# The real tree with the table's own copy passes (the extraction above is
# faithful), so test 3 failed for the circle alone.
sed -n "/^table='/,/^'/p" "$check" | sed '1d;$d' > "$work/table"
if out=$(sh "$check" "$srcdir/lib" "$work/table" 2>&1); then
  ok 4 "the table given as a file is the same table"
else
  not_ok 4 "the table given as a file is the same table"
  echo "$out" | sed 's/^/# /'
fi
# A new module the table does not know (it includes nothing but common).
rm -f "$work/lib/timer.c"
cp "$srcdir/lib/timer.c" "$work/lib/"
printf '#include "common.h"\nint newmod;\n' > "$work/lib/newmod.c"
out=$(sh "$check" "$work/lib" 2>&1)
rc=$?
if [ $rc -eq 1 ] && echo "$out" | grep -q 'module newmod is not in the table'; then
  ok 5 "a module missing from the table fails the check"
else
  not_ok 5 "a module missing from the table fails the check (exit $rc)"
  echo "$out" | sed 's/^/# /'
fi
exit $status
