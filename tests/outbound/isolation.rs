//! A DestinationRule whose credential does not load at start: the proxy
//! serves, and that destination fails closed (never plain text, never
//! unverified) while the others are reached.

use super::*;

#[tokio::test]
async fn a_missing_ca_fails_its_destination_closed_and_the_rest_serves() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let missing = pki.dir.path().join("no-such-ca.pem");
    let plain = plain_server().await;
    let plain_entry = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: plain}}\nspec:\n  hosts: [plain.internal.test]\n  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {}}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1}}]\n",
        plain.port()
    );
    let yaml = format!(
        "{}---\n{plain_entry}",
        egress_yaml(up.addr.port(), &simple(&missing))
    );
    let p = proxy(pki, &yaml).await;
    assert_eq!(p.metric("meshgate_config_errors").await, 1.0);
    let r = p.get(HOST, "/x").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("credential_unavailable"), "{}", r.body);
    // The body names the port dialled (targetPort 443 → the endpoint's
    // port), not only the service port the app asked for.
    assert!(
        r.body
            .contains(&format!("{HOST} (dialled 127.0.0.1:{})", up.addr.port())),
        "{}",
        r.body
    );
    let r = p.get("plain.internal.test", "/y").await;
    assert_eq!((r.status, r.body.as_str()), (200, "plain:/y"));
}
