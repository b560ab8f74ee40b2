"""Parsers of the load tools' output (wrk, h2load), the median [min–max] format,
and the one-line summaries of a measurement and of meshgate's own counters."""
from __future__ import annotations

import re
import statistics



# ---------------------------------------------------------------------------
# The load tools' output
# ---------------------------------------------------------------------------

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
_UNIT_B = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


def parse_wrk(out: str) -> dict:
    r: dict = {}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", out, re.M)
    if m:
        r["requests"] = int(m.group(1))
        r["bytes"] = float(m.group(4)) * _UNIT_B.get(m.group(5), 1)
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"^Transfer/sec:\s+([\d.]+)(\w+)", out, re.M)
    if m:
        r["mib_s"] = float(m.group(1)) * _UNIT_B.get(m.group(2), 1) / 1024 ** 2
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
        if m:
            r[f"p{pct}_ms"] = float(m.group(1)) * _UNIT_MS[m.group(2)]
    m = re.search(r"^\s+Latency\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)",
                  out, re.M)
    if m:
        r["avg_ms"] = float(m.group(1)) * _UNIT_MS[m.group(2)]
        r["max_ms"] = float(m.group(5)) * _UNIT_MS[m.group(6)]
    errs = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errs += sum(int(x) for x in m.groups())
        r["socket_errors"] = m.group(0)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errs += int(m.group(1))
        r["non_2xx"] = int(m.group(1))
    r["errors"] = errs
    return r


def parse_h2load(out: str) -> dict:
    """h2load's summary: rate, request counts, status classes, request time (min/max/mean)."""
    r: dict = {}
    m = re.search(r"^finished in ([\d.]+)s, ([\d.]+) req/s, ([\d.]+)(\w+)/s", out, re.M)
    if m:
        r["elapsed_s"] = float(m.group(1))
        r["rps"] = float(m.group(2))
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out, re.M)
    if m:
        total, _started, done, ok, failed, errored, timeout = (int(x) for x in m.groups())
        r.update(requests=ok, requests_done=done, failed=failed, errored=errored, timeouts=timeout)
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    if m:
        r["non_2xx"] = sum(int(x) for x in m.groups()[1:])
    m = re.search(r"^time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)",
                  out, re.M)
    if m:
        r["min_ms"] = float(m.group(1)) * _UNIT_MS[m.group(2)]
        r["max_ms"] = float(m.group(3)) * _UNIT_MS[m.group(4)]
        r["mean_ms"] = float(m.group(5)) * _UNIT_MS[m.group(6)]
    m = re.search(r"^Application protocol: (\S+)", out, re.M)
    if m:
        r["alpn"] = m.group(1)
    r["errors"] = r.get("failed", 0) + r.get("errored", 0) + r.get("timeouts", 0) + r.get("non_2xx", 0)
    return r


def median_range(v: list[float], fmt: str) -> str:
    if not v:
        return "–"
    s = fmt.format(statistics.median(v))
    if len(v) > 1:
        s += f" [{fmt.format(min(v))}–{fmt.format(max(v))}]"
    return s


def mg_summary(metrics: str) -> str:
    hs: dict = {}
    fails = []
    non200 = []
    for line in metrics.splitlines():
        if line.startswith("meshgate_tls_handshakes_total{"):
            m = dict(re.findall(r'(\w+)="([^"]*)"', line))
            k = f"{m.get('direction')} {m.get('version')} {m.get('group')} resumed={m.get('resumed')}"
            hs[k] = hs.get(k, 0) + float(line.rsplit(" ", 1)[1])
        elif line.startswith("meshgate_tls_handshake_failures_total{"):
            fails.append(line)
        elif line.startswith("istio_requests_total{") and 'response_code="200"' not in line:
            non200.append(line)
    s = "meshgate's own counters at the end (since its last restart, in the mem scenario): handshakes " + "; ".join(f"{k}: {v:,.0f}" for k, v in sorted(hs.items()))
    if fails:
        s += "\n\nmeshgate handshake failures: " + "; ".join(f"`{x}`" for x in fails[:10])
    if non200:
        s += "\n\nmeshgate non-200 requests: " + "; ".join(f"`{x}`" for x in non200[:10])
    return s


def summary(r: dict) -> str:
    if r.get("tool_error"):
        return "TOOL ERROR " + r["tool_error"].strip().replace("\n", " | ")[-200:]
    sc = r["scenario"]
    bits = []
    if sc == "mem":
        bits.append(f"rss {r.get('rss_before_kib', 0)/1024:.1f}→{r.get('rss_held_kib', 0)/1024:.1f} MiB, "
                    f"{r.get('kib_per_conn', 0):.1f} KiB/conn, opened {r.get('opened')}, alive {r.get('alive')}")
    elif sc == "term-hs":
        bits.append(f"{r.get('rate', 0):,.0f} hs/s p50 {r.get('p50_ms') or 0:.2f} ms p99 {r.get('p99_ms') or 0:.2f} ms "
                    f"full/resumed client {r.get('full_handshakes')}/{r.get('resumed_handshakes')} "
                    f"server {r.get('server_full')}/{r.get('server_resumed')}")
    elif sc == "term-1m":
        bits.append(f"{r.get('mib_s', 0):,.0f} MiB/s p50 {r.get('p50_ms', 0):.1f} ms")
    elif sc == "term-h2":
        bits.append(f"{r.get('rps', 0):,.0f} req/s mean {r.get('mean_ms') or 0:.2f} ms max {r.get('max_ms') or 0:.2f} ms")
    elif sc == "ka-10k":
        bits.append(f"window {r.get('window_rps') or 0:,.0f} req/s ({r.get('window_requests')} in "
                    f"{r.get('window_s') or 0:.1f} s) after a {r.get('ramp_s') or 0:.1f} s ramp, "
                    f"{r.get('handshakes_at_window')} handshakes done, {r.get('handshakes_in_window')} in the "
                    f"window; wrk {r.get('rps', 0):,.0f} req/s "
                    f"p99 {r.get('p99_ms') or 0:.1f} ms")
    else:
        bits.append(f"{r.get('rps', 0):,.0f} req/s p50 {r.get('p50_ms', 0):.3f} ms p99 {r.get('p99_ms', 0):.3f} ms")
        if sc == "term-hs-wrk":
            bits.append(f"server-seen full/resumed {r.get('server_full')}/{r.get('server_resumed')}")
    if r.get("cpu_us_per_req") is not None:
        bits.append(f"cpu {r['cpu_us_per_req']:.1f} µs/req (user {r.get('user_us_per_req', 0):.1f} "
                    f"sys {r.get('sys_us_per_req', 0):.1f})")
    if r.get("cpu_us_per_mib") is not None:
        bits.append(f"cpu {r['cpu_us_per_mib']:.0f} µs/MiB")
    bits.append(f"host busy {r.get('host_busy', 0)*100:.0f}% steal {r.get('host_steal', 0)*100:.1f}%")
    if r.get("errors"):
        bits.append(f"ERRORS {r['errors']}")
    return ", ".join(bits)
