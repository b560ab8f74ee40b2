#!/usr/bin/env python3
"""meshgate vs nginx vs HAProxy, side by side, on loopback. See bench/README.md.

Python 3 standard library only. Everything this script starts runs in its own
process group and is stopped on exit (normal end, error, Ctrl-C, SIGTERM).
"""
from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from common import (BENCH_DIR, CLK_TCK, DEFAULT_SCENARIOS, DIRECT_SCENARIOS, HOST, log, PROXIES, REPO,
                    SCENARIOS, SPECIAL_SCENARIOS, TOOLS)
from procinfo import (CHILDREN, children_of, cpu_split, cpu_ticks, ctx_switches, free_ports, host_cpu, host_share,
                      http_get, nofile, _on_signal, probe, proc_status_kib, Proxy, tail, wait_tcp)
from confs import haproxy_conf, make_certs, meshgate_conf, nginx_backend_conf, nginx_proxy_conf
from parsing import summary
from symbol_order import layout

from loads import LoadsMixin
from configscale import ConfigScaleMixin
from report import ReportMixin


class Bench(LoadsMixin, ConfigScaleMixin, ReportMixin):
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="meshgate-bench-")
        self.proxies: dict[str, Proxy] = {}
        self.backend = Proxy("backend")
        self.results: list[dict] = []
        self.notes: list[str] = []
        self.stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        os.makedirs(args.out_dir, exist_ok=True)
        self.jsonl_path = os.path.join(args.out_dir, f"{self.stamp}.jsonl")
        self.md_path = os.path.join(args.out_dir, f"{self.stamp}.md")
        self.jsonl = open(self.jsonl_path, "w")

    # ----- setup -----

    def setup(self) -> None:
        a = self.args
        log(f"work dir {self.work}")
        self.certs = make_certs(os.path.join(self.work, "certs"), a.rsa)
        log(f"certificates: {'RSA-2048' if a.rsa else 'ECDSA P-256'} CA, server ({HOST}, 127.0.0.1), client")
        self.shim = os.path.join(self.work, "wrkshim.so")
        r = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", self.shim,
                            os.path.join(TOOLS, "wrkshim.c"), "-ldl"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"building wrkshim.so failed:\n{r.stderr}")
        self.hscount = os.path.join(self.work, "hscount.so")
        r = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", self.hscount,
                            os.path.join(TOOLS, "hscount.c"), "-ldl", "-lpthread"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"building hscount.so failed:\n{r.stderr}")
        names = ["be_plain", "be_tls", "be_mtls", "be_status",
                 "ng_term", "ng_hs", "ng_term_mtls", "ng_orig", "ng_orig_mtls",
                 "hp_term", "hp_hs", "hp_term_mtls", "hp_orig", "hp_orig_mtls",
                 "mg_term", "mg_term_mtls", "mg_out", "mg_admin", "mg_stats", "mg_ready",
                 "ng_h2", "hp_h2", "hp_floor",
                 "sc_term", "sc_term_mtls", "sc_out", "sc_admin", "sc_stats", "sc_ready"]
        self.ports = dict(zip(names, free_ports(len(names))))
        self.start_backend()
        for name in a.proxies:
            px = Proxy(name)
            self.proxies[name] = px
            try:
                getattr(self, f"start_{name}")(px)
            except Exception as e:  # noqa: BLE001
                px.dead = f"did not start: {e}"
                log(f"{name}: {px.dead}")
        if "direct" not in self.proxies:
            d = Proxy("direct")
            p = self.ports
            d.endpoints = {
                "term-ka": {"url": f"http://127.0.0.1:{p['be_plain']}/", "port": p["be_plain"], "tls": False},
                "term-lat": {"url": f"http://127.0.0.1:{p['be_plain']}/", "port": p["be_plain"], "tls": False},
                "term-1m": {"url": f"http://127.0.0.1:{p['be_plain']}/1m.bin", "port": p["be_plain"],
                            "tls": False, "path": "/1m.bin"},
                "floor": {"url": f"http://127.0.0.1:{p['be_plain']}/", "port": p["be_plain"], "tls": False},
            }
            self.proxies["direct"] = d
        time.sleep(1.0)
        for px in self.proxies.values():
            if px.alive() and px.proc:
                px.idle_rss_kib, px.idle_pss_kib = px.rss_kib(), px.pss_kib()
                pids = px.pids()
                threads = [proc_status_kib(pid, "Threads") for pid in pids]
                px.layout = (f"{len(pids)} process(es), threads {'+'.join(map(str, threads))}"
                             + (" (master + workers)" if len(pids) > 1 else "")
                             + f", RSS {px.idle_rss_kib / 1024:.1f} MiB at start")
                if px.name == "meshgate":
                    px.layout += f", {layout(self.args.meshgate_bin)}"
                    if "NOT FOLLOWED" in px.layout:
                        log(f"meshgate: {px.layout}")
        self.check_endpoints()

    def start_backend(self) -> None:
        prefix = os.path.join(self.work, "backend")
        docroot = os.path.join(prefix, "html")
        os.makedirs(docroot, exist_ok=True)
        with open(os.path.join(docroot, "1m.bin"), "wb") as f:
            f.write(os.urandom(1024 * 1024))
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_backend_conf(prefix, self.ports, self.certs, docroot))
        be = self.backend
        be.log_path = os.path.join(prefix, "stdout.log")
        be.proc = CHILDREN.start("backend", ["nginx", "-p", prefix, "-c", conf], be.log_path)
        for k in ("be_plain", "be_tls", "be_mtls"):
            if not wait_tcp(self.ports[k], be.proc):
                raise RuntimeError(f"backend nginx did not come up:\n{tail(os.path.join(prefix, 'error.log'), 20)}"
                                   f"{tail(be.log_path, 20)}")
        st, body = http_get(f"http://127.0.0.1:{self.ports['be_plain']}/")
        st2, body2 = http_get(f"http://127.0.0.1:{self.ports['be_plain']}/1m.bin")
        if (st, body, st2, len(body2)) != (200, b"ok", 200, 1024 * 1024):
            raise RuntimeError(f"backend answers wrong: {st} {body[:40]!r} / {st2} {len(body2)} bytes")
        log(f"backend nginx up: plain :{self.ports['be_plain']}, TLS :{self.ports['be_tls']}, "
            f"mTLS :{self.ports['be_mtls']}")

    def _term_endpoints(self, term: int, hs: int, mtls: int, orig: int, orig_mtls: int, h2: int,
                        orig_host_mtls: str = HOST) -> dict:
        return {
            # h2load sends the URL's host as SNI and :authority; --connect-to points it at 127.0.0.1
            "term-h2": {"url": f"https://{HOST}:{h2}/", "port": h2, "tls": True, "h2": True},
            "ka-10k": {"url": f"https://127.0.0.1:{term}/", "port": term, "tls": True},
            "term-ka": {"url": f"https://127.0.0.1:{term}/", "port": term, "tls": True},
            "term-lat": {"url": f"https://127.0.0.1:{term}/", "port": term, "tls": True},
            "term-hs": {"port": hs, "tls": True},
            "term-hs-wrk": {"url": f"https://127.0.0.1:{hs}/", "port": hs, "tls": True},
            "term-mtls": {"url": f"https://127.0.0.1:{mtls}/", "port": mtls, "tls": True, "client_cert": True},
            "orig-ka": {"url": f"http://127.0.0.1:{orig}/", "port": orig, "tls": False},
            "orig-lat": {"url": f"http://127.0.0.1:{orig}/", "port": orig, "tls": False},
            "orig-mtls": {"url": f"http://127.0.0.1:{orig_mtls}/", "port": orig_mtls, "tls": False,
                          "host": orig_host_mtls},
            "term-1m": {"url": f"https://127.0.0.1:{term}/1m.bin", "port": term, "tls": True,
                        "path": "/1m.bin"},
            "mem": {"port": term, "tls": True},
        }

    def start_nginx(self, px: Proxy) -> None:
        prefix = os.path.join(self.work, "nginx")
        os.makedirs(prefix, exist_ok=True)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_proxy_conf(prefix, self.ports, self.certs))
        px.log_path = os.path.join(prefix, "error.log")
        r = subprocess.run(["nginx", "-t", "-p", prefix, "-c", conf], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"nginx -t: {r.stderr}")
        px.proc = CHILDREN.start("nginx", ["nginx", "-p", prefix, "-c", conf],
                                 os.path.join(prefix, "stdout.log"))
        p = self.ports
        for k in ("ng_term", "ng_hs", "ng_term_mtls", "ng_orig", "ng_orig_mtls", "ng_h2"):
            if not wait_tcp(p[k], px.proc):
                raise RuntimeError(f"nginx proxy not listening on {p[k]}: {tail(px.log_path, 20)}")
        px.endpoints = self._term_endpoints(p["ng_term"], p["ng_hs"], p["ng_term_mtls"], p["ng_orig"],
                                            p["ng_orig_mtls"], p["ng_h2"])
        px.hs_log = os.path.join(prefix, "hs.log")
        log(f"nginx proxy up (pid {px.proc.pid}, workers {children_of(px.proc.pid)})")

    def start_haproxy(self, px: Proxy) -> None:
        d = os.path.join(self.work, "haproxy")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(haproxy_conf(d, self.ports, self.certs))
        px.log_path = os.path.join(d, "haproxy.log")
        r = subprocess.run(["haproxy", "-c", "-f", conf], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"haproxy -c: {r.stdout}{r.stderr}")
        px.proc = CHILDREN.start("haproxy", ["haproxy", "-db", "-f", conf], px.log_path)
        p = self.ports
        for k in ("hp_term", "hp_hs", "hp_term_mtls", "hp_orig", "hp_orig_mtls", "hp_h2", "hp_floor"):
            if not wait_tcp(p[k], px.proc):
                raise RuntimeError(f"haproxy not listening on {p[k]}: {tail(px.log_path, 20)}")
        px.endpoints = self._term_endpoints(p["hp_term"], p["hp_hs"], p["hp_term_mtls"], p["hp_orig"],
                                            p["hp_orig_mtls"], p["hp_h2"])
        px.endpoints["floor"] = {"url": f"http://127.0.0.1:{p['hp_floor']}/", "port": p["hp_floor"],
                                 "tls": False}
        px.hs_log = px.log_path
        log(f"haproxy up (pid {px.proc.pid})")

    def launch_meshgate(self, d: str, pre: str, extra: list[str] | None = None,
                        name: str = "meshgate") -> tuple[subprocess.Popen, float | None]:
        """Start `meshgate run -c d` on the ports named `<pre>_*`; wait for /healthz/ready.

        Returns the process and the seconds from spawn to the first 200 (None: not ready in 60 s)."""
        p = self.ports
        bootstrap = os.path.join(self.work, "meshgate-bootstrap.yaml")
        with open(bootstrap, "w") as f:
            # nginx (client_header_timeout) and HAProxy (timeout client) give a handshake 60 s
            f.write(f"handshakeTimeout: {self.args.meshgate_handshake_timeout}\n")
        argv = [self.args.meshgate_bin, "run", "-c", d, "--bootstrap", bootstrap,
                "--port-map", f"443=127.0.0.1:{p[pre + '_term']}",
                "--port-map", f"8443=127.0.0.1:{p[pre + '_term_mtls']}",
                "--inbound-bind", "127.0.0.1",
                "--outbound-addr", f"127.0.0.1:{p[pre + '_out']}",
                "--admin-addr", f"127.0.0.1:{p[pre + '_admin']}",
                "--stats-addr", f"127.0.0.1:{p[pre + '_stats']}",
                "--ready-addr", f"127.0.0.1:{p[pre + '_ready']}",
                "--log-level", "warn",
                "--concurrency", str(self.args.meshgate_threads)] + (extra or [])
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        with open(os.path.join(d, "command.txt"), "w") as f:
            f.write(" ".join(argv) + "\n")
        t0 = time.monotonic()
        proc = CHILDREN.start(name, argv, os.path.join(d, "meshgate.log"), env=env)
        deadline = t0 + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if http_get(f"http://127.0.0.1:{p[pre + '_ready']}/healthz/ready", 1)[0] == 200:
                    return proc, time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.02)
        return proc, None

    def start_meshgate(self, px: Proxy) -> None:
        d = os.path.join(self.work, "meshgate")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "bench.yaml"), "w") as f:
            f.write(meshgate_conf(self.ports, self.certs))
        p = self.ports
        px.log_path = os.path.join(d, "meshgate.log")
        px.proc, ready = self.launch_meshgate(d, "mg")
        if ready is None:
            raise RuntimeError(f"meshgate not ready (exit status {px.proc.poll()}):\n{tail(px.log_path, 30)}")
        px.endpoints = self._term_endpoints(p["mg_term"], p["mg_term"], p["mg_term_mtls"], p["mg_out"],
                                            p["mg_out"], p["mg_term"], orig_host_mtls=f"{HOST}:81")
        log(f"meshgate up (pid {px.proc.pid}): 443→:{p['mg_term']}, 8443→:{p['mg_term_mtls']}, "
            f"outbound :{p['mg_out']}")

    def backend_accepts(self) -> int | None:
        """Connections the backend accepted so far, not counting this status request."""
        try:
            st, body = http_get(f"http://127.0.0.1:{self.ports['be_status']}/status", 3)
            m = re.search(rb"\n\s*(\d+)\s+(\d+)\s+(\d+)", body)
            return int(m.group(1)) - 1 if st == 200 and m else None
        except OSError:
            return None

    def backend_requests(self) -> int | None:
        """Requests the backend answered so far (stub_status), counting this status request."""
        try:
            st, body = http_get(f"http://127.0.0.1:{self.ports['be_status']}/status", 3)
            m = re.search(rb"\n\s*(\d+)\s+(\d+)\s+(\d+)", body)
            return int(m.group(3)) if st == 200 and m else None
        except OSError:
            return None

    def meshgate_metrics(self, pre: str = "mg") -> str:
        try:
            st, body = http_get(f"http://127.0.0.1:{self.ports[pre + '_stats']}/stats/prometheus", 3)
            return body.decode("utf-8", "replace") if st == 200 else ""
        except OSError:
            return ""

    def meshgate_handshakes(self, direction: str = "inbound") -> dict:
        out = {"true": 0.0, "false": 0.0}
        for line in self.meshgate_metrics().splitlines():
            if line.startswith("meshgate_tls_handshakes_total{") and f'direction="{direction}"' in line:
                m = re.search(r'resumed="(\w+)"', line)
                if m:
                    out[m.group(1)] = out.get(m.group(1), 0) + float(line.rsplit(" ", 1)[1])
        return out

    def check_endpoints(self) -> None:
        for px in self.proxies.values():
            if not px.alive():
                continue
            for sc, ep in px.endpoints.items():
                ok, detail = probe(ep["port"], ep["tls"], self.certs, ep.get("host", HOST),
                                   ep.get("client_cert", False), ep.get("path", "/"))
                if ep.get("h2") and ok:
                    # the listener must negotiate h2 over ALPN and answer over it
                    ok, detail = self.h2_probe(ep)
                if sc == "term-mtls" and ok:
                    # the listener must refuse a client without a certificate
                    bad_ok, bad_detail = probe(ep["port"], True, self.certs)
                    if bad_ok:
                        ok, detail = False, "accepts clients WITHOUT a certificate"
                if not ok:
                    px.broken[sc] = detail
                    log(f"{px.name} {sc}: probe FAILED: {detail}")
                else:
                    log(f"{px.name} {sc}: probe ok ({detail})")

    def run_one(self, run: int, sc: str, px: Proxy) -> None:
        a = self.args
        rec = {"ts": time.time(), "run": run, "proxy": px.name, "scenario": sc}
        if not px.alive():
            rec["skipped"] = f"proxy not running: {px.dead.splitlines()[0] if px.dead else ''}"
            self.emit(rec)
            return
        if sc in px.broken:
            rec["skipped"] = f"probe failed: {px.broken[sc]}"
            self.emit(rec)
            return
        ep = px.endpoints[sc]
        pids = px.pids() if px.proc else []
        be_pids = self.backend.pids()
        acc0 = self.backend_accepts()
        (cu0, cs0_), b0, h0 = cpu_split(pids), cpu_ticks(be_pids), host_cpu()
        c0 = cu0 + cs0_
        bu0, bs0 = cpu_split(be_pids)
        cs0 = ctx_switches(pids)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        if sc in ("term-ka", "term-mtls", "orig-ka", "orig-mtls"):
            res, cmd = self.wrk(ep, a.wrk_threads, a.ka_conns, a.duration)
        elif sc == "floor":
            res, cmd = self.wrk(ep, a.wrk_threads, a.ka_conns, a.duration)
        elif sc == "term-h2":
            res, cmd = self.h2load(ep, a.duration)
        elif sc == "ka-10k":
            res, cmd = self.ka10k(px, ep)
        elif sc in ("term-lat", "orig-lat"):
            res, cmd = self.wrk(ep, 1, 1, a.duration)
        elif sc == "term-1m":
            res, cmd = self.wrk(ep, a.wrk_threads, 8, a.duration)
        elif sc == "term-hs":
            res, cmd = self.hs_load(px, ep, a.duration)
        elif sc == "term-hs-wrk":
            res, cmd = self.wrk_hs(px, ep, a.duration)
        elif sc == "mem":
            res, cmd = self.mem(px, ep)
        else:
            raise ValueError(sc)
        wall = time.monotonic() - t0
        (cu1, cs1_), b1, h1 = cpu_split(pids), cpu_ticks(be_pids), host_cpu()
        c1 = cu1 + cs1_
        bu1, bs1 = cpu_split(be_pids)
        cs1 = ctx_switches(pids)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        acc1 = self.backend_accepts()
        busy, steal = host_share(h0, h1)
        rec.update(res)
        if acc0 is not None and acc1 is not None:
            rec["upstream_conns_opened"] = acc1 - acc0 - 1  # the later status request
        client_us = ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)) * 1e6
        rec["client_cpu_us"] = client_us
        # CPU of everything else on the machine (other users' builds, ...): the noise
        hd = [y - x for x, y in zip(h0, h1)]
        # busy minus interrupts/softirqs (loopback networking lands there) and steal
        busy_us = (sum(hd) - hd[3] - hd[4] - hd[5] - hd[6] - hd[7]) * 1e6 / CLK_TCK
        ours_us = ((max(0, c1 - c0) if sc != "mem" else 0) + (b1 - b0)) * 1e6 / CLK_TCK + client_us
        rec["foreign_cpu_share"] = round(max(0.0, busy_us - ours_us) / (sum(hd) * 1e6 / CLK_TCK or 1), 4)
        rec.update(cmd=cmd, wall_s=round(wall, 3), host_busy=round(busy, 4), host_steal=round(steal, 4),
                   proxy_cpu_us=(c1 - c0) * 1e6 / CLK_TCK if pids else None,
                   backend_cpu_us=(b1 - b0) * 1e6 / CLK_TCK)
        if sc == "mem":  # the proxy was restarted: its CPU counters started again
            rec["proxy_cpu_us"] = None
        if pids:
            rec["proxy_user_us"] = (cu1 - cu0) * 1e6 / CLK_TCK
            rec["proxy_sys_us"] = (cs1_ - cs0_) * 1e6 / CLK_TCK
        rec["backend_user_us"] = (bu1 - bu0) * 1e6 / CLK_TCK
        rec["backend_sys_us"] = (bs1 - bs0) * 1e6 / CLK_TCK
        cpu = (rec["proxy_cpu_us"] or 0) if px.proc else rec["backend_cpu_us"]
        user = rec.get("proxy_user_us", 0) if px.proc else rec["backend_user_us"]
        system = rec.get("proxy_sys_us", 0) if px.proc else rec["backend_sys_us"]
        nreq = res.get("requests")
        if sc == "ka-10k":
            # the steady window only: the ramp is 10,000 full handshakes
            if res.get("window_requests"):
                user, system = res["window_user_us"], res["window_sys_us"]
                cpu, nreq = user + system, res["window_requests"]
            else:
                nreq = None
        if sc == "term-1m" and res.get("bytes"):
            mib = res["bytes"] / 1024 ** 2
            rec["cpu_us_per_mib"] = cpu / mib
            rec["user_us_per_mib"] = user / mib
            rec["sys_us_per_mib"] = system / mib
        elif sc != "mem" and nreq:
            rec["cpu_us_per_req"] = cpu / nreq
            rec["user_us_per_req"] = user / nreq
            rec["sys_us_per_req"] = system / nreq
            if pids and sc != "ka-10k":
                rec["ctx_switches_per_req"] = (cs1 - cs0) / nreq
        rec["proxy_cpu_share"] = rec["proxy_cpu_us"] / 1e6 / wall if rec["proxy_cpu_us"] is not None else None
        if not px.alive():
            rec["proxy_died"] = px.dead
            log(f"{px.name} DIED during {sc}: {px.dead}")
        self.emit(rec)
        log(f"run {run} {sc:9s} {px.name:8s} " + summary(rec))

    def emit(self, rec: dict) -> None:
        self.results.append(rec)
        self.jsonl.write(json.dumps(rec) + "\n")
        self.jsonl.flush()
        if rec.get("skipped"):
            log(f"run {rec['run']} {rec['scenario']:9s} {rec['proxy']:8s} skipped: {rec['skipped']}")

    def warmup(self) -> None:
        d = 1 if self.args.smoke else 2
        for px in self.proxies.values():
            if not px.alive():
                continue
            for sc in ("term-ka", "term-mtls", "orig-ka", "orig-mtls"):
                if sc in px.endpoints and sc not in px.broken:
                    self.wrk(px.endpoints[sc], self.args.wrk_threads, self.args.ka_conns, d)
        log("warm-up done")

    def run(self) -> None:
        a = self.args
        order = [n for n in PROXIES + ["direct"] if n in self.proxies]
        for run in range(1, a.runs + 1):
            rot = (run - 1) % len(order)
            this = order[rot:] + order[:rot]
            log(f"=== run {run}/{a.runs}: order {' '.join(this)}")
            for sc in a.scenarios:
                if sc in SPECIAL_SCENARIOS:
                    continue
                for name in this:
                    if name == "direct" and sc not in DIRECT_SCENARIOS:
                        continue
                    if sc not in self.proxies[name].endpoints and self.proxies[name].alive():
                        continue  # e.g. floor: HAProxy (mode tcp) and direct only
                    if sc == "ka-10k" and nofile() < a.k10_conns + 2000:
                        self.emit({"ts": time.time(), "run": run, "proxy": name, "scenario": sc,
                                   "skipped": f"fd limit {nofile()} too low for {a.k10_conns} connections"})
                        continue
                    self.run_one(run, sc, self.proxies[name])
                    time.sleep(0.5)
        if "config-scale" in a.scenarios:
            log("=== config-scale (meshgate)")
            self.config_scale()


def main() -> int:
    ap = argparse.ArgumentParser(description="meshgate vs nginx vs HAProxy on loopback (see bench/README.md)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=10, help="seconds per load scenario")
    ap.add_argument("--smoke", action="store_true", help="1 run × 2 s: a quick harness check")
    ap.add_argument("--rsa", action="store_true", help="RSA-2048 certificates instead of ECDSA P-256")
    ap.add_argument("--conns", type=int, default=1000, help="idle TLS connections held in the mem scenario")
    ap.add_argument("--10k", dest="tenk", action="store_true",
                    help="mem scenario with 10,000 connections (raises the fd limit to 65536; "
                         "meshgate's accept limit is 10,000 connections)")
    ap.add_argument("--proxies", default=",".join(PROXIES), help="comma list of meshgate,nginx,haproxy")
    ap.add_argument("--scenarios", default=None,
                    help="comma list of " + ",".join(SCENARIOS) + " (default: all but ka-10k, which runs "
                         "with --10k or --smoke)")
    ap.add_argument("--h2-conns", type=int, default=64, help="h2load connections for term-h2")
    ap.add_argument("--h2-streams", type=int, default=10, help="h2load concurrent streams per connection")
    ap.add_argument("--k10-conns", type=int, default=10000, help="wrk connections for ka-10k")
    ap.add_argument("--scale-services", type=int, default=10000,
                    help="config-scale: ServiceEntries (each with a DestinationRule)")
    ap.add_argument("--scale-gateway-hosts", type=int, default=1000, help="config-scale: hosts on the Gateway server")
    ap.add_argument("--scale-reloads", type=int, default=3, help="config-scale: SIGHUP reloads per start")
    ap.add_argument("--reload-interval", type=float, default=2.0,
                    help="config-scale: seconds between reloads while wrk measures latency")
    ap.add_argument("--reload-latency-duration", type=float, default=10.0,
                    help="config-scale: seconds of wrk -t1 -c8 with (and without) reloads")
    ap.add_argument("--hs-procs", type=int, default=4, help="client processes for term-hs")
    ap.add_argument("--hs-conns", type=int, default=32, help="wrk connections for term-hs-wrk")
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--ka-conns", type=int, default=64)
    ap.add_argument("--meshgate-bin", default=os.environ.get("MESHGATE_BIN") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"), "release", "meshgate"),
        help="meshgate binary (default: $MESHGATE_BIN, else $CARGO_TARGET_DIR/release/meshgate, "
             "else target/release/meshgate); cargo builds into $CARGO_TARGET_DIR too")
    ap.add_argument("--no-build", action="store_true", help="use the existing meshgate binary as is")
    ap.add_argument("--meshgate-threads", type=int, default=2,
                    help="meshgate --concurrency (worker threads; the comparison uses 2)")
    ap.add_argument("--meshgate-handshake-timeout", default="60s",
                    help="meshgate's handshakeTimeout (bootstrap file; its own default is 10s); 60s as nginx's "
                         "client_header_timeout and HAProxy's timeout client here")
    ap.add_argument("--keep-workdir", action="store_true", help="keep configs, certificates and logs")
    ap.add_argument("--out-dir", default=os.path.join(BENCH_DIR, "results"))
    a = ap.parse_args()
    if a.smoke:
        a.runs, a.duration = 1, 2
        a.reload_latency_duration = min(a.reload_latency_duration, 6)
    if a.tenk:
        a.conns = 10000
    a.proxies = [p for p in a.proxies.split(",") if p]
    if a.scenarios is None:
        a.scenarios = list(SCENARIOS) if (a.smoke or a.tenk) else list(DEFAULT_SCENARIOS)
    else:
        a.scenarios = [s for s in a.scenarios.split(",") if s]
    for p in a.proxies:
        if p not in PROXIES:
            ap.error(f"unknown proxy {p}")
    for s in a.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s}")

    missing = [t for t in ("nginx", "haproxy", "wrk", "openssl", "cc") if not shutil.which(t)]
    if "term-h2" in a.scenarios and not shutil.which("h2load"):
        missing.append("h2load")
    if missing:
        print(f"missing tools: {' '.join(missing)}; run bench/install-deps.sh", file=sys.stderr)
        return 2
    want = max(65536, a.conns + 1024, a.k10_conns * 2 + 1024)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if hard < a.conns + 500:
            print(f"fd limit {hard} is too low for --conns {a.conns}", file=sys.stderr)
            return 2

    if "meshgate" in a.proxies and not a.no_build:
        log("cargo build --release (shared target dir; waits if it is locked)")
        r = subprocess.run(["cargo", "build", "--release", "--bin", "meshgate"], cwd=REPO)
        if r.returncode != 0:
            print("cargo build --release failed; fix it or pass --no-build to bench the existing binary",
                  file=sys.stderr)
            return 1
    if "meshgate" in a.proxies and not os.access(a.meshgate_bin, os.X_OK):
        print(f"no meshgate binary at {a.meshgate_bin}", file=sys.stderr)
        return 2

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    atexit.register(CHILDREN.stop_all)
    bench = Bench(a)
    try:
        bench.setup()
        bench.warmup()
        bench.run()
        md = bench.report()
        with open(bench.md_path, "w") as f:
            f.write(md)
        print(md)
        log(f"wrote {bench.md_path} and {bench.jsonl_path}")
    finally:
        CHILDREN.stop_all()
        bench.jsonl.close()
        if a.keep_workdir:
            log(f"kept {bench.work}")
        else:
            shutil.rmtree(bench.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
