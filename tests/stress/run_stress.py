#!/usr/bin/env python3
"""make stress: the soak of tests/stress/stress.c against a local nginx
(started like the benchmarks' one) and the fault routes of our test
server, then tests/stress/stale.c (stale connections under load, libxfer
and libcurl). Fails when either does."""
import argparse
import os
import subprocess
import sys

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--srcdir", required=True)
ap.add_argument("--bin", required=True)
ap.add_argument("--stale-bin", required=True)
ap.add_argument("-n", default="1000000")
ap.add_argument("-s", default="600")
args = ap.parse_args()
sys.path.insert(0, os.path.join(args.srcdir, "tests/bench"))
import run_bench  # noqa: E402  (its nginx launcher)

nginx = run_bench.Nginx(args.srcdir)
try:
    rc = subprocess.call([args.bin, "-n", args.n, "-s", args.s,
                          nginx.url("100")])
finally:
    nginx.stop()
# Stale connections: a server of its own (in the program), no nginx.
rc_stale = subprocess.call([args.stale_bin])
sys.exit(rc or rc_stale)
