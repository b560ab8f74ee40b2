//! Client addresses (Istio's "Ingress access control" task): `ipBlocks`
//! match the connection's peer; `remoteIpBlocks` the original client, read
//! from `X-Forwarded-For` only as far as `numTrustedProxies` says (Envoy's
//! `xff_num_trusted_hops`: the N-th address from the right), so a client
//! cannot claim another address with a header of its own.

use crate::support::*;

/// The Gateway with `spec` as its only policy; `trusted` proxies in front.
async fn gateway_with(app: &App, spec: &str, trusted: u32) -> meshgate::test_util::TestProxy {
    let yaml = plain_gateway(app.addr) + &policy("ingress-policy", spec);
    start(&yaml, &[8080], move |b| b.num_trusted_proxies = trusted).await
}

#[tokio::test]
async fn ip_blocks_match_the_peer_address() {
    let app = App::start().await;
    let p = gateway_with(
        &app,
        "rules:\n- from:\n  - source:\n      ipBlocks: [\"127.0.0.1\"]",
        0,
    )
    .await;
    let r = plain_get(p.proxy.inbound()[&8080], "/in", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let p = gateway_with(
        &app,
        "rules:\n- from:\n  - source:\n      ipBlocks: [\"10.0.0.0/8\", \"127.0.0.2\"]",
        0,
    )
    .await;
    let addr = p.proxy.inbound()[&8080];
    let r = plain_get(addr, "/out", &[]).await;
    assert_denied(r.status, &r.body, "127.0.0.1 outside the blocks");
    // A header does not change the peer.
    let r = plain_get(addr, "/out-xff", &[("x-forwarded-for", "10.1.2.3")]).await;
    assert_denied(r.status, &r.body, "ipBlocks ignore X-Forwarded-For");

    let p = gateway_with(
        &app,
        "action: DENY\nrules:\n- from:\n  - source:\n      notIpBlocks: [\"127.0.0.0/8\"]",
        0,
    )
    .await;
    let r = plain_get(p.proxy.inbound()[&8080], "/not", &[]).await;
    assert_eq!(r.status, 200, "loopback is not outside 127/8: {}", r.body);
    assert_eq!(app.seen(), vec!["/in", "/not"]);
}

const ALLOW_DOC_NET: &str =
    "rules:\n- from:\n  - source:\n      remoteIpBlocks: [\"203.0.113.0/24\"]";

/// Without trusted proxies (the default) the client is the peer: an
/// `X-Forwarded-For` the client writes is ignored.
#[tokio::test]
async fn remote_ip_blocks_ignore_a_spoofed_header_without_trusted_proxies() {
    let app = App::start().await;
    let p = gateway_with(&app, ALLOW_DOC_NET, 0).await;
    let addr = p.proxy.inbound()[&8080];
    for xff in ["203.0.113.7", "198.51.100.1, 203.0.113.7"] {
        let r = plain_get(addr, "/spoofed", &[("x-forwarded-for", xff)]).await;
        assert_denied(r.status, &r.body, &format!("X-Forwarded-For: {xff}"));
    }
    let p = gateway_with(
        &app,
        "rules:\n- from:\n  - source:\n      remoteIpBlocks: [\"127.0.0.1\"]",
        0,
    )
    .await;
    let r = plain_get(
        p.proxy.inbound()[&8080],
        "/peer",
        &[("x-forwarded-for", "203.0.113.7")],
    )
    .await;
    assert_eq!(r.status, 200, "the peer is the client: {}", r.body);
    assert_eq!(app.seen(), vec!["/peer"]);
}

/// With one trusted proxy, the client is the last `X-Forwarded-For` entry
/// (the one the trusted proxy appended); entries before it are the
/// client's own and prove nothing.
#[tokio::test]
async fn remote_ip_blocks_with_one_trusted_proxy() {
    let app = App::start().await;
    let p = gateway_with(&app, ALLOW_DOC_NET, 1).await;
    let addr = p.proxy.inbound()[&8080];
    let cases: &[(&str, Option<&str>, u16)] = &[
        ("in the block", Some("203.0.113.7"), 200),
        (
            "the proxy appended the real client",
            Some("203.0.113.7, 198.51.100.1"),
            403,
        ),
        (
            "entries before the real client are ignored",
            Some("198.51.100.1, 203.0.113.9"),
            200,
        ),
        ("outside", Some("198.51.100.1"), 403),
        ("no header: the peer", None, 403),
        ("not an address: the peer", Some("nonsense"), 403),
    ];
    for (what, xff, want) in cases {
        let headers: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
        let r = plain_get(addr, "/remote", &headers).await;
        assert_eq!(r.status, *want, "{what}: {}", r.body);
        if *want == 403 {
            assert_eq!(r.body, RBAC_BODY, "{what}");
        }
    }
    assert_eq!(app.seen().len(), 2);
}

/// Envoy's example 3 (`xff_num_trusted_hops: 2`): of `a, b, c` the client
/// is `b`, the second address from the right.
#[tokio::test]
async fn remote_ip_blocks_with_two_trusted_proxies() {
    let app = App::start().await;
    let p = gateway_with(
        &app,
        "action: DENY\nrules:\n- from:\n  - source:\n      remoteIpBlocks: [\"198.51.100.0/24\"]",
        2,
    )
    .await;
    let addr = p.proxy.inbound()[&8080];
    let r = plain_get(
        addr,
        "/two-hops",
        &[("x-forwarded-for", "203.0.113.128, 198.51.100.10, 10.0.0.1")],
    )
    .await;
    assert_denied(r.status, &r.body, "the client 198.51.100.10 is denied");
    let r = plain_get(
        addr,
        "/two-hops-ok",
        &[("x-forwarded-for", "198.51.100.128, 203.0.113.10, 10.0.0.1")],
    )
    .await;
    assert_eq!(r.status, 200, "the client is 203.0.113.10: {}", r.body);
    assert_eq!(app.seen(), vec!["/two-hops-ok"]);
}
