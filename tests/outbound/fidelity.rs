//! Istio fidelity, never weaker: a DestinationRule's TLS is honoured for a
//! host no ServiceEntry declares, and an explicit `sni` is the name
//! verified when no `subjectAltNames` say otherwise.

use super::*;

/// A DestinationRule for `localhost` (resolved by the system, no
/// ServiceEntry) whose tls block is `tls`.
fn rule_only_yaml(tls: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: local
spec:
  host: localhost
  trafficPolicy:
    tls:
{tls}
"#
    )
}

/// What `meshgate validate` reports for `yaml` (it runs `load::load`).
fn validate_warnings(dir: &std::path::Path, yaml: &str, registry_only: bool) -> Vec<String> {
    let config = write(dir, "validate.yaml", yaml);
    let mut bootstrap = meshgate::bootstrap::Bootstrap {
        config_paths: vec![config],
        ..meshgate::bootstrap::Bootstrap::ephemeral()
    };
    if registry_only {
        bootstrap.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly;
    }
    meshgate::load::load(&bootstrap)
        .unwrap_or_else(|e| panic!("does not load: {e}"))
        .plan
        .warnings
        .clone()
}

#[tokio::test]
async fn rule_without_service_entry_originates_tls_not_plaintext() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&["localhost"])).await;
    let port = up.addr.port();
    let yaml = rule_only_yaml(&simple(&pki.ca_file));
    let warnings = validate_warnings(pki.dir.path(), &yaml, false);
    let warned: Vec<&String> = warnings
        .iter()
        .filter(|w| w.contains("DestinationRule/default/local"))
        .collect();
    assert_eq!(warned.len(), 1, "{warnings:?}");
    for part in [
        "host localhost has no ServiceEntry",
        "PassthroughCluster",
        "meshgate originates TLS as this rule says",
    ] {
        assert!(warned[0].contains(part), "{part:?} missing: {}", warned[0]);
    }

    let p = proxy(pki, &yaml).await;
    let authority = format!("localhost:{port}");
    let r = p.get(&authority, "/v1/items").await;
    assert_eq!(r.status, 200, "{:?} {}", r.headers, r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["tls"]["sni"], "localhost", "{v}");
    assert_eq!(v["path"], "/v1/items");
    // Absolute-form (HTTP_PROXY) too.
    let r = fetch(
        p.proxy.outbound,
        "GET",
        &format!("http://{authority}/abs"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(up.handshakes() >= 1);
    assert_eq!(up.requests(), 2);
    // Plain text would have failed the upstream's handshake.
    assert!(up.failures().is_empty(), "{:?}", up.failures());
    let m = p.metrics().await;
    assert!(
        m.contains("destination_service=\"localhost\""),
        "labelled by the rule's host, not PassthroughCluster: {m}"
    );
}

#[tokio::test]
async fn rule_without_service_entry_verifies_the_host() {
    // The rule's TLS is verified as any other: a certificate for another
    // name is refused, never sent plain text instead.
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&["elsewhere.test"])).await;
    let port = up.addr.port();
    let yaml = rule_only_yaml(&simple(&pki.ca_file));
    let p = proxy(pki, &yaml).await;
    let r = p.get(&format!("localhost:{port}"), "/").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.headers["x-meshgate-error"], "san_mismatch", "{}", r.body);
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn rule_without_service_entry_is_refused_under_registry_only() {
    // As in Istio: a DestinationRule does not register a host.
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&["localhost"])).await;
    let port = up.addr.port();
    let yaml = rule_only_yaml(&simple(&pki.ca_file));
    let warnings = validate_warnings(pki.dir.path(), &yaml, true);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("has no ServiceEntry") && w.contains("REGISTRY_ONLY")),
        "{warnings:?}"
    );
    let p = TestProxy::start(pki.dir, &yaml, |b| {
        b.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly
    })
    .await
    .unwrap();
    let r = p.get(&format!("localhost:{port}"), "/").await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.headers["x-meshgate-error"], "registry_only");
    assert!(r.body.contains("DestinationRule"), "{}", r.body);
    assert_eq!(up.handshakes() + up.requests(), 0);
}

/// The egress ServiceEntry + DestinationRule with `sni: other.test` and
/// `extra` lines, to an upstream whose certificate names `other.test` only.
async fn sni_case(extra: &str) -> (Fetched, StandIn) {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&["other.test"])).await;
    let tls = format!("{}\n        sni: other.test{extra}", simple(&pki.ca_file));
    let yaml = egress_yaml(up.addr.port(), &tls);
    let p = proxy(pki, &yaml).await;
    (p.get(HOST, "/sni").await, up)
}

use meshgate::standin::Fetched;

#[tokio::test]
async fn explicit_sni_without_sans_verifies_the_sni() {
    let (r, up) = sni_case("").await;
    assert_eq!(r.status, 200, "{:?} {}", r.headers, r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["tls"]["sni"], "other.test");
    assert_eq!(v["host"], HOST, "the Host header is the app's");
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn explicit_sni_with_sans_verifies_the_sans() {
    let (r, up) = sni_case("\n        subjectAltNames: [x.test]").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.headers["x-meshgate-error"], "san_mismatch", "{}", r.body);
    assert_eq!(up.requests(), 0);
}
