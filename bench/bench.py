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
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
TOOLS = os.path.join(BENCH_DIR, "tools")
HOST = "bench.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

PROXIES = ["meshgate", "nginx", "haproxy"]
# Scenario order inside one run. "direct" only takes part where it makes sense.
SCENARIOS = ["term-ka", "term-lat", "term-hs", "term-hs-wrk", "term-mtls", "orig-ka", "orig-lat",
             "orig-mtls", "term-1m", "mem"]
DIRECT_SCENARIOS = {"term-ka", "term-lat", "term-1m"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Processes: every child in its own process group, all stopped on exit
# ---------------------------------------------------------------------------

class Children:
    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], log_path: str, env: dict | None = None,
              cwd: str | None = None) -> subprocess.Popen:
        out = open(log_path, "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, cwd=cwd, start_new_session=True)
        out.close()
        self.procs.append((name, p))
        return p

    def stop_all(self) -> None:
        for _name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 8
        for _name, p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for _name, p in self.procs:
            # the group, not just the leader: nginx workers, hs_load children
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.procs.clear()


CHILDREN = Children()


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def run_tool(argv: list[str], timeout: float, env: dict | None = None,
             stdin_data: str | None = None) -> subprocess.CompletedProcess:
    """Run a short-lived tool in its own process group, killed on timeout."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                         text=True, start_new_session=True)
    CHILDREN.procs.append((argv[0], p))
    try:
        out, err = p.communicate(stdin_data, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        err += f"\n[bench] killed after {timeout:.0f}s timeout"
    finally:
        CHILDREN.procs = [(n, q) for n, q in CHILDREN.procs if q is not p]
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


# ---------------------------------------------------------------------------
# /proc readings
# ---------------------------------------------------------------------------

def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (process-wide)
        except (OSError, IndexError, ValueError):
            pass
    return total


def ctx_switches(pids: list[int]) -> int:
    """Voluntary + involuntary context switches of every thread of these processes."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            total += int(line.split()[1])
            except OSError:
                pass
    return total


def proc_status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def host_cpu() -> list[int]:
    with open("/proc/stat") as f:
        parts = f.readline().split()
    return [int(x) for x in parts[1:9]]  # user nice system idle iowait irq softirq steal


def host_share(a: list[int], b: list[int]) -> tuple[float, float]:
    d = [y - x for x, y in zip(a, b)]
    total = sum(d) or 1
    idle = d[3] + d[4]
    return (total - idle) / total, d[7] / total


# ---------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------

def make_certs(d: str, rsa: bool) -> dict:
    os.makedirs(d, exist_ok=True)
    keyopt = ["-newkey", "rsa:2048"] if rsa else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]

    def sh(*argv):
        r = subprocess.run(argv, cwd=d, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.stderr}")

    sh("openssl", "req", "-x509", "-new", *keyopt, "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
       "-days", "30", "-subj", "/CN=meshgate bench CA",
       "-addext", "basicConstraints=critical,CA:TRUE",
       "-addext", "keyUsage=critical,keyCertSign,cRLSign",
       "-addext", "subjectKeyIdentifier=hash")
    ku = "digitalSignature,keyEncipherment" if rsa else "digitalSignature"
    for name, cn, eku, san in (("server", HOST, "serverAuth", f"DNS:{HOST},IP:127.0.0.1"),
                               ("client", "bench-client", "clientAuth", "DNS:bench-client")):
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(f"basicConstraints=critical,CA:FALSE\nkeyUsage=critical,{ku}\n"
                    f"extendedKeyUsage={eku}\nsubjectAltName={san}\n"
                    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
        sh("openssl", "req", "-new", *keyopt, "-nodes", "-keyout", f"{name}.key",
           "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        sh("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
           "-CAcreateserial", "-out", f"{name}.pem", "-days", "30", "-extfile", f"{name}.ext")
        with open(os.path.join(d, f"{name}-full.pem"), "w") as out:  # HAProxy: cert + key
            for part in (f"{name}.pem", f"{name}.key"):
                with open(os.path.join(d, part)) as f:
                    out.write(f.read())
    return {k: os.path.join(d, v) for k, v in {
        "ca": "ca.pem", "server": "server.pem", "server_key": "server.key",
        "server_full": "server-full.pem", "client": "client.pem", "client_key": "client.key",
        "client_full": "client-full.pem"}.items()}


# ---------------------------------------------------------------------------
# Ports and readiness
# ---------------------------------------------------------------------------

def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_tcp(port: int, proc: subprocess.Popen, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def http_get(url: str, timeout: float = 2) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def probe(port: int, tls: bool, certs: dict, host_header: str = HOST, client_cert: bool = False,
          path: str = "/") -> tuple[bool, str]:
    """One real request, the way the load tools make it. Returns (ok, detail)."""
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        s = raw
        if tls:
            ctx = ssl.create_default_context(cafile=certs["ca"])
            if client_cert:
                ctx.load_cert_chain(certs["client"], certs["client_key"])
            s = ctx.wrap_socket(raw, server_hostname=HOST)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n".encode())
        buf = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
        s.close()
        head, _, body = buf.partition(b"\r\n\r\n")
        status = head.split(b"\r\n")[0].decode("latin1")
        if " 200 " not in status + " ":
            hdrs = "; ".join(h.decode("latin1") for h in head.split(b"\r\n")[1:]
                             if h.lower().startswith(b"x-meshgate") or h.lower().startswith(b"content-length"))
            return False, f"{status} {hdrs} body={body[:200]!r}"
        return True, f"{status}, {len(body)} body bytes"
    except Exception as e:  # noqa: BLE001
        return False, f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------

def nofile() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def nginx_backend_conf(prefix: str, p: dict, certs: dict, docroot: str) -> str:
    return textwrap.dedent(f"""\
        user root;
        worker_processes 2;
        worker_rlimit_nofile {nofile()};
        daemon off;
        pid {prefix}/nginx.pid;
        error_log {prefix}/error.log warn;
        events {{ worker_connections {nofile() - 64}; }}
        http {{
            access_log off;
            default_type text/plain;
            sendfile on;
            keepalive_timeout 120s;
            keepalive_requests 1000000;
            ssl_protocols TLSv1.2 TLSv1.3;   # 1.22's default lacks TLSv1.3
            ssl_session_cache shared:BE:10m;
            ssl_certificate {certs['server']};
            ssl_certificate_key {certs['server_key']};
            root {docroot};
            server {{
                listen 127.0.0.1:{p['be_plain']};
                location = / {{ return 200 "ok"; }}
            }}
            server {{   # connection counters: how many upstream connections a proxy opened
                listen 127.0.0.1:{p['be_status']};
                location = /status {{ stub_status; }}
            }}
            server {{
                listen 127.0.0.1:{p['be_tls']} ssl;
                location = / {{ return 200 "ok"; }}
            }}
            server {{
                listen 127.0.0.1:{p['be_mtls']} ssl;
                ssl_verify_client on;
                ssl_client_certificate {certs['ca']};
                location = / {{ return 200 "ok"; }}
            }}
        }}
        """)


def nginx_proxy_conf(prefix: str, p: dict, certs: dict) -> str:
    ups = ""
    for name, port in (("plain_be", p["be_plain"]), ("tls_be", p["be_tls"]), ("mtls_be", p["be_mtls"])):
        ups += (f"    upstream {name} {{ server 127.0.0.1:{port}; keepalive 64; "
                "keepalive_requests 1000000; keepalive_timeout 120s; }\n")
    term = f"""
        ssl_certificate {certs['server']};
        ssl_certificate_key {certs['server_key']};
        location / {{ proxy_pass http://plain_be; }}"""
    return textwrap.dedent(f"""\
        user root;
        worker_processes 2;
        worker_rlimit_nofile {nofile()};
        daemon off;
        pid {prefix}/nginx.pid;
        error_log {prefix}/error.log warn;
        events {{ worker_connections {nofile() - 64}; }}
        http {{
            access_log off;
            log_format hs '$ssl_session_reused $ssl_protocol $ssl_curve';
            default_type text/plain;
            keepalive_timeout 120s;
            keepalive_requests 1000000;
            ssl_protocols TLSv1.2 TLSv1.3;
            ssl_session_cache shared:SSL:10m;
            ssl_session_timeout 10m;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_max_temp_file_size 0;
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            proxy_ssl_trusted_certificate {certs['ca']};
            proxy_ssl_server_name on;
            proxy_ssl_name {HOST};
            proxy_ssl_session_reuse on;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
        """) + ups + textwrap.indent(textwrap.dedent(f"""\
        server {{   # term
            listen 127.0.0.1:{p['ng_term']} ssl;
            server_name {HOST};{term}
        }}
        server {{   # term-hs: term plus a log of $ssl_session_reused, to prove full handshakes
            listen 127.0.0.1:{p['ng_hs']} ssl;
            server_name {HOST};
            access_log {prefix}/hs.log hs buffer=64k flush=1s;{term}
        }}
        server {{   # term-mtls
            listen 127.0.0.1:{p['ng_term_mtls']} ssl;
            server_name {HOST};
            ssl_verify_client on;
            ssl_verify_depth 2;
            ssl_client_certificate {certs['ca']};{term}
        }}
        server {{   # orig
            listen 127.0.0.1:{p['ng_orig']};
            location / {{ proxy_pass https://tls_be; }}
        }}
        server {{   # orig-mtls
            listen 127.0.0.1:{p['ng_orig_mtls']};
            location / {{
                proxy_pass https://mtls_be;
                proxy_ssl_certificate {certs['client']};
                proxy_ssl_certificate_key {certs['client_key']};
            }}
        }}
        """), "    ") + "}\n"


def haproxy_conf(d: str, p: dict, certs: dict) -> str:
    return textwrap.dedent(f"""\
        global
            nbthread 2
            # HAProxy sizes 2 fds per connection and refuses to start otherwise
            ulimit-n {nofile()}
            maxconn {(nofile() - 200) // 2}
            log stdout format raw local0
            stats socket {d}/admin.sock mode 600 level admin
            ssl-default-bind-options ssl-min-ver TLSv1.2
            ssl-default-server-options ssl-min-ver TLSv1.2

        defaults
            mode http
            option http-keep-alive
            http-reuse always
            timeout connect 5s
            timeout client 60s
            timeout server 60s
            timeout http-request 10s
            timeout http-keep-alive 60s

        frontend term
            bind 127.0.0.1:{p['hp_term']} ssl crt {certs['server_full']}
            default_backend plain

        frontend term_hs
            # term plus a log of ssl_fc_is_resumed, to prove full handshakes
            bind 127.0.0.1:{p['hp_hs']} ssl crt {certs['server_full']}
            log global
            log-format "%[ssl_fc_is_resumed] %sslv"
            default_backend plain

        frontend term_mtls
            bind 127.0.0.1:{p['hp_term_mtls']} ssl crt {certs['server_full']} ca-file {certs['ca']} verify required
            default_backend plain

        frontend orig
            bind 127.0.0.1:{p['hp_orig']}
            default_backend tls

        frontend orig_mtls
            bind 127.0.0.1:{p['hp_orig_mtls']}
            default_backend mtls

        backend plain
            server be 127.0.0.1:{p['be_plain']}

        backend tls
            server be 127.0.0.1:{p['be_tls']} ssl verify required ca-file {certs['ca']} sni str({HOST}) verifyhost {HOST} ssl-reuse

        backend mtls
            server be 127.0.0.1:{p['be_mtls']} ssl verify required ca-file {certs['ca']} sni str({HOST}) verifyhost {HOST} ssl-reuse crt {certs['client_full']}
        """)


def meshgate_conf(p: dict, certs: dict) -> str:
    return textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata:
          name: ingress
          namespace: default
        spec:
          servers:
          - port:
              number: 443
              name: https
              protocol: HTTPS
            hosts:
            - {HOST}
            tls:
              mode: SIMPLE
              serverCertificate: {certs['server']}
              privateKey: {certs['server_key']}
          - port:
              number: 8443
              name: https-mtls
              protocol: HTTPS
            hosts:
            - {HOST}
            tls:
              mode: MUTUAL
              serverCertificate: {certs['server']}
              privateKey: {certs['server_key']}
              caCertificates: {certs['ca']}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: app
          namespace: default
        spec:
          hosts:
          - {HOST}
          gateways:
          - ingress
          http:
          - route:
            - destination:
                host: 127.0.0.1
                port:
                  number: {p['be_plain']}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: bench-test
          namespace: default
        spec:
          hosts:
          - {HOST}
          ports:
          - number: 80
            name: http
            protocol: HTTP
            targetPort: {p['be_tls']}
          - number: 81
            name: http-mtls
            protocol: HTTP
            targetPort: {p['be_mtls']}
          resolution: STATIC
          endpoints:
          - address: 127.0.0.1
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: bench-test
          namespace: default
        spec:
          host: {HOST}
          trafficPolicy:
            portLevelSettings:
            - port:
                number: 80
              tls:
                mode: SIMPLE
                caCertificates: {certs['ca']}
                sni: {HOST}
            - port:
                number: 81
              tls:
                mode: MUTUAL
                caCertificates: {certs['ca']}
                clientCertificate: {certs['client']}
                privateKey: {certs['client_key']}
                sni: {HOST}
        """)


# ---------------------------------------------------------------------------
# Proxies under test
# ---------------------------------------------------------------------------

class Proxy:
    """One proxy under test: how to start it, its pids, its endpoints."""

    def __init__(self, name: str):
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.log_path = ""
        self.endpoints: dict[str, dict] = {}   # scenario -> endpoint description
        self.broken: dict[str, str] = {}        # scenario -> why it cannot run
        self.dead = ""                          # why the process is gone
        self.idle_rss_kib = 0
        self.idle_pss_kib = 0
        self.version = ""
        self.layout = ""

    def pids(self) -> list[int]:
        if not self.proc or self.proc.poll() is not None:
            return []
        if self.name in ("nginx", "backend"):
            return [self.proc.pid] + children_of(self.proc.pid)  # master + workers
        return [self.proc.pid]

    def rss_kib(self) -> int:
        return sum(proc_status_kib(pid, "VmRSS") for pid in self.pids())

    def pss_kib(self) -> int:
        return sum(pss_kib(pid) for pid in self.pids())

    def alive(self) -> bool:
        if self.proc is None:
            return self.name == "direct"
        if self.proc.poll() is not None:
            if not self.dead:
                self.dead = f"exited with status {self.proc.returncode}; log tail:\n{tail(self.log_path, 30)}"
            return False
        return True


def tail(path: str, n: int) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------
# Load tools and their parsers
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


class Bench:
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
        names = ["be_plain", "be_tls", "be_mtls", "be_status",
                 "ng_term", "ng_hs", "ng_term_mtls", "ng_orig", "ng_orig_mtls",
                 "hp_term", "hp_hs", "hp_term_mtls", "hp_orig", "hp_orig_mtls",
                 "mg_term", "mg_term_mtls", "mg_out", "mg_admin", "mg_stats", "mg_ready"]
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

    def _term_endpoints(self, term: int, hs: int, mtls: int, orig: int, orig_mtls: int,
                        orig_host_mtls: str = HOST) -> dict:
        return {
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
        for k in ("ng_term", "ng_hs", "ng_term_mtls", "ng_orig", "ng_orig_mtls"):
            if not wait_tcp(p[k], px.proc):
                raise RuntimeError(f"nginx proxy not listening on {p[k]}: {tail(px.log_path, 20)}")
        px.endpoints = self._term_endpoints(p["ng_term"], p["ng_hs"], p["ng_term_mtls"], p["ng_orig"],
                                            p["ng_orig_mtls"])
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
        for k in ("hp_term", "hp_hs", "hp_term_mtls", "hp_orig", "hp_orig_mtls"):
            if not wait_tcp(p[k], px.proc):
                raise RuntimeError(f"haproxy not listening on {p[k]}: {tail(px.log_path, 20)}")
        px.endpoints = self._term_endpoints(p["hp_term"], p["hp_hs"], p["hp_term_mtls"], p["hp_orig"],
                                            p["hp_orig_mtls"])
        px.hs_log = px.log_path
        log(f"haproxy up (pid {px.proc.pid})")

    def start_meshgate(self, px: Proxy) -> None:
        d = os.path.join(self.work, "meshgate")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "bench.yaml"), "w") as f:
            f.write(meshgate_conf(self.ports, self.certs))
        p = self.ports
        px.log_path = os.path.join(d, "meshgate.log")
        argv = [self.args.meshgate_bin, "run", "-c", d,
                "--port-map", f"443=127.0.0.1:{p['mg_term']}",
                "--port-map", f"8443=127.0.0.1:{p['mg_term_mtls']}",
                "--inbound-bind", "127.0.0.1",
                "--outbound-addr", f"127.0.0.1:{p['mg_out']}",
                "--admin-addr", f"127.0.0.1:{p['mg_admin']}",
                "--stats-addr", f"127.0.0.1:{p['mg_stats']}",
                "--ready-addr", f"127.0.0.1:{p['mg_ready']}",
                "--log-level", "warn",
                "--concurrency", str(self.args.meshgate_threads)]
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        with open(os.path.join(d, "command.txt"), "w") as f:
            f.write(" ".join(argv) + "\n")
        px.proc = CHILDREN.start("meshgate", argv, px.log_path, env=env)
        deadline = time.monotonic() + 20
        ready = False
        while time.monotonic() < deadline and px.proc.poll() is None:
            try:
                if http_get(f"http://127.0.0.1:{p['mg_ready']}/healthz/ready", 1)[0] == 200:
                    ready = True
                    break
            except OSError:
                pass
            time.sleep(0.1)
        if not ready:
            raise RuntimeError(f"meshgate not ready (exit status {px.proc.poll()}):\n{tail(px.log_path, 30)}")
        px.endpoints = self._term_endpoints(p["mg_term"], p["mg_term"], p["mg_term_mtls"], p["mg_out"],
                                            p["mg_out"], orig_host_mtls=f"{HOST}:81")
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

    def meshgate_metrics(self) -> str:
        try:
            st, body = http_get(f"http://127.0.0.1:{self.ports['mg_stats']}/stats/prometheus", 3)
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
        old = px.proc
        try:
            os.killpg(old.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            old.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(old.pid, signal.SIGKILL)
            old.wait(timeout=5)
        CHILDREN.procs = [(n, q) for n, q in CHILDREN.procs if q is not old]
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
        before_rss, before_pss = px.rss_kib(), px.pss_kib()
        argv = [sys.executable, os.path.join(TOOLS, "hold_conns.py"), "--port", str(ep["port"]),
                "--sni", HOST, "--ca", self.certs["ca"], "--n", str(n), "--threads", "8"]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        CHILDREN.procs.append(("hold_conns", p))
        res: dict = {"conns": n, "rss_before_kib": before_rss, "pss_before_kib": before_pss,
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
        c0, b0, h0 = cpu_ticks(pids), cpu_ticks(be_pids), host_cpu()
        cs0 = ctx_switches(pids)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        if sc in ("term-ka", "term-mtls", "orig-ka", "orig-mtls"):
            res, cmd = self.wrk(ep, a.wrk_threads, a.ka_conns, a.duration)
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
        c1, b1, h1 = cpu_ticks(pids), cpu_ticks(be_pids), host_cpu()
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
        cpu = (rec["proxy_cpu_us"] or 0) if px.proc else rec["backend_cpu_us"]
        if sc == "term-1m" and res.get("bytes"):
            rec["cpu_us_per_mib"] = cpu / (res["bytes"] / 1024 ** 2)
        elif sc != "mem" and res.get("requests"):
            rec["cpu_us_per_req"] = cpu / res["requests"]
            if pids:
                rec["ctx_switches_per_req"] = (cs1 - cs0) / res["requests"]
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
                for name in this:
                    if name == "direct" and sc not in DIRECT_SCENARIOS:
                        continue
                    self.run_one(run, sc, self.proxies[name])
                    time.sleep(0.5)

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
            ("mem", "RSS idle, fresh process, MiB", "rss_before_mib", "{:.1f}", False),
            ("mem", "PSS idle, fresh process, MiB", "pss_before_mib", "{:.1f}", False),
            ("mem", f"RSS with {a.conns} idle TLS conns, MiB", "rss_held_mib", "{:.1f}", False),
            ("mem", "KiB per idle TLS conn (RSS)", "kib_per_conn", "{:.1f}", False),
            ("mem", "KiB per idle TLS conn (PSS)", "pss_kib_per_conn", "{:.1f}", False),
            ("mem", "RSS after the load scenarios (before restart), MiB", "rss_after_load_mib", "{:.1f}", False),
            ("mem", f"conns still open at measurement (of {a.conns})", "alive", "{:.0f}", None),
        ]
        # derived per-run values
        direct_p50 = med("direct", "term-lat", "p50_ms")
        for (pname, sc), recs in by.items():
            for r in recs:
                if sc in ("term-lat", "orig-lat") and direct_p50 is not None and r.get("p50_ms") is not None \
                        and pname != "direct":
                    r["added_p50_us"] = (r["p50_ms"] - direct_p50) * 1000
                if sc == "mem" and r.get("rss_held_kib") is not None:
                    r["rss_before_mib"] = r["rss_before_kib"] / 1024
                    r["pss_before_mib"] = r["pss_before_kib"] / 1024
                    r["rss_held_mib"] = r["rss_held_kib"] / 1024
                    r["rss_after_load_mib"] = r["rss_after_load_kib"] / 1024

        def cell(pname, sc, key, fmt, better):
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
            if len(keys) == 1 and pname not in ("nginx", "direct") and better is not None \
                    and keys[0] not in ("added_p50_us",):
                mine, ng = med(pname, sc, keys[0]), med("nginx", sc, keys[0])
                if mine is not None and ng:
                    s += f" ({mine / ng:.2f}× nginx)"
            errs = sum(r.get("errors", 0) or 0 for r in by.get((pname, sc), []))
            if errs and key == spec_first_key.get(sc):
                s += f" ⚠ {errs} errors"
            return s

        spec_first_key = {}
        for sc, _l, key, _f, _b in spec:
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
                   "CPU = the proxy's own processes (utime+stime from /proc); for `direct` it is the backend's.\n")
        cols = order
        out.append("| scenario | metric | " + " | ".join(cols) + " |")
        out.append("|---|---|" + "---|" * len(cols))
        for sc, label, key, fmt, better in spec:
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
                cells.append(cell(pname, sc, key, fmt, better))
            out.append(f"| {sc} | {label} | " + " | ".join(cells) + " |")
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
        out.append("")
        out.append("Upstream connections opened per scenario run (connections the backend accepted, "
                   "from its stub_status; median [min–max]). A pooling proxy opens about as many as it has "
                   f"concurrent requests ({a.ka_conns} for the ka scenarios):\n")
        ka_scs = [x for x in ("term-ka", "term-lat", "term-hs", "term-hs-wrk", "term-mtls", "orig-ka",
                              "orig-lat", "orig-mtls", "term-1m") if x in a.scenarios]
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
    else:
        bits.append(f"{r.get('rps', 0):,.0f} req/s p50 {r.get('p50_ms', 0):.3f} ms p99 {r.get('p99_ms', 0):.3f} ms")
        if sc == "term-hs-wrk":
            bits.append(f"server-seen full/resumed {r.get('server_full')}/{r.get('server_resumed')}")
    if r.get("cpu_us_per_req") is not None:
        bits.append(f"cpu {r['cpu_us_per_req']:.1f} µs/req")
    if r.get("cpu_us_per_mib") is not None:
        bits.append(f"cpu {r['cpu_us_per_mib']:.0f} µs/MiB")
    bits.append(f"host busy {r.get('host_busy', 0)*100:.0f}% steal {r.get('host_steal', 0)*100:.1f}%")
    if r.get("errors"):
        bits.append(f"ERRORS {r['errors']}")
    return ", ".join(bits)


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
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of " + ",".join(SCENARIOS))
    ap.add_argument("--hs-procs", type=int, default=4, help="client processes for term-hs")
    ap.add_argument("--hs-conns", type=int, default=32, help="wrk connections for term-hs-wrk")
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--ka-conns", type=int, default=64)
    ap.add_argument("--meshgate-bin", default=os.path.join(REPO, "target", "release", "meshgate"))
    ap.add_argument("--no-build", action="store_true", help="use the existing meshgate binary as is")
    ap.add_argument("--meshgate-threads", type=int, default=2,
                    help="meshgate --concurrency (worker threads; the comparison uses 2)")
    ap.add_argument("--keep-workdir", action="store_true", help="keep configs, certificates and logs")
    ap.add_argument("--out-dir", default=os.path.join(BENCH_DIR, "results"))
    a = ap.parse_args()
    if a.smoke:
        a.runs, a.duration = 1, 2
    if a.tenk:
        a.conns = 10000
    a.proxies = [p for p in a.proxies.split(",") if p]
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    for p in a.proxies:
        if p not in PROXIES:
            ap.error(f"unknown proxy {p}")
    for s in a.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s}")

    missing = [t for t in ("nginx", "haproxy", "wrk", "openssl", "cc") if not shutil.which(t)]
    if missing:
        print(f"missing tools: {' '.join(missing)}; run bench/install-deps.sh", file=sys.stderr)
        return 2
    want = max(65536, a.conns + 1024)
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
