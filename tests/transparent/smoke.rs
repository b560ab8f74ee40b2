//! The harness itself, with hand-written capture rules: routing from the
//! pod to world by a hosts-file name, iptables and nft REDIRECT capturing
//! the app's connections (not the proxy's) with the original destination
//! readable, inbound REDIRECT, cleanup, and meshgate run as uid 1337.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use meshgate::devpki::{DevCa, LeafSpec};
use meshgate::standin::{StandIn, StandInConfig, serve_echo_service};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::netns::{self, APP_UID, Ns, PROXY_UID, Topology, shared_tempdir};

/// A plain HTTP/1.1 server on `l` answering every request with
/// `<label> <original destination> from <peer>`; the original destination
/// is the pre-NAT address (SO_ORIGINAL_DST), or the local address when the
/// connection was not redirected.
fn serve_text(l: tokio::net::TcpListener, label: &'static str) {
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
                let body = format!("{label} {} from {}", original_dst(&s), peer.ip());
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
}

/// The accepted connection's destination before NAT.
fn original_dst(s: &tokio::net::TcpStream) -> SocketAddr {
    let sock = socket2::SockRef::from(s);
    let local = s.local_addr().expect("local_addr");
    let found = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    found.ok().and_then(|a| a.as_socket()).unwrap_or(local)
}

/// Asserts a curl answered 200 with `body`.
fn assert_body(c: &netns::Curl, body: &str, t: &Topology) {
    assert!(
        c.status == 200 && c.body == body,
        "expected 200 {body:?}, got {c:?}\npod rules:\n{}",
        t.rules(Ns::Pod)
    );
}

#[tokio::test]
async fn the_app_reaches_world_servers_by_hosts_file_name_over_ipv4_ipv6_and_tls() {
    let Some(t) = netns::setup() else { return };
    t.add_host("api.external.com", t.ext(1));
    t.add_host("v6.external.com", t.ext6(1));
    t.add_host("tls.external.com", t.ext(2));

    serve_text(t.listen_in(Ns::World, (t.ext(1), 80)), "world");
    serve_text(t.listen_in(Ns::World, (t.ext6(1), 80)), "world6");
    let c = t.curl(&["http://api.external.com/"]).await;
    assert_body(
        &c,
        &format!("world {}:80 from {}", t.ext(1), t.pod_ip()),
        &t,
    );
    let c = t.curl(&["http://v6.external.com/"]).await;
    assert_body(
        &c,
        &format!("world6 [{}]:80 from {}", t.ext6(1), t.pod_ip6()),
        &t,
    );

    // The in-process HTTPS stand-in on a listener bound in world; the CA
    // file in a directory the app's uid can read.
    let ca = DevCa::new("world CA");
    let leaf = ca.issue(&LeafSpec::server(&["tls.external.com"]));
    let dir = shared_tempdir();
    let ca_file = ca.write_cert(dir.path(), "ca").expect("write CA");
    let standin = StandIn::start_on(
        t.listen_in(Ns::World, (t.ext(2), 443)),
        StandInConfig::new(&leaf.cert_pem, &leaf.key_pem),
    )
    .await
    .expect("stand-in");
    let c = t
        .curl(&[
            "--cacert",
            ca_file.to_str().expect("path"),
            "https://tls.external.com/hello",
        ])
        .await;
    assert_eq!(c.status, 200, "{c:?}");
    assert_eq!(standin.requests(), 1);
    assert_eq!(
        standin.last().and_then(|s| s.sni).as_deref(),
        Some("tls.external.com")
    );

    // An in-process plain echo service in world, reached from the pod by a
    // connection the test makes itself.
    serve_echo_service(t.listen_in(Ns::World, (t.ext(3), 8080))).expect("echo");
    let mut s = t
        .tokio_connect_in(Ns::Pod, APP_UID, (t.ext(3), 8080))
        .await
        .expect("connect from the pod");
    s.write_all(b"GET /echoed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.contains("\"/echoed\""), "{resp}");

    // A name the hosts file does not have fails at once (no DNS server).
    let started = std::time::Instant::now();
    let c = t.curl(&["http://unknown.external.com/"]).await;
    assert_eq!(c.exit, Some(6), "{c:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Outbound capture as Istio's OUTPUT rule does it: everything but the
/// proxy's uid goes to `127.0.0.1:15001` / `[::1]:15001`.
async fn check_outbound_capture(t: &Topology) {
    t.add_host("api.external.com", t.ext(1));
    serve_text(t.listen_in(Ns::World, (t.ext(1), 80)), "world");
    serve_text(t.listen_in(Ns::World, (t.ext6(1), 80)), "world6");
    let captured = t.listen_in(Ns::Pod, ([127, 0, 0, 1], 15001));

    // A connection from the app's uid lands on the capture listener, and
    // the original destination is the external address.
    let client = t
        .connect_in_as(Ns::Pod, APP_UID, (t.ext(1), 80))
        .expect("connect as the app");
    let (s, peer) = tokio::time::timeout(Duration::from_secs(5), captured.accept())
        .await
        .unwrap_or_else(|_| panic!("nothing captured; pod rules:\n{}", t.rules(Ns::Pod)))
        .expect("accept");
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(peer.ip(), IpAddr::from(t.pod_ip()));
    assert_eq!(
        socket2::SockRef::from(&s)
            .original_dst_v4()
            .expect("SO_ORIGINAL_DST")
            .as_socket(),
        Some(SocketAddr::from((t.ext(1), 80)))
    );
    drop((client, s));
    serve_text(captured, "captured");

    // The app (curl as uid 1000, by name) is captured; the proxy's uid goes
    // to world.
    let c = t.curl(&["http://api.external.com/"]).await;
    assert_body(
        &c,
        &format!("captured {}:80 from {}", t.ext(1), t.pod_ip()),
        t,
    );
    let c = t
        .curl_as(Ns::Pod, PROXY_UID, &["http://api.external.com/"])
        .await;
    assert_body(&c, &format!("world {}:80 from {}", t.ext(1), t.pod_ip()), t);
}

#[tokio::test]
async fn an_iptables_redirect_captures_the_app_and_not_uid_1337() {
    let Some(t) = netns::setup() else { return };
    t.exec_ok(
        Ns::Pod,
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-m",
            "owner",
            "!",
            "--uid-owner",
            "1337",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15001",
        ],
    );
    check_outbound_capture(&t).await;
}

#[tokio::test]
async fn an_nft_redirect_captures_the_app_and_not_uid_1337_over_ipv4_and_ipv6() {
    let Some(t) = netns::setup() else { return };
    t.nft(
        Ns::Pod,
        "table inet t {
           chain out {
             type nat hook output priority -100; policy accept;
             meta l4proto tcp meta skuid != 1337 redirect to :15001
           }
         }",
    );
    check_outbound_capture(&t).await;

    // The inet table captures IPv6 too (to [::1]).
    t.add_host("v6.external.com", t.ext6(1));
    serve_text(
        t.listen_in(Ns::Pod, ([0u16, 0, 0, 0, 0, 0, 0, 1], 15001)),
        "captured6",
    );
    let c = t.curl(&["http://v6.external.com/"]).await;
    assert_body(
        &c,
        &format!("captured6 [{}]:80 from {}", t.ext6(1), t.pod_ip6()),
        &t,
    );
    let c = t
        .curl_as(Ns::Pod, PROXY_UID, &["http://v6.external.com/"])
        .await;
    assert_body(
        &c,
        &format!("world6 [{}]:80 from {}", t.ext6(1), t.pod_ip6()),
        &t,
    );
}

#[tokio::test]
async fn a_prerouting_redirect_captures_inbound_connections_with_their_destination() {
    let Some(t) = netns::setup() else { return };
    t.exec_ok(
        Ns::Pod,
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-p",
            "tcp",
            "--dport",
            "8080",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15006",
        ],
    );
    serve_text(t.listen_in(Ns::Pod, ([0, 0, 0, 0], 15006)), "inbound");
    let url = format!("http://{}:8080/", t.pod_ip());
    let c = t.curl_as(Ns::World, 0, &[&url]).await;
    assert_body(
        &c,
        &format!("inbound {}:8080 from {}", t.pod_ip(), t.world_ip()),
        &t,
    );
    // Another port is not redirected: nothing listens there.
    let url = format!("http://{}:8081/", t.pod_ip());
    let c = t.curl_as(Ns::World, 0, &[&url]).await;
    assert_eq!((c.status, c.exit), (0, Some(7)), "{c:?}");
}

fn listed(names: &[String]) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    names
        .iter()
        .filter(|n| {
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str()))
        })
        .cloned()
        .collect()
}

#[test]
fn namespaces_are_removed_on_drop_and_when_the_test_panics() {
    let Some(t) = netns::setup() else { return };
    let names = vec![t.name(Ns::Pod).to_string(), t.name(Ns::World).to_string()];
    let etc = std::path::Path::new("/etc/netns").join(&names[0]);
    assert_eq!(listed(&names), names);
    assert!(etc.join("hosts").is_file());
    // A socket still open in the namespace does not keep it listed.
    let _listener = t.bind_in(Ns::Pod, ([0, 0, 0, 0], 9000));
    drop(t);
    assert_eq!(listed(&names), Vec::<String>::new());
    assert!(!etc.exists(), "{} left behind", etc.display());

    let (tx, rx) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let t = Topology::new().expect("topology");
        tx.send(vec![
            t.name(Ns::Pod).to_string(),
            t.name(Ns::World).to_string(),
        ])
        .unwrap();
        panic!("a failing test");
    })
    .join();
    assert!(panicked.is_err());
    let names = rx.recv().unwrap();
    assert_eq!(listed(&names), Vec::<String>::new());
    assert!(!std::path::Path::new("/etc/netns").join(&names[0]).exists());
}

#[tokio::test]
async fn meshgate_runs_as_uid_1337_in_the_pod_and_its_output_is_kept() {
    let Some(t) = netns::setup() else { return };
    let dir = shared_tempdir();
    let config = dir.path().to_str().expect("path").to_string();
    // meshgate's default ports: the pod namespace has them to itself.
    let ready: SocketAddr = ([127, 0, 0, 1], 15021).into();
    let mut p = t
        .start_meshgate(&["run", "-c", &config, "--watch-interval", "0s"], ready)
        .await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(field("Name:"), ["meshgate"], "{status}");
    assert_eq!(field("Uid:"), ["1337"; 4], "{status}");
    assert_eq!(field("Gid:"), ["1337"; 4], "{status}");
    assert_eq!(field("Groups:"), Vec::<&str>::new(), "{status}");
    assert!(p.stderr().contains("ready"), "{}", p.output());
    assert!(p.exited().is_none());

    // A meshgate that cannot start: the error is in its output.
    let mut bad = t.spawn(
        Ns::Pod,
        PROXY_UID,
        netns::MESHGATE,
        &["run", "-c", "/nonexistent"],
    );
    let err = bad
        .wait_ready(&t, ([127, 0, 0, 1], 15999).into(), Duration::from_secs(10))
        .await
        .expect_err("a missing config directory");
    assert!(
        err.contains("exited") && err.contains("/nonexistent"),
        "{err}"
    );

    let pid = p.id();
    drop(p);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "meshgate still runs after drop"
    );
}
