"""Constants shared by the bench modules (paths, the test host name, proxies and
scenarios) and the bench's log line."""
from __future__ import annotations

import os
import sys
import time



BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
TOOLS = os.path.join(BENCH_DIR, "tools")
HOST = "bench.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

PROXIES = ["meshgate", "nginx", "haproxy"]
# Scenario order inside one run. "direct" only takes part where it makes sense.
SCENARIOS = ["term-ka", "term-lat", "term-hs", "term-hs-wrk", "term-mtls", "orig-ka", "orig-lat",
             "orig-mtls", "term-1m", "term-h2", "floor", "ka-10k", "mem", "config-scale"]
# ka-10k (10,000 active TLS connections) runs with --10k, --smoke or when named in --scenarios
DEFAULT_SCENARIOS = [s for s in SCENARIOS if s != "ka-10k"]
DIRECT_SCENARIOS = {"term-ka", "term-lat", "term-1m", "floor"}
# run once after the interleaved runs, not per proxy (meshgate only)
SPECIAL_SCENARIOS = {"config-scale"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
