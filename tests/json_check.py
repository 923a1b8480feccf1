#!/usr/bin/env python3
"""Checks a JSON document the way a strict consumer reads it.

    json_check.py FILE [EXPR...]

FILE must hold exactly one JSON value, parsed by Python's json module with
every object's keys unique (a duplicate key is an error, not "the last one
wins"). Each EXPR is a Python expression over `d`, the parsed document,
that must be true: `d["requests"] == 50`. Exits 0 when all hold; else 1,
naming the first that failed and printing the document.
"""
import json
import sys


def unique_keys(pairs):
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError("duplicate key %r" % key)
        seen.add(key)
    return dict(pairs)


def main():
    with open(sys.argv[1]) as f:
        text = f.read()
    try:
        d = json.loads(text, object_pairs_hook=unique_keys)
    except ValueError as e:
        print("not valid JSON (%s): %s" % (e, text))
        return 1
    for expr in sys.argv[2:]:
        try:
            ok = eval(expr, {}, {"d": d})
        except Exception as e:  # a missing key is a failed check
            ok, why = False, "%s: %s" % (type(e).__name__, e)
        else:
            why = "false"
        if not ok:
            print("%s: %s\n%s" % (expr, why, text))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
