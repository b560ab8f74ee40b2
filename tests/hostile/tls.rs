//! The TLS listener under hostile clients (catalogue 2.A, 2.C): a
//! ClientHello trickled byte by byte, plain HTTP and garbage on the TLS
//! port, an unknown SNI, and client certificates MUTUAL refuses.

use super::*;

/// A real ClientHello: the first flight of a rustls client for `sni`.
fn client_hello(sni: &str) -> Vec<u8> {
    let ca = DevCa::new("unused");
    let roots = meshgate::creds::roots_from_pem(ca.cert_pem.as_bytes()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(meshgate::creds::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    assert_eq!(out[0], 0x16, "a TLS handshake record");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_the_client_hello_is_cut_at_the_handshake_deadline() {
    const DEADLINE: Duration = Duration::from_millis(500);
    const SLOW_CLIENTS: usize = 16;
    bounded(async {
        let g = gateway(&[HOST], &[], |b| b.handshake_timeout = DEADLINE).await;
        let before = failures(&g.p.metrics().await, "inbound", "handshake_timeout");
        let bystander = g.bystander();
        let hello = client_hello(HOST);
        let mut slow = tokio::task::JoinSet::new();
        for _ in 0..SLOW_CLIENTS {
            let (addr, hello) = (g.addr, hello.clone());
            slow.spawn(async move {
                let started = Instant::now();
                let s = TcpStream::connect(addr).await.unwrap();
                let (mut rx, mut tx) = s.into_split();
                // One byte every 50 ms: the whole ClientHello would take
                // a minute.
                let trickle = tokio::spawn(async move {
                    for b in hello {
                        if tx.write_all(&[b]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                });
                let got = read_until_closed(&mut rx, Duration::from_secs(3)).await;
                trickle.abort();
                (started.elapsed(), got)
            });
        }
        while let Some(r) = slow.join_next().await {
            let (took, got) = r.unwrap();
            let got = got.unwrap_or_else(|_| panic!("a slow ClientHello still open after 3 s"));
            assert!(
                took >= DEADLINE - Duration::from_millis(100) && took < DEADLINE * 4,
                "a slow ClientHello was closed after {took:?} (deadline {DEADLINE:?})"
            );
            assert!(got.is_empty(), "nothing is sent back: {got:?}");
        }
        bystander.finish("during a ClientHello slowloris").await;
        wait_metric(
            &g.p,
            "every slow ClientHello counted as handshake_timeout",
            |m| failures(m, "inbound", "handshake_timeout") == before + SLOW_CLIENTS as f64,
        )
        .await;
        g.assert_connections_closed("the slow connections are released")
            .await;
        g.assert_served("after the slowloris").await;
    })
    .await;
}

#[tokio::test]
async fn plain_http_and_garbage_on_the_tls_port_are_not_tls() {
    bounded(async {
        let g = gateway(&[HOST], &[], |_| {}).await;
        let before = failures(&g.p.metrics().await, "inbound", "not_tls");
        let bystander = g.bystander();
        let cases: [(&str, &[u8], Option<&str>); 3] = [
            (
                "plain HTTP/1.1",
                b"GET / HTTP/1.1\r\nHost: service.hostile.test\r\n\r\n",
                Some("HTTP/1.1 400 "),
            ),
            (
                "the HTTP/2 preface",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                Some("HTTP/1.1 400 "),
            ),
            ("binary garbage", b"\x00\x01\x02\xff garbage", None),
        ];
        for (what, bytes, want) in cases {
            let mut s = TcpStream::connect(g.addr).await.unwrap();
            s.write_all(bytes).await.unwrap();
            let got = read_until_closed(&mut s, Duration::from_secs(3))
                .await
                .unwrap_or_else(|_| panic!("{what}: the connection stays open"));
            let head = head_of(&got);
            match want {
                Some(status) => {
                    assert!(head.starts_with(status), "{what}: {head}");
                    assert!(
                        head.to_ascii_lowercase()
                            .contains("x-meshgate-error: not_tls"),
                        "{what}: {head}"
                    );
                }
                None => assert!(got.is_empty(), "{what}: closed without an answer: {got:?}"),
            }
        }
        wait_metric(&g.p, "each counted as not_tls", |m| {
            failures(m, "inbound", "not_tls") == before + cases.len() as f64
        })
        .await;
        let served = bystander.finish("beside plain text on the TLS port").await;
        // The well-behaved client's requests reach the app; nothing else.
        let seen = g.app.seen();
        assert!(
            seen.iter().all(|l| l.starts_with("GET /bystander ")),
            "only the bystander's requests reached the app: {seen:?}"
        );
        assert_eq!(seen.len(), served, "one app request per bystander request");
        g.assert_connections_closed("refused connections are released")
            .await;
    })
    .await;
}

#[tokio::test]
async fn unknown_sni_gets_an_alert_not_another_certificate() {
    bounded(async {
        let g = gateway(&[HOST], &[], |_| {}).await;
        let bystander = g.bystander();
        let mut o = g.client("elsewhere.hostile.test");
        // Trust is not what fails here: the name is unknown to the proxy.
        o.ca_pem = g.ca.cert_pem.clone();
        let Err(e) = tls_connect(g.addr, &o).await else {
            panic!("an unknown SNI is refused");
        };
        let text = e.to_string();
        assert!(text.contains("UnrecognisedName"), "{text}");
        wait_metric(&g.p, "counted as unknown_sni", |m| {
            failures(m, "inbound", "unknown_sni") == 1.0
        })
        .await;
        bystander.finish("beside an unknown SNI").await;
    })
    .await;
}

#[tokio::test]
async fn mutual_refuses_a_missing_foreign_or_expired_client_certificate() {
    bounded(async {
        let client_ca = DevCa::new("hostile client CA");
        let foreign_ca = DevCa::new("someone else's CA");
        let ca_dir = tempdir();
        let ca_file = client_ca
            .write_cert(ca_dir.path(), "client-ca.crt")
            .unwrap();
        let g = gateway(
            &[HOST],
            &[
                "mode: MUTUAL".into(),
                format!("caCertificates: {}", ca_file.display()),
            ],
            |_| {},
        )
        .await;
        let identity = |leaf: Leaf| Some((leaf.cert_pem, leaf.key_pem));
        let good = identity(client_ca.issue(&LeafSpec::client("good.client.test")));
        let good_opts = ClientOpts {
            identity: good,
            ..g.client(HOST)
        };
        let (addr, o) = (g.addr, good_opts.clone());
        let bystander = Bystander::start(move || {
            let o = o.clone();
            async move {
                match https_get(addr, &o, HOST, "/bystander", &[]).await {
                    Ok(r) if r.status == 200 => Ok(()),
                    Ok(r) => Err(format!("status {}", r.status)),
                    Err(e) => Err(e.to_string()),
                }
            }
        });
        // (client certificate, reason counted, alert the client reads)
        let cases = [
            (None, "no_client_cert", "CertificateRequired"),
            (
                identity(foreign_ca.issue(&LeafSpec::client("good.client.test"))),
                "unknown_ca",
                "UnknownCA",
            ),
            (
                identity(client_ca.issue(&LeafSpec::client("good.client.test").expired())),
                "expired",
                "CertificateExpired",
            ),
        ];
        for (id, reason, alert) in cases {
            let before = failures(&g.p.metrics().await, "inbound", reason);
            let o = ClientOpts {
                identity: id,
                ..g.client(HOST)
            };
            // In TLS 1.3 the client's handshake completes before the server
            // has checked its certificate: the refusal arrives on the first
            // read, so a whole request is made.
            let e = https_get(g.addr, &o, HOST, "/refused", &[])
                .await
                .err()
                .unwrap_or_else(|| panic!("{reason}: the request was served"));
            let text = e.to_string();
            assert!(text.contains(alert), "{reason}: the client reads {text}");
            wait_metric(&g.p, &format!("counted as {reason}"), |m| {
                failures(m, "inbound", reason) == before + 1.0
            })
            .await;
        }
        let served = bystander.finish("beside refused clients").await;
        assert_eq!(
            g.app.seen().len(),
            served,
            "only the good client reached the app"
        );
        assert_ok(
            https_get(g.addr, &good_opts, HOST, "/after", &[]).await,
            "a good client certificate after the refusals",
        );
    })
    .await;
}

/// A ClientHello record built by hand: `sni` as raw bytes (anything a
/// hostile client may send), the legacy version, cipher suites and the
/// `supported_versions` list (left out when empty). An empty `supported`
/// with a legacy version below TLS 1.2 makes a TLS 1.0/1.1 hello, without
/// the groups and signature algorithms extensions, as old clients send.
fn raw_hello(sni: Option<&[u8]>, legacy: u16, suites: &[u16], supported: &[u16]) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    let mut exts = Vec::new();
    if let Some(name) = sni {
        let mut entry = vec![0u8];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name);
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        ext(&mut exts, 0, &data);
    }
    if legacy >= 0x0303 || !supported.is_empty() {
        // supported_groups (x25519), signature_algorithms (ecdsa, rsa-pss).
        ext(&mut exts, 10, &[0, 2, 0, 29]);
        ext(&mut exts, 13, &[0, 4, 4, 3, 8, 4]);
    }
    if !supported.is_empty() {
        let mut data = vec![(supported.len() * 2) as u8];
        for v in supported {
            data.extend_from_slice(&v.to_be_bytes());
        }
        ext(&mut exts, 43, &data);
    }
    let mut body = legacy.to_be_bytes().to_vec();
    body.extend_from_slice(&[0x5a; 32]);
    body.push(0);
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1, 0];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// Sends `hello` and reads what comes back until the proxy closes.
async fn answer_to(addr: SocketAddr, hello: &[u8], what: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(hello).await.unwrap();
    read_until_closed(&mut s, Duration::from_secs(3))
        .await
        .unwrap_or_else(|got| panic!("{what}: still open after 3 s ({got:?})"))
}

/// Whether `got` is exactly one fatal TLS alert with `description`.
fn is_fatal_alert(got: &[u8], description: u8) -> bool {
    got.len() == 7 && got[0] == 0x15 && got[3..5] == [0, 2] && got[5] == 2 && got[6] == description
}

#[tokio::test]
async fn an_invalid_sni_gets_illegal_parameter_and_is_counted_as_bad_sni() {
    bounded(async {
        let g = gateway(&[HOST], &[], |_| {}).await;
        let bystander = g.bystander();
        let too_long = format!("{}.test", "a".repeat(300));
        let long_label = format!("{}.test", "b".repeat(64));
        let cases: [(&str, &[u8]); 4] = [
            ("a 304-byte name", too_long.as_bytes()),
            ("a 64-byte label", long_label.as_bytes()),
            ("bytes that are not UTF-8", b"\xff\xfe\xfd.test"),
            ("a space in the name", b"bad name.test"),
        ];
        let before = failures(&g.p.metrics().await, "inbound", "bad_sni");
        for (what, sni) in cases {
            let hello = raw_hello(Some(sni), 0x0303, &[0x1301, 0xc02f], &[0x0304, 0x0303]);
            let got = answer_to(g.addr, &hello, what).await;
            assert!(
                is_fatal_alert(&got, 47),
                "{what}: expected a fatal illegal_parameter alert, got {got:?}"
            );
        }
        wait_metric(&g.p, "each counted as bad_sni", |m| {
            failures(m, "inbound", "bad_sni") == before + cases.len() as f64
        })
        .await;
        // A real client: openssl sends the name as given.
        let out = openssl_s_client(g.addr, &["-servername", "bad_name!.test"]).await;
        assert!(
            out.contains("illegal parameter"),
            "openssl reads the alert: {out}"
        );
        bystander.finish("beside invalid SNIs").await;
        g.assert_connections_closed("refused connections are released")
            .await;
    })
    .await;
}

#[tokio::test]
async fn a_tls_1_0_or_1_1_client_gets_protocol_version() {
    bounded(async {
        let g = gateway(&[HOST], &[], |_| {}).await;
        let bystander = g.bystander();
        let before = failures(&g.p.metrics().await, "inbound", "protocol_version");
        // (what, legacy version, supported_versions)
        let cases: [(&str, u16, &[u16]); 3] = [
            ("TLS 1.0", 0x0301, &[]),
            ("TLS 1.1", 0x0302, &[]),
            ("TLS 1.1 and 1.0 listed", 0x0302, &[0x0302, 0x0301]),
        ];
        for (what, legacy, supported) in cases {
            let hello = raw_hello(Some(HOST.as_bytes()), legacy, &[0x002f, 0xc013], supported);
            let got = answer_to(g.addr, &hello, what).await;
            assert!(
                is_fatal_alert(&got, 70),
                "{what}: expected a fatal protocol_version alert, got {got:?}"
            );
        }
        // A real TLS 1.0 client (openssl allows it at security level 0).
        let out = openssl_s_client(
            g.addr,
            &[
                "-servername",
                HOST,
                "-tls1",
                "-cipher",
                "DEFAULT@SECLEVEL=0",
            ],
        )
        .await;
        assert!(
            out.contains("protocol version"),
            "openssl -tls1 reads the alert: {out}"
        );
        wait_metric(&g.p, "each counted as protocol_version", |m| {
            failures(m, "inbound", "protocol_version") == before + cases.len() as f64 + 1.0
        })
        .await;
        bystander.finish("beside old TLS clients").await;
    })
    .await;
}

/// Runs `openssl s_client` against `addr` with `args` (stdin closed, at
/// most 5 s); its stdout and stderr together.
async fn openssl_s_client(addr: SocketAddr, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let run = tokio::task::spawn_blocking(move || {
        let child = std::process::Command::new("timeout")
            .args(["5", "openssl", "s_client", "-connect"])
            .arg(addr.to_string())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("openssl runs");
        child.wait_with_output().expect("openssl output")
    });
    let out = run.await.expect("the openssl task");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn a_client_with_no_cipher_suite_in_common_is_no_shared_cipher() {
    bounded(async {
        let g = gateway(&[HOST], &[], |_| {}).await;
        let bystander = g.bystander();
        let before = failures(&g.p.metrics().await, "inbound", "no_shared_cipher");
        // CBC suites only: meshgate offers AEAD suites only.
        let out = openssl_s_client(
            g.addr,
            &[
                "-servername",
                HOST,
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA",
            ],
        )
        .await;
        assert!(
            out.contains("handshake failure"),
            "openssl reads the alert: {out}"
        );
        wait_metric(&g.p, "counted as no_shared_cipher", |m| {
            failures(m, "inbound", "no_shared_cipher") == before + 1.0
        })
        .await;
        bystander
            .finish("beside a client with no cipher in common")
            .await;
    })
    .await;
}
