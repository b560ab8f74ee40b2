//! Peer identities from verified client certificates: two clients with
//! different SPIFFE IDs over a MUTUAL Gateway server and over the mesh
//! inbound listener (15006, PeerAuthentication STRICT / PERMISSIVE), with
//! Istio's `principals`, `namespaces` and `notPrincipals`.

use meshgate::test_util::{ClientOpts, TestProxy, https_get, tempdir};

use crate::support::*;

/// Where the clients connect and how.
struct Listener {
    proxy: TestProxy,
    addr: std::net::SocketAddr,
    authority: &'static str,
    one: ClientOpts,
    two: ClientOpts,
    app: App,
}

impl Listener {
    /// A MUTUAL Gateway server for [`HOST`] with `policies`.
    async fn gateway(policies: &str, h2: bool) -> Listener {
        let pki = GatewayPki::new();
        let app = App::start().await;
        let dir = tempdir();
        let yaml = pki.gateway(dir.path(), app.addr) + policies;
        let proxy = start_in(dir, &yaml, &[443], |_| {}).await;
        let addr = proxy.proxy.inbound()[&443];
        Listener {
            addr,
            authority: HOST,
            one: pki.client(Some(&pki.one), h2),
            two: pki.client(Some(&pki.two), h2),
            proxy,
            app,
        }
    }

    /// The mesh inbound listener of workload `default/httpbin` in front of
    /// the app, PeerAuthentication `mode`, with `policies`.
    async fn mesh(policies: &str, mode: &str, h2: bool) -> (Listener, MeshPki) {
        let app = App::start().await;
        let dir = tempdir();
        let pki = MeshPki::new(dir.path());
        let identity = pki.identity_dir.clone();
        let yaml = peer_authentication(mode) + policies;
        let app_addr = app.addr;
        let proxy = start_in(dir, &yaml, &[], move |b| {
            b.identity_dir = Some(identity);
            b.app_addr = Some(app_addr);
            b.mesh_inbound_addr = "127.0.0.1:0".parse().unwrap();
        })
        .await;
        let addr = proxy.proxy.inbound()[&15006];
        let l = Listener {
            addr,
            authority: WORKLOAD_DNS,
            one: pki.client(Some(&pki.one), h2),
            two: pki.client(Some(&pki.two), h2),
            proxy,
            app,
        };
        (l, pki)
    }

    async fn get(&self, who: &ClientOpts, path: &str) -> meshgate::standin::Fetched {
        https_get(self.addr, who, self.authority, path, &[])
            .await
            .unwrap_or_else(|e| panic!("{path}: the request gets an answer: {e}"))
    }

    /// ALLOW principals [cluster.local/ns/a/sa/one]: one is served, two
    /// gets Envoy's 403 and never reaches the app; counted.
    async fn allow_one(&self, what: &str) {
        let r = self.get(&self.one, "/one").await;
        assert_eq!(r.status, 200, "{what}: one is allowed: {}", r.body);
        let r = self.get(&self.two, "/two").await;
        assert_denied(r.status, &r.body, &format!("{what}: two"));
        assert_eq!(
            r.headers
                .get("x-meshgate-error")
                .and_then(|v| v.to_str().ok()),
            Some(RBAC_FLAG),
            "{what}"
        );
        assert_eq!(
            self.app.seen(),
            vec!["/one"],
            "{what}: the app saw one only"
        );
        let p = &self.proxy;
        assert_eq!(
            wait_metric(p, &decisions("allow", "default/allow-one"), 1.0).await,
            1.0,
            "{what}: {}",
            p.metrics().await
        );
        assert_eq!(
            wait_metric(p, &decisions("deny", ""), 1.0).await,
            1.0,
            "{what}: denied for want of an ALLOW rule: {}",
            p.metrics().await
        );
    }

    /// DENY namespaces [b]: two gets 403, one is served; counted under the
    /// DENY policy.
    async fn deny_b(&self, what: &str) {
        let r = self.get(&self.two, "/two").await;
        assert_denied(r.status, &r.body, &format!("{what}: two"));
        let r = self.get(&self.one, "/one").await;
        assert_eq!(r.status, 200, "{what}: one: {}", r.body);
        assert_eq!(self.app.seen(), vec!["/one"], "{what}");
        let p = &self.proxy;
        assert_eq!(
            wait_metric(p, &decisions("deny", "default/deny-b"), 1.0).await,
            1.0,
            "{what}: {}",
            p.metrics().await
        );
        // No ALLOW policy: an allowed request is not counted.
        assert_eq!(
            wait_metric(p, &decisions("allow", ""), 0.0).await,
            0.0,
            "{what}"
        );
    }
}

fn allow_one() -> String {
    policy(
        "allow-one",
        "action: ALLOW\nrules:\n- from:\n  - source:\n      principals: [\"cluster.local/ns/a/sa/one\"]",
    )
}

fn deny_b() -> String {
    policy(
        "deny-b",
        "action: DENY\nrules:\n- from:\n  - source:\n      namespaces: [\"b\"]",
    )
}

#[tokio::test]
async fn principals_on_a_mutual_gateway() {
    for h2 in [false, true] {
        let l = Listener::gateway(&allow_one(), h2).await;
        l.allow_one(&format!("MUTUAL gateway, h2={h2}")).await;
    }
}

#[tokio::test]
async fn namespaces_deny_on_a_mutual_gateway() {
    let l = Listener::gateway(&deny_b(), false).await;
    l.deny_b("MUTUAL gateway").await;
}

#[tokio::test]
async fn principals_on_the_mesh_listener() {
    for h2 in [false, true] {
        let (l, _) = Listener::mesh(&allow_one(), "STRICT", h2).await;
        l.allow_one(&format!("mesh listener, h2={h2}")).await;
    }
}

#[tokio::test]
async fn namespaces_deny_on_the_mesh_listener() {
    let (l, _) = Listener::mesh(&deny_b(), "STRICT", false).await;
    l.deny_b("mesh listener").await;
}

/// Istio's mTLS migration with PERMISSIVE: a DENY with `notPrincipals:
/// ["*"]` refuses plain text while peers with a certificate are served.
#[tokio::test]
async fn not_principals_any_denies_plain_text_under_permissive() {
    let deny_plain = policy(
        "require-mtls",
        "action: DENY\nrules:\n- from:\n  - source:\n      notPrincipals: [\"*\"]",
    );
    let (l, _) = Listener::mesh(&deny_plain, "PERMISSIVE", false).await;
    let plain = plain_get(l.addr, "/plain", &[]).await;
    assert_denied(plain.status, &plain.body, "plain text");
    let r = l.get(&l.one, "/mtls").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(l.app.seen(), vec!["/mtls"]);
    assert_eq!(
        wait_metric(&l.proxy, &decisions("deny", "default/require-mtls"), 1.0).await,
        1.0
    );
}

/// `principals` match the verified certificate's identity, never a header
/// the client sends: two, forging an `X-Forwarded-Client-Cert` naming one,
/// is still two.
#[tokio::test]
async fn a_forged_client_cert_header_is_not_an_identity() {
    let l = Listener::gateway(&allow_one(), false).await;
    let forged = format!("By=spiffe://cluster.local/ns/default/sa/httpbin;URI={ONE}");
    let r = https_get(
        l.addr,
        &l.two,
        HOST,
        "/forged",
        &[("x-forwarded-client-cert", forged.as_str())],
    )
    .await
    .unwrap();
    assert_denied(r.status, &r.body, "two with a forged XFCC naming one");
    assert!(l.app.seen().is_empty());
}
