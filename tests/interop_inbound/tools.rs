//! openssl s_client SNI, h2load, PASSTHROUGH to nginx, plain HTTP on the TLS port.

use super::*;

/// `openssl s_client`: a verified handshake for `HOST`; an unknown SNI and
/// no SNI at all are refused with an alert (no `*` server here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_sni() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let echo = echo_service().await;
    let mg = Meshgate::start(tmp.path(), &terminating_config(&simple_tls(&pki), echo));
    let connect = mg.gateway.to_string();
    let ca = path_str(&pki.ca);

    let r = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            HOST,
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-brief",
        ],
    );
    let diag = |r: &Run| format!("{}\n{}", r.describe(), mg.diagnostics());
    let out = r.all();
    assert!(r.ok(), "s_client with SNI {HOST}\n{}", diag(&r));
    assert!(
        out.contains("CONNECTION ESTABLISHED"),
        "handshake should complete\n{}",
        diag(&r)
    );
    assert!(
        out.contains("Protocol version: TLSv1.3") || out.contains("Protocol version: TLSv1.2"),
        "negotiated protocol should be shown\n{}",
        diag(&r)
    );
    assert!(
        out.contains("Verification: OK"),
        "meshgate's certificate should verify against the test CA\n{}",
        diag(&r)
    );
    assert!(
        out.contains(&format!("CN = {HOST}")) || out.contains(&format!("CN={HOST}")),
        "the peer certificate should be the one for {HOST}\n{}",
        diag(&r)
    );

    // `-brief` leaves ALPN out; the full report names it.
    let r = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            HOST,
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-alpn",
            "h2,http/1.1",
        ],
    );
    assert!(
        r.ok() && r.all().contains("ALPN protocol: h2"),
        "ALPN should pick h2 when offered\n{}",
        diag(&r)
    );

    // An SNI no server serves: an alert, never another host's certificate.
    let r = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            "unknown.test",
            "-CAfile",
            &ca,
            "-brief",
        ],
    );
    let out = r.all();
    eprintln!("s_client -servername unknown.test says:\n{}", out.trim());
    assert!(!r.ok(), "unknown SNI must fail\n{}", diag(&r));
    assert!(
        !out.contains("CONNECTION ESTABLISHED"),
        "no handshake for an unknown SNI\n{}",
        diag(&r)
    );
    let lower = out.to_ascii_lowercase();
    assert!(
        lower.contains("unrecognized name") || lower.contains("alert"),
        "openssl should report the server's alert\n{}",
        diag(&r)
    );
    assert!(
        !out.contains(&format!("CN = {HOST}")),
        "the certificate for {HOST} must not be shown to another SNI\n{}",
        diag(&r)
    );

    // No SNI at all, and no `*` server: refused too.
    let r = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-noservername",
            "-CAfile",
            &ca,
            "-brief",
        ],
    );
    let out = r.all();
    eprintln!("s_client -noservername says:\n{}", out.trim());
    assert!(!r.ok(), "no SNI must fail\n{}", diag(&r));
    assert!(
        !out.contains("CONNECTION ESTABLISHED"),
        "no handshake without SNI\n{}",
        diag(&r)
    );
    assert!(
        out.to_ascii_lowercase().contains("alert"),
        "openssl should report the server's alert\n{}",
        diag(&r)
    );
    let metrics = mg.prometheus();
    assert_eq!(
        metric_value(
            &metrics,
            "meshgate_tls_handshake_failures_total",
            &[("direction", "inbound"), ("reason", "unknown_sni")],
        ),
        Some(2.0),
        "both refusals should count as reason=unknown_sni\n--- /stats/prometheus ---\n{metrics}\n{}",
        mg.diagnostics()
    );
}

/// h2load: 200 requests over 4 HTTP/2 connections, 10 streams each, all 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h2load_many_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let echo = echo_service().await;
    let mg = Meshgate::start(tmp.path(), &terminating_config(&simple_tls(&pki), echo));

    // The URI's host is the SNI and :authority; --connect-to says where to
    // connect. (h2load does not verify the certificate.)
    let connect_to = mg.gateway.to_string();
    let url = mg.url("/load");
    let r = run(
        "h2load",
        &[
            "-n",
            "200",
            "-c",
            "4",
            "-m",
            "10",
            "--connect-to",
            &connect_to,
            &url,
        ],
    );
    let diag = || format!("{}\n{}", r.describe(), mg.diagnostics());
    assert!(r.ok(), "h2load failed\n{}", diag());
    assert!(
        r.stdout.contains("Application protocol: h2"),
        "h2load should negotiate h2\n{}",
        diag()
    );
    assert!(
        r.stdout.contains("200 succeeded, 0 failed, 0 errored"),
        "all 200 requests should succeed\n{}",
        diag()
    );
    assert!(
        r.stdout
            .contains("status codes: 200 2xx, 0 3xx, 0 4xx, 0 5xx"),
        "all 200 responses should be 2xx\n{}",
        diag()
    );
}

/// PASSTHROUGH: meshgate has no certificate; it routes the client's TLS by
/// SNI to nginx, and curl verifies nginx's own certificate end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_curl_to_nginx() {
    let tmp = tempfile::tempdir().unwrap();
    // nginx's certificate comes from a CA meshgate never sees.
    let backend_ca = DevCa::new("nginx backend CA");
    let backend_ca_path = backend_ca
        .write_cert(tmp.path(), "backend-ca.pem")
        .expect("write backend CA");
    let (cert, key) = backend_ca
        .issue(&LeafSpec::server(&[HOST]))
        .write(tmp.path(), "nginx-server")
        .expect("write nginx cert");
    let nginx = Nginx::start(tmp.path(), HOST, &cert, &key, None);
    let yaml = passthrough_config(nginx.port);
    assert!(
        !yaml.contains(".crt") && !yaml.contains(".key") && !yaml.contains(".pem"),
        "the PASSTHROUGH config must not name any certificate"
    );
    let mg = Meshgate::start(tmp.path(), &yaml);

    let (ca, resolve, url) = (path_str(&backend_ca_path), mg.resolve(), mg.url("/pt?q=1"));
    let r = curl(&["--cacert", &ca, "--resolve", &resolve, &url]);
    let diag = |r: &Curl| {
        format!(
            "{}\n{}\n{}",
            r.describe(),
            mg.diagnostics(),
            nginx.diagnostics()
        )
    };
    assert!(
        r.run.ok(),
        "curl through PASSTHROUGH, trusting nginx's CA\n{}",
        diag(&r)
    );
    assert_eq!(r.code, 200, "{}", diag(&r));
    assert!(
        r.body.contains("hello from nginx"),
        "not nginx's body\n{}",
        diag(&r)
    );
    assert!(
        r.body.contains(&format!("sni={HOST} ")),
        "nginx should see the client's own SNI\n{}",
        diag(&r)
    );
    assert!(r.body.contains("uri=/pt?q=1"), "{}", diag(&r));
    assert!(
        nginx.access_log().contains("GET /pt?q=1"),
        "the request should reach nginx\n{}",
        diag(&r)
    );

    // Trusting an unrelated CA instead, curl must reject what it receives:
    // nginx's certificate, untouched.
    let other = DevCa::new("unrelated CA")
        .write_cert(tmp.path(), "other-ca.pem")
        .expect("write other CA");
    let other = path_str(&other);
    let r = curl(&["--cacert", &other, "--resolve", &resolve, &url]);
    assert_eq!(
        r.run.exit,
        Some(60),
        "curl should refuse nginx's certificate when trusting another CA (exit 60)\n{}",
        diag(&r)
    );

    // openssl sees nginx's certificate, issued by the backend CA.
    let connect = mg.gateway.to_string();
    let s = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            HOST,
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-brief",
        ],
    );
    assert!(
        s.ok() && s.all().contains("Verification: OK"),
        "s_client through PASSTHROUGH should verify against nginx's CA\n{}\n{}",
        s.describe(),
        mg.diagnostics()
    );
}

/// Plain HTTP on the TLS port: a readable 400 instead of a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_tls_port_gets_400() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let echo = echo_service().await;
    let mg = Meshgate::start(tmp.path(), &terminating_config(&simple_tls(&pki), echo));

    let url = format!("http://{}/", mg.gateway);
    let r = curl(&[&url]);
    let diag = || format!("{}\n{}", r.describe(), mg.diagnostics());
    assert_eq!(r.code, 400, "plain HTTP to the TLS port\n{}", diag());
    assert!(
        r.body.contains("TLS"),
        "the 400 body should say the port expects TLS\n{}",
        diag()
    );
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("x-meshgate-error: not_tls"),
        "x-meshgate-error: not_tls expected\n{}",
        diag()
    );
    let metrics = mg.prometheus();
    assert_eq!(
        metric_value(
            &metrics,
            "meshgate_tls_handshake_failures_total",
            &[("direction", "inbound"), ("reason", "not_tls")],
        ),
        Some(1.0),
        "plain HTTP should count as reason=not_tls\n--- /stats/prometheus ---\n{metrics}\n{}",
        mg.diagnostics()
    );
}
