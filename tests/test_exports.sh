#!/bin/sh
# What libxfer.so exports: the functions xfer.h declares, and nothing
# else (the link's -export-symbols-regex '^xfer_[a-z]' is the backstop,
# -fvisibility=hidden the rule; an internal xfer__ name, or llhttp's, must
# not leak). TAP.
srcdir=${srcdir:-.}
lib=lib/.libs/libxfer.so
echo "1..3"
status=0
if ! command -v nm >/dev/null 2>&1 || [ ! -f "$lib" ]; then
  echo "Bail out! nm or $lib missing"
  exit 1
fi
exported=$(nm -D --defined-only "$lib" | awk 'NF == 3 { print $3 }' | sort)
declared=$(tr '\n' ' ' < "$srcdir/include/xfer/xfer.h" |
  grep -o 'XFER_EXTERN[^;]*;' | sed -E 's/\(.*//; s/.*[ *]([a-z_0-9]+) *$/\1/' |
  grep '^xfer_' | sort)

stray=$(echo "$exported" | grep -v '^xfer_[a-z]')
if [ -z "$stray" ]; then
  echo "ok 1 - every exported symbol is xfer_*"
else
  echo "not ok 1 - exported beyond the API:"
  echo "$stray" | sed 's/^/# /'
  status=1
fi
missing=$(echo "$declared" | grep -vxF "$exported")
if [ -z "$missing" ]; then
  echo "ok 2 - every function xfer.h declares is exported"
else
  echo "not ok 2 - declared, not exported:"
  echo "$missing" | sed 's/^/# /'
  status=1
fi
extra=$(echo "$exported" | grep -vxF "$declared")
if [ -z "$extra" ] && [ -n "$declared" ]; then
  echo "ok 3 - nothing exported that xfer.h does not declare"
else
  echo "not ok 3 - exported, not declared in xfer.h (or none declared):"
  echo "$extra" | sed 's/^/# /'
  status=1
fi
exit $status
