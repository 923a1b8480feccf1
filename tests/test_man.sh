#!/bin/sh
# The man pages as a user reads them: one per docs/api page and the
# libxfer(3) overview, each rendered by `man -l` with groff's warnings on,
# none allowed, and each showing its NAME line and its sections. TAP.
srcdir=${srcdir:-.}
pages="docs/man/libxfer.3"
for md in "$srcdir"/docs/api/xfer_*.md; do
  pages="$pages docs/man/$(basename "$md" .md).3"
done
echo "1..$(echo $pages | wc -w)"
n=0
status=0
for page in $pages; do
  n=$((n + 1))
  name=$(basename "$page" .3)
  if [ ! -f "$page" ]; then
    echo "not ok $n - $name: no page (is it in man3_MANS?)"
    status=1
    continue
  fi
  warnings=$(MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >/dev/null)
  text=$(MANWIDTH=80 man -E UTF-8 -l "$page" 2>/dev/null)
  why=
  if [ -n "$warnings" ]; then
    why="man warns: $warnings"
  elif ! printf '%s\n' "$text" | grep -Eq "^ +$name +- +[A-Za-z]"; then
    why="no NAME line '$name - ...'"
  else
    for section in SYNOPSIS DESCRIPTION; do
      printf '%s\n' "$text" | grep -q "^$section" || why="no $section"
    done
    if [ "$name" != libxfer ]; then
      for section in OWNERSHIP THREAD RETURNS EXAMPLE "SEE ALSO"; do
        printf '%s\n' "$text" | grep -q "^$section" || why="no $section"
      done
    fi
  fi
  if [ -n "$why" ]; then
    echo "not ok $n - $name: $why" | tr '\n' ' '
    echo
    status=1
  else
    echo "ok $n - $name"
  fi
done
exit $status
