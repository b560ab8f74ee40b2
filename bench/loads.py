"""The load scenarios' drivers (wrk, hs_load.py, h2load, hold_conns.py, ka-10k),
as methods of the Bench class (LoadsMixin)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from common import CLK_TCK, HOST, TOOLS
from procinfo import CHILDREN, cpu_split, established, Proxy, run_tool
from parsing import parse_h2load, parse_wrk



class LoadsMixin:
    """Bench methods that run the load tools and return (result, command)."""

    # ----- load -----

    def wrk(self, ep: dict, threads: int, conns: int, duration: float,
            full_handshake: bool = False) -> tuple[dict, str]:
        env = dict(os.environ)
        if ep["tls"]:
            env["LD_PRELOAD"] = self.shim
            env["WRKSHIM_SNI"] = HOST
            if ep.get("client_cert"):
                env["WRKSHIM_CERT"] = self.certs["client"]
                env["WRKSHIM_KEY"] = self.certs["client_key"]
            if full_handshake:
                env["WRKSHIM_FULL_HANDSHAKE"] = "1"
        argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration:g}s", "--latency",
                "-H", f"Host: {ep.get('host', HOST)}"]
        if full_handshake:
            argv += ["-H", "Connection: close"]
        argv.append(ep["url"])
        r = run_tool(argv, timeout=duration + 30, env=env)
        res = parse_wrk(r.stdout)
        if r.returncode != 0 or "rps" not in res:
            res["tool_error"] = (r.stdout + r.stderr)[-600:]
        cmd = " ".join(argv)
        if ep["tls"]:
            cmd = (f"LD_PRELOAD=wrkshim.so WRKSHIM_SNI={HOST}"
                   f"{' WRKSHIM_CERT=client.pem WRKSHIM_KEY=client.key' if ep.get('client_cert') else ''}"
                   f"{' WRKSHIM_FULL_HANDSHAKE=1' if full_handshake else ''} "
                   + cmd)
        return res, cmd

    def hs_load(self, px: Proxy, ep: dict, duration: float) -> tuple[dict, str]:
        argv = [sys.executable, os.path.join(TOOLS, "hs_load.py"), "--port", str(ep["port"]),
                "--sni", HOST, "--ca", self.certs["ca"], "--procs", str(self.args.hs_procs),
                "--duration", f"{duration:g}"]
        server_before = self.server_hs_counts(px)
        r = run_tool(argv, timeout=duration + 90)
        time.sleep(1.2)  # nginx flushes its access-log buffer every second
        server_after = self.server_hs_counts(px)
        try:
            res = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"tool_error": (r.stdout + r.stderr)[-600:], "errors": 1}, " ".join(argv)
        res["requests"] = res["ok"]
        if server_before is not None and server_after is not None:
            res["server_full"] = server_after[0] - server_before[0]
            res["server_resumed"] = server_after[1] - server_before[1]
        res["errors"] = res["errors"] + res["bad_status"]
        return res, "python3 bench/tools/hs_load.py " + " ".join(argv[2:])

    def wrk_hs(self, px: Proxy, ep: dict, duration: float) -> tuple[dict, str]:
        """wrk, a new connection per request (Connection: close), no session resumption (shim)."""
        before = self.server_hs_counts(px)
        res, cmd = self.wrk(ep, self.args.wrk_threads, self.args.hs_conns, duration, full_handshake=True)
        time.sleep(1.2)
        after = self.server_hs_counts(px)
        if before is not None and after is not None:
            res["server_full"] = after[0] - before[0]
            res["server_resumed"] = after[1] - before[1]
        return res, cmd

    def server_hs_counts(self, px: Proxy):
        """(full, resumed) handshakes as the proxy itself saw them, or None."""
        if px.name == "meshgate":
            c = self.meshgate_handshakes("inbound")
            return c["false"], c["true"]
        path = getattr(px, "hs_log", None)
        if not path or not os.path.exists(path):
            return (0, 0) if path else None
        full = resumed = 0
        with open(path, errors="replace") as f:
            for line in f:
                tok = line.split(" ", 1)[0].strip()
                if px.name == "nginx":
                    full += tok == "."
                    resumed += tok == "r"
                else:
                    full += tok == "0"
                    resumed += tok == "1"
        return full, resumed

    def restart(self, px: Proxy) -> None:
        """Stop the proxy and start it again with the same configuration and ports."""
        CHILDREN.stop(px.proc)
        getattr(self, f"start_{px.name}")(px)

    def warm(self, px: Proxy, seconds: float = 1) -> None:
        for sc in ("term-ka", "term-mtls", "orig-ka", "orig-mtls"):
            if sc in px.endpoints and sc not in px.broken:
                self.wrk(px.endpoints[sc], self.args.wrk_threads, self.args.ka_conns, seconds)

    def mem(self, px: Proxy, ep: dict) -> tuple[dict, str]:
        """RSS of a freshly started proxy, then with N idle TLS connections.

        The proxy is restarted first: after the load scenarios every allocator
        keeps memory it could reuse, which would hide the per-connection cost."""
        n = self.args.conns
        after_load_rss, after_load_pss = px.rss_kib(), px.pss_kib()
        self.restart(px)
        time.sleep(1.0)
        before_rss, before_pss, before_anon = px.rss_kib(), px.pss_kib(), px.anon_kib()
        argv = [sys.executable, os.path.join(TOOLS, "hold_conns.py"), "--port", str(ep["port"]),
                "--sni", HOST, "--ca", self.certs["ca"], "--n", str(n), "--threads", "8"]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        CHILDREN.procs.append(("hold_conns", p))
        res: dict = {"conns": n, "rss_before_kib": before_rss, "pss_before_kib": before_pss,
                     "anon_before_kib": before_anon,
                     "rss_after_load_kib": after_load_rss, "pss_after_load_kib": after_load_pss}
        try:
            t0 = time.monotonic()
            line = ""
            while time.monotonic() - t0 < 180:
                line = p.stdout.readline()
                if not line or line.startswith("READY"):
                    break
            if not line.startswith("READY"):
                res["tool_error"] = "hold_conns did not report READY: " + p.stderr.read()[-400:]
                res["errors"] = 1
                return res, " ".join(argv)
            ready = json.loads(line[6:])
            res["open_s"] = time.monotonic() - t0
            time.sleep(1.0)
            res["rss_held_kib"], res["pss_held_kib"] = px.rss_kib(), px.pss_kib()
            p.stdin.write("\n")
            p.stdin.flush()
            done = json.loads(p.stdout.readline()[5:])
            res.update(opened=ready["opened"], failed=ready["failed"], alive=done["alive"],
                       error_kinds=ready["error_kinds"])
            opened = max(ready["opened"], 1)
            res["kib_per_conn"] = (res["rss_held_kib"] - before_rss) / opened
            res["pss_kib_per_conn"] = (res["pss_held_kib"] - before_pss) / opened
            res["errors"] = ready["failed"] + (ready["opened"] - done["alive"])
            res["requests"] = ready["opened"]
        finally:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
            CHILDREN.procs = [(nm, q) for nm, q in CHILDREN.procs if q is not p]
        time.sleep(1.0)  # let the proxy notice the closes
        res["rss_after_kib"] = px.rss_kib()
        self.warm(px)  # pools and caches back to where the other proxies' are
        return res, "python3 bench/tools/hold_conns.py " + " ".join(argv[2:])

    def h2load_argv(self, ep: dict, conns: int, streams: int, threads: int, duration: float | None = None,
                    requests: int | None = None) -> list[str]:
        # h2load sends the URL's host (bench.test) as SNI and :authority; --connect-to makes it
        # connect to 127.0.0.1:<port> without resolving bench.test (no /etc/hosts entry needed)
        argv = ["h2load", f"-c{conns}", f"-m{streams}", f"-t{threads}"]
        if duration is not None:
            argv += ["-D", str(max(1, int(round(duration))))]
        else:
            argv += ["-n", str(requests)]
        return argv + ["--connect-to", f"127.0.0.1:{ep['port']}", ep["url"]]

    def h2_probe(self, ep: dict) -> tuple[bool, str]:
        argv = self.h2load_argv(ep, 1, 1, 1, requests=20)
        r = run_tool(argv, timeout=30)
        res = parse_h2load(r.stdout)
        if res.get("alpn") != "h2" or res.get("requests") != 20 or res.get("errors"):
            return False, (f"h2load: protocol {res.get('alpn')}, {res.get('requests')} of 20 succeeded: "
                           + (r.stdout + r.stderr)[-300:])
        return True, "h2 negotiated over ALPN, 20/20 requests 2xx"

    def h2load(self, ep: dict, duration: float) -> tuple[dict, str]:
        a = self.args
        argv = self.h2load_argv(ep, a.h2_conns, a.h2_streams, a.wrk_threads, duration=duration)
        r = run_tool(argv, timeout=duration + 60)
        res = parse_h2load(r.stdout)
        if r.returncode != 0 or "rps" not in res:
            res["tool_error"] = (r.stdout + r.stderr)[-600:]
        elif res.get("alpn") != "h2":
            res["tool_error"] = f"negotiated {res.get('alpn')}, not h2"
        return res, " ".join(argv)

    def ka10k(self, px: Proxy, ep: dict) -> tuple[dict, str]:
        """wrk with 10,000 keep-alive TLS connections. CPU and requests are measured over a window
        that starts once wrk has completed a TLS handshake per connection (counted by the
        hscount.so shim) and the request rate is steady: the ramp is 10,000 full handshakes and
        would swamp the per-request cost. wrk is then stopped with SIGINT (it prints its summary),
        so its error counts cover the whole run, ramp included."""
        a = self.args
        n = a.k10_conns
        ramp_max = 150.0
        counter = os.path.join(self.work, "hscount.bin")
        with open(counter, "wb") as f:
            f.write(b"\0" * 8)
        env = dict(os.environ, LD_PRELOAD=f"{self.shim} {self.hscount}", WRKSHIM_SNI=HOST,
                   HSCOUNT_FILE=counter)
        # --timeout: with 10,000 requests in flight a response takes ~1 s on 2 cores; wrk's default
        # 2 s would count the slow ones as errors
        argv = ["wrk", f"-t{a.wrk_threads}", f"-c{n}", f"-d{int(ramp_max + a.duration + 30)}s", "--timeout", "30s",
                "--latency", "-H", f"Host: {HOST}", ep["url"]]
        cmd = (f"LD_PRELOAD='wrkshim.so hscount.so' WRKSHIM_SNI={HOST} " + " ".join(argv)
               + " (stopped with SIGINT after the steady window)")

        def handshakes() -> int:
            with open(counter, "rb") as f:
                return int.from_bytes(f.read(8), sys.byteorder)

        pids = px.pids() if px.proc else []
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                             env=env, text=True, start_new_session=True)
        CHILDREN.procs.append(("wrk-10k", p))
        res: dict = {"conns": n}
        try:
            t0 = time.monotonic()
            prev, stable_since, hs = -1, t0, 0
            while time.monotonic() - t0 < ramp_max and p.poll() is None:
                time.sleep(0.5)
                hs = handshakes()
                now = time.monotonic()
                if hs != prev:
                    prev, stable_since = hs, now
                # all connections up, or no new handshake for 5 s (a proxy that refuses some)
                if hs >= n or (hs > 0 and now - stable_since >= 5.0):
                    break
            res["handshakes_at_window"] = hs
            res["conns_established"] = established(ep["port"])
            time.sleep(1.0)  # the last handshakes' first requests
            res["ramp_s"] = time.monotonic() - t0
            if p.poll() is not None:
                res["tool_error"] = "wrk ended during the ramp: " + (p.stdout.read() + p.stderr.read())[-600:]
                res["errors"] = 1
                return res, cmd
            u0, s0 = cpu_split(pids) if pids else cpu_split(self.backend.pids())
            r0, w0, hs0 = self.backend_requests(), time.monotonic(), handshakes()
            time.sleep(a.duration)
            u1, s1 = cpu_split(pids) if pids else cpu_split(self.backend.pids())
            r1, w1, hs1 = self.backend_requests(), time.monotonic(), handshakes()
            res["handshakes_in_window"] = hs1 - hs0  # reconnections after errors
            res["conns_established_end"] = established(ep["port"])
            os.kill(p.pid, signal.SIGINT)
            try:
                out, err = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                out, err = p.communicate()
                err += "\n[bench] wrk did not stop on SIGINT"
            res.update(parse_wrk(out))
            res["handshakes_total"] = handshakes()
            if "rps" not in res:
                res["tool_error"] = (out + err)[-600:]
            if r0 is not None and r1 is not None:
                res["window_s"] = w1 - w0
                res["window_requests"] = r1 - r0 - 1  # the second status request is counted
                res["window_rps"] = res["window_requests"] / res["window_s"]
                res["window_user_us"] = (u1 - u0) * 1e6 / CLK_TCK
                res["window_sys_us"] = (s1 - s0) * 1e6 / CLK_TCK
                # below ~1.5 cores on this 2-core host: the proxy waits on something, not on CPU
                res["window_proxy_cores"] = (u1 - u0 + s1 - s0) / CLK_TCK / res["window_s"]
            else:
                res["tool_error"] = "the backend's stub_status did not answer around the window"
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
            CHILDREN.procs = [(nm, q) for nm, q in CHILDREN.procs if q is not p]
        time.sleep(2.0)  # let the proxy close the 10,000 connections before the next one
        return res, cmd
