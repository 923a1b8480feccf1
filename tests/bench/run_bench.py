#!/usr/bin/env python3
"""make bench: libxfer against libcurl, wrk and a floor client, on a local
nginx.

Runs the grid of tests/bench/README.md with every client interleaved (so a
noisy machine slows all of them alike; every other repetition of a cell in
reverse order), takes medians, and writes the table
to stdout, RESULTS.md and results.json. CPU runs have no instrumentation;
clock reads and system calls are counted in two more runs of each client,
one with the LD_PRELOAD clock counter, one under `strace -c` (which slows
a client several times over, and a slower client may take other paths).
See `--help`.
"""
import argparse
import datetime
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

GRID = [  # (threads, in flight per thread, body)
    (1, 16, "100"),
    (2, 16, "100"),
    (4, 16, "100"),
    (2, 64, "100"),
    (2, 16, "16k"),
]
BODIES = {"100": 100, "16k": 16384}
HEADLINE = GRID[0]  # the cell of the CPU target against the floor client
# The order within a cell: the clients a target compares libxfer with
# (the floor, the pool per multi, wrk) run next to it. Every other
# repetition runs the cell in reverse (ABBA), so that a machine speeding up
# or slowing down during a cell favours no client.
CLIENTS = ["floor-llhttp", "floor", "xfer-shared", "xfer-per-multi", "wrk",
           "curl", "curl-share"]


# How the tables list them.
SHOWN = ["xfer-shared", "xfer-per-multi", "curl", "curl-share", "floor",
         "floor-llhttp", "wrk"]
assert sorted(SHOWN) == sorted(CLIENTS)


def cell_order(run):
    return CLIENTS if run % 2 == 0 else CLIENTS[::-1]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Nginx:
    """nginx from tests/bench/nginx.conf on a probed port, its own prefix."""

    def __init__(self, srcdir):
        self.prefix = tempfile.mkdtemp(prefix="xfer-bench-nginx-")
        os.makedirs(os.path.join(self.prefix, "tmp"))
        root = os.path.join(self.prefix, "root")
        os.makedirs(root)
        for name, size in BODIES.items():
            with open(os.path.join(root, name), "wb") as f:
                f.write(bytes((ord("a") + i % 26) for i in range(size)))
        with open(os.path.join(srcdir, "tests/bench/nginx.conf")) as f:
            self.template = f.read()
        self.proc = None
        for _ in range(20):  # nginx cannot listen on port 0: probe, retry
            self.port = free_port()
            conf = os.path.join(self.prefix, "nginx.conf")
            with open(conf, "w") as f:
                f.write(self.template.replace("@PREFIX@", self.prefix)
                        .replace("@PORT@", str(self.port)))
            self.proc = subprocess.Popen(
                ["nginx", "-p", self.prefix, "-c", conf, "-e",
                 os.path.join(self.prefix, "error.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if wait_listening(self.port, self.proc):
                return
            self.proc.wait()
        raise SystemExit("bench: nginx did not start (see %s/error.log)"
                         % self.prefix)

    def url(self, body):
        return "http://127.0.0.1:%d/%s" % (self.port, body)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc):
    for _ in range(100):
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def strace_counts(path):
    """(all system calls, epoll_wait calls) from a `strace -c` summary."""
    total = epoll = None
    with open(path) as f:
        for line in f:
            w = line.split()
            if len(w) >= 5 and w[-1] == "total":
                total = int(w[3])
            elif len(w) >= 5 and w[-1] == "epoll_wait":
                epoll = int(w[3])
    return total, epoll or 0


def straced(cmd, env):
    """Runs cmd under strace -f -c. Returns (process, calls, epoll_waits).
    No clock counter here: strace slows the client several times over, and
    a slower client takes timer paths a normal one does not (at T=4 the
    shared pool then rebalances connections through 0 ms timers)."""
    out = tempfile.NamedTemporaryFile(prefix="xfer-bench-strace-",
                                      delete=False)
    out.close()
    try:
        p = subprocess.run(["strace", "-f", "-c", "-o", out.name] + cmd,
                           env=env, capture_output=True, text=True,
                           timeout=600)
    except subprocess.TimeoutExpired:
        os.unlink(out.name)
        return subprocess.CompletedProcess(cmd, -1, "", "timed out"), \
            None, None
    try:
        calls, epoll = strace_counts(out.name)
    except (OSError, ValueError):
        calls, epoll = None, None
    os.unlink(out.name)
    return p, calls, epoll


def run_client(args, name, t, c, n, url, count=False):
    """One bench_client run in a process of its own; a dict of figures.
    count: the counting runs (one with the clock counter preloaded, one
    under strace), whose CPU figures are not used."""
    env = dict(os.environ)
    cmd = [args.bench_client, "--client", name, "-t", str(t), "-c", str(c),
           "-n", str(n), url]
    if count:
        p = subprocess.run(cmd[:-1] + ["--check-timelines", url],
                           env=dict(env, LD_PRELOAD=args.clockcount),
                           capture_output=True, text=True, timeout=300)
        ps, calls, _ = straced(cmd, env)
        try:
            r = json.loads(p.stdout.strip().splitlines()[-1])
            rs = json.loads(ps.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"client": name, "failed": "counting run: exit %d/%d: %s" % (
                p.returncode, ps.returncode,
                (p.stderr or p.stdout or ps.stderr).strip()[-200:])}
        r["syscalls_per_req"] = calls / rs["requests"] if calls else None
        return r
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True,
                           timeout=300)
    except subprocess.TimeoutExpired:
        return {"client": name, "failed": "timed out after 300 s"}
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode < 0:
        return {"client": name, "failed": "crashed: %s" %
                signal.Signals(-p.returncode).name}
    try:
        r = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"client": name, "failed": "exit %d: %s" % (
            p.returncode, (p.stderr or p.stdout).strip()[-200:])}
    # The CPU of the whole process, as wrk's is measured (start-up, set-up
    # and teardown included, for every client alike); the client's own
    # figure for its request window is kept beside it.
    user = after.ru_utime - before.ru_utime
    sys_ = after.ru_stime - before.ru_stime
    reqs = r["requests"] or 1
    r["window_cpu_us_per_req"] = r.get("cpu_us_per_req")
    r["cpu_s"] = user + sys_
    r["cpu_us_per_req"] = (user + sys_) * 1e6 / reqs
    r["user_us_per_req"] = user * 1e6 / reqs
    r["sys_us_per_req"] = sys_ * 1e6 / reqs
    return r


def run_wrk(args, t, c, url, count=False):
    """wrk with matching threads and connections, for a fixed duration.
    count: the counting runs (one with the clock counter preloaded, one
    under strace), CPU not used."""
    out = tempfile.NamedTemporaryFile(prefix="xfer-bench-clock-",
                                      delete=False)
    out.close()
    cmd = ["wrk", "-t", str(t), "-c", str(t * c), "-d",
           "%ds" % (args.count_seconds if count else args.wrk_seconds), url]
    calls = epoll = None
    env = dict(os.environ)
    if count:
        env.update(CLOCKCOUNT_OUT=out.name, LD_PRELOAD=args.clockcount)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True,
                       timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user = after.ru_utime - before.ru_utime
    sys_ = after.ru_stime - before.ru_stime
    cpu = user + sys_
    with open(out.name) as f:
        clocks = int(f.read().strip() or 0)
    os.unlink(out.name)
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", p.stdout)
    if p.returncode or not m:
        return {"client": "wrk", "failed": "exit %d: %s" % (
            p.returncode, p.stderr.strip()[-200:])}
    reqs = int(m.group(1))
    if count:
        ps, calls, epoll = straced(cmd, dict(os.environ))
        ms = re.search(r"(\d+) requests in", ps.stdout)
        sreqs = int(ms.group(1)) if ms and not ps.returncode else 0
        calls = calls / sreqs if calls and sreqs else None
        epoll = epoll / sreqs if epoll is not None and sreqs else None
    secs = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
    errors = 0
    for pat in (r"Non-2xx or 3xx responses: (\d+)",
                r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                r"timeout (\d+)"):
        e = re.search(pat, p.stdout)
        if e:
            errors += sum(int(g) for g in e.groups())
    return {"client": "wrk", "threads": t, "per_thread": c,
            "requests": reqs, "errors": errors, "timeline_violations": 0,
            "wall_s": secs, "cpu_s": cpu, "rps": reqs / secs,
            "cpu_us_per_req": cpu * 1e6 / reqs,
            "user_us_per_req": user * 1e6 / reqs,
            "sys_us_per_req": sys_ * 1e6 / reqs, "clock_reads": clocks,
            "clock_reads_per_req": clocks / reqs,
            "syscalls_per_req": calls,
            "epoll_waits_per_req": epoll,
            "timer_cbs_per_req": None,
            "connections": t * c, "peak_in_flight": t * c}


def median_of(runs, key):
    vals = [r[key] for r in runs
            if r.get(key) is not None and "failed" not in r]
    return statistics.median(vals) if vals else None


def callgrind_instructions(args, name, url):
    """Instructions per request: the difference of two runs cancels
    start-up and teardown."""
    counts = []
    for n in (args.callgrind_n, 3 * args.callgrind_n):
        p = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             args.bench_client, "--client", name, "-t", "1", "-c", "16",
             "-n", str(n), url], capture_output=True, text=True, timeout=900)
        m = re.search(r"Collected : (\d+)", p.stderr)
        try:
            r = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            r = {}
        # A run that failed, or lost a request, counts nothing.
        if not m or p.returncode or r.get("errors", 1) or \
                r.get("requests") != n:
            return None
        counts.append(int(m.group(1)))
    return (counts[1] - counts[0]) / (2 * args.callgrind_n)


def scaling(args, url):
    """CPU per fast request with 10,000 transfers held against 10: both
    in every repetition, their order alternating, and the ratio taken per
    repetition (its median), as for the clients."""
    out = {10: {"runs": []}, 10000: {"runs": []}}
    ratios = []
    for run in range(args.runs):
        pair = {}
        for held in ((10, 10000) if run % 2 == 0 else (10000, 10)):
            p = subprocess.run([args.bench_scaling, "-k", str(held), "-n",
                                str(args.scaling_n), url],
                               capture_output=True, text=True, timeout=600)
            try:
                r = json.loads(p.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                r = {"failed": (p.stderr or p.stdout).strip()[-200:]}
            out[held]["runs"].append(r)
            pair[held] = r
        # A pair counts only when both runs finished without an error; the
        # others are reported (errors, failed) and left out.
        if all("failed" not in r and not r.get("errors")
               for r in pair.values()):
            ratios.append(pair[10000]["cpu_us_per_fast_req"] /
                          pair[10]["cpu_us_per_fast_req"])
    for held in (10, 10000):
        runs = out[held].pop("runs")
        good = [r for r in runs if not r.get("errors")]
        out[held] = {"cpu_us_per_fast_req":
                     median_of(good, "cpu_us_per_fast_req"),
                     "errors": sum(r.get("errors", 0) for r in runs),
                     "failed": [r["failed"] for r in runs if "failed" in r]}
    if not ratios:
        return {"failed": "no pair of runs finished cleanly: %s" % (
            out[10]["failed"] + out[10000]["failed"])[:3]}
    out["ratio"] = statistics.median(ratios)
    out["pairs"] = len(ratios)
    return out


def pool_contention(args, extra=(), rounds=None):
    p = subprocess.run([args.bench_pool, "-t", "4", "-n",
                        str(rounds or args.pool_rounds)] + list(extra),
                       capture_output=True, text=True, timeout=600)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"failed": (p.stderr or p.stdout).strip()[-200:]}


def pool_many_destinations(args):
    """4 threads over 100,000 destinations under a total limit of 1,000:
    nearly every checkout closes another destination's idle connection to
    make room (through the index of destinations with idle ones)."""
    return pool_contention(args, ["-d", "100000", "-T", "1000"],
                           rounds=args.pool_rounds // 5)


def versions():
    def first_line(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "not found"
    return {
        "nginx": first_line(["nginx", "-v"]),
        "wrk": first_line(["wrk", "--version"]),
        "libcurl": first_line(["curl-config", "--version"]),
        "valgrind": first_line(["valgrind", "--version"]),
        "cc": first_line(["cc", "--version"]),
    }


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release()}


def ratio(a, b):
    return a / b if a is not None and b else None


def paired_ratios(results, cell, a, b, field):
    """Each run's a's figure / b's figure. Within a run the clients ran
    back to back, so each run's ratio is taken in one state of the machine;
    on a VM whose speed drifts between runs, a ratio of two medians can
    pair figures from different states."""
    return [x[field] / y[field]
            for x, y in zip(results.get(cell + (a,), []),
                            results.get(cell + (b,), []))
            if "failed" not in x and "failed" not in y and y.get(field)]


def paired_ratio(results, cell, a, b, field):
    """The median over runs of a's figure / b's figure (paired_ratios)."""
    rs = paired_ratios(results, cell, a, b, field)
    return statistics.median(rs) if rs else None


def median_interval(values, resamples=2000):
    """A 95% bootstrap interval of the median of values: how far another
    run of the same number of pairs may put it. A fixed seed, so that the
    same figures always give the same interval."""
    if len(values) < 5:
        return None
    rng = random.Random(1)
    meds = sorted(statistics.median(rng.choices(values, k=len(values)))
                  for _ in range(resamples))
    return [meds[int(resamples * 0.025)], meds[int(resamples * 0.975) - 1]]


def fmt(v, digits=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "%.*f" % (digits, v)
    return str(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--srcdir", required=True)
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--out-md")
    ap.add_argument("--out-json")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--headline-runs", type=int, default=45,
                    help="repetitions of the floor and libxfer in the "
                    "T=1 C=16 100 B cell, whose CPU target sits within the "
                    "spread of seven (and of fifteen: runs of 15 pairs "
                    "gave 1.08 to 1.13 of nearly the same code)")
    ap.add_argument("-n", type=int, default=100000,
                    help="requests per client run (CPU runs)")
    ap.add_argument("--wrk-seconds", type=int, default=5)
    ap.add_argument("--count-n", type=int, default=20000,
                    help="requests per counting run (clocks, system calls)")
    ap.add_argument("--count-seconds", type=int, default=2,
                    help="wrk's counting run")
    ap.add_argument("--callgrind-n", type=int, default=2000)
    ap.add_argument("--scaling-n", type=int, default=100000)
    ap.add_argument("--pool-rounds", type=int, default=500000)
    ap.add_argument("--render", metavar="JSON",
                    help="only write the report of an earlier run's JSON")
    args = ap.parse_args()
    if args.render:
        with open(args.render) as f:
            out = json.load(f)
        # JSON made the held-transfer counts of socket_scaling strings.
        out["socket_scaling"] = {int(k) if k.isdigit() else k: v for k, v
                                 in out["socket_scaling"].items()}
        write_markdown(args, out)
        return
    b = os.path.join(args.builddir, "tests/bench")
    args.bench_client = os.path.join(b, "bench_client")
    args.bench_scaling = os.path.join(b, "bench_scaling")
    args.bench_pool = os.path.join(b, "bench_pool")
    args.clockcount = os.path.join(b, ".libs/clockcount.so")
    for tool in ("nginx", "wrk", "valgrind", "strace"):
        if not shutil.which(tool):
            raise SystemExit("bench: %s is missing (./bootstrap.sh installs "
                             "it)" % tool)
    started = time.time()
    nginx = Nginx(args.srcdir)
    try:
        results = {}

        def cpu_run(run, t, c, body, name):
            # One CPU run of a client in a cell, kept and logged.
            url = nginx.url(body)
            if name == "wrk":
                r = run_wrk(args, t, c, url)
            else:
                r = run_client(args, name, t, c, args.n, url)
            results.setdefault((t, c, body, name), []).append(r)
            log("run %d T=%d C=%d %s %-14s %s" % (
                run + 1, t, c, body, name,
                r.get("failed") or "%.0f req/s, %.1f us CPU/req" % (
                    r["rps"], r["cpu_us_per_req"])))

        for run in range(args.runs):
            for (t, c, body) in GRID:
                for name in cell_order(run):
                    if name == "curl-share" and t > 1 and run > 0:
                        continue  # once is enough to see what happens
                    cpu_run(run, t, c, body, name)
        # The target libxfer / floor <= 1.10 is within the spread of one
        # cell's seven repetitions (their ratios ranged over 0.15 in one
        # run): more pairs of the two, back to back in turns, make its
        # median repeatable. Every pair is one repetition's ratio. The
        # floor with llhttp runs beside them: what the parser alone adds.
        t, c, body = HEADLINE
        for run in range(args.runs, args.headline_runs):
            turn = ["floor-llhttp", "floor", "xfer-shared"]
            for name in turn if run % 2 == 0 else turn[::-1]:
                cpu_run(run, t, c, body, name)
        log("counting runs (clock reads, system calls) ...")
        counts = {}
        for (t, c, body) in GRID:
            url = nginx.url(body)
            for name in SHOWN:
                if name == "wrk":
                    r = run_wrk(args, t, c, url, count=True)
                else:
                    r = run_client(args, name, t, c, args.count_n, url,
                                   count=True)
                counts[(t, c, body, name)] = r
        log("callgrind (T=1, C=16) ...")
        instr = {name: callgrind_instructions(args, name, nginx.url("100"))
                 for name in ("xfer-shared", "curl", "floor", "floor-llhttp")}
        log("socket scaling ...")
        scale = scaling(args, nginx.url("100"))
        log("pool contention ...")
        pool = pool_contention(args)
        pool["many_destinations"] = pool_many_destinations(args)
    finally:
        nginx.stop()
    report(args, results, counts, instr, scale, pool,
           time.time() - started)


def report(args, results, counts, instr, scale, pool, seconds):
    cells = []
    for (t, c, body) in GRID:
        cell = {"threads": t, "per_thread": c, "body": body, "clients": {}}
        for name in SHOWN:
            runs = results.get((t, c, body, name), [])
            failed = [r["failed"] for r in runs if "failed" in r]
            fig = {k: median_of(runs, k) for k in
                   ("rps", "cpu_us_per_req", "user_us_per_req",
                    "sys_us_per_req", "epoll_waits_per_req",
                    "timer_cbs_per_req", "connections", "peak_in_flight")}
            cnt = counts.get((t, c, body, name), {})
            if "failed" in cnt:
                failed.append(cnt["failed"])
            fig["clock_reads_per_req"] = cnt.get("clock_reads_per_req")
            # The library's own count in that same counting run: it must
            # agree with the counter's (README), a check of both.
            fig["counted_lib_clock_reads_per_req"] = (
                cnt["lib_clock_reads"] / cnt["requests"]
                if name.startswith("xfer") and cnt.get("requests") and
                "lib_clock_reads" in cnt else None)
            fig["syscalls_per_req"] = cnt.get("syscalls_per_req")
            if name == "wrk":  # no count of its own: strace's
                fig["epoll_waits_per_req"] = cnt.get("epoll_waits_per_req")
            fig["lib_clock_reads_per_req"] = None
            good = [r for r in runs if "failed" not in r]
            if good and "lib_clock_reads" in good[0] and \
                    name.startswith("xfer"):
                fig["lib_clock_reads_per_req"] = statistics.median(
                    r["lib_clock_reads"] / r["requests"] for r in good)
            fig["errors"] = sum(r.get("errors", 0) for r in good)
            # Checked in the clock-counting run (the CPU runs measure
            # nothing per transfer): -1 there means unchecked.
            fig["timeline_violations"] = cnt.get("timeline_violations")
            if fig["timeline_violations"] is None or \
                    fig["timeline_violations"] < 0:
                fig["timeline_violations"] = 0 if name == "wrk" else None
            fig["runs"] = len(good)
            fig["failed"] = failed
            cell["clients"][name] = fig
        x = cell["clients"]["xfer-shared"]
        key = (t, c, body)
        cell["ratios"] = {
            "cpu_vs_curl": paired_ratio(results, key, "xfer-shared", "curl",
                                        "cpu_us_per_req"),
            "cpu_vs_wrk": paired_ratio(results, key, "xfer-shared", "wrk",
                                       "cpu_us_per_req"),
            "cpu_vs_floor": paired_ratio(results, key, "xfer-shared",
                                         "floor", "cpu_us_per_req"),
            # The floor's split: the parser the brief fixes, and libxfer's
            # own work over a client that has nothing but that parser.
            "floor_llhttp_vs_floor": paired_ratio(
                results, key, "floor-llhttp", "floor", "cpu_us_per_req"),
            "cpu_vs_floor_llhttp": paired_ratio(
                results, key, "xfer-shared", "floor-llhttp",
                "cpu_us_per_req"),
            "cpu_shared_vs_per_multi": paired_ratio(
                results, key, "xfer-shared", "xfer-per-multi",
                "cpu_us_per_req"),
            "epoll_shared_vs_per_multi": paired_ratio(
                results, key, "xfer-shared", "xfer-per-multi",
                "epoll_waits_per_req"),
            "cpu_vs_curl_of_medians": ratio(
                x["cpu_us_per_req"],
                cell["clients"]["curl"]["cpu_us_per_req"]),
            "cpu_vs_wrk_of_medians": ratio(
                x["cpu_us_per_req"], cell["clients"]["wrk"]["cpu_us_per_req"]),
            "clock_reads_vs_curl": ratio(
                x["clock_reads_per_req"],
                cell["clients"]["curl"]["clock_reads_per_req"]),
        }
        # The spread of the median within this session (a bootstrap of its
        # pairs): it leaves out what moves between sessions (runs of the
        # same code on other days differed by more), so it is no bound on
        # where another run lands.
        cell["ratio_intervals"] = {
            k: median_interval(paired_ratios(results, key, a, b,
                                             "cpu_us_per_req"))
            for k, a, b in (("cpu_vs_floor", "xfer-shared", "floor"),
                            ("floor_llhttp_vs_floor", "floor-llhttp",
                             "floor"),
                            ("cpu_vs_floor_llhttp", "xfer-shared",
                             "floor-llhttp"))}
        cell["floor_pairs"] = len(paired_ratios(
            results, key, "xfer-shared", "floor", "cpu_us_per_req"))
        cells.append(cell)
    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "machine": machine(), "versions": versions(),
        "requests_per_run": args.n, "runs": args.runs,
        "headline_runs": max(args.runs, args.headline_runs),
        "wrk_seconds": args.wrk_seconds, "count_n": args.count_n,
        "count_seconds": args.count_seconds,
        "seconds": round(seconds, 1), "cells": cells,
        "instructions_per_req": {**instr, "ratio_vs_curl": ratio(
            instr.get("xfer-shared"), instr.get("curl"))},
        "socket_scaling": scale, "pool_contention": pool,
    }
    # Every run as measured, so that a reader can recompute any pair, ratio
    # or interval (keys: "T/C/body/client").
    out["runs_measured"] = {"%d/%d/%s/%s" % k: v for k, v in results.items()}
    out["counting_runs"] = {"%d/%d/%s/%s" % k: v for k, v in counts.items()}
    out["targets"] = targets(out)
    # The figures first: a report that fails to render loses no run
    # (--render re-makes it from the JSON).
    if args.out_json:
        with open(args.out_json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
    write_markdown(args, out)


def write_markdown(args, out):
    md = markdown(out)
    print(md)
    if args.out_md:
        with open(args.out_md, "w") as f:
            f.write(md)


# The targets of the performance-to-the-floor issue (19), by their
# names' beginnings; every other target comes from an earlier issue.
FLOOR_ISSUE_TARGETS = (
    "CPU/req <= 1.10x the floor", "CPU/req <= 0.95x wrk",
    "CPU/req <= 1.0x wrk", "instructions/req <= 5,000",
    "clock reads/req <= 2.05", "timer callbacks/req <= 0.05",
    "shared pool epoll_wait/req", "shared pool CPU/req")


def targets(out):
    """Each target of the benchmark issues, met or not, with the figure."""
    t = []

    def le(v, bound):
        return v is not None and v <= bound
    for cell in out["cells"]:
        label = "T=%d C=%d %s" % (cell["threads"], cell["per_thread"],
                                  cell["body"])
        first = (cell["threads"], cell["per_thread"], cell["body"]) == \
            (1, 16, "100")
        r = cell["ratios"]
        x = cell["clients"]["xfer-shared"]
        if first:
            t.append(("CPU/req <= 1.10x the floor client (goal 1.05), " +
                      label, r["cpu_vs_floor"], le(r["cpu_vs_floor"], 1.10),
                      (cell.get("ratio_intervals") or {}).get("cpu_vs_floor"),
                      cell.get("floor_pairs")))
            t.append(("CPU/req <= 0.95x wrk, " + label, r["cpu_vs_wrk"],
                      le(r["cpu_vs_wrk"], 0.95)))
        else:
            t.append(("CPU/req <= 1.0x wrk, " + label, r["cpu_vs_wrk"],
                      le(r["cpu_vs_wrk"], 1.0)))
        t.append(("CPU/req <= 0.5x libcurl, " + label, r["cpu_vs_curl"],
                  le(r["cpu_vs_curl"], 0.5)))
        t.append(("clock reads/req <= 2.05, " + label,
                  x["clock_reads_per_req"], le(x["clock_reads_per_req"],
                                               2.05)))
        own = x.get("counted_lib_clock_reads_per_req")
        t.append(("libxfer's own clock count = the counter's (within "
                  "0.01/req), " + label, own,
                  own is not None and x["clock_reads_per_req"] is not None
                  and abs(own - x["clock_reads_per_req"]) <= 0.01))
        t.append(("timer callbacks/req <= 0.05, " + label,
                  x["timer_cbs_per_req"], le(x["timer_cbs_per_req"], 0.05)))
        if cell["threads"] == 4:
            t.append(("shared pool epoll_wait/req <= 1.10x pool per multi, " +
                      label, r["epoll_shared_vs_per_multi"],
                      le(r["epoll_shared_vs_per_multi"], 1.10)))
            t.append(("shared pool CPU/req <= 1.10x pool per multi, " +
                      label, r["cpu_shared_vs_per_multi"],
                      le(r["cpu_shared_vs_per_multi"], 1.10)))
        t.append(("opens <= peak in flight (shared pool), " + label,
                  x["connections"], x["connections"] is not None and
                  x["peak_in_flight"] is not None and
                  x["connections"] <= x["peak_in_flight"]))
        errs = [cell["clients"][n][k] for n in ("xfer-shared", "xfer-per-multi")
                for k in ("errors", "timeline_violations")]
        errs = None if None in errs else sum(errs)  # None: not checked
        # A run that crashed, timed out or printed nothing is a failure
        # too, not a pair left out.
        lost = sum(len(cell["clients"][n]["failed"])
                   for n in ("xfer-shared", "xfer-per-multi"))
        t.append(("libxfer: 0 errors, 0 timeline violations, 0 failed "
                  "runs, " + label, errs if not lost else
                  "%s errors, %d failed runs" % (errs, lost),
                  errs == 0 and not lost))
    i = out["instructions_per_req"].get("xfer-shared")
    t.append(("instructions/req <= 5,000 (T=1 C=16, whole process)", i,
              le(i, 5000)))
    s = out["socket_scaling"].get("ratio")
    t.append(("CPU/fast req with 10,000 held <= 1.2x with 10", s,
              le(s, 1.2)))
    p = out["pool_contention"]
    t.append(("pool lock hold p99 < 1000 ns (4 threads), in ns",
              p.get("hold_ns_p99"),
              p.get("hold_ns_p99") is not None and p["hold_ns_p99"] < 1000))
    m = p.get("many_destinations", {})
    t.append(("pool lock hold p99 < 1000 ns, 100,000 destinations at a "
              "total limit (4 threads), in ns", m.get("hold_ns_p99"),
              m.get("hold_ns_p99") is not None and m["hold_ns_p99"] < 1000))
    rate = p.get("trylock_failure_rate")
    t.append(("trylock failures < 1% of acquisitions (4 threads), in %",
              rate * 100 if rate is not None else None,
              rate is not None and rate < 0.01))
    rows = []
    for a, v, m, *spread in t:
        row = {"target": a, "value": v, "met": m}
        if spread and spread[0]:
            row["interval_95"], row["pairs"] = spread
            # The session's own interval across the bound: this verdict is
            # the median's (as the issue defines it), but a run on another
            # day may well give the other one.
            row["spans_bound"] = spread[0][0] <= 1.10 <= spread[0][1]
        rows.append(row)
    return rows


def markdown(out):
    L = []
    L.append("# libxfer benchmark results")
    L.append("")
    L.append("Regenerated by `make bench` (tests/bench/run_bench.py); do not "
             "edit by hand.")
    L.append("")
    L.append("- date: %s, %.0f s in all" % (out["date"], out["seconds"]))
    m = out["machine"]
    L.append("- machine: %s, %s cores, Linux %s" % (m["cpu"], m["cores"],
                                                     m["kernel"]))
    for k, v in out["versions"].items():
        L.append("- %s: %s" % (k, v))
    L.append("- %d requests per client run (wrk: %d s), medians of %d "
             "runs, clients interleaved (every other run in reverse "
             "order); counting runs of %d requests "
             "(wrk: %d s); nginx on 127.0.0.1, one worker. In the T=1 "
             "C=16 100 B cell the floor client, xfer-shared and "
             "floor-llhttp run %d times, back to back (every other turn in "
             "reverse), for the CPU target against the floor" % (
                 out["requests_per_run"], out["wrk_seconds"], out["runs"],
                 out["count_n"], out["count_seconds"],
                 out.get("headline_runs", out["runs"])))
    L.append("")
    L.append("## How each client is driven")
    L.append("")
    L.append("- **xfer-shared / xfer-per-multi**: `bench_client`, linked "
             "against the shared libxfer.so as a user's program is (and "
             "against Debian's shared libcurl), T threads, "
             "each with its own epoll loop and multi (one pool for all, or "
             "one per multi), socket and timer callbacks, "
             "`xfer_multi_socket_action`; C transfers in flight per thread, "
             "each finished handle removed and re-added at once. On x86 "
             "libxfer parses with llhttp's SSE4.2 build when the CPU has "
             "SSE4.2.")
    L.append("- **curl / curl-share**: the same loop around a CURLM per "
             "thread, as libcurl's docs ask of a threaded program: "
             "`CURLOPT_NOSIGNAL` on every handle; curl-share adds a CURLSH "
             "for connections and DNS (unsupported by libcurl across "
             "concurrent threads: reported, not a target).")
    L.append("- The loop keeps the timer callback's deadline as an absolute "
             "time (libcurl's ephiperfifo example): the epoll wait ends "
             "at it and the timeout action runs once it passed, busy "
             "sockets or not. Its own clock reads are counted and "
             "subtracted from the clock counts.")
    L.append("- **floor**: the same program, C keep-alive connections per "
             "thread, each writing one fixed pre-built GET and reading only "
             "the status line and Content-Length, with its own epoll loop: "
             "what any HTTP/1.1 client must at least do.")
    L.append("- **floor-llhttp**: the floor client with llhttp (the build "
             "libxfer runs, SSE4.2 where the CPU has it) parsing each "
             "answer where it was read, instead of the floor's own "
             "search for the status line and Content-Length: what the "
             "parser the brief fixes adds to the floor; libxfer / "
             "floor-llhttp is what "
             "libxfer's own work (event tracking, pool, timers, timeline, "
             "API) adds to a client that has nothing but that parser.")
    L.append("- **wrk**: the same threads and connections for a fixed time.")
    L.append("- CPU, every client alike: the rusage of its whole process "
             "(wait4), start-up and teardown included; each client's own "
             "figure for its request window is in results.json "
             "(window_cpu_us_per_req). The start-up and teardown add about "
             "0.1 us a request to every client, which moves each ratio a "
             "little towards 1 (libxfer / floor by about 0.001).")
    L.append("- CPU runs carry no instrumentation. Clock reads (an "
             "`LD_PRELOAD` counter of clock_gettime and gettimeofday, the "
             "same for every client) and system calls (`strace -f -c`) are "
             "counted in two more runs of each client per cell, one each: "
             "strace slows a client several times over, and a slowed "
             "client takes other paths (at T=4 the shared pool then "
             "rebalances connections between threads through 0 ms timers, "
             "up to 2.06 clock reads a request). The clock-counting run "
             "also checks every finished transfer's timeline (the "
             "violations column; libcurl's through its getinfo times); the "
             "CPU runs check nothing per transfer. "
             "epoll_wait and timer callbacks per request are the loop's "
             "own counts in the CPU runs (wrk's epoll_wait: from strace).")
    L.append("")
    L.append("## Per cell")
    L.append("")
    L.append("CPU is the client process's (user + system) per request, "
             "start-up and teardown included, measured alike for every "
             "client as the child's rusage; the median over the runs, "
             "which are %d for every client except curl-share at T > 1 (one "
             "run: reported, not a target) and, in the T=1 C=16 100 B "
             "cell, the floor, floor-llhttp and xfer-shared (%d). So a "
             "ratio of two printed medians need not equal the ratio row: "
             "the ratios are the medians of each run's own ratio (the "
             "clients of a run ran back to back), so drift of the machine "
             "between runs cancels. user + sys are the medians of each "
             "part; the kernel samples that split per tick, so only their "
             "sum is exact. libxfer's own clock count (xfer_multi_stats, "
             "CPU runs) is in brackets. results.json also holds the ratios "
             "of the medians, and every run as measured." % (
                 out["runs"], out.get("headline_runs", out["runs"])))
    L.append("")
    L.append("| cell | client | req/s | CPU us/req | user + sys us/req | "
             "epoll_wait/req | "
             "syscalls/req | clock reads/req | timer cbs/req | connections "
             "| peak in flight | errors | timeline violations |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
             "---: | ---: | ---: | ---: |")
    for cell in out["cells"]:
        label = "T=%d C=%d %s B" % (cell["threads"], cell["per_thread"],
                                    cell["body"])
        for name, f in cell["clients"].items():
            if f["runs"] == 0:
                L.append("| %s | %s | %s |  |  |  |  |  |  |  |  |  |  |" % (
                    label, name, "; ".join(sorted(set(f["failed"]))) or "-"))
                continue
            reads = fmt(f["clock_reads_per_req"])
            if f["lib_clock_reads_per_req"] is not None:
                reads += " (%s)" % fmt(f["lib_clock_reads_per_req"])
            note = ""
            if f["failed"]:
                note = " (failed: %s)" % "; ".join(sorted(set(f["failed"])))
            L.append("| %s | %s%s | %s | %s | %s + %s | %s | %s | %s | %s "
                     "| %s | %s | %d | %s |" % (
                         label, name, note, fmt(f["rps"], 0),
                         fmt(f["cpu_us_per_req"]),
                         fmt(f.get("user_us_per_req")), fmt(f.get("sys_us_per_req")),
                         fmt(f["epoll_waits_per_req"]),
                         fmt(f["syscalls_per_req"]), reads,
                         fmt(f["timer_cbs_per_req"]),
                         fmt(f["connections"], 0),
                         fmt(f["peak_in_flight"], 0), f["errors"],
                         fmt(f["timeline_violations"], 0)))
        r = cell["ratios"]
        L.append("| %s | **libxfer (shared) / libcurl, / wrk, / floor, "
                 "/ floor-llhttp** | | **%s, %s, %s, %s** | | | | **%s** "
                 "| | | | | |" % (
                     label, fmt(r["cpu_vs_curl"]), fmt(r["cpu_vs_wrk"]),
                     fmt(r["cpu_vs_floor"]), fmt(r.get("cpu_vs_floor_llhttp")),
                     fmt(r["clock_reads_vs_curl"], 3)))
        L.append("| %s | floor-llhttp / floor | | %s | | | | | | | | | |" % (
            label, fmt(r.get("floor_llhttp_vs_floor"))))
    L.append("")
    L.append("## Instructions, socket scaling, pool contention")
    L.append("")
    i = out["instructions_per_req"]
    L.append("- instructions per request (callgrind, T=1 C=16, difference of "
             "two runs): libxfer %s, libcurl %s, ratio %s; the floor "
             "client %s, with llhttp %s" % (
                 fmt(i.get("xfer-shared"), 0), fmt(i.get("curl"), 0),
                 fmt(i.get("ratio_vs_curl")), fmt(i.get("floor"), 0),
                 fmt(i.get("floor-llhttp"), 0)))
    s = out["socket_scaling"]
    if "failed" in s:
        L.append("- socket scaling: failed: %s" % s["failed"])
    else:
        L.append("- CPU per fast request with 10 held transfers %s us, with "
                 "10,000 held %s us (medians): ratio %s, the median of %s "
                 "paired runs (each pair back to back, in alternating "
                 "order)" % (
                     fmt(s[10]["cpu_us_per_fast_req"]),
                     fmt(s[10000]["cpu_us_per_fast_req"]), fmt(s["ratio"]),
                     s.get("pairs", "?")))
    p = out["pool_contention"]
    if "failed" in p:
        L.append("- pool contention: failed: %s" % p["failed"])
    else:
        L.append("- pool contention, 4 threads on one destination: lock hold "
                 "p50 %s ns, p99 %s ns, max %s ns (bucket tops); trylock "
                 "failures %s of %s acquisitions (%s%%)" % (
                     fmt(p["hold_ns_p50"], 0), fmt(p["hold_ns_p99"], 0),
                     fmt(p["hold_ns_max"], 0), p["trylock_failures"],
                     p["lock_acquisitions"],
                     fmt(100 * p["trylock_failure_rate"], 3)))
    m = p.get("many_destinations", {})
    if "failed" in m:
        L.append("- pool with 100,000 destinations: failed: %s" % m["failed"])
    elif m:
        L.append("- pool contention, 4 threads over %s destinations with a "
                 "total limit of %s (%s connections closed for room): lock "
                 "hold p50 %s ns, p99 %s ns, max %s ns; trylock failures "
                 "%s%%" % (
                     "{:,}".format(m["destinations"]),
                     "{:,}".format(m["max_total"]),
                     "{:,}".format(m["closed_for_room"]),
                     fmt(m["hold_ns_p50"], 0), fmt(m["hold_ns_p99"], 0),
                     fmt(m["hold_ns_max"], 0),
                     fmt(100 * m["trylock_failure_rate"], 3)))
    L.append("")
    L.append("## Targets")
    L.append("")
    L.append("\"Issue\" says which asked for it: the performance-to-the-floor "
             "issue (19), or an earlier one (the 0.5x of libcurl is the "
             "first performance issue's).")
    L.append("")
    L.append("| target | value | met | issue |")
    L.append("| --- | ---: | :---: | :---: |")
    for t in out["targets"]:
        value = fmt(t["value"], 3)
        if t.get("interval_95"):
            lo, hi = t["interval_95"]
            value += " (median of %d pairs; 95%%: %s to %s)" % (
                t["pairs"], fmt(lo, 3), fmt(hi, 3))
        met = "yes" if t["met"] else "**no**"
        if t.get("spans_bound"):
            met += " (its 95% interval spans the bound)"
        L.append("| %s | %s | %s | %s |" % (
            t["target"], value, met,
            "19" if t["target"].startswith(FLOOR_ISSUE_TARGETS) else
            "earlier"))
    L.append("")
    L.extend(floor_spread(out))
    missed = [t["target"] for t in out["targets"] if not t["met"]]
    if missed:
        L.append("## Why a target is missed")
        L.append("")
        L.extend(why_missed(out, missed))
        L.append("")
    return "\n".join(L)


def floor_spread(out):
    """The floor ratios of the T=1 C=16 100 B cell with the 95% interval
    of each median: how much the median moves within this session. It is
    no bound on another session, whose medians of the same code have
    differed by more (docs/internals/performance.md)."""
    cell = out["cells"][0]
    spans = cell.get("ratio_intervals") or {}
    r = cell["ratios"]
    rows = []
    for key, what in (("cpu_vs_floor", "libxfer / floor"),
                      ("floor_llhttp_vs_floor", "floor-llhttp / floor"),
                      ("cpu_vs_floor_llhttp", "libxfer / floor-llhttp")):
        if r.get(key) is not None and spans.get(key):
            rows.append("%s %s (95%%: %s to %s)" % (
                what, fmt(r[key], 3), fmt(spans[key][0], 3),
                fmt(spans[key][1], 3)))
    if not rows:
        return []
    return ["The floor ratios at T=1 C=16 100 B, medians of %d pairs with "
            "the 95%% bootstrap interval of each median: %s. The intervals "
            "are this session's alone (its pairs resampled): runs of the "
            "same code on other days have differed by more." % (
                cell.get("floor_pairs", 0), "; ".join(rows)), ""]


def why_missed(out, missed):
    """The figures of this run that explain each missed target; what the
    run cannot show (which code the instructions are spent in) is in
    docs/internals/performance.md."""
    L = []
    i = out["instructions_per_req"]
    x, f = i.get("xfer-shared"), i.get("floor")
    first = out["cells"][0]["clients"]
    for target in missed:
        if target.startswith("instructions/req") and x and f:
            L.append("- %s: libxfer takes %s instructions a request, the "
                     "floor client's whole process %s. Where libxfer's go "
                     "(llhttp's share, ours, libc's), by a callgrind "
                     "profile: docs/internals/performance.md." % (
                         target, fmt(x, 0), fmt(f, 0)))
        elif target.startswith("CPU/req <= 1.10x the floor") and x and f:
            xs, fs = first["xfer-shared"], first["floor"]
            r = out["cells"][0]["ratios"]
            line = ("- %s: both make about as many system calls a request "
                    "(libxfer %s, the floor %s, counted under strace, "
                    "which slows both; epoll_wait in the CPU runs: %s and "
                    "%s), and libxfer runs %s instructions a request "
                    "against the floor's %s (T=1 C=16): the gap is in "
                    "user-space work (docs/internals/performance.md "
                    "measures the user and system time apart)." % (
                        target, fmt(xs["syscalls_per_req"]),
                        fmt(fs["syscalls_per_req"]),
                        fmt(xs["epoll_waits_per_req"]),
                        fmt(fs["epoll_waits_per_req"]), fmt(x, 0),
                        fmt(f, 0)))
            if r.get("floor_llhttp_vs_floor") and \
                    r.get("cpu_vs_floor_llhttp"):
                line += (" The floor with llhttp costs %s of the floor "
                         "(the parser the brief fixes), and libxfer %s of "
                         "that client (libxfer's own work: event tracking, "
                         "pool, timers, timeline, API)." % (
                             fmt(r["floor_llhttp_vs_floor"], 3),
                             fmt(r["cpu_vs_floor_llhttp"], 3)))
            span = (out["cells"][0].get("ratio_intervals") or {}).get(
                "cpu_vs_floor")
            if span and span[0] <= 1.10:
                line += (" This session's 95%% interval of the median (%s "
                         "to %s) reaches under 1.10; sessions on other "
                         "days move by more than it shows." % (
                             fmt(span[0], 3), fmt(span[1], 3)))
            L.append(line)
        elif target.startswith("CPU/req <= 0.5x libcurl"):
            L.append(why_libcurl(out, target))
        else:
            L.append("- %s: this run does not say why; see the figures "
                     "above and the issue's notes." % target)
    return L


def why_libcurl(out, target):
    """libxfer / libcurl over 0.5: libcurl's user time is many times
    libxfer's, but the kernel's part of a request, about the same for
    both, is most of libxfer's CPU."""
    for cell in out["cells"]:
        label = "T=%d C=%d %s" % (cell["threads"], cell["per_thread"],
                                  cell["body"])
        if not target.endswith(", " + label):
            continue
        x, c = cell["clients"]["xfer-shared"], cell["clients"]["curl"]
        keys = ("user_us_per_req", "sys_us_per_req", "epoll_waits_per_req")
        if any(x.get(k) is None or c.get(k) is None for k in keys):
            break
        return ("- %s: libcurl's user time a request is %s us against "
                "libxfer's %s, but the kernel's is %s us against %s: "
                "libcurl, slower, finds more answers ready at each wait "
                "(%s epoll_wait a request against libxfer's %s), and the "
                "kernel's part, most of either client's CPU on this "
                "machine, does not halve with the user time." % (
                    target, fmt(c["user_us_per_req"]),
                    fmt(x["user_us_per_req"]), fmt(c["sys_us_per_req"]),
                    fmt(x["sys_us_per_req"]), fmt(c["epoll_waits_per_req"]),
                    fmt(x["epoll_waits_per_req"])))
    return ("- %s: this run does not say why; see the figures above and "
            "the issue's notes." % target)


if __name__ == "__main__":
    main()
