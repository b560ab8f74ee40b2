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
             "orig-mtls", "term-1m", "term-h2", "floor", "ka-10k", "mem", "config-scale"]
# ka-10k (10,000 active TLS connections) runs with --10k, --smoke or when named in --scenarios
DEFAULT_SCENARIOS = [s for s in SCENARIOS if s != "ka-10k"]
DIRECT_SCENARIOS = {"term-ka", "term-lat", "term-1m", "floor"}
# run once after the interleaved runs, not per proxy (meshgate only)
SPECIAL_SCENARIOS = {"config-scale"}


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


def cpu_split(pids: list[int]) -> tuple[int, int]:
    """(utime, stime) clock ticks summed over these processes (all their threads)."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])    # utime (process-wide)
            system += int(fields[12])  # stime
        except (OSError, IndexError, ValueError):
            pass
    return user, system


def cpu_ticks(pids: list[int]) -> int:
    return sum(cpu_split(pids))


def established(port: int) -> int:
    """TCP connections in ESTABLISHED state whose local port is `port` (IPv4, from /proc/net/tcp):
    the server side of the connections to a listener, accepted or still in its backlog."""
    want = f":{port:04X}"
    n = 0
    try:
        with open("/proc/net/tcp") as f:
            next(f, None)
            for line in f:
                parts = line.split(None, 4)
                if len(parts) > 3 and parts[3] == "01" and parts[1].endswith(want):
                    n += 1
    except OSError:
        return -1
    return n


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
    # term-h2 has 640 requests in flight: with `keepalive 64` nginx would close and reopen most
    # upstream connections (measured: 8,400 opened in 2 s); 1024 idle per worker keeps them
    ups += (f"    upstream plain_be_h2 {{ server 127.0.0.1:{p['be_plain']}; keepalive 1024; "
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
        server {{   # term-h2: term with HTTP/2 offered over ALPN (its own listener, so that the
                    # other term scenarios run on exactly the configuration they always had)
            listen 127.0.0.1:{p['ng_h2']} ssl http2;
            server_name {HOST};{term.replace("http://plain_be;", "http://plain_be_h2;")}
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

        frontend term_h2
            # term with HTTP/2 offered over ALPN (its own listener, as for nginx)
            bind 127.0.0.1:{p['hp_h2']} ssl crt {certs['server_full']} alpn h2,http/1.1
            default_backend plain

        frontend floor
            # the floor: a plain TCP relay, no TLS, no HTTP parsing
            mode tcp
            no option http-keep-alive
            bind 127.0.0.1:{p['hp_floor']}
            default_backend plain_tcp

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

        backend plain_tcp
            mode tcp
            no option http-keep-alive
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


def scale_conf(p: dict, certs: dict, services: int, gateway_hosts: int) -> str:
    """config-scale: `services` ServiceEntries (svcN.example.com, port 80 HTTP → the TLS backend,
    STATIC 127.0.0.1) each with a DestinationRule (port-level SIMPLE TLS, verified with the bench CA),
    and one Gateway with one HTTPS server listing `gateway_hosts` hosts. Added to the bench's
    normal configuration (whose `bench.test` entry carries the measured requests)."""
    out = [textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata:
          name: scale
          namespace: default
        spec:
          servers:
          - port:
              number: 443
              name: https-scale
              protocol: HTTPS
            hosts:
        """) + "".join(f"    - gw{i}.example.com\n" for i in range(gateway_hosts))
        + f"    tls:\n      mode: SIMPLE\n      serverCertificate: {certs['server']}\n"
        f"      privateKey: {certs['server_key']}\n"]
    for i in range(services):
        out.append(f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc{i}
  namespace: default
spec:
  hosts:
  - svc{i}.example.com
  ports:
  - number: 80
    name: http
    protocol: HTTP
    targetPort: {p['be_tls']}
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
""")
        out.append(f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: svc{i}
  namespace: default
spec:
  host: svc{i}.example.com
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 80
      tls:
        mode: SIMPLE
        caCertificates: {certs['ca']}
        sni: {HOST}
""")
    return "---\n".join(out)


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

    def anon_kib(self) -> int:
        """Anonymous resident memory (heap, stacks): RSS without the mapped
        program and library files, which are clean and shared."""
        return sum(proc_status_kib(pid, "RssAnon") for pid in self.pids())

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

    def stop_proc(self, proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        CHILDREN.procs = [(n, q) for n, q in CHILDREN.procs if q is not proc]

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
                    self.stop_proc(proc)
                    continue
                time.sleep(0.3)
                rss = proc_status_kib(proc.pid, "VmRSS")
                self.scale_emit("ready_s", config, ready, rss_ready_kib=rss)
                for j in range(1, a.scale_reloads + 1):
                    took, result = self.reload(proc, "sc")
                    time.sleep(0.3)
                    self.scale_emit("reload_s", config, took, result=result, reload=j,
                                    rss_kib=proc_status_kib(proc.pid, "VmRSS"))
                self.stop_proc(proc)
        # 3. keep-alive requests while reloads happen (p99, max), and without reloads; CPU per request
        #    of orig-ka with each configuration
        d = dirs["scale"]
        procs = {}
        for config in ("scale",):
            proc, ready = self.launch_meshgate(d, "sc", ["--watch-interval", "0s"], name="meshgate-scale")
            if ready is None:
                self.notes.append("config-scale: the 10k-config meshgate did not become ready; latency and "
                                  "CPU measures skipped")
                self.stop_proc(proc)
                return
            procs[config] = proc
        proc = procs["scale"]
        ep_scale = {"url": f"http://127.0.0.1:{self.ports['sc_out']}/", "port": self.ports["sc_out"], "tls": False}
        ok, detail = probe(ep_scale["port"], False, self.certs)
        if not ok:
            self.notes.append(f"config-scale: orig request through the 10k-config meshgate failed: {detail}")
            self.stop_proc(proc)
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
                        # waits for the reload to be counted even if wrk ends first
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
        self.stop_proc(proc)

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

    # ----- report -----

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
                   "every 20 ms; `--watch-interval 0s`). Latency: `wrk -t1 -c8 --latency` on the outbound "
                   f"listener (`Host: {HOST}`) for {max(4.0, a.reload_latency_duration):g} s, without reloads and "
                   f"with a SIGHUP every {a.reload_interval:g} s (the next one once the previous is counted). CPU: "
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
            ("reload (SIGHUP → success counted), s", pick("reload_s", "scale", where=ok),
             pick("reload_s", "small", where=ok), "{:.2f}", "≤ 0.5 s"),
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
               or (r["measure"] == "reload_s" and r.get("result") != "success")
               or (r["measure"] == "validate_s" and r.get("exit") != 0) or r.get("errors")]
        for r in bad[:10]:
            out.append(f"\n⚠ {r['config']} {r['measure']}: "
                       + ", ".join(f"{k}={r.get(k)}" for k in ("result", "exit", "errors", "error", "tool_error")
                                   if r.get(k) not in (None, 0, "success")))
        return out

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
