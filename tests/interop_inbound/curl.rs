//! curl as the external client: SIMPLE, MUTUAL with XFCC, the refusal alert, HTTP/2.

use super::*;

// ---------------------------------------------------------------------------
// Tests
//
// The echo service runs on this test's tokio runtime (multi-threaded, so it
// keeps serving while the test body blocks on the outside programs).
// ---------------------------------------------------------------------------

/// SIMPLE termination: curl verifies meshgate's certificate for `HOST`
/// against the test CA; the app sees plain HTTP with `x-forwarded-proto:
/// https` and no client-supplied XFCC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_curl_https_to_echo() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let echo = echo_service().await;
    let mg = Meshgate::start(tmp.path(), &terminating_config(&simple_tls(&pki), echo));

    let (ca, resolve) = (path_str(&pki.ca), mg.resolve());
    let url = mg.url("/x?y=1");
    let r = curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        "-H",
        "x-forwarded-client-cert: By=forged;Hash=00",
        &url,
    ]);
    let diag = || format!("{}\n{}", r.describe(), mg.diagnostics());
    assert!(r.run.ok(), "curl failed\n{}", diag());
    assert_eq!(r.code, 200, "{}", diag());
    let v = r.echo();
    assert_eq!(v["method"], "GET", "{}", diag());
    assert_eq!(v["path"], "/x?y=1", "{}", diag());
    assert_eq!(v["headers"]["x-forwarded-proto"], "https", "{}", diag());
    assert!(
        v["headers"]["host"]
            .as_str()
            .is_some_and(|h| h.starts_with(HOST)),
        "the app should see Host {HOST}\n{}",
        diag()
    );
    assert!(
        v["headers"].get("x-forwarded-client-cert").is_none(),
        "a client-sent XFCC must be removed (no client certificate here)\n{}",
        diag()
    );

    // HTTP/1.1 explicitly, too.
    let r = curl(&["--http1.1", "--cacert", &ca, "--resolve", &resolve, &url]);
    assert_eq!(r.code, 200, "{}\n{}", r.describe(), mg.diagnostics());
    assert_eq!(r.http_version, "1.1", "{}", r.describe());
    assert_eq!(r.echo()["headers"]["x-forwarded-proto"], "https");
}

/// MUTUAL: with the client certificate the app gets an XFCC naming it;
/// without, the handshake is refused and curl fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_curl_client_cert_and_xfcc() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let echo = echo_service().await;
    let mg = Meshgate::start(tmp.path(), &terminating_config(&mutual_tls(&pki), echo));

    let (ca, resolve, url) = (path_str(&pki.ca), mg.resolve(), mg.url("/x"));
    let (cert, key) = (path_str(&pki.client_cert), path_str(&pki.client_key));
    let r = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "--resolve",
        &resolve,
        &url,
    ]);
    let diag = |r: &Curl| format!("{}\n{}", r.describe(), mg.diagnostics());
    assert!(r.run.ok(), "curl with a client certificate\n{}", diag(&r));
    assert_eq!(r.code, 200, "{}", diag(&r));
    let v = r.echo();
    let xfcc = v["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_else(|| panic!("the app should get x-forwarded-client-cert\n{}", diag(&r)))
        .to_string();
    assert!(
        xfcc.contains(&format!("Subject=\"CN={CLIENT_CN}\"")),
        "XFCC should name the client certificate's subject: {xfcc}\n{}",
        diag(&r)
    );
    assert!(xfcc.contains("Hash="), "XFCC should carry Hash=: {xfcc}");
    // The hash is the SHA-256 of the client certificate's DER.
    let der = run(
        "openssl",
        &["x509", "-in", &cert, "-noout", "-fingerprint", "-sha256"],
    );
    let fingerprint = der
        .stdout
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or("")
        .replace(':', "")
        .to_ascii_lowercase();
    assert!(
        !fingerprint.is_empty() && xfcc.contains(&format!("Hash={fingerprint}")),
        "XFCC Hash should be the certificate's SHA-256 ({fingerprint}): {xfcc}\n{}",
        der.describe()
    );
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");

    // No client certificate: refused during the handshake, whatever HTTP
    // version curl would have spoken, and no request reaches the app.
    for version in ["--http2", "--http1.1"] {
        let r = curl(&[version, "--cacert", &ca, "--resolve", &resolve, &url]);
        eprintln!(
            "MUTUAL without a client certificate, curl {version} says (exit {:?}): {}",
            r.run.exit,
            r.run.stderr.trim()
        );
        assert!(
            !r.run.ok(),
            "curl {version} without a client certificate must fail\n{}",
            diag(&r)
        );
        assert_eq!(r.code, 0, "no HTTP response expected\n{}", diag(&r));
    }
    // With HTTP/1.1 curl reads before it writes again, so the TLS 1.3
    // `certificate_required` alert reliably reaches it.
    let r = curl(&["--http1.1", "--cacert", &ca, "--resolve", &resolve, &url]);
    assert!(
        r.run
            .stderr
            .to_ascii_lowercase()
            .contains("alert certificate required"),
        "curl should report the server's certificate_required alert\n{}",
        diag(&r)
    );
    // TLS 1.2: refused inside the handshake itself.
    let r = curl(&[
        "--tls-max",
        "1.2",
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        &url,
    ]);
    eprintln!(
        "MUTUAL without a client certificate over TLS 1.2, curl says (exit {:?}): {}",
        r.run.exit,
        r.run.stderr.trim()
    );
    assert!(
        !r.run.ok(),
        "TLS 1.2 without a client certificate\n{}",
        diag(&r)
    );
    assert_eq!(r.code, 0, "{}", diag(&r));
    assert!(
        r.run.stderr.to_ascii_lowercase().contains("alert"),
        "curl should report the server's alert\n{}",
        diag(&r)
    );
    let metrics = mg.prometheus();
    let refused = metric_value(
        &metrics,
        "meshgate_tls_handshake_failures_total",
        &[("direction", "inbound"), ("reason", "no_client_cert")],
    );
    assert_eq!(
        refused,
        Some(4.0),
        "each refused handshake should count as reason=no_client_cert\n--- /stats/prometheus ---\n{metrics}\n{}",
        mg.diagnostics()
    );
}

/// MUTUAL without a client certificate, curl's default (ALPN h2): curl
/// sends its HTTP/2 preface right after its Finished, before the server has
/// checked the (empty) Certificate. Dropping the socket with the preface
/// unread would make the kernel answer with a RST that destroys the
/// `certificate_required` alert (curl: `getpeername() failed with errno
/// 107`); meshgate shuts down its write side and drains briefly instead, so
/// curl names the alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_refusal_alert_survives_early_client_data() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let echo = echo_service().await;
    let mg = Meshgate::start(tmp.path(), &terminating_config(&mutual_tls(&pki), echo));
    let (ca, resolve, url) = (path_str(&pki.ca), mg.resolve(), mg.url("/x"));
    let mut said = Vec::new();
    for _ in 0..10 {
        let r = curl(&["--cacert", &ca, "--resolve", &resolve, &url]);
        assert!(!r.run.ok(), "{}", r.describe());
        said.push(r.run.stderr.trim().to_string());
    }
    let lost = said
        .iter()
        .filter(|s| !s.contains("alert certificate required"))
        .count();
    assert_eq!(
        lost,
        0,
        "curl should name the certificate_required alert every time; {lost}/10 did not:\n{}\n{}",
        said.join("\n"),
        mg.diagnostics()
    );
}

/// curl `--http2`: ALPN h2 end to end with the client; the request reaches
/// the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let echo = echo_service().await;
    let mg = Meshgate::start(tmp.path(), &terminating_config(&simple_tls(&pki), echo));

    let (ca, resolve, url) = (path_str(&pki.ca), mg.resolve(), mg.url("/h2/path"));
    let r = curl(&["--http2", "--cacert", &ca, "--resolve", &resolve, &url]);
    let diag = || format!("{}\n{}", r.describe(), mg.diagnostics());
    assert_eq!(r.code, 200, "{}", diag());
    assert_eq!(r.http_version, "2", "curl should report HTTP/2\n{}", diag());
    let v = r.echo();
    assert_eq!(v["path"], "/h2/path", "{}", diag());
    assert_eq!(v["headers"]["x-forwarded-proto"], "https", "{}", diag());
}

/// `curl --http1.0` offers only ALPN `http/1.0`: meshgate accepts it (as
/// nginx and HAProxy do) and serves the request as HTTP/1.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http1_0_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let echo = echo_service().await;
    let mg = Meshgate::start(tmp.path(), &terminating_config(&simple_tls(&pki), echo));
    let (ca, resolve) = (path_str(&pki.ca), mg.resolve());
    let url = mg.url("/old?client=1");
    let r = curl(&[
        "--http1.0",
        "-v",
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        &url,
    ]);
    let diag = || format!("{}\n{}", r.describe(), mg.diagnostics());
    assert!(r.run.ok(), "curl --http1.0 failed\n{}", diag());
    assert_eq!(r.code, 200, "{}", diag());
    // curl's `%{http_version}` is "1" for HTTP/1.0 ("1.1" for HTTP/1.1).
    assert_eq!(r.http_version, "1", "answered as HTTP/1.0\n{}", diag());
    assert!(r.headers.starts_with("HTTP/1.0 200"), "{}", diag());
    assert!(
        r.run.stderr.contains("ALPN: server accepted http/1.0"),
        "ALPN http/1.0 negotiated\n{}",
        diag()
    );
    let v = r.echo();
    assert_eq!(v["path"], "/old?client=1", "{}", diag());
    assert_eq!(v["headers"]["x-forwarded-proto"], "https", "{}", diag());
}
