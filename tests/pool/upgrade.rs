//! `h2UpgradePolicy: UPGRADE` to an upstream whose TLS does not offer h2:
//! the request shaped for HTTP/2 goes over the HTTP/1.1 connection ALPN
//! chose, in origin form with a Host header (nginx answered 400 before).

use super::*;
use meshgate::devpki::{DevCa, LeafSpec};

const HOST: &str = "legacy.test";

#[tokio::test]
async fn upgrade_falls_back_to_http1_when_alpn_does_not_pick_h2() {
    let dir = tempdir();
    let ca = DevCa::new("pool test CA");
    let ca_file = ca.write_cert(dir.path(), "ca.crt").unwrap();
    let (cert, key) = ca
        .issue(&LeafSpec::server(&[HOST]))
        .write(dir.path(), "nginx")
        .unwrap();
    let nginx = common::nginx::Nginx::start(dir.path(), HOST, &cert, &key, None);
    let upstream: SocketAddr = ([127, 0, 0, 1], nginx.port).into();
    let yaml = format!(
        "{}{}",
        service(HOST, &[upstream]),
        rule(
            HOST,
            &format!(
                "connectionPool:
  http: {{h2UpgradePolicy: UPGRADE}}
tls:
  mode: SIMPLE
  caCertificates: {}",
                ca_file.display()
            )
        ),
    );
    let p = TestProxy::start(dir, &yaml, |_| {}).await.unwrap();
    for path in ["/first?x=1", "/second"] {
        let g = request(
            p.proxy.outbound,
            "GET",
            HOST,
            path,
            None,
            Duration::from_secs(10),
        )
        .await
        .expect("answered");
        assert_eq!(g.status, 200, "{g:?}\n{}", nginx.diagnostics());
        assert!(
            g.body.contains(&format!("host={HOST}")) && g.body.contains(&format!("uri={path}")),
            "{}",
            g.body
        );
    }
    // Both went over HTTP/1.1, in origin form.
    let log = nginx.access_log();
    assert!(log.contains("\"GET /first?x=1 HTTP/1.1\" 200"), "{log}");
    assert!(log.contains("\"GET /second HTTP/1.1\" 200"), "{log}");
}
