#!/usr/bin/env python3
"""Write build/symbol-order.txt: the functions meshgate runs while it starts
and while it serves, for the linker to lay out first (see build.rs).

    bench/symbol_order.py [--meshgate-bin target/release/meshgate]

Runs a release build under valgrind's callgrind with the bench's
configuration, bootstrap file and backend (nginx): once it is ready and
quiet, its counters are dumped ("start"); then a few requests of every
kind the bench measures (TLS and mutual TLS termination over HTTP/1.1 and
HTTP/2, TLS and mutual TLS origination, the admin and stats endpoints) are
made and the counters dumped again ("serve"). The order file lists the
functions that ran in both, then those that ran only while starting, then
those that ran only while serving, each group sorted by name: a proxy that
has started maps the first two groups and a proxy that serves the first
and the last, with the least code of the other group in between.

Valgrind's virtual CPU lacks some of the real one's features, and aws-lc
picks its assembly by them, so five more runs on the real CPU are sampled
with perf (at 20 kHz) where perf is installed, and what they saw is added
to the same groups; of aws-lc's s2n-bignum pairs (`X` for CPUs with BMI2
and ADX, `X_alt` for the rest) both are listed where either ran.

Names are the binary's own (mangled) symbols; they stay the same from one
build to the next while the compiler, the dependencies, the features, the
release profile and the function do, so the file needs making again after
a compiler or dependency upgrade, and is worth making again after large
changes to the code.

Needs valgrind, nginx, curl and openssl (perf optional). Python 3 standard
library only.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CLK_TCK, HOST, REPO, log  # noqa: E402
from confs import make_certs, meshgate_conf, nginx_backend_conf  # noqa: E402
from procinfo import CHILDREN, free_ports, http_get, tail, wait_tcp  # noqa: E402

ORDER_FILE = os.path.join(REPO, "build", "symbol-order.txt")
HEADER = """\
# Functions laid out first in a release build (build.rs), made by
# bench/symbol_order.py: those meshgate ran both while starting and while
# serving, then those it ran only while starting, then those it ran only
# while serving. Generated; do not edit.
"""


def text_symbols(binary: str) -> set[str]:
    out = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout
    return {p[2] for p in (line.split() for line in out.splitlines()) if len(p) == 3 and p[1] in "tT"}


def functions_in(dump: str) -> set[str]:
    """Functions with a cost in one callgrind dump (written with
    --compress-strings=no, so every `fn=` line carries the name)."""
    names = set()
    with open(dump, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                names.add(line[3:].strip())
    return names


def curl(*argv: str) -> None:
    """curl with these options and URLs (every `http…` argument); each must answer 200."""
    args: list[str] = []
    for arg in argv:
        args += ["-o", "/dev/null", arg] if arg.startswith("http") else [arg]
    urls = sum(1 for arg in argv if arg.startswith("http"))
    r = subprocess.run(["curl", "-sS", "-w", "%{http_code}", "--max-time", "30", *args],
                       capture_output=True, text=True)
    if r.stdout != "200" * urls:
        raise RuntimeError(f"curl {' '.join(argv)}: {r.stdout} {r.stderr.strip()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meshgate-bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR",
                                                                          os.path.join(REPO, "target")),
                                                           "release", "meshgate"))
    ap.add_argument("--out", default=ORDER_FILE)
    a = ap.parse_args()
    missing = [t for t in ("valgrind", "callgrind_control", "nginx", "curl", "openssl", "nm")
               if not shutil.which(t)]
    if missing:
        print(f"missing tools: {' '.join(missing)}", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="meshgate-order-")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        return generate(a, work)
    finally:
        CHILDREN.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def generate(a, work: str) -> int:
    certs = make_certs(os.path.join(work, "certs"), rsa=False)
    names = ["be_plain", "be_tls", "be_mtls", "be_status", "term", "term_mtls", "out", "admin", "stats", "ready"]
    p = dict(zip(names, free_ports(len(names))))
    backend = os.path.join(work, "backend")
    os.makedirs(os.path.join(backend, "html"))
    with open(os.path.join(backend, "nginx.conf"), "w") as f:
        f.write(nginx_backend_conf(backend, p, certs, os.path.join(backend, "html")))
    be = CHILDREN.start("backend", ["nginx", "-p", backend, "-c", "nginx.conf"], os.path.join(backend, "out.log"))
    for k in ("be_plain", "be_tls", "be_mtls"):
        if not wait_tcp(p[k], be):
            raise RuntimeError(f"backend nginx did not come up: {tail(os.path.join(backend, 'error.log'), 20)}")

    conf = os.path.join(work, "meshgate")
    os.makedirs(conf)
    with open(os.path.join(conf, "bench.yaml"), "w") as f:
        f.write(meshgate_conf(p, certs))
    # As the bench starts it: a bootstrap file is read at start too.
    bootstrap = os.path.join(work, "bootstrap.yaml")
    with open(bootstrap, "w") as f:
        f.write("handshakeTimeout: 60s\n")
    run = ["run", "-c", conf, "--bootstrap", bootstrap,
           "--port-map", f"443=127.0.0.1:{p['term']}", "--port-map", f"8443=127.0.0.1:{p['term_mtls']}",
           "--inbound-bind", "127.0.0.1", "--outbound-addr", f"127.0.0.1:{p['out']}",
           "--admin-addr", f"127.0.0.1:{p['admin']}", "--stats-addr", f"127.0.0.1:{p['stats']}",
           "--ready-addr", f"127.0.0.1:{p['ready']}", "--log-level", "warn", "--concurrency", "2"]

    def traffic() -> None:
        resolve = ["--connect-to", f"{HOST}:443:127.0.0.1:{p['term']}"]
        mtls = ["--connect-to", f"{HOST}:8443:127.0.0.1:{p['term_mtls']}",
                "--cert", certs["client"], "--key", certs["client_key"]]
        for _ in range(3):
            curl("--cacert", certs["ca"], *resolve, "--http1.1", f"https://{HOST}/")
            curl("--cacert", certs["ca"], *resolve, "--http2", f"https://{HOST}/", f"https://{HOST}/")
            curl("--cacert", certs["ca"], *mtls, f"https://{HOST}:8443/")
            curl("-H", f"Host: {HOST}", f"http://127.0.0.1:{p['out']}/", f"http://127.0.0.1:{p['out']}/")
            curl("-H", f"Host: {HOST}:81", f"http://127.0.0.1:{p['out']}/")
            curl(f"http://127.0.0.1:{p['stats']}/stats/prometheus")
            curl(f"http://127.0.0.1:{p['admin']}/stats/prometheus")
            curl(f"http://127.0.0.1:{p['ready']}/healthz/ready")
        time.sleep(1)

    # Every function that runs, under callgrind.
    prefix = os.path.join(work, "callgrind.out")
    mg = launch(["valgrind", "--tool=callgrind", f"--callgrind-out-file={prefix}", "--dump-instr=no",
                 "--compress-strings=no", "--compress-pos=no", "--demangle=no", a.meshgate_bin, *run],
                p["ready"], os.path.join(work, "callgrind.log"))
    # What a proxy does just after it is ready (connections it opens ahead
    # of requests, timers) belongs to starting too: wait for it to go quiet.
    settle(mg.pid)
    dump(mg.pid, "start")
    traffic()
    dump(mg.pid, "serve")
    os.killpg(mg.pid, signal.SIGTERM)
    mg.wait(timeout=120)
    start = dumps(prefix, "start")
    serve = dumps(prefix, "serve")

    # aws-lc picks its assembly by the CPU's features, and valgrind's
    # virtual CPU lacks some of this one's: sample a run on the real CPU
    # too (perf, where it is installed) for the variants that only it runs.
    if shutil.which("perf"):
        # Five runs: a function that runs for microseconds at start is
        # seldom sampled in one.
        for i in range(5):
            data = os.path.join(work, f"perf{i}.data")
            mg = launch(["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-F", "20000", "-o", data,
                         "--", a.meshgate_bin, *run], p["ready"], os.path.join(work, "perf.log"))
            time.sleep(1)
            started = time.monotonic()
            traffic()
            os.killpg(mg.pid, signal.SIGINT)
            mg.wait(timeout=120)
            out = subprocess.run(["perf", "script", "-i", data, "-F", "time,ip,sym", "--no-demangle"],
                                 capture_output=True, text=True).stdout
            for line in out.splitlines():
                at, _, rest = line.strip().partition(":")
                fields = rest.split()  # address, symbol
                if len(fields) == 2 and at.replace(".", "").isdigit():
                    (start if float(at) < started else serve).add(fields[1])
    else:
        log("perf not found: the list has only what ran under callgrind")

    syms = text_symbols(a.meshgate_bin)
    # The same for aws-lc's s2n-bignum routines, which come in pairs (`X`
    # for CPUs with BMI2 and ADX, `X_alt` for the rest): list both of a
    # pair where either ran.
    for ran in (start, serve):
        ran |= {n[:-4] if n.endswith("_alt") else n + "_alt" for n in ran} & syms
    groups = {
        "both while starting and serving": sorted(start & serve & syms),
        "only while starting": sorted((start - serve) & syms),
        "only while serving": sorted((serve - start) & syms),
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(HEADER)
        for names in groups.values():
            f.write("".join(s + "\n" for s in names))
    size = symbol_sizes(a.meshgate_bin)
    log(f"wrote {a.out}: " + ", ".join(f"{len(names):,} functions {what} ({sum(size.get(s, 0) for s in names) >> 10} KiB)"
                                       for what, names in groups.items())
        + f", of {sum(size.values()) >> 20} MiB of code")
    return 0


def layout(binary: str, order_file: str = ORDER_FILE) -> str:
    """How much of the order file a binary follows: the functions it names
    that the binary has, and the span of code they occupy (about their total
    size when laid out first, most of the binary when not)."""
    try:
        with open(order_file) as f:
            names = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        out = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        return f"code layout unknown: {e}"
    where = {}  # name: (address, size); assembly labels have no size
    for p in (line.split() for line in out.splitlines()):
        if len(p) == 4 and p[2] in "tT":
            where[p[3]] = (int(p[0], 16), int(p[1], 16))
        elif len(p) == 3 and p[1] in "tT":
            where[p[2]] = (int(p[0], 16), 0)
    found = [where[n] for n in names if n in where]
    if not found:
        return f"code layout: none of the {len(names):,} functions in build/symbol-order.txt found"
    span = max(a + n for a, n in found) - min(a for a, _ in found)
    size = sum(n for _, n in found)
    text = (f"code layout: {len(found):,} of {len(names):,} functions in build/symbol-order.txt found, "
            f"{size / 2**20:.1f} MiB of code spread over {span / 2**20:.1f} MiB")
    if len(found) < 0.9 * len(names) or span > 1.5 * size:
        text += (" (NOT FOLLOWED: the list is stale or the linker did not get it; idle RSS is higher; "
                 "see bench/README.md, Code layout)")
    return text


def launch(argv: list[str], ready_port: int, log_path: str) -> subprocess.Popen:
    """Start meshgate (under a tool) and wait for its readiness endpoint."""
    mg = CHILDREN.start("meshgate", argv, log_path)
    deadline = time.monotonic() + 300
    while True:
        try:
            if http_get(f"http://127.0.0.1:{ready_port}/healthz/ready", 2)[0] == 200:
                return mg
        except OSError:
            pass
        if mg.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{argv[0]} meshgate did not become ready:\n{tail(log_path, 30)}")
        time.sleep(0.5)


def settle(pid: int, timeout: float = 120) -> None:
    """Wait until the process has used under 20 ms of CPU in each of three
    seconds in a row (callgrind runs it some fifty times slower)."""
    def cpu() -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    deadline = time.monotonic() + timeout
    quiet, last = 0, cpu()
    while quiet < 3 and time.monotonic() < deadline:
        time.sleep(1)
        now = cpu()
        quiet = quiet + 1 if now - last < 0.02 else 0
        last = now


def dump(pid: int, name: str) -> None:
    """Write callgrind's counters so far to a dump named `name`, and zero them."""
    r = subprocess.run(["callgrind_control", f"--dump={name}", str(pid)], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"callgrind_control --dump={name}: {r.stdout} {r.stderr}")


def dumps(prefix: str, name: str) -> set[str]:
    """Functions in the dumps whose trigger was `name` (one per thread at most)."""
    names: set[str] = set()
    for path in glob.glob(prefix + "*"):
        with open(path, errors="replace") as f:
            head = f.read(4096)
        if f"\ndesc: Trigger: dump {name}\n" in head:
            names |= functions_in(path)
    if not names:
        raise RuntimeError(f"no callgrind dump named {name} under {prefix}*")
    return names


def symbol_sizes(binary: str) -> dict[str, int]:
    out = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True, text=True, check=True).stdout
    return {p[3]: int(p[1], 16) for p in (line.split() for line in out.splitlines()) if len(p) == 4 and p[2] in "tT"}


if __name__ == "__main__":
    sys.exit(main())
