//! RequestAuthentication end to end on a plain Gateway server: tokens
//! signed at test time, Envoy's refusals (401 with its reason and
//! `www-authenticate`, 403 for audiences), what the app receives (no
//! token, the payload and claim headers, never a forged one), request
//! principals and claims in AuthorizationPolicy, and key sets fetched over
//! HTTPS from a server the proxy trusts through a DestinationRule —
//! prefetched, refreshed (key rotation), kept across reloads, and a server
//! that is down or silent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshgate::devpki::{DevCa, LeafSpec};
use meshgate::plan::authn::testing::{SigningKey, jwks, now};
use meshgate::test_util::{TestProxy, metric_value, tempdir};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::*;

const ISSUER: &str = "https://issuer.test";
/// The key server's name (a ServiceEntry with a STATIC endpoint).
const KEYS_HOST: &str = "jwks.test";

// === helpers ===

/// A RequestAuthentication `default/jwt` with one rule: `issuer` and
/// `extra` (YAML lines at the rule's indentation, 4 spaces).
fn request_authentication(extra: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: default}}\nspec:\n  jwtRules:\n  - issuer: {ISSUER}\n{extra}"
    )
}

fn inline(keys: &[&SigningKey]) -> String {
    format!("    jwks: {:?}\n", jwks(keys))
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "sub": sub, "aud": "app", "iat": now(), "exp": now() + 600})
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// What the app received, as its JSON answer says.
fn seen(r: &Raw) -> Value {
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

/// Asserts Envoy's refusal: `status`, the body exactly `reason`, and
/// `www-authenticate` naming the request.
fn assert_refused(r: &Raw, status: u16, reason: &str, target: &str) {
    assert_eq!(r.status, status, "{reason}: {} {}", r.head, r.body);
    assert_eq!(r.body, reason);
    assert_eq!(
        r.header("www-authenticate"),
        Some(format!("Bearer realm=\"http://{HOST}{target}\", error=\"invalid_token\"").as_str()),
        "{}",
        r.head
    );
    assert_eq!(
        r.header("x-meshgate-error"),
        Some("jwt_authn_access_denied")
    );
}

fn authn(result: &str, reason: &str) -> String {
    format!("meshgate_jwt_authn_total{{result=\"{result}\",reason=\"{reason}\"}}")
}

async fn gateway_with(app: &App, extra: &str) -> TestProxy {
    start(&(plain_gateway(app.addr) + extra), &[8080], |_| {}).await
}

/// An HTTPS server answering every request with the current status and
/// body, counting the requests.
struct KeyServer {
    addr: SocketAddr,
    answer: Arc<Mutex<(u16, String)>>,
    /// Answers for particular paths, before `answer`.
    paths: Arc<Mutex<Vec<(String, String)>>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl KeyServer {
    async fn start(ca: &DevCa, body: String) -> KeyServer {
        let leaf = ca.issue(&LeafSpec::server(&[KEYS_HOST]));
        let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(meshgate::creds::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let answer = Arc::new(Mutex::new((200u16, body)));
        let paths = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (a, h, ps) = (answer.clone(), hits.clone(), paths.clone());
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (acceptor, a, h, ps) = (acceptor.clone(), a.clone(), h.clone(), ps.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let path = req.uri().path().to_string();
                        let (status, body) = ps
                            .lock()
                            .unwrap()
                            .iter()
                            .find(|(p, _)| *p == path)
                            .map(|(_, b)| (200, b.clone()))
                            .unwrap_or_else(|| a.lock().unwrap().clone());
                        async move {
                            let mut resp = http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body),
                            ));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        KeyServer {
            addr,
            answer,
            paths,
            hits,
            task,
        }
    }

    fn set(&self, status: u16, body: String) {
        *self.answer.lock().unwrap() = (status, body);
    }

    /// Answers `body` (200) at `path`.
    fn serve(&self, path: &str, body: String) {
        self.paths.lock().unwrap().push((path.into(), body));
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The ServiceEntry that points [`KEYS_HOST`] at this server and the
    /// DestinationRule that originates TLS to it, trusting `ca_file`.
    fn registry(&self, ca_file: &std::path::Path) -> String {
        format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: keys, namespace: default}}
spec:
  hosts: [{KEYS_HOST}]
  location: MESH_EXTERNAL
  ports: [{{number: 443, name: https, protocol: HTTPS}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{https: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: keys, namespace: default}}
spec:
  host: {KEYS_HOST}
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca}}}
"#,
            port = self.addr.port(),
            ca = ca_file.display()
        )
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends GETs with `token` until the answer is `want` (at most a few
/// seconds); returns the last answer.
async fn until_status(addr: SocketAddr, token: &str, want: u16) -> Raw {
    let start = Instant::now();
    loop {
        let r = plain_get(addr, "/r", &[("authorization", &bearer(token))]).await;
        if r.status == want || start.elapsed() > Duration::from_secs(8) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === tokens ===

#[tokio::test]
async fn a_valid_token_reaches_the_app_as_its_payload_not_as_the_token() {
    let key = SigningKey::new("ES256", Some("k1"));
    let app = App::start().await;
    let ra = request_authentication(&format!(
        "{}    outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders:\n    - {{header: x-jwt-sub, claim: sub}}\n",
        inline(&[&key])
    ));
    let p = gateway_with(&app, &ra).await;
    let addr = p.proxy.inbound()[&8080];
    let token = key.sign(&claims("alice"));
    let r = plain_get(
        addr,
        "/get",
        &[("authorization", &bearer(&token)), ("x-jwt-sub", "forged")],
    )
    .await;
    let v = seen(&r);
    let headers = &v["headers"];
    assert!(
        headers.get("authorization").is_none(),
        "forwardOriginalToken is false: {v}"
    );
    let payload = token.split('.').nth(1).unwrap();
    assert_eq!(headers["x-jwt-payload"], payload);
    assert_eq!(
        headers["x-jwt-sub"], "alice",
        "the forged value is replaced"
    );
    // Without a token: passes, and a forged payload header never reaches
    // the app.
    let r = plain_get(addr, "/none", &[("x-jwt-payload", "e30")]).await;
    let v = seen(&r);
    assert!(v["headers"].get("x-jwt-payload").is_none(), "{v}");
    assert_eq!(app.seen(), ["/get", "/none"]);
    assert_eq!(wait_metric(&p, &authn("allowed", ""), 1.0).await, 1.0);
    assert_eq!(wait_metric(&p, &authn("no_token", ""), 1.0).await, 1.0);
}

#[tokio::test]
async fn invalid_tokens_are_refused_with_envoys_reasons() {
    let key = SigningKey::new("RS256", Some("k1"));
    let impostor = SigningKey::new("RS256", Some("k1"));
    let stranger = SigningKey::new("RS256", Some("k9"));
    let app = App::start().await;
    let ra = request_authentication(&format!("{}    audiences: [app]\n", inline(&[&key])));
    let p = gateway_with(&app, &ra).await;
    let addr = p.proxy.inbound()[&8080];
    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 120);
    let mut early = claims("alice");
    early["nbf"] = json!(now() + 600);
    let mut other_issuer = claims("alice");
    other_issuer["iss"] = json!("https://other.test");
    let mut other_audience = claims("alice");
    other_audience["aud"] = json!(["https://somebody-else/"]);
    for (token, status, reason) in [
        (key.sign(&expired), 401, "Jwt is expired"),
        (key.sign(&early), 401, "Jwt not yet valid"),
        (key.sign(&other_issuer), 401, "Jwt issuer is not configured"),
        (
            impostor.sign(&claims("alice")),
            401,
            "Jwt verification fails",
        ),
        (
            stranger.sign(&claims("alice")),
            401,
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
        (
            key.sign(&other_audience),
            403,
            "Audiences in Jwt are not allowed",
        ),
        (
            "not-a-token".to_string(),
            401,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
    ] {
        let r = plain_get(addr, "/x?a=1", &[("authorization", &bearer(&token))]).await;
        assert_refused(&r, status, reason, "/x?a=1");
    }
    assert!(app.seen().is_empty(), "{:?}", app.seen());
    // The token in the query parameter is refused the same way.
    let r = plain_get(addr, "/q?access_token=a.b.c", &[]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // No token, or one after another scheme: no identity, allowed.
    let r = plain_get(addr, "/anon", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = plain_get(addr, "/basic", &[("authorization", "Basic dXNlcjpwdw==")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The good token passes.
    let r = plain_get(
        addr,
        "/ok",
        &[("authorization", &bearer(&key.sign(&claims("a"))))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(wait_metric(&p, &authn("denied", "expired"), 1.0).await, 1.0);
    assert_eq!(
        wait_metric(&p, &authn("denied", "bad_signature"), 1.0).await,
        1.0
    );
    assert_eq!(
        wait_metric(&p, &authn("denied", "audience_not_allowed"), 1.0).await,
        1.0
    );
}

#[tokio::test]
async fn request_principals_and_claims_decide_authorization() {
    let key = SigningKey::new("EdDSA", None);
    let app = App::start().await;
    let yaml = request_authentication(&inline(&[&key]))
        + &policy(
            "require-jwt",
            "rules:\n- from:\n  - source:\n      requestPrincipals: [\"*\"]",
        );
    let p = gateway_with(&app, &yaml).await;
    let addr = p.proxy.inbound()[&8080];
    let r = plain_get(addr, "/anon", &[]).await;
    assert_denied(r.status, &r.body, "no token with requestPrincipals [*]");
    let r = plain_get(
        addr,
        "/jwt",
        &[("authorization", &bearer(&key.sign(&claims("bob"))))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.seen(), ["/jwt"]);

    // Istio's "JWT claim based routing" task: a group claim, a principal,
    // and `scope` split at spaces.
    let app = App::start().await;
    let yaml = request_authentication(&inline(&[&key]))
        + &policy(
            "admins",
            &format!(
                "rules:\n- from:\n  - source:\n      requestPrincipals: [\"{ISSUER}/alice\"]\n  when:\n  - key: request.auth.claims[groups]\n    values: [\"admins\"]\n  - key: request.auth.claims[scope]\n    values: [\"write\"]"
            ),
        );
    let p = gateway_with(&app, &yaml).await;
    let addr = p.proxy.inbound()[&8080];
    let with = |sub: &str, groups: Value, scope: &str| {
        let mut c = claims(sub);
        c["groups"] = groups;
        c["scope"] = json!(scope);
        key.sign(&c)
    };
    for (token, allowed) in [
        (with("alice", json!(["dev", "admins"]), "read write"), true),
        (with("alice", json!(["dev"]), "read write"), false),
        (with("alice", json!(["admins"]), "read"), false),
        (with("bob", json!(["admins"]), "write"), false),
    ] {
        let r = plain_get(addr, "/admin", &[("authorization", &bearer(&token))]).await;
        if allowed {
            assert_eq!(r.status, 200, "{}", r.body);
        } else {
            assert_denied(r.status, &r.body, "claims");
        }
    }
}

/// Istio's rules of several issuers (and two of one issuer): a token valid
/// for one rule passes with that rule's identity; one no rule accepts is
/// refused with the first rule's reason.
#[tokio::test]
async fn several_issuers_share_the_authorization_header() {
    let a = SigningKey::new("ES256", Some("a"));
    let b = SigningKey::new("RS256", Some("b"));
    let app = App::start().await;
    let yaml = format!(
        "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: two, namespace: default}}\nspec:\n  jwtRules:\n  - issuer: https://b.test\n    jwks: {jb:?}\n    audiences: [one]\n  - issuer: https://b.test\n    jwks: {jb:?}\n    audiences: [two]\n  - issuer: https://a.test\n    jwks: {ja:?}\n",
        ja = jwks(&[&a]),
        jb = jwks(&[&b]),
    ) + &policy(
        "only-b",
        "rules:\n- from:\n  - source:\n      requestPrincipals: [\"https://b.test/*\"]",
    );
    let p = gateway_with(&app, &yaml).await;
    let addr = p.proxy.inbound()[&8080];
    let token = |k: &SigningKey, iss: &str, aud: &str| {
        k.sign(&json!({"iss": iss, "sub": "s", "aud": aud, "exp": now() + 60}))
    };
    let get =
        |t: String| async move { plain_get(addr, "/t", &[("authorization", &bearer(&t))]).await };
    // Valid for the second rule of issuer b (audience two).
    let r = get(token(&b, "https://b.test", "two")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Valid for issuer a: authenticated, but not a b principal.
    let r = get(token(&a, "https://a.test", "x")).await;
    assert_denied(r.status, &r.body, "issuer a is authenticated, not allowed");
    // Valid for no rule: the first rule's (issuer a, sorted first) reason.
    let r = get(token(&a, "https://c.test", "one")).await;
    assert_refused(&r, 401, "Jwt issuer is not configured", "/t");
    let r = get(token(&b, "https://b.test", "three")).await;
    assert_refused(&r, 401, "Jwt issuer is not configured", "/t");
    assert_eq!(app.seen(), ["/t"]);
}

#[tokio::test]
async fn query_parameters_cookies_and_forwarded_tokens() {
    let key = SigningKey::new("PS256", Some("p"));
    let app = App::start().await;
    // Default locations: Authorization and access_token.
    let p = gateway_with(&app, &request_authentication(&inline(&[&key]))).await;
    let addr = p.proxy.inbound()[&8080];
    let token = key.sign(&claims("carol"));
    let r = plain_get(addr, &format!("/q?a=1&access_token={token}&b=2"), &[]).await;
    assert_eq!(
        seen(&r)["path"],
        "/q?a=1&b=2",
        "the token is taken out of the query"
    );

    // fromCookies and fromHeaders with a prefix; the token forwarded.
    let app = App::start().await;
    let ra = request_authentication(&format!(
        "{}    fromHeaders: [{{name: x-token, prefix: 'Token '}}]\n    fromCookies: [session]\n    forwardOriginalToken: true\n",
        inline(&[&key])
    ));
    let p = gateway_with(&app, &ra).await;
    let addr = p.proxy.inbound()[&8080];
    let r = plain_get(addr, "/h", &[("x-token", &format!("Token {token}"))]).await;
    assert_eq!(seen(&r)["headers"]["x-token"], format!("Token {token}"));
    let r = plain_get(addr, "/c", &[("cookie", &format!("a=b; session={token}"))]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = plain_get(addr, "/c", &[("cookie", "session=x.y.z")]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // Not a configured location: Authorization is not looked at.
    let r = plain_get(addr, "/a", &[("authorization", "Bearer x.y.z")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn a_cors_preflight_is_not_authenticated() {
    let key = SigningKey::new("ES384", None);
    let app = App::start().await;
    let p = gateway_with(&app, &request_authentication(&inline(&[&key]))).await;
    let addr = p.proxy.inbound()[&8080];
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = s;
    s.write_all(
        format!(
            "OPTIONS /cors HTTP/1.1\r\nHost: {HOST}\r\nOrigin: https://web.test\r\nAccess-Control-Request-Method: POST\r\nAuthorization: Bearer x.y.z\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).await.unwrap();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // The same without Origin is authenticated.
    let r = plain_get(addr, "/x", &[("authorization", "Bearer x.y.z")]).await;
    assert_eq!(r.status, 401);
}

// === remote key sets ===

struct Remote {
    ca: DevCa,
    dir: tempfile::TempDir,
    ca_file: std::path::PathBuf,
}

fn remote() -> Remote {
    let dir = tempdir();
    let ca = DevCa::new("key server CA");
    let ca_file = ca.write_cert(dir.path(), "keys-ca.crt").unwrap();
    Remote { ca, dir, ca_file }
}

#[tokio::test]
async fn jwks_uri_is_fetched_over_verified_tls_refreshed_and_kept_across_reloads() {
    let old = SigningKey::new("RS256", Some("old"));
    let new = SigningKey::new("ES256", Some("new"));
    let r = remote();
    let server = KeyServer::start(&r.ca, jwks(&[&old])).await;
    let app = App::start().await;
    let uri = format!("https://{KEYS_HOST}:443/.well-known/jwks.json");
    let yaml = plain_gateway(app.addr)
        + &server.registry(&r.ca_file)
        + &request_authentication(&format!("    jwksUri: {uri}\n"));
    let p = start_in(r.dir, &yaml, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    // Fetched at start, before any request.
    let started = Instant::now();
    while server.hits() == 0 && started.elapsed() < DEADLINE {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.hits(), 1, "fetched once at start");
    let r1 = until_status(addr, &old.sign(&claims("alice")), 200).await;
    assert_eq!(r1.status, 200, "{}", r1.body);
    assert_eq!(
        metric_value(
            &p.metrics().await,
            "meshgate_jwks_fetches_total{result=\"success\"}"
        ),
        1.0
    );

    // A new key is not looked for on an unknown kid (Envoy): refused until
    // the next refresh.
    server.set(200, jwks(&[&old, &new]));
    let r2 = plain_get(
        addr,
        "/r",
        &[("authorization", &bearer(&new.sign(&claims("a"))))],
    )
    .await;
    assert_refused(
        &r2,
        401,
        "Jwks doesn't have key to match kid or alg from Jwt",
        "/r",
    );
    assert_eq!(server.hits(), 1, "an unknown kid does not fetch");
    p.proxy
        .state
        .jwks
        .set_refresh_interval(Duration::from_millis(200));
    let r3 = until_status(addr, &new.sign(&claims("a")), 200).await;
    assert_eq!(
        r3.status, 200,
        "the rotated key is used after a refresh: {}",
        r3.body
    );

    // A reload that keeps the URI keeps the keys: with the server now
    // failing, the last keys stay in service.
    server.set(503, "down".into());
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.proxy.reload().await.unwrap();
    assert_eq!(p.proxy.state.jwks.len(), 1);
    let r4 = plain_get(
        addr,
        "/r",
        &[("authorization", &bearer(&new.sign(&claims("a"))))],
    )
    .await;
    assert_eq!(
        r4.status, 200,
        "the keys outlive failed refreshes: {}",
        r4.body
    );
    assert!(
        metric_value(
            &p.metrics().await,
            "meshgate_jwks_fetches_total{result=\"failure\"}"
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_key_server_that_is_down_or_silent_refuses_tokens_only() {
    // Down: answers 503.
    let key = SigningKey::new("ES256", None);
    let r = remote();
    let server = KeyServer::start(&r.ca, String::new()).await;
    server.set(503, "unavailable".into());
    let app = App::start().await;
    let yaml = plain_gateway(app.addr)
        + &server.registry(&r.ca_file)
        + &request_authentication(&format!("    jwksUri: https://{KEYS_HOST}/keys\n"));
    let p = start_in(r.dir, &yaml, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    let resp = until_status(addr, &key.sign(&claims("a")), 401).await;
    assert_refused(&resp, 401, "Jwks remote fetch is failed", "/r");
    let resp = plain_get(addr, "/anon", &[]).await;
    assert_eq!(
        resp.status, 200,
        "no token: no key set needed: {}",
        resp.body
    );
    // Back up: its keys are used after the next attempt (1 s backoff).
    server.set(200, jwks(&[&key]));
    let resp = until_status(addr, &key.sign(&claims("a")), 200).await;
    assert_eq!(resp.status, 200, "{}", resp.body);

    // Silent: accepts connections and never answers; a request waits at
    // most the rule's timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let app = App::start().await;
    let yaml = plain_gateway(app.addr)
        + &request_authentication(&format!(
            "    jwksUri: http://127.0.0.1:{port}/keys\n    timeout: 1s\n"
        ));
    let p = start(&yaml, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    let t = Instant::now();
    let resp = plain_get(
        addr,
        "/r",
        &[("authorization", &bearer(&key.sign(&claims("a"))))],
    )
    .await;
    assert_refused(&resp, 401, "Jwks remote fetch is failed", "/r");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        t.elapsed()
    );
    hold.abort();
}

#[tokio::test]
async fn keys_are_found_through_the_issuers_openid_discovery() {
    let key = SigningKey::new("PS384", Some("d"));
    let r = remote();
    let server = KeyServer::start(&r.ca, "not found".into()).await;
    server.set(404, "not found".into());
    server.serve(
        "/tenant/.well-known/openid-configuration",
        json!({"issuer": "x", "jwks_uri": format!("https://{KEYS_HOST}/tenant/keys")}).to_string(),
    );
    server.serve("/tenant/keys", jwks(&[&key]));
    let app = App::start().await;
    let issuer = format!("https://{KEYS_HOST}/tenant/");
    let yaml = plain_gateway(app.addr)
        + &server.registry(&r.ca_file)
        + &format!(
            "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: oidc, namespace: default}}\nspec:\n  jwtRules:\n  - issuer: {issuer}\n"
        );
    let p = start_in(r.dir, &yaml, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    let t = key.sign(&json!({"iss": issuer, "sub": "d", "exp": now() + 60}));
    let resp = until_status(addr, &t, 200).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(server.hits(), 2, "the discovery document, then the key set");
}

#[tokio::test]
async fn what_is_not_a_key_set_is_not_used() {
    let key = SigningKey::new("ES256", None);
    let r = remote();
    let server = KeyServer::start(&r.ca, "{}".into()).await;
    let app = App::start().await;
    let yaml = plain_gateway(app.addr)
        + &server.registry(&r.ca_file)
        + &request_authentication(&format!("    jwksUri: https://{KEYS_HOST}/keys\n"));
    let p = start_in(r.dir, &yaml, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    // Envoy answers with the key set's own failure.
    let resp = until_status(addr, &key.sign(&claims("a")), 401).await;
    assert_refused(&resp, 401, "Jwks does not have [keys] field", "/r");
    // A document over 1 MiB is not read.
    let mut big = jwks(&[&key]);
    big.insert_str(1, &format!("\"pad\": \"{}\", ", "x".repeat(1 << 20)));
    server.set(200, big);
    p.proxy
        .state
        .jwks
        .set_refresh_interval(Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resp = plain_get(
        addr,
        "/r",
        &[("authorization", &bearer(&key.sign(&claims("a"))))],
    )
    .await;
    assert_refused(&resp, 401, "Jwks remote fetch is failed", "/r");
    // The same key set, small: used.
    server.set(200, jwks(&[&key]));
    let resp = until_status(addr, &key.sign(&claims("a")), 200).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
}

#[tokio::test]
async fn a_key_server_whose_certificate_is_not_trusted_is_not_used() {
    let key = SigningKey::new("ES256", None);
    let r = remote();
    let server = KeyServer::start(&r.ca, jwks(&[&key])).await;
    // The DestinationRule trusts another CA.
    let other = DevCa::new("another CA");
    let other_file = other.write_cert(r.dir.path(), "other-ca.crt").unwrap();
    let app = App::start().await;
    let yaml = plain_gateway(app.addr)
        + &server.registry(&other_file)
        + &request_authentication(&format!("    jwksUri: https://{KEYS_HOST}/keys\n"));
    let p = start_in(r.dir, &yaml, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    let resp = until_status(addr, &key.sign(&claims("a")), 401).await;
    assert_refused(&resp, 401, "Jwks remote fetch is failed", "/r");
    assert_eq!(
        server.hits(),
        0,
        "no request is sent over an unverified connection"
    );
    drop(r.ca);
}
