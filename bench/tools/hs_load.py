#!/usr/bin/env python3
"""Full-handshake load: every request on a new TCP + TLS connection.

Each worker process makes one ssl.SSLContext (chain and hostname verified
against --ca, SNI --sni) and never passes a saved session to wrap_socket, so
OpenSSL cannot resume: every connection is a full handshake. That is checked,
not assumed: SSLSocket.session_reused is read after every handshake and the
counts of full vs resumed handshakes are reported.

Per connection: connect, handshake, `GET <path>` with `Connection: close`,
read to EOF (the server closes), close. Latency = connect start to EOF.
Prints one JSON object on stdout.
"""
import argparse
import json
import multiprocessing as mp
import socket
import ssl
import time
from collections import Counter


def worker(args, start_at, deadline, q):
    ctx = ssl.create_default_context(cafile=args.ca)
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    req = (f"GET {args.path} HTTP/1.1\r\nHost: {args.host_header}\r\n"
           f"Connection: close\r\n\r\n").encode()
    lat, full, resumed, bad = [], 0, 0, 0
    versions, errors = Counter(), Counter()
    while time.monotonic() < start_at:
        time.sleep(0.001)
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            raw = socket.create_connection((args.host, args.port), timeout=10)
            s = ctx.wrap_socket(raw, server_hostname=args.sni)
            if s.session_reused:
                resumed += 1
            else:
                full += 1
            versions[s.version()] += 1
            s.sendall(req)
            buf = bytearray()
            while True:
                d = s.recv(65536)
                if not d:
                    break
                buf += d
            s.close()
            if not buf.startswith(b"HTTP/1.1 200"):
                bad += 1
                errors["status " + bytes(buf[:12]).decode("latin1")] += 1
                continue
            lat.append(time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - every failure is counted
            errors[f"{type(e).__name__}: {str(e)[:100]}"] += 1
            time.sleep(0.005)
    q.put({"lat": lat, "full": full, "resumed": resumed, "bad": bad,
           "versions": dict(versions), "errors": dict(errors)})


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(p / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[i]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sni", default="bench.test")
    ap.add_argument("--host-header", default="bench.test")
    ap.add_argument("--path", default="/")
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--duration", type=float, default=10)
    args = ap.parse_args()

    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start_at = time.monotonic() + 0.2
    deadline = start_at + args.duration
    ps = [ctx.Process(target=worker, args=(args, start_at, deadline, q)) for _ in range(args.procs)]
    for p in ps:
        p.start()
    parts = [q.get(timeout=args.duration + 60) for _ in ps]
    for p in ps:
        p.join(timeout=10)
    lat = sorted(x for part in parts for x in part["lat"])
    errors, versions = Counter(), Counter()
    for part in parts:
        errors.update(part["errors"])
        versions.update(part["versions"])
    out = {
        "ok": len(lat),
        "full_handshakes": sum(p["full"] for p in parts),
        "resumed_handshakes": sum(p["resumed"] for p in parts),
        "bad_status": sum(p["bad"] for p in parts),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(5)),
        "versions": dict(versions),
        "duration_s": args.duration,
        "rate": len(lat) / args.duration,
        "p50_ms": pct(lat, 50) * 1000 if lat else None,
        "p99_ms": pct(lat, 99) * 1000 if lat else None,
        "procs": args.procs,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
