"""The config-scale scenario (meshgate only: validate, start, reload, latency and
CPU with a large generated configuration) and its report section, as methods of
the Bench class (ConfigScaleMixin)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import time

from common import CLK_TCK, HOST, log
from procinfo import CHILDREN, cpu_split, probe, proc_status_kib, tail
from confs import meshgate_conf, scale_conf
from parsing import median_range, parse_wrk



class ConfigScaleMixin:
    """Bench methods of the config-scale scenario and its report section."""

    # ----- config-scale (meshgate only) -----

    def timed_child(self, argv: list[str], log_path: str, timeout: float = 120) -> tuple[float, int, int]:
        """(wall seconds, peak RSS KiB, exit code) of one command.

        The peak RSS comes from GNU time (`%M`) when /usr/bin/time exists: a child forked from this
        Python process inherits its RSS high-water mark until it execs, so wait4's ru_maxrss would
        report the bench's own size for a small child. Without GNU time, wait4's figure is used."""
        gnu_time = shutil.which("time", path="/usr/bin:/bin")
        rss_file = log_path + ".maxrss"
        if gnu_time:
            argv = [gnu_time, "-f", "%M", "-o", rss_file] + argv
        out = open(log_path, "ab")
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        out.close()
        CHILDREN.procs.append((argv[0], p))
        try:
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    wall = time.monotonic() - t0
                    p.returncode = os.waitstatus_to_exitcode(status)
                    maxrss = ru.ru_maxrss
                    if gnu_time:
                        try:
                            with open(rss_file) as f:
                                maxrss = int(f.read().split()[-1])
                        except (OSError, ValueError, IndexError):
                            maxrss = -1
                    return wall, maxrss, p.returncode
                if time.monotonic() - t0 > timeout:
                    os.killpg(p.pid, signal.SIGKILL)
                    _pid, status, ru = os.wait4(p.pid, 0)
                    p.returncode = -9
                    return time.monotonic() - t0, ru.ru_maxrss, -9
                time.sleep(0.005)
        finally:
            CHILDREN.procs = [(nm, q) for nm, q in CHILDREN.procs if q is not p]

    def reload_counts(self, pre: str) -> dict:
        out: dict = {}
        for line in self.meshgate_metrics(pre).splitlines():
            if line.startswith("meshgate_config_reloads_total{"):
                m = re.search(r'result="(\w+)"', line)
                if m:
                    out[m.group(1)] = float(line.rsplit(" ", 1)[1])
        return out

    def reload(self, proc: subprocess.Popen, pre: str, timeout: float = 60) -> tuple[float | None, str]:
        """SIGHUP, then poll the stats endpoint until a reload is counted. (seconds, result)."""
        before = self.reload_counts(pre)
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGHUP)
        while time.monotonic() - t0 < timeout and proc.poll() is None:
            now = self.reload_counts(pre)
            for result in ("success", "partial", "failure"):
                if now.get(result, 0) > before.get(result, 0):
                    return time.monotonic() - t0, result
            time.sleep(0.02)
        return None, "no reload counted"

    @staticmethod
    def edit(d: str, n: int) -> None:
        """Appends a comment to the configuration's largest file in `d`: its bytes change, its meaning
        does not, so the next reload parses and compiles everything (a reload of unchanged files keeps
        the compiled plan and loads only the credentials)."""
        name = "scale.yaml" if os.path.exists(os.path.join(d, "scale.yaml")) else "bench.yaml"
        with open(os.path.join(d, name), "a") as f:
            f.write(f"# edit {n}\n")

    def scale_emit(self, measure: str, config: str, value, **extra) -> None:
        rec = {"ts": time.time(), "run": 0, "proxy": "meshgate", "scenario": "config-scale",
               "measure": measure, "config": config, "value": value}
        rec.update(extra)
        self.emit(rec)
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        log(f"config-scale {config:5s} {measure}: {shown} "
            + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()
                       if k not in ("cmd",)))

    def config_scale(self) -> None:
        a = self.args
        mg = self.proxies.get("meshgate")
        if mg is None or not mg.alive():
            self.notes.append("config-scale skipped: meshgate is not among the running proxies")
            return
        reps = max(3, a.runs)
        dirs = {}
        for config in ("small", "scale"):
            d = os.path.join(self.work, f"meshgate-{config}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "bench.yaml"), "w") as f:
                f.write(meshgate_conf(self.ports, self.certs))
            if config == "scale":
                with open(os.path.join(d, "scale.yaml"), "w") as f:
                    f.write(scale_conf(self.ports, self.certs, a.scale_services, a.scale_gateway_hosts))
            dirs[config] = d
        self.scale_yaml_bytes = os.path.getsize(os.path.join(dirs["scale"], "scale.yaml"))
        log(f"config-scale: {a.scale_services:,} ServiceEntries + {a.scale_services:,} DestinationRules + "
            f"a Gateway server with {a.scale_gateway_hosts:,} hosts ({self.scale_yaml_bytes / 1e6:.1f} MB), "
            f"{reps} repetitions of each measure")
        # 1. validate: wall time and peak RSS (wait4 of that child)
        for i in range(reps):
            for config, d in dirs.items():
                argv = [a.meshgate_bin, "validate", "-c", d]
                wall, maxrss, rc = self.timed_child(argv, os.path.join(d, "validate.log"))
                self.scale_emit("validate_s", config, wall, peak_rss_kib=maxrss, exit=rc, cmd=" ".join(argv))
        # 2. start to ready, RSS once ready, reloads (SIGHUP to the success counter), RSS after them
        for i in range(reps):
            for config, d in dirs.items():
                proc, ready = self.launch_meshgate(d, "sc", ["--watch-interval", "0s"], name=f"meshgate-{config}")
                if ready is None:
                    self.scale_emit("ready_s", config, None,
                                    error=f"not ready (exit {proc.poll()}): {tail(os.path.join(d, 'meshgate.log'), 5)}")
                    CHILDREN.stop(proc)
                    continue
                time.sleep(0.3)
                rss = proc_status_kib(proc.pid, "VmRSS")
                self.scale_emit("ready_s", config, ready, rss_ready_kib=rss)
                for j in range(1, a.scale_reloads + 1):
                    # after an edit: everything parsed and compiled again
                    self.edit(d, i * a.scale_reloads + j)
                    took, result = self.reload(proc, "sc")
                    time.sleep(0.3)
                    self.scale_emit("reload_s", config, took, result=result, reload=j,
                                    rss_kib=proc_status_kib(proc.pid, "VmRSS"))
                    # no file changed: the plan in force is kept, the credentials are loaded again
                    took, result = self.reload(proc, "sc")
                    time.sleep(0.3)
                    self.scale_emit("reload_unchanged_s", config, took, result=result, reload=j)
                CHILDREN.stop(proc)
        # 3. keep-alive requests while reloads happen (p99, max), and without reloads; CPU per request
        #    of orig-ka with each configuration
        d = dirs["scale"]
        procs = {}
        for config in ("scale",):
            proc, ready = self.launch_meshgate(d, "sc", ["--watch-interval", "0s"], name="meshgate-scale")
            if ready is None:
                self.notes.append("config-scale: the 10k-config meshgate did not become ready; latency and "
                                  "CPU measures skipped")
                CHILDREN.stop(proc)
                return
            procs[config] = proc
        proc = procs["scale"]
        ep_scale = {"url": f"http://127.0.0.1:{self.ports['sc_out']}/", "port": self.ports["sc_out"], "tls": False}
        ok, detail = probe(ep_scale["port"], False, self.certs)
        if not ok:
            self.notes.append(f"config-scale: orig request through the 10k-config meshgate failed: {detail}")
            CHILDREN.stop(proc)
            return
        ep_small = mg.endpoints["orig-ka"]
        lat_s = max(4.0, a.reload_latency_duration)
        for i in range(reps):
            for during in (False, True):
                argv_env = dict(os.environ)
                argv = ["wrk", "-t1", "-c8", f"-d{lat_s:g}s", "--latency", "-H", f"Host: {HOST}", ep_scale["url"]]
                pw = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=argv_env, start_new_session=True)
                CHILDREN.procs.append(("wrk", pw))
                reloads = []
                try:
                    t0 = time.monotonic()
                    nxt = t0 + 1.0
                    while during and pw.poll() is None and nxt < t0 + lat_s - 0.5:
                        time.sleep(max(0.0, nxt - time.monotonic()))
                        # an edit first, so every reload parses and compiles; waits for the
                        # reload to be counted even if wrk ends first
                        self.edit(d, 1000 + len(reloads))
                        took, result = self.reload(proc, "sc")
                        reloads.append((took, result))
                        nxt = max(nxt + a.reload_interval, time.monotonic())
                    out, err = pw.communicate(timeout=lat_s + 30)
                except subprocess.TimeoutExpired:
                    os.killpg(pw.pid, signal.SIGKILL)
                    out, err = pw.communicate()
                finally:
                    CHILDREN.procs = [(nm, q) for nm, q in CHILDREN.procs if q is not pw]
                res = parse_wrk(out)
                if "rps" not in res:
                    res["tool_error"] = (out + err)[-400:]
                done = [t for t, r in reloads if t is not None and r == "success"]
                self.scale_emit("reload_latency" if during else "steady_latency", "scale", res.get("p99_ms"),
                                p99_ms=res.get("p99_ms"), max_ms=res.get("max_ms"), rps=res.get("rps"),
                                errors=res.get("errors"), reloads_ok=len(done), reloads_tried=len(reloads),
                                reload_s=[round(t, 3) for t in done], cmd=" ".join(argv),
                                **({"tool_error": res["tool_error"]} if "tool_error" in res else {}))
        for i in range(max(reps, a.runs)):
            for config, p_, ep in (("small", mg.proc, ep_small), ("scale", proc, ep_scale)):
                pids = [p_.pid]
                u0, s0 = cpu_split(pids)
                res, cmd = self.wrk(ep, a.wrk_threads, a.ka_conns, a.duration)
                u1, s1 = cpu_split(pids)
                nreq = res.get("requests") or 0
                if not nreq:
                    self.scale_emit("orig_ka_cpu_us_per_req", config, None, error=res.get("tool_error", "no requests"))
                    continue
                user, system = (u1 - u0) * 1e6 / CLK_TCK / nreq, (s1 - s0) * 1e6 / CLK_TCK / nreq
                self.scale_emit("orig_ka_cpu_us_per_req", config, user + system, user_us_per_req=user,
                                sys_us_per_req=system, rps=res.get("rps"), errors=res.get("errors"), cmd=cmd)
        self.scale_emit("rss_end_kib", "scale", proc_status_kib(proc.pid, "VmRSS"))
        CHILDREN.stop(proc)

    def scale_report(self) -> list[str]:
        a = self.args
        recs = [r for r in self.results if r.get("scenario") == "config-scale"]
        out = ["", f"## config-scale (meshgate only): {a.scale_services:,} ServiceEntries + "
               f"{a.scale_services:,} DestinationRules + a Gateway server with {a.scale_gateway_hosts:,} hosts",
               ""]
        if not recs:
            out.append("Not measured: " + "; ".join(n for n in self.notes if n.startswith("config-scale")))
            return out
        out.append(f"Generated into the work dir ({getattr(self, 'scale_yaml_bytes', 0) / 1e6:.1f} MB of YAML; "
                   "STATIC 127.0.0.1 endpoints, SIMPLE TLS with `caCertificates`) next to the bench's own "
                   "configuration, whose `bench.test` entry carries the requests; \"bench config\" is that "
                   "configuration alone. Median [min–max] over the repetitions. `validate`: wall time and peak RSS "
                   "(GNU time's %M). Start: spawn to the first 200 of `/healthz/ready` (polled every 20 ms). Reload: "
                   "SIGHUP to the increment of `meshgate_config_reloads_total{result=\"success\"}` (polled "
                   "every 20 ms; `--watch-interval 0s`), after a comment is appended to the largest file (its "
                   "bytes change: everything is parsed and compiled again), then once more with no file changed "
                   "(the compiled plan is kept, the credentials are loaded again). Latency: `wrk -t1 -c8 "
                   f"--latency` on the outbound listener (`Host: {HOST}`) for "
                   f"{max(4.0, a.reload_latency_duration):g} s, without reloads and with an edit and a SIGHUP "
                   f"every {a.reload_interval:g} s (the next one once the previous is counted). CPU: "
                   f"orig-ka (`wrk -t{a.wrk_threads} -c{a.ka_conns}`), the bench's running meshgate (bench config) "
                   "and the 10k-config one alternately.\n")

        def pick(measure, config, key="value", where=None):
            v = []
            for r in recs:
                if r["measure"] == measure and r["config"] == config and (where is None or where(r)):
                    x = r.get(key)
                    if isinstance(x, (int, float)) and not isinstance(x, bool):
                        v.append(x)
            return v

        def kib(v):
            return [x / 1024 for x in v]

        ok = lambda r: r.get("result") == "success"  # noqa: E731
        rows = [
            ("`validate` wall time, s", pick("validate_s", "scale"), pick("validate_s", "small"), "{:.2f}", "≤ 1 s"),
            ("`validate` peak RSS, MiB", kib(pick("validate_s", "scale", "peak_rss_kib")),
             kib(pick("validate_s", "small", "peak_rss_kib")), "{:.0f}", "≤ 64 MiB"),
            ("start to `/healthz/ready`, s", pick("ready_s", "scale"), pick("ready_s", "small"), "{:.2f}", "≤ 1 s"),
            ("RSS once ready, MiB", kib(pick("ready_s", "scale", "rss_ready_kib")),
             kib(pick("ready_s", "small", "rss_ready_kib")), "{:.1f}", "≤ 64 MiB"),
            ("reload after an edit (SIGHUP → success counted), s", pick("reload_s", "scale", where=ok),
             pick("reload_s", "small", where=ok), "{:.2f}", "≤ 0.5 s"),
            ("reload, no file changed, s", pick("reload_unchanged_s", "scale", where=ok),
             pick("reload_unchanged_s", "small", where=ok), "{:.2f}", ""),
        ]
        for j in range(1, a.scale_reloads + 1):
            rows.append((f"RSS after reload {j}, MiB", kib(pick("reload_s", "scale", "rss_kib", lambda r, j=j: r.get("reload") == j)),
                         kib(pick("reload_s", "small", "rss_kib", lambda r, j=j: r.get("reload") == j)), "{:.1f}",
                         "≤ 64 MiB"))
        rows += [
            ("p99 ms, wrk -t1 -c8, no reload", pick("steady_latency", "scale", "p99_ms"), [], "{:.2f}", ""),
            ("max ms, no reload", pick("steady_latency", "scale", "max_ms"), [], "{:.2f}", ""),
            ("p99 ms during reloads", pick("reload_latency", "scale", "p99_ms"), [], "{:.2f}", "≤ 10 ms"),
            ("max ms during reloads", pick("reload_latency", "scale", "max_ms"), [], "{:.2f}", ""),
            ("reloads counted during the latency runs (each)", pick("reload_latency", "scale", "reloads_ok"), [],
             "{:.0f}", ""),
            ("orig-ka proxy CPU µs/req", pick("orig_ka_cpu_us_per_req", "scale"),
             pick("orig_ka_cpu_us_per_req", "small"), "{:.1f}", "≤ 1.05× bench config"),
            ("… user µs/req", pick("orig_ka_cpu_us_per_req", "scale", "user_us_per_req"),
             pick("orig_ka_cpu_us_per_req", "small", "user_us_per_req"), "{:.1f}", ""),
            ("… sys µs/req", pick("orig_ka_cpu_us_per_req", "scale", "sys_us_per_req"),
             pick("orig_ka_cpu_us_per_req", "small", "sys_us_per_req"), "{:.1f}", ""),
            ("orig-ka req/s", pick("orig_ka_cpu_us_per_req", "scale", "rps"),
             pick("orig_ka_cpu_us_per_req", "small", "rps"), "{:,.0f}", ""),
        ]
        out.append("| measure | 10k config | bench config | issue 14 target |")
        out.append("|---|---|---|---|")
        for label, big, small, fmt, target in rows:
            out.append(f"| {label} | {median_range(big, fmt)} | {median_range(small, fmt) if small else ''} | "
                       f"{target} |")
        big, small = pick("orig_ka_cpu_us_per_req", "scale"), pick("orig_ka_cpu_us_per_req", "small")
        if big and small:
            out.append(f"| orig-ka CPU/req, 10k config ÷ bench config | "
                       f"{statistics.median(big) / statistics.median(small):.2f}× | | ≤ 1.05× |")
        bad = [r for r in recs if r.get("error") or r.get("tool_error")
               or (r["measure"] in ("reload_s", "reload_unchanged_s") and r.get("result") != "success")
               or (r["measure"] == "validate_s" and r.get("exit") != 0) or r.get("errors")]
        for r in bad[:10]:
            out.append(f"\n⚠ {r['config']} {r['measure']}: "
                       + ", ".join(f"{k}={r.get(k)}" for k in ("result", "exit", "errors", "error", "tool_error")
                                   if r.get(k) not in (None, 0, "success")))
        return out
