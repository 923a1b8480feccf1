#!/bin/sh
# Sets up a fresh Debian 12 machine and builds libxfer:
#   1. installs the Debian packages the build and the tests need
#      (apt-get when run as root; otherwise prints the exact command),
#   2. autoreconf -fi, ./configure (arguments are passed on), make.
# Safe to run twice: installed packages are not fetched again.
set -eu

# Every package, one by one, with what needs it.
PACKAGES="
autoconf
automake
libtool
pkg-config
make
gcc
libc6-dev
libcriterion-dev
liburcu-dev
libc-ares-dev
liburiparser-dev
node-llhttp
nginx
libuv1-dev
libcurl4-openssl-dev
wrk
valgrind
strace
python3
linux-perf
clang
libclang-rt-14-dev
man-db
curl
binutils
"
# autoconf, automake, libtool, pkg-config: the build system
# make, gcc, libc6-dev: the compiler and C library headers
# libcriterion-dev: the unit test framework (tests/)
# liburcu-dev: RCU and the lock-free hash table of the connection pool
# libc-ares-dev: the asynchronous DNS resolver
# liburiparser-dev: URL parsing
# node-llhttp: llhttp's C sources (/usr/share/llhttp), built into the library
# nginx: the real peer of the interop tests and the benchmarks
# libuv1-dev: the libuv example (examples/uv) and its test
# libcurl4-openssl-dev: what the benchmarks compare with (make bench)
# wrk: the lean load generator the benchmarks compare with
# valgrind: instructions per request (callgrind) in the benchmarks
# strace: system calls per request (strace -c) in the benchmarks' counting runs
# python3: reads xfer-load's JSON in the tests (json module, strict keys);
#   runs the benchmarks and writes their report
# linux-perf: profiling (perf record/report) while optimising
# clang, libclang-rt-14-dev: the libFuzzer targets (make fuzz, make fuzz-ci)
# man-db: man -l renders each generated man page in make check
# curl: the client of the gateway's tests (examples/gateway)
# binutils: readelf, which check-install reads the installed RUNPATH with

cd "$(dirname "$0")"

missing=""
for p in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done

if [ -n "$missing" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "bootstrap: installing:$missing"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
  else
    echo "bootstrap: these Debian packages are missing:$missing" >&2
    echo "bootstrap: run this as root, then run ./bootstrap.sh again:" >&2
    echo "  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y$missing" >&2
    exit 1
  fi
fi

autoreconf -fi
./configure "$@"
make -j"$(nproc 2>/dev/null || echo 2)"
