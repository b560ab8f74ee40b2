//! meshgate as a transparent sidecar: capture rules applied by
//! `meshgate iptables` (iptables and nft) in the pod namespace, meshgate as
//! uid 1337, the app (curl, raw sockets) as uid 1000 with no proxy
//! settings, external servers in the world namespace.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use meshgate::devpki::{DevCa, LeafSpec};
use meshgate::standin::{StandIn, StandInConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::netns::{self, APP_UID, MESHGATE, Ns, Proc, Topology, make_readable, shared_tempdir};

/// meshgate's readiness and stats ports in the pod (its defaults).
const READY: ([u8; 4], u16) = ([127, 0, 0, 1], 15021);
const STATS: &str = "http://127.0.0.1:15020/stats/prometheus";

/// A pod running meshgate under capture, and what it was given.
struct Pod {
    t: Topology,
    dir: tempfile::TempDir,
    meshgate: Proc,
}

/// World servers the tests share: an HTTPS stand-in for
/// `api.external.com` (ext 1), one for `secure.external.com` (ext 2), one
/// for `other.external.com` (ext 3, no ServiceEntry), a plain HTTP server
/// for `plain.external.com` (ext 4, no ServiceEntry) and a server that
/// speaks first on ext 6 port 25.
struct World {
    api: StandIn,
    secure: StandIn,
    other: StandIn,
}

/// The registry: `api.external.com` port 80 originated to TLS on 443
/// (and reachable by the VIP ext 5), `secure.external.com` port 443 TLS
/// (with a DestinationRule asking for TLS on it too, which must not wrap
/// the app's own TLS again).
fn registry(t: &Topology, ca_file: &Path) -> String {
    let ca = ca_file.display();
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api}}
spec:
  hosts: [api.external.com]
  addresses: ["{vip}"]
  location: MESH_EXTERNAL
  ports:
  - {{number: 80, name: http, protocol: HTTP, targetPort: 443}}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api}}
spec:
  host: api.external.com
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 80}}
      tls: {{mode: SIMPLE, caCertificates: {ca}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure}}
spec:
  hosts: [secure.external.com]
  location: MESH_EXTERNAL
  ports:
  - {{number: 443, name: tls, protocol: TLS}}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure}}
spec:
  host: secure.external.com
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca}}}
"#,
        vip = t.ext(5),
    )
}

/// Starts the world servers and names them in the pod's hosts file.
async fn world(t: &Topology, ca: &DevCa) -> World {
    let standin = |name: &str, i: u8| {
        let leaf = ca.issue(&LeafSpec::server(&[name]));
        t.add_host(name, t.ext(i));
        StandIn::start_on(
            t.listen_in(Ns::World, (t.ext(i), 443)),
            StandInConfig::new(&leaf.cert_pem, &leaf.key_pem),
        )
    };
    let api = standin("api.external.com", 1).await.expect("stand-in");
    let secure = standin("secure.external.com", 2).await.expect("stand-in");
    let other = standin("other.external.com", 3).await.expect("stand-in");
    t.add_host("plain.external.com", t.ext(4));
    serve_plain(t.listen_in(Ns::World, (t.ext(4), 80)));
    serve_banner(t.listen_in(Ns::World, (t.ext(6), 25)));
    World { api, secure, other }
}

/// A plain HTTP/1.1 server answering `plain <path> to <local address> from
/// <peer ip>`.
fn serve_plain(l: tokio::net::TcpListener) {
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head);
                let path = line.split(' ').nth(1).unwrap_or("?").to_string();
                let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
                let body = format!("plain {path} to {local} from {}", peer.ip());
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
}

/// A server that speaks first (as SMTP or MySQL do): a banner, then it
/// echoes one line.
fn serve_banner(l: tokio::net::TcpListener) {
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"220 banner\r\n").await;
                let mut buf = [0u8; 256];
                if let Ok(n) = s.read(&mut buf).await {
                    let _ = s.write_all(&buf[..n]).await;
                }
            });
        }
    });
}

/// A pod with the world's servers, meshgate serving `config` (plus the
/// registry) with `bootstrap` under capture, and `meshgate iptables
/// rules...` applied.
async fn pod(config: &str, bootstrap: &str, rules: &[&str]) -> Option<(Pod, World)> {
    let t = netns::setup()?;
    let dir = shared_tempdir();
    let ca = DevCa::new("world CA");
    let ca_file = ca.write_cert(dir.path(), "ca").expect("write CA");
    let world = world(&t, &ca).await;
    let config_file = dir.path().join("config.yaml");
    std::fs::write(
        &config_file,
        format!("{}\n---\n{config}", registry(&t, &ca_file)),
    )
    .unwrap();
    let bootstrap_file = dir.path().join("bootstrap.yaml");
    std::fs::write(
        &bootstrap_file,
        format!("interceptionMode: REDIRECT\nprotocolDetectionTimeout: 500ms\n{bootstrap}"),
    )
    .unwrap();
    make_readable(dir.path());
    let (c, b) = (path(&config_file), path(&bootstrap_file));
    let meshgate = t
        .start_meshgate(
            &["run", "-c", &c, "--bootstrap", &b, "--concurrency", "1"],
            READY.into(),
        )
        .await;
    let mut args = vec![MESHGATE, "iptables"];
    args.extend_from_slice(rules);
    t.exec_ok(Ns::Pod, &args);
    Some((Pod { t, dir, meshgate }, world))
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

impl Pod {
    fn ca_file(&self) -> String {
        path(&self.dir.path().join("ca"))
    }

    /// The value of a metric line starting with `prefix` (0 when absent).
    async fn metric(&self, prefix: &str) -> f64 {
        let c = self.t.curl(&[STATS]).await;
        assert_eq!(c.status, 200, "stats: {c:?}");
        c.body
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until meshgate's output holds a line with every one of
    /// `parts` (access-log lines are written when a connection closes).
    async fn logged(&self, parts: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let out = self.meshgate.output();
            if let Some(line) = out.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no line with {parts:?} in meshgate's output:\n{out}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Connects as the app to `addr` (captured), writes `send` when given,
    /// and reads what comes back until the peer closes or 2 s pass.
    async fn raw(&self, addr: impl Into<SocketAddr>, send: Option<&[u8]>) -> Vec<u8> {
        let mut s = self
            .t
            .tokio_connect_in(Ns::Pod, APP_UID, addr.into())
            .await
            .expect("connect as the app");
        if let Some(bytes) = send {
            s.write_all(bytes).await.expect("write");
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Ok(n)) = tokio::time::timeout_at(until, s.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.ends_with(b"\r\n") && send.is_some() && got.len() > 12 {
                break;
            }
        }
        got
    }
}

/// Asserts `meshgate iptables --cleanup` leaves no capture rule.
fn assert_cleanup(pod: &Pod, backend: &[&str]) {
    let mut args = vec![MESHGATE, "iptables", "--cleanup"];
    args.extend_from_slice(backend);
    pod.t.exec_ok(Ns::Pod, &args);
    let rules = pod.t.rules(Ns::Pod);
    assert!(
        !rules.to_ascii_lowercase().contains("istio") && !rules.contains("15001"),
        "rules left after cleanup:\n{rules}"
    );
}

#[tokio::test]
async fn plain_http_from_the_app_leaves_as_verified_tls() {
    let Some((pod, world)) = pod("", "", &[]).await else {
        return;
    };
    // The app knows nothing of meshgate: plain HTTP to the real name.
    let c = pod.t.curl(&["http://api.external.com/hello"]).await;
    assert_eq!(c.status, 200, "{c:?}\n{}", pod.meshgate.output());
    let seen = world.api.last().expect("the service saw a connection");
    assert_eq!(seen.sni.as_deref(), Some("api.external.com"));
    assert_eq!(world.api.requests(), 1);
    let line = pod
        .logged(&["connection", &format!("original_dst={}:80", pod.t.ext(1))])
        .await;
    assert!(line.contains("protocol=http"), "{line}");

    // A Host the registry does not know, dialled at the ServiceEntry's VIP.
    let vip = format!("http://{}/by-vip", pod.t.ext(5));
    let c = pod.t.curl(&[&vip]).await;
    assert_eq!(c.status, 200, "{c:?}\n{}", pod.meshgate.output());
    assert_eq!(world.api.requests(), 2, "the VIP reached the ServiceEntry");

    // An app configured with a proxy elsewhere, captured on its way there:
    // the absolute-form request names its own host and port.
    let elsewhere = format!("http://{}:3128", pod.t.ext(4));
    let c = pod
        .t
        .curl(&["-x", &elsewhere, "http://api.external.com/absolute"])
        .await;
    assert_eq!(c.status, 200, "{c:?}\n{}", pod.meshgate.output());
    assert_eq!(world.api.requests(), 3);

    // Three captured connections: meshgate's own TLS connections to the
    // service were not captured again (nor refused as a loop).
    let http = pod
        .metric("meshgate_captured_connections_total{direction=\"outbound\",protocol=\"http\"}")
        .await;
    assert_eq!(http, 3.0);
    let loops = pod
        .metric("meshgate_captured_connections_total{direction=\"outbound\",protocol=\"loop\"}")
        .await;
    assert_eq!(loops, 0.0);
    assert_cleanup(&pod, &[]);
    // Without the rules the app's plain HTTP goes nowhere near meshgate.
    let c = pod.t.curl(&["http://api.external.com/hello"]).await;
    assert_eq!(c.status, 0, "port 80 has no listener: {c:?}");
}

#[tokio::test]
async fn the_nft_backend_captures_the_same_way() {
    let Some((pod, world)) = pod("", "", &["--backend", "nftables"]).await else {
        return;
    };
    let c = pod.t.curl(&["http://api.external.com/nft"]).await;
    assert_eq!(c.status, 200, "{c:?}\n{}", pod.t.rules(Ns::Pod));
    assert_eq!(
        world.api.last().and_then(|s| s.sni).as_deref(),
        Some("api.external.com")
    );
    assert_cleanup(&pod, &["--backend", "nftables"]);
}

#[tokio::test]
async fn tls_from_the_app_passes_through_untouched() {
    let Some((pod, world)) = pod("", "", &[]).await else {
        return;
    };
    let ca = pod.ca_file();
    // A registered TLS host whose DestinationRule asks for TLS: the app's
    // TLS is not wrapped again (curl verifies the service's own
    // certificate end to end).
    let c = pod
        .t
        .curl(&["--cacert", &ca, "https://secure.external.com/x"])
        .await;
    assert_eq!(c.status, 200, "{c:?}\n{}", pod.meshgate.output());
    assert_eq!(world.secure.handshakes(), 1);
    assert_eq!(
        world.secure.last().and_then(|s| s.sni).as_deref(),
        Some("secure.external.com")
    );
    let line = pod.logged(&["connection", "protocol=tls"]).await;
    assert!(
        line.contains(&format!("original_dst={}:443", pod.t.ext(2))),
        "{line}"
    );
    // An unregistered TLS host under ALLOW_ANY: to the address dialled.
    let c = pod
        .t
        .curl(&["--cacert", &ca, "https://other.external.com/y"])
        .await;
    assert_eq!(c.status, 200, "{c:?}");
    assert_eq!(world.other.requests(), 1);
    // Unregistered plain HTTP: PassthroughCluster to the address dialled
    // (not to wherever the Host header points).
    let c = pod
        .t
        .curl(&[
            "-H",
            "Host: api.external.com.invalid",
            &format!("http://{}/p", pod.t.ext(4)),
        ])
        .await;
    assert_eq!(c.status, 200, "{c:?}");
    assert_eq!(
        c.body,
        format!("plain /p to {}:80 from {}", pod.t.ext(4), pod.t.pod_ip())
    );
    // Neither HTTP nor TLS, from a server that speaks first: TCP to the
    // address dialled once the detection timeout passes.
    let got = pod.raw((pod.t.ext(6), 25), None).await;
    assert!(got.starts_with(b"220 banner"), "{got:?}");
    let tcp = pod
        .metric("meshgate_captured_connections_total{direction=\"outbound\",protocol=\"tcp\"}")
        .await;
    assert_eq!(tcp, 1.0);
}

#[tokio::test]
async fn registry_only_refuses_what_the_registry_does_not_name() {
    let bootstrap = "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n";
    let Some((pod, world)) = pod("", bootstrap, &[]).await else {
        return;
    };
    let ca = pod.ca_file();
    // Plain HTTP to an unknown host: 502, BlackHoleCluster.
    let c = pod.t.curl(&["http://plain.external.com/"]).await;
    assert_eq!(c.status, 502, "{c:?}");
    // TLS to an unknown name: an alert, and the server never sees it.
    let c = pod
        .t
        .curl(&["--cacert", &ca, "https://other.external.com/"])
        .await;
    assert_eq!(c.status, 0, "{c:?}");
    assert!(
        c.stderr.contains("unrecognized name") || c.stderr.contains("alert"),
        "{c:?}"
    );
    assert_eq!(world.other.handshakes(), 0);
    // Bytes to an unknown address: closed, nothing reaches the server.
    let got = pod.raw((pod.t.ext(6), 25), None).await;
    assert!(got.is_empty(), "{got:?}");
    // Registered hosts still work.
    let c = pod.t.curl(&["http://api.external.com/ok"]).await;
    assert_eq!(c.status, 200, "{c:?}");
    let c = pod
        .t
        .curl(&["--cacert", &ca, "https://secure.external.com/ok"])
        .await;
    assert_eq!(c.status, 200, "{c:?}");
    pod.logged(&["connection", "BlackHoleCluster"]).await;
}

#[tokio::test]
async fn outbound_tls_policy_require_lets_no_plain_text_out() {
    let bootstrap = format!(
        "outboundTlsPolicy:\n  mode: REQUIRE\n  exceptions: [\"{}:80\"]\n",
        "plain.external.com"
    );
    let Some((pod, world)) = pod("", &bootstrap, &[]).await else {
        return;
    };
    let ca = pod.ca_file();
    // Originated by meshgate: allowed.
    let c = pod.t.curl(&["http://api.external.com/tls"]).await;
    assert_eq!(c.status, 200, "{c:?}");
    // The app's own TLS: allowed.
    let c = pod
        .t
        .curl(&["--cacert", &ca, "https://other.external.com/tls"])
        .await;
    assert_eq!(c.status, 200, "{c:?}");
    assert_eq!(world.other.requests(), 1);
    // Plain HTTP to a host without origination: 403, nothing sent.
    let c = pod
        .t
        .curl(&[&format!("http://{}/plain", pod.t.ext(4))])
        .await;
    assert_eq!(c.status, 403, "{c:?}");
    assert!(
        c.body.contains("plaintext") || c.body.contains("TLS"),
        "{c:?}"
    );
    // The exception: allowed in plain text.
    let c = pod.t.curl(&["http://plain.external.com/excepted"]).await;
    assert_eq!(c.status, 200, "{c:?}");
    // Plain bytes to an address: closed.
    let got = pod.raw((pod.t.ext(6), 25), Some(b"HELO x\r\n")).await;
    assert!(!got.starts_with(b"220"), "{got:?}");
    let refused = pod.metric("meshgate_plaintext_refused_total").await;
    assert!(refused >= 2.0, "{refused}");
    pod.logged(&["plaintext_refused"]).await;
}

/// A mesh identity for the pod (its SPIFFE ID) and one for a client.
fn identities(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ca = meshgate::ca::MeshCa::init(
        &dir.join("mesh-ca"),
        "cluster.local",
        false,
        Duration::from_secs(86_400),
    )
    .expect("mesh CA");
    let issue = |sa: &str, name: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        ca.issue(
            &meshgate::ca::spiffe_id("cluster.local", "default", sa),
            &[],
            Duration::from_secs(86_400),
        )
        .unwrap()
        .write(&d)
        .unwrap();
        d
    };
    (issue("app", "identity"), issue("client", "client"))
}

#[tokio::test]
async fn inbound_tls_is_terminated_and_the_app_sees_plain_http() {
    let Some(t) = netns::setup() else { return };
    let dir = shared_tempdir();
    let (identity, client) = identities(dir.path());
    // The app, in the pod, on its own ports.
    let app = t.listen_in(Ns::Pod, ([0, 0, 0, 0], 8080));
    meshgate::standin::serve_echo_service(app).expect("app");
    let ca = DevCa::new("ingress CA");
    let leaf = ca.issue(&LeafSpec::server(&["app.pod.test"]));
    let (cert, key) = leaf.write(dir.path(), "ingress").unwrap();
    let ca_file = ca.write_cert(dir.path(), "ingress-ca").unwrap();
    let config = format!(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default}}
spec:
  mtls: {{mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-denied}}
spec:
  action: DENY
  rules:
  - to: [{{operation: {{ports: ["8080"], paths: ["/denied*"]}}}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default}}
spec:
  ingress:
  - port: {{number: 8443, protocol: HTTP, name: https}}
    defaultEndpoint: 127.0.0.1:8080
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
"#,
        cert = cert.display(),
        key = key.display(),
    );
    let config_file = dir.path().join("config.yaml");
    std::fs::write(&config_file, config).unwrap();
    make_readable(dir.path());
    let id = path(&identity);
    let meshgate = t
        .start_meshgate(
            &[
                "run",
                "-c",
                &path(&config_file),
                "--identity-dir",
                &id,
                "--interception-mode",
                "REDIRECT",
                // For connections made to 15006 itself; captured ones
                // still go to the port they dialled.
                "--app-addr",
                "127.0.0.1:9999",
                "--concurrency",
                "1",
            ],
            READY.into(),
        )
        .await;
    t.exec_ok(Ns::Pod, &[MESHGATE, "iptables"]);
    let pod_url = format!("https://{}:8080/whoami", t.pod_ip());
    let client_cert = path(&client.join("cert-chain.pem"));
    let client_key = path(&client.join("key.pem"));
    // A mesh client (a workload certificate) to the app's own port: the
    // mutual TLS is meshgate's, the app gets plain HTTP with the caller's
    // identity. (`-k`: curl cannot check a SPIFFE name; meshgate's check
    // of the client is what this test is about.)
    let c = t
        .curl_as(
            Ns::World,
            0,
            &["-k", "--cert", &client_cert, "--key", &client_key, &pod_url],
        )
        .await;
    assert_eq!(c.status, 200, "{c:?}\n{}", meshgate.output());
    let echo: serde_json::Value = serde_json::from_str(&c.body).expect("echo JSON");
    let xfcc = echo["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default();
    assert!(
        xfcc.contains("spiffe://cluster.local/ns/default/sa/client"),
        "{echo}"
    );
    // AuthorizationPolicy on captured traffic, by the port the client
    // dialled: /denied on 8080 is refused before the app sees it.
    let denied = format!("https://{}:8080/denied", t.pod_ip());
    let c = t
        .curl_as(
            Ns::World,
            0,
            &["-k", "--cert", &client_cert, "--key", &client_key, &denied],
        )
        .await;
    assert_eq!(c.status, 403, "{c:?}\n{}", meshgate.output());
    assert_eq!(c.body, "RBAC: access denied", "{c:?}");
    // STRICT: no client certificate, no way in; plain text neither.
    let c = t.curl_as(Ns::World, 0, &["-k", &pod_url]).await;
    assert_ne!(c.status, 200, "{c:?}");
    let c = t
        .curl_as(
            Ns::World,
            0,
            &[&format!("http://{}:8080/plain", t.pod_ip())],
        )
        .await;
    assert_ne!(c.status, 200, "{c:?}");
    // The Sidecar ingress port is served from the capture listener (the
    // pod binds nothing on 8443), with its own certificate.
    let resolve = format!("app.pod.test:8443:{}", t.pod_ip());
    let c = t
        .curl_as(
            Ns::World,
            0,
            &[
                "--cacert",
                &path(&ca_file),
                "--resolve",
                &resolve,
                "https://app.pod.test:8443/ingress",
            ],
        )
        .await;
    assert_eq!(c.status, 200, "{c:?}\n{}", meshgate.output());
    assert!(c.body.contains("/ingress"), "{c:?}");
    // The DENY names port 8080: the same path on 8443 is served.
    let c = t
        .curl_as(
            Ns::World,
            0,
            &[
                "--cacert",
                &path(&ca_file),
                "--resolve",
                &resolve,
                "https://app.pod.test:8443/denied",
            ],
        )
        .await;
    assert_eq!(c.status, 200, "{c:?}\n{}", meshgate.output());
    let line = {
        let start = Instant::now();
        loop {
            let out = meshgate.output();
            if let Some(l) = out
                .lines()
                .find(|l| l.contains("connection") && l.contains(":8443"))
            {
                break l.to_string();
            }
            assert!(start.elapsed() < Duration::from_secs(5), "{out}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(
        line.contains(&format!("original_dst={}:8443", t.pod_ip())),
        "{line}"
    );
}
