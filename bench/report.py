"""The Markdown report: tool and host versions, the comparison table and its notes,
as methods of the Bench class (ReportMixin)."""
from __future__ import annotations

import datetime as dt
import os
import platform
import re
import ssl
import statistics
import subprocess

from common import DIRECT_SCENARIOS, PROXIES, REPO
from parsing import mg_summary



class ReportMixin:
    """Bench methods that render the results as Markdown."""

    # ----- report -----

    def versions(self) -> dict:
        def first_line(argv):
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
                return (r.stdout + r.stderr).strip().splitlines()[0]
            except (OSError, IndexError, subprocess.TimeoutExpired):
                return "?"
        git = lambda *x: subprocess.run(["git", "-C", REPO, *x], capture_output=True, text=True).stdout.strip()
        dirty = git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock")
        cpu_model = "?"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        cpu_model = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        return {
            "meshgate": f"{git('rev-parse', '--short', 'HEAD')}{' + uncommitted src changes' if dirty else ''}"
                        f" ({self.args.meshgate_bin}, built "
                        f"{dt.datetime.fromtimestamp(os.path.getmtime(self.args.meshgate_bin)):%Y-%m-%d %H:%M})",
            "nginx": first_line(["nginx", "-v"]),
            "haproxy": first_line(["haproxy", "-v"]),
            "wrk": first_line(["wrk", "-v"]),
            "openssl": first_line(["openssl", "version"]),
            "python": f"{platform.python_version()} ({ssl.OPENSSL_VERSION})",
            "kernel": platform.release(),
            "cpu": f"{os.cpu_count()} × {cpu_model}",
        }

    def report(self) -> str:
        a = self.args
        order = [n for n in PROXIES + ["direct"] if n in self.proxies]
        by: dict[tuple[str, str], list[dict]] = {}
        for r in self.results:
            if not r.get("skipped"):
                by.setdefault((r["proxy"], r["scenario"]), []).append(r)

        def vals(proxy, sc, key):
            return [r[key] for r in by.get((proxy, sc), []) if r.get(key) is not None]

        def med(proxy, sc, key):
            v = vals(proxy, sc, key)
            return statistics.median(v) if v else None

        rows = []
        # (scenario, metric label, key, format, higher_is_better, show added-over-direct)
        spec = [
            ("term-ka", "req/s", "rps", "{:,.0f}", True),
            ("term-ka", "p50 / p99 ms", ("p50_ms", "p99_ms"), "{:.2f}", False),
            ("term-ka", "proxy CPU µs/req", "cpu_us_per_req", "{:.1f}", False),
            ("term-lat", "p50 ms (c=1)", "p50_ms", "{:.3f}", False),
            ("term-lat", "added p50 over direct, µs", "added_p50_us", "{:.0f}", False),
            ("term-lat", "p99 ms (c=1)", "p99_ms", "{:.3f}", False),
            ("term-lat", "proxy CPU µs/req", "cpu_us_per_req", "{:.1f}", False),
            ("term-hs", "full handshakes/s", "rate", "{:,.0f}", True),
            ("term-hs", "p50 / p99 ms per connection", ("p50_ms", "p99_ms"), "{:.2f}", False),
            ("term-hs", "proxy CPU µs/handshake", "cpu_us_per_req", "{:.0f}", False),
            ("term-hs", "resumed: client-seen / server-seen", ("resumed_handshakes", "server_resumed"),
             "{:.0f}", None),
            ("term-hs-wrk", "full handshakes/s (= req/s)", "rps", "{:,.0f}", True),
            ("term-hs-wrk", "p50 / p99 ms (request only, after the handshake)", ("p50_ms", "p99_ms"), "{:.2f}", False),
            ("term-hs-wrk", "proxy CPU µs/handshake", "cpu_us_per_req", "{:.0f}", False),
            ("term-hs-wrk", "server-seen full / resumed", ("server_full", "server_resumed"), "{:.0f}", None),
            ("term-mtls", "req/s", "rps", "{:,.0f}", True),
            ("term-mtls", "p50 / p99 ms", ("p50_ms", "p99_ms"), "{:.2f}", False),
            ("term-mtls", "proxy CPU µs/req", "cpu_us_per_req", "{:.1f}", False),
            ("orig-ka", "req/s", "rps", "{:,.0f}", True),
            ("orig-ka", "p50 / p99 ms", ("p50_ms", "p99_ms"), "{:.2f}", False),
            ("orig-ka", "proxy CPU µs/req", "cpu_us_per_req", "{:.1f}", False),
            ("orig-lat", "p50 ms (c=1)", "p50_ms", "{:.3f}", False),
            ("orig-lat", "added p50 over direct (plain), µs", "added_p50_us", "{:.0f}", False),
            ("orig-lat", "p99 ms (c=1)", "p99_ms", "{:.3f}", False),
            ("orig-mtls", "req/s", "rps", "{:,.0f}", True),
            ("orig-mtls", "p50 / p99 ms", ("p50_ms", "p99_ms"), "{:.2f}", False),
            ("orig-mtls", "proxy CPU µs/req", "cpu_us_per_req", "{:.1f}", False),
            ("term-1m", "MiB/s", "mib_s", "{:,.0f}", True),
            ("term-1m", "p50 / p99 ms", ("p50_ms", "p99_ms"), "{:.1f}", False),
            ("term-1m", "proxy CPU µs/MiB", "cpu_us_per_mib", "{:.0f}", False),
            ("term-h2", "req/s (× HAProxy)", "rps", "{:,.0f}", True, "haproxy"),
            ("term-h2", "mean / max ms per request", ("mean_ms", "max_ms"), "{:.2f}", False),
            ("term-h2", "proxy CPU µs/req (× HAProxy)", "cpu_us_per_req", "{:.1f}", False, "haproxy"),
            ("floor", "req/s (HAProxy mode tcp, no TLS; direct = no relay)", "rps", "{:,.0f}", True),
            ("floor", "p50 / p99 ms", ("p50_ms", "p99_ms"), "{:.2f}", False),
            ("floor", "relay CPU µs/req (direct: the backend's)", "cpu_us_per_req", "{:.1f}", None),
            ("ka-10k", f"req/s, steady window ({a.k10_conns:,} conns)", "window_rps", "{:,.0f}", True),
            ("ka-10k", "p50 / p99 ms (whole run, ramp included)", ("p50_ms", "p99_ms"), "{:.1f}", False),
            ("ka-10k", "proxy CPU µs/req, steady window", "cpu_us_per_req", "{:.1f}", False),
            ("ka-10k", "CPU µs/req ÷ term-ka's (64 conns)", "cpu_vs_64", "{:.2f}", False),
            ("ka-10k", "proxy CPU in the window, cores", "window_proxy_cores", "{:.2f}", None),
            ("ka-10k", "errors (wrk socket errors + non-2xx)", "errors", "{:,.0f}", None),
            ("ka-10k", "wrk handshakes done at window start / ramp s", ("handshakes_at_window", "ramp_s"),
             "{:,.0f}", None),
            ("ka-10k", "wrk handshakes during the window (reconnections)", "handshakes_in_window", "{:,.0f}", None),
            ("mem", "RSS idle, fresh process, MiB", "rss_before_mib", "{:.1f}", False),
            ("mem", "PSS idle, fresh process, MiB", "pss_before_mib", "{:.1f}", False),
            ("mem", "anonymous RSS idle (RssAnon: no mapped files), MiB", "anon_before_mib", "{:.1f}", False),
            ("mem", f"RSS with {a.conns} idle TLS conns, MiB", "rss_held_mib", "{:.1f}", False),
            ("mem", "KiB per idle TLS conn (RSS)", "kib_per_conn", "{:.1f}", False),
            ("mem", "KiB per idle TLS conn (PSS)", "pss_kib_per_conn", "{:.1f}", False),
            ("mem", "RSS after the load scenarios (before restart), MiB", "rss_after_load_mib", "{:.1f}", False),
            ("mem", f"conns still open at measurement (of {a.conns})", "alive", "{:.0f}", None),
        ]
        # every CPU figure is followed by its user and kernel (sys) parts
        split_spec = []
        for row in spec:
            split_spec.append(row)
            if row[2] in ("cpu_us_per_req", "cpu_us_per_mib"):
                unit = "MiB" if row[2] == "cpu_us_per_mib" else ("handshake" if row[0].startswith("term-hs")
                                                                 else "req")
                part = row[2].replace("cpu_us_", "")
                ref = row[5] if len(row) > 5 else "nginx"
                better = None if row[4] is None else False
                split_spec.append((row[0], f"… user µs/{unit}", f"user_us_{part}", row[3], better, ref))
                split_spec.append((row[0], f"… sys µs/{unit}", f"sys_us_{part}", row[3], better, ref))
        spec = split_spec
        # derived per-run values
        direct_p50 = med("direct", "term-lat", "p50_ms")
        for (pname, sc), recs in by.items():
            ka64 = med(pname, "term-ka", "cpu_us_per_req")
            for r in recs:
                if sc == "ka-10k" and ka64 and r.get("cpu_us_per_req") is not None:
                    r["cpu_vs_64"] = r["cpu_us_per_req"] / ka64
        for (pname, sc), recs in by.items():
            for r in recs:
                if sc in ("term-lat", "orig-lat") and direct_p50 is not None and r.get("p50_ms") is not None \
                        and pname != "direct":
                    r["added_p50_us"] = (r["p50_ms"] - direct_p50) * 1000
                if sc == "mem" and r.get("rss_held_kib") is not None:
                    r["rss_before_mib"] = r["rss_before_kib"] / 1024
                    r["pss_before_mib"] = r["pss_before_kib"] / 1024
                    r["anon_before_mib"] = r.get("anon_before_kib", 0) / 1024
                    r["rss_held_mib"] = r["rss_held_kib"] / 1024
                    r["rss_after_load_mib"] = r["rss_after_load_kib"] / 1024

        def cell(pname, sc, key, fmt, better, ref="nginx"):
            keys = key if isinstance(key, tuple) else (key,)
            parts = []
            for k in keys:
                v = vals(pname, sc, k)
                if not v:
                    parts.append("–")
                    continue
                m = statistics.median(v)
                s = fmt.format(m)
                if len(v) > 1 and better is not None:
                    s += f" [{fmt.format(min(v))}–{fmt.format(max(v))}]"
                parts.append(s)
            if all(p == "–" for p in parts):
                recs = [r for r in self.results if r["proxy"] == pname and r["scenario"] == sc]
                if recs and all(r.get("skipped") for r in recs):
                    return "n/a (failed)"
                return "–"
            s = " / ".join(parts)
            # ratio to nginx for single-valued rows
            if len(keys) == 1 and pname not in (ref, "direct") and better is not None \
                    and keys[0] not in ("added_p50_us", "cpu_vs_64"):
                mine, ng = med(pname, sc, keys[0]), med(ref, sc, keys[0])
                if mine is not None and ng:
                    s += f" ({mine / ng:.2f}× {ref})"
            errs = sum(r.get("errors", 0) or 0 for r in by.get((pname, sc), []))
            if errs and key == spec_first_key.get(sc):
                s += f" ⚠ {errs} errors"
            return s

        spec_first_key = {}
        for sc, _l, key, *_rest in spec:
            spec_first_key.setdefault(sc, key)
        out = []
        out.append(f"# meshgate vs nginx vs HAProxy — {self.stamp}\n")
        ver = self.versions()
        out.append(f"runs {a.runs} × {a.duration:g} s per scenario, interleaved (proxy order rotated each run); "
                   f"certificates {'RSA-2048' if a.rsa else 'ECDSA P-256'}; {a.wrk_threads} wrk threads, "
                   f"{a.ka_conns} keep-alive connections; every proxy: 2 workers/threads, keep-alive both sides, "
                   "upstream verification on, no per-request logging (except the term-hs listeners of nginx "
                   "and HAProxy, which log the resumed flag).\n")
        out.append("Cells: median [min–max] over runs; (×nginx) = median ÷ nginx's median. "
                   "Lower is better except req/s, handshakes/s and MiB/s. "
                   "CPU = the proxy's own processes (utime+stime from /proc; the `… user` and `… sys` rows "
                   "split it into user-space and kernel time); for `direct` it is the backend's. "
                   "The floor rows are a plain TCP relay (HAProxy `mode tcp`, no TLS, wrk keep-alive "
                   "plain HTTP): its sys time is the kernel's loopback work that every proxy pays per request.\n")
        cols = order
        out.append("| scenario | metric | " + " | ".join(cols) + " |")
        out.append("|---|---|" + "---|" * len(cols))
        for sc, label, key, fmt, better, *ref in spec:
            if sc not in a.scenarios:
                continue
            cells = []
            for pname in cols:
                if pname == "direct" and sc not in DIRECT_SCENARIOS and sc != "orig-lat":
                    cells.append("")
                    continue
                if pname == "direct" and sc == "orig-lat":
                    cells.append("")
                    continue
                cells.append(cell(pname, sc, key, fmt, better, *ref))
            out.append(f"| {sc} | {label} | " + " | ".join(cells) + " |")
        if "config-scale" in a.scenarios:
            out.extend(self.scale_report())
        # host load
        out.append("")
        out.append("Host CPU during the scenarios (all processes, from /proc/stat), median [min–max]:\n")
        out.append("| proxy | busy % | steal % | other processes (not bench), % of machine | "
                   "proxy's own CPU, % of one core (ka scenarios) |")
        out.append("|---|---|---|---|---|")
        for pname in cols:
            recs = [r for r in self.results if r["proxy"] == pname and not r.get("skipped")
                    and r.get("host_busy") is not None and r["scenario"] != "mem"]
            if not recs:
                continue
            b = [r["host_busy"] * 100 for r in recs]
            s = [r["host_steal"] * 100 for r in recs]
            sh = [r["proxy_cpu_share"] * 100 for r in recs
                  if r.get("proxy_cpu_share") is not None and r["scenario"].endswith(("-ka", "-mtls"))]
            fo = [r["foreign_cpu_share"] * 100 for r in recs if r.get("foreign_cpu_share") is not None]
            out.append(f"| {pname} | {statistics.median(b):.0f} [{min(b):.0f}–{max(b):.0f}] | "
                       f"{statistics.median(s):.1f} [{min(s):.1f}–{max(s):.1f}] | "
                       f"{statistics.median(fo):.0f} [{min(fo):.0f}–{max(fo):.0f}] | "
                       + (f"{statistics.median(sh):.0f} [{min(sh):.0f}–{max(sh):.0f}]" if sh else "–") + " |")
        # problems
        problems = []
        for px in self.proxies.values():
            if px.dead:
                problems.append(f"- **{px.name}** is not running: {px.dead}")
            for sc, why in px.broken.items():
                problems.append(f"- **{px.name} {sc}**: probe failed, scenario skipped: `{why}`")
        for r in self.results:
            if r.get("tool_error"):
                problems.append(f"- {r['proxy']} {r['scenario']} run {r['run']}: tool error: "
                                f"`{r['tool_error'].strip()[-300:]}`")
            elif r.get("errors"):
                what = r.get("socket_errors") or r.get("error_kinds") or ""
                if r.get("non_2xx"):
                    what = f"{what} non-2xx {r['non_2xx']}"
                problems.append(f"- {r['proxy']} {r['scenario']} run {r['run']}: {r['errors']} errors {what}")
        ka_scs = [x for x in ("term-ka", "term-lat", "term-hs", "term-hs-wrk", "term-mtls", "orig-ka",
                              "orig-lat", "orig-mtls", "term-1m", "term-h2", "floor", "ka-10k")
                  if x in a.scenarios]
        if ka_scs:
            out.append("")
            out.append("Upstream connections opened per scenario run (connections the backend accepted, "
                       "from its stub_status; median [min–max]). A pooling proxy opens about as many as it has "
                       f"concurrent requests ({a.ka_conns} for the ka scenarios):\n")
            out.append("| proxy | " + " | ".join(ka_scs) + " |")
            out.append("|---|" + "---|" * len(ka_scs))
            for pname in cols:
                cells = []
                for sc in ka_scs:
                    v = vals(pname, sc, "upstream_conns_opened")
                    cells.append((f"{statistics.median(v):,.0f}" + (f" [{min(v):,}–{max(v):,}]" if len(v) > 1 else ""))
                                 if v else "")
                out.append(f"| {pname} | " + " | ".join(cells) + " |")
        out.append("")
        out.append("Processes: " + "; ".join(f"{n}: {px.layout}" for n, px in self.proxies.items()
                                             if getattr(px, "layout", "")))
        hs_recs = [r for r in self.results if r["scenario"] in ("term-hs", "term-hs-wrk")
                   and not r.get("skipped")]
        out.append("")
        out.append("Full-handshake proof (summed over runs): client = `SSLSocket.session_reused` "
                   "after each handshake (term-hs only; wrk cannot tell); server = meshgate's "
                   "`meshgate_tls_handshakes_total{direction=\"inbound\",resumed}` delta, nginx's "
                   "`$ssl_session_reused` and HAProxy's `ssl_fc_is_resumed` logged on their term-hs listener; "
                   "requests = responses the client counted (one per connection).\n")
        out.append("| scenario | proxy | requests | client: full / resumed | server: full / resumed | TLS versions |")
        out.append("|---|---|---|---|---|---|")
        for sc, pname in [(x, y) for x in ("term-hs", "term-hs-wrk") for y in cols]:
            rs = [r for r in hs_recs if r["proxy"] == pname and r["scenario"] == sc]
            if not rs:
                continue
            nreq = sum(r.get("requests", 0) or 0 for r in rs)
            cf = sum(r.get("full_handshakes", 0) for r in rs)
            cr = sum(r.get("resumed_handshakes", 0) for r in rs)
            sf = sum(r.get("server_full", 0) or 0 for r in rs)
            sr = sum(r.get("server_resumed", 0) or 0 for r in rs)
            vers: dict = {}
            for r in rs:
                for k, v in (r.get("versions") or {}).items():
                    vers[k] = vers.get(k, 0) + v
            client = f"{cf:,} / {cr:,}" if sc == "term-hs" else "–"
            out.append(f"| {sc} | {pname} | {nreq:,} | {client} | {sf:,.0f} / {sr:,.0f} | "
                       + ", ".join(f"{k} {v:,}" for k, v in vers.items()) + " |")
        mg = self.proxies.get("meshgate")
        if mg and mg.proc:
            out.append("")
            out.append(mg_summary(self.meshgate_metrics()))
        out.append("")
        out.append("Versions: " + "; ".join(f"{k}: {v}" for k, v in ver.items()))
        if problems:
            out.append("")
            out.append("## Problems seen\n")
            out.extend(problems[:60])
        logs = []
        for px in list(self.proxies.values()) + [self.backend]:
            if not px.log_path:
                continue
            lines = []
            try:
                with open(px.log_path, errors="replace") as f:
                    for line in f:
                        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
                        if px.name == "haproxy" and re.match(r"^[01] ", line):
                            continue  # term-hs log lines
                        if re.search(r"warn|error|crit|alert|emerg|panic|WARN|ERROR", line):
                            lines.append(line.rstrip())
            except OSError:
                continue
            if lines:
                logs.append(f"- {px.name}: {len(lines)} warning/error lines, first ones:\n"
                            + "\n".join(f"    {x[:300]}" for x in lines[:8]))
        if logs:
            out.append("")
            out.append("## Proxy log warnings/errors\n")
            out.append("(The start-up probe makes one term-mtls connection WITHOUT a client certificate on "
                       "purpose, to check that it is refused; each proxy may log that one.)\n")
            out.extend(logs)
        out.append("")
        out.append(f"Raw per-run results: `{os.path.relpath(self.jsonl_path, REPO)}`")
        return "\n".join(out) + "\n"
