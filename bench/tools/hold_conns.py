#!/usr/bin/env python3
"""Open N TLS connections, make one keep-alive request on each, hold them.

Prints `READY {json}` once all are open (or failed), then waits for a line on
stdin, checks how many are still open (a non-blocking read that would block =
open), prints `DONE {json}` and closes everything.
"""
import argparse
import json
import resource
import socket
import ssl
import sys
import threading
from collections import Counter


def read_response(s):
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            raise ConnectionError("closed before response headers")
        buf += d
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError("status " + head[:12].decode("latin1"))
    length = None
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    if length is None:  # chunked: read to the last chunk
        while not body.endswith(b"0\r\n\r\n"):
            d = s.recv(4096)
            if not d:
                raise ConnectionError("closed in body")
            body += d
        return
    while len(body) < length:
        d = s.recv(4096)
        if not d:
            raise ConnectionError("closed in body")
        body += d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sni", default="bench.test")
    ap.add_argument("--host-header", default="bench.test")
    ap.add_argument("--ca", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    want = args.n + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    ctx = ssl.create_default_context(cafile=args.ca)
    req = f"GET / HTTP/1.1\r\nHost: {args.host_header}\r\n\r\n".encode()
    socks, errors, lock = [], Counter(), threading.Lock()

    def opener(count):
        for _ in range(count):
            try:
                raw = socket.create_connection((args.host, args.port), timeout=15)
                s = ctx.wrap_socket(raw, server_hostname=args.sni)
                s.sendall(req)
                read_response(s)
                with lock:
                    socks.append(s)
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors[f"{type(e).__name__}: {str(e)[:100]}"] += 1

    per = [args.n // args.threads + (1 if i < args.n % args.threads else 0) for i in range(args.threads)]
    ts = [threading.Thread(target=opener, args=(c,)) for c in per]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("READY " + json.dumps({"opened": len(socks), "failed": sum(errors.values()),
                                 "error_kinds": dict(errors.most_common(5))}), flush=True)
    sys.stdin.readline()
    alive = 0
    for s in socks:
        s.setblocking(False)
        try:
            d = s.recv(1)
            alive += 1 if d else 0
        except (ssl.SSLWantReadError, BlockingIOError):
            alive += 1
        except Exception:  # noqa: BLE001 - closed or reset
            pass
    print("DONE " + json.dumps({"alive": alive}), flush=True)
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


if __name__ == "__main__":
    main()
