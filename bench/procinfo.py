"""Processes and /proc readings: the registry of child processes (each in its own
process group, all stopped on exit), short-lived tool runs, CPU/memory/connection
readings from /proc, ports and readiness probes, and the Proxy under test."""
from __future__ import annotations

import os
import resource
import signal
import socket
import ssl
import subprocess
import time
import urllib.request

from common import HOST



# ---------------------------------------------------------------------------
# Processes: every child in its own process group, all stopped on exit
# ---------------------------------------------------------------------------

class Children:
    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def stop(self, proc: subprocess.Popen) -> None:
        """SIGTERM to the process group, SIGKILL after 15 s; then forgotten."""
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        self.procs = [(n, q) for n, q in self.procs if q is not proc]

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


def nofile() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


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
