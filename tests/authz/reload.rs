//! Policies change with a reload: a policy added or removed decides the
//! next requests, and no connection is dropped for it. A keep-alive
//! connection opened before the reload must not keep the old decision for
//! ever: its next request is decided by the new policy, or the connection
//! is closed gracefully after one response (as Envoy drains the
//! connections of a changed filter chain), so the client reconnects under
//! the new policy.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use meshgate::test_util::TestProxy;
use tokio::net::TcpStream;

use crate::support::*;

/// A plain HTTP/1.1 keep-alive client connection.
struct Conn {
    send: SendRequest<Empty<Bytes>>,
}

/// One response on a kept connection: status, whether it said
/// `Connection: close`, body.
struct Answer {
    status: u16,
    closing: bool,
    body: String,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        Conn { send }
    }

    /// GET `path`; `None` when the connection is closed.
    async fn get(&mut self, path: &str) -> Option<Answer> {
        self.get_with(path, &[]).await
    }

    /// GET `path` with `headers`; `None` when the connection is closed.
    async fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Option<Answer> {
        let go = async {
            self.send.ready().await.ok()?;
            let mut req = http::Request::get(path).header(http::header::HOST, HOST);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req.body(Empty::new()).unwrap();
            let resp = self.send.send_request(req).await.ok()?;
            let status = resp.status().as_u16();
            let closing = resp
                .headers()
                .get(http::header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            Some(Answer {
                status,
                closing,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(DEADLINE, go)
            .await
            .expect("an answer or a close in time")
    }
}

/// Rewrites the proxy's configuration and reloads it.
async fn reload_with(p: &TestProxy, yaml: &str) {
    std::fs::write(p.config_path(), yaml).unwrap();
    p.proxy
        .reload()
        .await
        .unwrap_or_else(|e| panic!("the reload is accepted: {e}\n--- config ---\n{yaml}"));
}

/// Asserts that a connection opened under the old configuration answers
/// `path` as the new one says (`want`), or is closed gracefully after at
/// most one more response.
async fn old_connection_follows(c: &mut Conn, path: &str, want: u16, what: &str) {
    let Some(a) = c.get(path).await else {
        return; // Closed: the client reconnects under the new policy.
    };
    if a.status == want {
        return;
    }
    assert!(
        a.closing,
        "{what}: a keep-alive connection opened before the reload answered {path} with {} \
         under the old policy, without closing: {}",
        a.status, a.body
    );
    assert!(
        c.get(path).await.is_none(),
        "{what}: the connection said close but stayed open"
    );
}

#[tokio::test]
async fn a_policy_added_and_removed_by_a_reload() {
    let app = App::start().await;
    let open = plain_gateway(app.addr);
    let p = start(&open, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];

    // Before: everything is served, on a kept connection.
    let mut before = Conn::open(addr).await;
    let a = before.get("/admin").await.expect("served");
    assert_eq!(a.status, 200, "{}", a.body);

    // A DENY for /admin* arrives.
    let denied = open.clone()
        + &policy(
            "deny-admin",
            "action: DENY\nrules:\n- to:\n  - operation:\n      paths: [\"/admin*\"]",
        );
    reload_with(&p, &denied).await;
    let r = plain_get(addr, "/admin", &[]).await;
    assert_denied(r.status, &r.body, "a new connection after the reload");
    let r = plain_get(addr, "/public", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    old_connection_follows(&mut before, "/admin", 403, "DENY added").await;

    // A connection opened under the DENY stays open across its removal.
    let mut during = Conn::open(addr).await;
    let a = during.get("/public").await.expect("served");
    assert_eq!(a.status, 200, "{}", a.body);
    reload_with(&p, &open).await;
    let r = plain_get(addr, "/admin", &[]).await;
    assert_eq!(r.status, 200, "the DENY is gone: {}", r.body);
    old_connection_follows(&mut during, "/admin", 200, "DENY removed").await;

    assert_eq!(
        wait_metric(&p, "meshgate_config_reloads_total{result=\"success\"}", 2.0).await,
        2.0
    );
}

/// An allow-nothing policy added by a reload denies the next request of a
/// client that keeps one HTTP/1.1 connection busy: its requests cannot
/// outlive the policy.
#[tokio::test]
async fn a_busy_keep_alive_connection_meets_a_new_allow_nothing() {
    let app = App::start().await;
    let open = plain_gateway(app.addr);
    let p = start(&open, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    let mut c = Conn::open(addr).await;
    for i in 0..3 {
        let a = c.get(&format!("/busy/{i}")).await.expect("served");
        assert_eq!(a.status, 200);
    }
    reload_with(&p, &(open + &policy("allow-nothing", ""))).await;
    old_connection_follows(&mut c, "/busy/after", 403, "allow-nothing added").await;
    let r = plain_get(addr, "/busy/new", &[]).await;
    assert_denied(r.status, &r.body, "a new connection");
}

/// A RequestAuthentication added by a reload validates the next token on a
/// keep-alive connection opened before it: a token signed by a key not in
/// its set is refused (401), one signed by its key is accepted.
#[tokio::test]
async fn a_request_authentication_added_by_a_reload_checks_kept_connections() {
    use meshgate::plan::authn::testing::{SigningKey, jwks, now};
    let app = App::start().await;
    let open = plain_gateway(app.addr);
    let p = start(&open, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    let key = SigningKey::new("ES256", Some("k1"));
    let stranger = SigningKey::new("ES256", Some("k1"));
    let claims = serde_json::json!({
        "iss": "https://issuer.test", "sub": "alice", "iat": now(), "exp": now() + 600,
    });
    let forged = format!("Bearer {}", stranger.sign(&claims));
    let good = format!("Bearer {}", key.sign(&claims));
    let mut c = Conn::open(addr).await;
    let a = c
        .get_with("/before", &[("authorization", &forged)])
        .await
        .expect("served");
    assert_eq!(a.status, 200, "no RequestAuthentication yet: {}", a.body);

    let ra = format!(
        "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: default}}\nspec:\n  jwtRules:\n  - issuer: https://issuer.test\n    jwks: {:?}\n",
        jwks(&[&key])
    );
    reload_with(&p, &(open + &ra)).await;
    let Some(a) = c.get_with("/after", &[("authorization", &forged)]).await else {
        return; // Closed: the client reconnects under the new rules.
    };
    assert_eq!(
        a.status, 401,
        "a forged token on a kept connection: {}",
        a.body
    );
    let a = c
        .get_with("/after", &[("authorization", &good)])
        .await
        .expect("still open");
    assert_eq!(a.status, 200, "{}", a.body);
}
