//! Sources.

use super::*;

/// Reference: principals "`<TRUST_DOMAIN>/ns/<NAMESPACE>/sa/<SERVICE_ACCOUNT>`
/// ... requires mTLS"; builder: exact `spiffe://<value>`, prefix, suffix
/// (`spiffe://.*<suffix>`) and `*` (`.+`, any authenticated peer).
#[test]
fn principals_exact_prefix_suffix_and_any() {
    let p = plan(&ap(
        "principals",
        r#"rules:
- from:
  - source:
      principals: ["cluster.local/ns/default/sa/sleep", "cluster.local/ns/ops/*", "*/sa/admin"]"#,
    ));
    expect(
        &p,
        &[
            ("exact", get("/").peer("default", "sleep"), ALLOWED),
            (
                "exact, another sa",
                get("/").peer("default", "sleeper"),
                DENIED,
            ),
            (
                "exact, another trust domain",
                get("/").by("spiffe://other.td/ns/default/sa/sleep"),
                DENIED,
            ),
            (
                "exact, not a SPIFFE ID",
                get("/").by("cluster.local/ns/default/sa/sleep"),
                DENIED,
            ),
            ("prefix", get("/").peer("ops", "anything"), ALLOWED),
            (
                "prefix, another namespace",
                get("/").peer("opsx", "a"),
                DENIED,
            ),
            ("suffix", get("/").peer("any", "admin"), ALLOWED),
            (
                "suffix, other td",
                get("/").by("spiffe://x/ns/y/sa/admin"),
                ALLOWED,
            ),
            ("no mutual TLS", get("/"), DENIED),
        ],
    );
    let any = plan(&ap(
        "any-peer",
        "rules:\n- from:\n  - source:\n      principals: [\"*\"]",
    ));
    expect(
        &any,
        &[
            ("any peer", get("/").peer("x", "y"), ALLOWED),
            ("any peer, TCP", tcp(9000).peer("x", "y"), ALLOWED),
            ("plain text", get("/"), DENIED),
            ("plain text, TCP", tcp(9000), DENIED),
        ],
    );
}

/// Reference ("Authorization on plain text" in the security best
/// practices and Istio's mTLS migration task): a DENY with
/// `notPrincipals: ["*"]` denies every request without mutual TLS.
#[test]
fn not_principals_any_denies_plain_text() {
    let p = plan(&ap(
        "require-mtls",
        "action: DENY\nrules:\n- from:\n  - source:\n      notPrincipals: [\"*\"]",
    ));
    expect(
        &p,
        &[
            ("plain text", get("/"), DENIED),
            ("plain text TCP", tcp(9000), DENIED),
            ("mutual TLS", get("/").peer("default", "sleep"), ALLOWED),
            (
                "mutual TLS TCP",
                tcp(9000).peer("default", "sleep"),
                ALLOWED,
            ),
        ],
    );
}

/// Builder: `namespaces` is the regex `.*/ns/<ns>/.*` on the peer identity
/// (with `*` as `.*`); `notNamespaces` its negation (so a request without a
/// peer identity is not in any namespace).
#[test]
fn namespaces_and_not_namespaces() {
    let p = plan(&ap(
        "ns",
        "rules:\n- from:\n  - source:\n      namespaces: [\"foo\", \"team-*\"]",
    ));
    expect(
        &p,
        &[
            ("foo", get("/").peer("foo", "a"), ALLOWED),
            ("foobar", get("/").peer("foobar", "a"), DENIED),
            ("team-a", get("/").peer("team-a", "x"), ALLOWED),
            ("team (no dash)", get("/").peer("team", "x"), DENIED),
            ("plain text", get("/"), DENIED),
            ("TCP from foo", tcp(9000).peer("foo", "a"), ALLOWED),
        ],
    );
    let not = plan(&ap(
        "not-ns",
        "rules:\n- from:\n  - source:\n      notNamespaces: [\"foo\"]",
    ));
    expect(
        &not,
        &[
            ("foo", get("/").peer("foo", "a"), DENIED),
            ("bar", get("/").peer("bar", "a"), ALLOWED),
            ("plain text (no namespace)", get("/"), ALLOWED),
        ],
    );
}

/// Reference: serviceAccounts "`<namespace>/<serviceaccount>`;
/// `<serviceaccount>` ... the same namespace as the AuthorizationPolicy";
/// builder regex `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?`.
#[test]
fn service_accounts() {
    let p = plan(&ap(
        "sa",
        r#"rules:
- from:
  - source:
      serviceAccounts: ["sleep", "bar/curl"]
      notServiceAccounts: ["foo/blocked"]"#,
    ));
    expect(
        &p,
        &[
            (
                "foo/sleep (the policy's namespace)",
                get("/").peer("foo", "sleep"),
                ALLOWED,
            ),
            ("default/sleep", get("/").peer("default", "sleep"), DENIED),
            ("foo/sleep-2", get("/").peer("foo", "sleep-2"), DENIED),
            ("bar/curl", get("/").peer("bar", "curl"), ALLOWED),
            (
                "another trust domain",
                get("/").by("spiffe://td.example/ns/bar/sa/curl"),
                ALLOWED,
            ),
            ("plain text", get("/"), DENIED),
        ],
    );
}

/// Reference: ipBlocks "populated from the source address of the IP
/// packet"; single IPs and CIDRs; remoteIpBlocks the original client
/// (`remote.ip`).
#[test]
fn ip_blocks_and_remote_ip_blocks() {
    let p = plan(&ap(
        "ips",
        r#"rules:
- from:
  - source:
      ipBlocks: ["10.1.0.0/16", "192.168.1.1", "2001:db8::/32"]
      notIpBlocks: ["10.1.9.0/24"]"#,
    ));
    expect(
        &p,
        &[
            ("in the block", get("/").source("10.1.2.3"), ALLOWED),
            ("the single IP", get("/").source("192.168.1.1"), ALLOWED),
            ("next to it", get("/").source("192.168.1.2"), DENIED),
            ("in notIpBlocks", get("/").source("10.1.9.7"), DENIED),
            ("outside", get("/").source("10.2.0.1"), DENIED),
            ("IPv6", get("/").source("2001:db8::1"), ALLOWED),
            (
                "IPv4-mapped IPv6",
                get("/").source("::ffff:10.1.2.3"),
                ALLOWED,
            ),
            ("TCP in the block", tcp(9000).source("10.1.2.3"), ALLOWED),
            (
                "ipBlocks read the peer, not X-Forwarded-For",
                get("/").source("10.9.9.9").remote("10.1.2.3"),
                DENIED,
            ),
        ],
    );
    // Task "Ingress access control": remoteIpBlocks.
    let remote = plan(&ap(
        "ingress-policy",
        r#"action: ALLOW
rules:
- from:
  - source:
      remoteIpBlocks: ["203.0.113.0/24"]
      notRemoteIpBlocks: ["203.0.113.66"]"#,
    ));
    expect(
        &remote,
        &[
            (
                "client in the block",
                get("/").source("10.0.0.5").remote("203.0.113.7"),
                ALLOWED,
            ),
            (
                "client excluded",
                get("/").source("10.0.0.5").remote("203.0.113.66"),
                DENIED,
            ),
            (
                "the peer is in the block, the client not",
                get("/").source("203.0.113.7").remote("198.51.100.1"),
                DENIED,
            ),
        ],
    );
    // Task "Ingress access control": DENY by remote IP.
    let deny = plan(&ap(
        "ingress-deny",
        "action: DENY\nrules:\n- from:\n  - source:\n      remoteIpBlocks: [\"198.51.100.0/24\"]",
    ));
    expect(
        &deny,
        &[
            ("denied client", get("/").remote("198.51.100.4"), DENIED),
            ("other client", get("/").remote("203.0.113.4"), ALLOWED),
        ],
    );
}

/// Source `trustDomains`: exact (`spiffe://<td>/` prefix), `*` (any SPIFFE
/// ID) and one wildcard within the trust domain (builder
/// `srcTrustDomainGenerator`).
#[test]
fn trust_domains() {
    let p = plan(&ap(
        "td",
        "rules:\n- from:\n  - source:\n      trustDomains: [\"cluster.local\", \"*.corp.example\"]",
    ));
    expect(
        &p,
        &[
            ("exact", get("/").peer("a", "b"), ALLOWED),
            (
                "exact, longer",
                get("/").by("spiffe://cluster.local.evil/ns/a/sa/b"),
                DENIED,
            ),
            (
                "wildcard",
                get("/").by("spiffe://eu.corp.example/ns/a/sa/b"),
                ALLOWED,
            ),
            (
                "wildcard stays in the domain",
                get("/").by("spiffe://x/y.corp.example/sa/b"),
                DENIED,
            ),
            ("plain text", get("/"), DENIED),
        ],
    );
}
