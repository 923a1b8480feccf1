#!/bin/sh
# The layering check (docs/internals/layers.md). Reads the #includes of
# LIBDIR/*.c and LIBDIR/*.h and fails when a module includes one that the
# table below does not allow, when the table names a module that does not
# exist, or when the modules include each other in a circle other than
# multi <-> transfer.
#   check-layers.sh [LIBDIR [TABLE]]
# LIBDIR defaults to the lib/ beside this script; TABLE (a file in the
# format below) replaces the table, for the check's own test.
#
# A module is a file name without .c/.h (multi.c and multi.h are `multi`);
# the pool's parts (pool*.c, pool_impl.h) are one module, `pool`. Every
# module may include `common` (and through it config.h and xfer/xfer.h)
# and itself. System headers (<...>) are not checked.
set -u
here=$(cd "$(dirname "$0")" && pwd)
libdir=${1:-$here/../lib}
table_file=${2:-}

# module: the modules it may include. Lower layers first; the table is the
# drawing of docs/internals/layers.md.
table='
mem:
now:
errors:
timer: now mem
url: mem
http1: mem
multi_ev: mem now
wake: mem now
cfilter: multi_ev now
cf_socket: cfilter multi_ev now mem
exchange: cfilter http1 multi_ev
conn: cf_socket cfilter exchange multi_ev now mem
pool: conn now wake mem
loop: multi_ev now timer
resolve: cf_socket loop multi_ev now mem
shutdown: loop now timer conn pool mem
attached: loop now timer shutdown conn pool
transfer: cf_socket exchange http1 loop multi_ev now pool resolve timer url mem attached conn shutdown multi
exchange_h1: conn exchange loop transfer
options: conn mem transfer
multi: attached loop multi_ev now pool resolve shutdown timer mem transfer
'

if [ -n "$table_file" ]; then
  table=$(cat "$table_file") || exit 2
fi

ls "$libdir"/*.c > /dev/null 2>&1 || {
  echo "check-layers: no C files in $libdir" >&2
  exit 2
}

# "file -" for every file, then "file included-module" for every quoted
# #include.
for f in "$libdir"/*.c "$libdir"/*.h; do
  echo "$(basename "$f") -"
  sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)\.h".*/\1/p' \
    "$f" | while read -r inc; do
    echo "$(basename "$f") $inc"
  done
done | awk -v table="$table" '
function module(name) {
  sub(/\.[ch]$/, "", name)
  if (name ~ /^pool(_.*)?$/)
    return "pool"
  return name
}
BEGIN {
  n = split(table, lines, "\n")
  for (i = 1; i <= n; i++) {
    if (lines[i] !~ /:/)
      continue
    m = lines[i]; sub(/:.*/, "", m)
    deps = lines[i]; sub(/^[^:]*:/, "", deps)
    known[m] = 1
    k = split(deps, d, " ")
    for (j = 1; j <= k; j++)
      allowed[m, d[j]] = 1
  }
  bad = 0
}
$2 == "-" {
  from = module($1)
  if (!(from in seen) && from != "common" && !(from in known)) {
    printf "check-layers: %s: module %s is not in the table\n", $1, from
    bad = 1
  }
  seen[from] = 1
  next
}
{
  from = module($1); to = module($2)
  if (to == "common" || to == "config" || to == "xfer/xfer" || to == from)
    next
  if (!(from in known))
    next  # said once, above
  if (!((from, to) in allowed)) {
    printf "check-layers: %s includes %s.h: %s may not include %s\n", \
           $1, $2, from, to
    bad = 1
  }
  if (!((from, to) in edge)) {
    edge[from, to] = 1
    out[from, ++nout[from]] = to
  }
}
# reaches[start, m] for every module m reachable from start.
function reach(start,    stack, top, cur, i, nxt) {
  top = 0
  stack[++top] = start
  while (top > 0) {
    cur = stack[top--]
    for (i = 1; i <= nout[cur]; i++) {
      nxt = out[cur, i]
      if (!((start, nxt) in reaches)) {
        reaches[start, nxt] = 1
        stack[++top] = nxt
      }
    }
  }
}
END {
  for (m in known)
    if (m != "common" && !(m in seen)) {
      printf "check-layers: the table names %s, which has no file\n", m
      bad = 1
    }
  for (a in seen)
    reach(a)
  # A circle: a reaches b and b reaches a. Allowed: multi <-> transfer,
  # each including the other directly, with nothing else on the circle.
  for (a in seen)
    for (b in seen) {
      if (a >= b || !((a, b) in reaches) || !((b, a) in reaches))
        continue
      if (a == "multi" && b == "transfer" && ("multi", "transfer") in edge &&
          ("transfer", "multi") in edge && !circle_through_others())
        continue
      printf "check-layers: %s and %s include each other (a circle)\n", a, b
      bad = 1
    }
  exit bad
}
# Is anything but multi and transfer on a circle with either of them?
function circle_through_others(    c) {
  for (c in seen)
    if (c != "multi" && c != "transfer" &&
        (("multi", c) in reaches || ("transfer", c) in reaches) &&
        ((c, "multi") in reaches || (c, "transfer") in reaches))
      return 1
  return 0
}'
status=$?
if [ $status -eq 0 ]; then
  echo "check-layers: $libdir keeps its layers"
fi
exit $status
