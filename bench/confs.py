"""Certificates and configurations: the bench CA and certificates, the nginx
(backend and proxy), HAProxy and meshgate configurations, and config-scale's
generated configuration."""
from __future__ import annotations

import os
import subprocess
import textwrap

from common import HOST
from procinfo import nofile



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
# Configurations
# ---------------------------------------------------------------------------

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
