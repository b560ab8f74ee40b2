//! RequestAuthentication compiled and tokens checked as Istio and Envoy do.

use serde_json::json;

use super::jwks::Jwks;
use super::testing::{SigningKey, jwks as key_set, now};
use super::token::{Jwt, Status, audiences_allowed, b64url, sanitize_audience};
use super::*;
use crate::config::load_str;
use crate::plan::{Compiled, compile_all};

const FILE: &str = "authn.yaml";

// === helpers ===

fn compile_yaml(yaml: &str) -> Compiled {
    let config = load_str(FILE, yaml)
        .unwrap_or_else(|e| panic!("does not load:\n{e}\n--- yaml ---\n{yaml}"));
    compile_all(&config, &Bootstrap::default())
}

/// A RequestAuthentication in `default` with these `jwtRules` (YAML list
/// items, indented by 2).
fn ra(rules: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\n  \
         namespace: default\nspec:\n  jwtRules:\n{rules}"
    )
}

fn errors(yaml: &str) -> Vec<String> {
    compile_yaml(yaml)
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect()
}

fn plan(yaml: &str) -> (AuthnPlan, Vec<String>) {
    let c = compile_yaml(yaml);
    let errs: Vec<String> = c.errors.iter().map(|e| e.to_string()).collect();
    assert!(errs.is_empty(), "errors:\n{}\n---\n{yaml}", errs.join("\n"));
    (c.plan.authn, c.plan.warnings)
}

fn assert_error(yaml: &str, field: &str, reason: &str) {
    let errs = errors(yaml);
    assert!(
        errs.iter().any(|e| e.contains(field)
            && e.contains(reason)
            && e.contains("RequestAuthentication")),
        "no error naming {field:?} with {reason:?} in:\n{}",
        errs.join("\n")
    );
}

fn inline_jwks(key: &SigningKey) -> String {
    key_set(&[key])
}

// === compile: errors, as Istio's validateJwtRule and what meshgate refuses ===

#[test]
fn issuer_or_jwks_uri_is_required() {
    assert_error(
        &ra("  - jwks: '{\"keys\":[]}'\n"),
        "spec.jwtRules[0].issuer",
        "issuer or jwksUri must be non-empty string",
    );
}

#[test]
fn jwks_uri_must_be_an_http_or_https_url() {
    for (uri, reason) in [
        ("file:///etc/jwks.json", "not supported"),
        ("ftp://keys.example/jwks", "not supported"),
        ("keys.example/jwks", "not supported"),
        ("https://", "not a URL"),
    ] {
        assert_error(
            &ra(&format!("  - issuer: a\n    jwksUri: {uri:?}\n")),
            "spec.jwtRules[0].jwksUri",
            reason,
        );
    }
    let (p, _) = plan(&ra(
        "  - issuer: a\n    jwksUri: http://keys.example:8080/jwks\n",
    ));
    assert!(
        matches!(&p.rules[0].keys, KeySource::Remote(Remote::Uri(u)) if u == "http://keys.example:8080/jwks")
    );
}

#[test]
fn inline_jwks_is_parsed_at_load() {
    for (jwks, reason) in [
        ("not json", "jwks parse error: Jwks is an invalid JSON"),
        ("{}", "Jwks does not have [keys] field"),
        ("{\"keys\": {}}", "[keys] in Jwks is not an array"),
        ("{\"keys\": []}", "Jwks doesn't have any valid public key"),
        (
            "{\"keys\": [{\"kty\": \"RSA\"}]}",
            "[n] field is missing for a RSA key",
        ),
        (
            "{\"keys\": [{\"kty\": \"XYZ\"}]}",
            "[kty] is not supported in [keys]",
        ),
        (
            "{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"AAAA\", \"y\": \"AAAA\"}]}",
            "Jwks EC [x] and [y] fields have a parse error.",
        ),
    ] {
        assert_error(
            &ra(&format!("  - issuer: a\n    jwks: {jwks:?}\n")),
            "spec.jwtRules[0].jwks",
            reason,
        );
    }
}

#[test]
fn locations_and_output_headers_are_checked() {
    let base = "  - issuer: a\n    jwksUri: https://k.example/jwks\n";
    for (extra, field, reason) in [
        (
            "    audiences: ['']\n",
            "audiences[0]",
            "audience must be non-empty string",
        ),
        (
            "    fromHeaders: [{name: ''}]\n",
            "fromHeaders[0].name",
            "location header name must be non-empty string",
        ),
        (
            "    fromHeaders: [{name: 'bad header'}]\n",
            "fromHeaders[0].name",
            "not a valid header name",
        ),
        (
            "    fromParams: ['']\n",
            "fromParams[0]",
            "location query must be non-empty string",
        ),
        (
            "    fromCookies: ['']\n",
            "fromCookies[0]",
            "cookie name must be non-empty string",
        ),
        (
            "    outputClaimToHeaders: [{header: x-a, claim: ''}]\n",
            "outputClaimToHeaders[0]",
            "header and claim value must be non-empty string",
        ),
        (
            "    outputClaimToHeaders: [{header: 'x:a', claim: sub}]\n",
            "outputClaimToHeaders[0].header",
            "is not a valid header name",
        ),
        (
            "    outputClaimToHeaders: [{header: content-length, claim: sub}]\n",
            "outputClaimToHeaders[0].header",
            "cannot be set from a token",
        ),
        (
            "    outputPayloadToHeader: Host\n",
            "outputPayloadToHeader",
            "cannot be set from a token",
        ),
        (
            "    outputPayloadToHeader: 'x payload'\n",
            "outputPayloadToHeader",
            "not a valid header name",
        ),
        (
            "    timeout: 500us\n",
            "timeout",
            "duration must be greater than 1ms",
        ),
        (
            "    timeout: 1500us\n",
            "timeout",
            "only durations to ms precision are supported",
        ),
        ("    timeout: soon\n", "timeout", "is not a number"),
        (
            "    spaceDelimitedClaims: ['']\n",
            "spaceDelimitedClaims[0]",
            "claim name must be non-empty string",
        ),
    ] {
        assert_error(
            &ra(&format!("{base}{extra}")),
            &format!("spec.jwtRules[0].{field}"),
            reason,
        );
    }
}

#[test]
fn unknown_rule_fields_are_refused_at_parse() {
    let yaml = ra("  - issuer: a\n    jwksUri: https://k.example/jwks\n    clockSkew: 5s\n");
    let e = load_str(FILE, &yaml).expect_err("an unknown field must not be ignored");
    assert!(e.to_string().contains("clockSkew"), "{e}");
}

#[test]
fn policies_that_do_not_apply_are_still_checked() {
    let yaml = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  \
                name: other\n  namespace: elsewhere\nspec:\n  jwtRules:\n  - issuer: ''\n";
    assert!(!errors(yaml).is_empty());
    let key = SigningKey::new("ES256", None);
    let yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: other\n  \
         namespace: elsewhere\nspec:\n  jwtRules:\n  - issuer: a\n    jwks: {:?}\n",
        inline_jwks(&key)
    );
    let (p, _) = plan(&yaml);
    assert!(
        p.rules.is_empty(),
        "another namespace's policy does not apply"
    );
}

// === compile: defaults and warnings ===

#[test]
fn defaults_follow_istio_and_envoy() {
    let key = SigningKey::new("RS256", Some("k1"));
    let (p, warnings) = plan(&ra(&format!(
        "  - issuer: a\n    jwks: {:?}\n",
        inline_jwks(&key)
    )));
    let r = &p.rules[0];
    assert_eq!(r.policy, "default/jwt");
    assert_eq!(
        r.locations,
        vec![
            Location::Header {
                name: http::header::AUTHORIZATION,
                prefix: "Bearer ".into()
            },
            Location::Param("access_token".into()),
        ]
    );
    assert_eq!(r.timeout, DEFAULT_TIMEOUT);
    assert!(!r.forward_original_token);
    assert_eq!(r.space_delimited_claims, ["permission", "scope"]);
    assert!(r.audiences.is_empty());
    assert!(warnings.is_empty(), "{warnings:?}");
    // Any location given: no default at all.
    let (p, _) = plan(&ra(&format!(
        "  - issuer: a\n    jwks: {:?}\n    fromParams: [token]\n    audiences: [https://api.example/]\n    \
         spaceDelimitedClaims: [roles, scope]\n    timeout: 2s\n    outputPayloadToHeader: X-Payload\n    \
         outputClaimToHeaders: [{{header: X-Sub, claim: sub}}]\n",
        inline_jwks(&key)
    )));
    let r = &p.rules[0];
    assert_eq!(r.locations, vec![Location::Param("token".into())]);
    assert_eq!(r.audiences, ["api.example"]);
    assert_eq!(r.space_delimited_claims, ["permission", "roles", "scope"]);
    assert_eq!(r.timeout, Duration::from_secs(2));
    assert_eq!(r.output_payload_to_header.as_ref().unwrap(), "x-payload");
    assert_eq!(r.output_claim_to_headers[0].0, "x-sub");
}

#[test]
fn rules_are_sorted_by_issuer_and_rules_of_one_issuer_all_kept() {
    let yaml = ra(
        "  - issuer: zeta\n    jwksUri: https://z.example/jwks\n  - issuer: alpha\n    jwksUri: \
         https://a.example/jwks\n    audiences: [one]\n  - issuer: alpha\n    jwksUri: \
         https://a.example/jwks\n    audiences: [two]\n",
    );
    let (p, _) = plan(&yaml);
    let order: Vec<(&str, usize)> = p
        .rules
        .iter()
        .map(|r| (r.issuer.as_str(), r.index))
        .collect();
    assert_eq!(order, [("alpha", 1), ("alpha", 2), ("zeta", 0)]);
    // One fetch per key set, with the longest timeout.
    assert_eq!(p.remotes().len(), 2);
}

#[test]
fn warnings_for_what_istio_accepts_but_may_surprise() {
    let key = SigningKey::new("HS256", None);
    let (p, w) = plan(&ra(&format!(
        "  - issuer: a\n    jwks: {:?}\n    jwksUri: https://k.example/jwks\n",
        inline_jwks(&key)
    )));
    assert!(
        matches!(p.rules[0].keys, KeySource::Inline(_)),
        "jwks wins over jwksUri"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("jwksUri") && w.contains("ignored")),
        "{w:?}"
    );
    assert!(
        w.iter().any(|w| w.contains("private key material")),
        "{w:?}"
    );
    let (p, w) = plan(&ra("  - issuer: testing@secure.istio.io\n"));
    assert!(
        matches!(&p.rules[0].keys, KeySource::Remote(Remote::Discovery(i)) if i == "testing@secure.istio.io")
    );
    assert!(w.iter().any(|w| w.contains("OpenID discovery")), "{w:?}");
    let (p, w) = plan(&ra("  - issuer: https://accounts.example/\n"));
    let KeySource::Remote(r) = &p.rules[0].keys else {
        panic!()
    };
    assert_eq!(
        r.url(),
        "https://accounts.example/.well-known/openid-configuration"
    );
    assert!(w.is_empty(), "{w:?}");
    let (p, w) = plan(&ra("  - jwksUri: https://k.example/jwks\n"));
    assert_eq!(p.rules[0].issuer, "");
    assert!(w.iter().any(|w| w.contains("any issuer")), "{w:?}");
    // A key Envoy cannot use is skipped with a warning, the rest used.
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-192", "x": "AA", "y": "AA"}, key.jwk()]});
    let (_, w) = plan(&ra(&format!(
        "  - issuer: a\n    jwks: {:?}\n",
        jwks.to_string()
    )));
    assert!(
        w.iter()
            .any(|w| w.contains("key 0 is not used") && w.contains("[crv] or [alg]")),
        "{w:?}"
    );
}

#[test]
fn the_plan_never_shows_key_material() {
    let key = SigningKey::new("HS256", Some("secret-key"));
    let (p, _) = plan(&ra(&format!(
        "  - issuer: a\n    jwks: {:?}\n",
        inline_jwks(&key)
    )));
    let secret = key.jwk()["k"].as_str().unwrap().to_string();
    let shown = format!("{:?} {}", p, serde_json::to_string(&p).unwrap());
    assert!(shown.contains("secret-key"));
    assert!(!shown.contains(&secret), "{shown}");
}

// === tokens ===

fn claims() -> serde_json::Value {
    json!({"iss": "https://issuer.example", "sub": "alice", "aud": "meshgate", "exp": now() + 600})
}

fn set(keys: &[&SigningKey]) -> Jwks {
    Jwks::parse(&key_set(keys)).expect("key set").0
}

#[test]
fn every_supported_algorithm_verifies_and_a_foreign_key_does_not() {
    for alg in [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
        "HS256", "HS384", "HS512",
    ] {
        let key = SigningKey::new(alg, Some("k"));
        let other = SigningKey::new(alg, Some("k"));
        let token = key.sign(&claims());
        let jwt = Jwt::parse(&token).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(jwt.verify_signature(&set(&[&key])), Ok(()), "{alg}");
        assert_eq!(
            jwt.verify_signature(&set(&[&other])),
            Err(Status::JwtVerificationFail),
            "{alg}"
        );
        // A tampered payload fails.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64url(
            json!({"iss": "https://issuer.example", "sub": "root"})
                .to_string()
                .as_bytes(),
        );
        parts[1] = &forged;
        let jwt = Jwt::parse(&parts.join(".")).unwrap();
        assert_eq!(
            jwt.verify_signature(&set(&[&key])),
            Err(Status::JwtVerificationFail),
            "{alg}"
        );
    }
}

include!("interop_vectors.rs");

#[test]
fn tokens_signed_by_another_implementation_verify() {
    let (jwks, _) = Jwks::parse(INTEROP_JWKS).unwrap();
    assert_eq!(jwks.keys().len(), 5);
    for (alg, token) in INTEROP_TOKENS {
        let jwt = Jwt::parse(token).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(jwt.alg, alg);
        assert_eq!(jwt.iss, "https://issuer.example");
        assert_eq!(jwt.audiences, ["meshgate"]);
        assert_eq!(jwt.verify_time(now(), 60), Ok(()));
        assert_eq!(jwt.verify_signature(&jwks), Ok(()), "{alg}");
    }
}

#[test]
fn keys_are_chosen_by_kid_and_alg_as_envoy_does() {
    let a = SigningKey::new("ES256", Some("a"));
    let b = SigningKey::new("ES256", Some("b"));
    let both = set(&[&a, &b]);
    assert_eq!(
        Jwt::parse(&b.sign(&claims()))
            .unwrap()
            .verify_signature(&both),
        Ok(())
    );
    // An unknown kid: no key to try.
    let c = SigningKey::new("ES256", Some("c"));
    assert_eq!(
        Jwt::parse(&c.sign(&claims()))
            .unwrap()
            .verify_signature(&both),
        Err(Status::JwksKidAlgMismatch)
    );
    // No kid in the token: every key is tried.
    let no_kid = SigningKey::new("ES256", None);
    let token = no_kid.sign(&claims());
    let mut jwk = no_kid.jwk();
    jwk["kid"] = json!("whatever");
    let keys = Jwks::parse(&json!({"keys": [a.jwk(), jwk]}).to_string())
        .unwrap()
        .0;
    assert_eq!(Jwt::parse(&token).unwrap().verify_signature(&keys), Ok(()));
    // A key without kid is tried for any token.
    let mut anon = c.jwk();
    anon.as_object_mut().unwrap().remove("kid");
    let keys = Jwks::parse(&json!({"keys": [anon]}).to_string()).unwrap().0;
    assert_eq!(
        Jwt::parse(&c.sign(&claims()))
            .unwrap()
            .verify_signature(&keys),
        Ok(())
    );
    // A key whose alg differs is skipped.
    let mut rs = c.jwk();
    rs["alg"] = json!("ES384");
    rs["crv"] = json!("P-384");
    assert!(
        Jwks::parse(&json!({"keys": [rs]}).to_string()).is_err(),
        "crv and alg must agree"
    );
    let rsa = SigningKey::new("RS256", Some("c"));
    let mut ps = rsa.jwk();
    ps["alg"] = json!("PS256");
    let keys = Jwks::parse(&json!({"keys": [ps]}).to_string()).unwrap().0;
    assert_eq!(
        Jwt::parse(&rsa.sign(&claims()))
            .unwrap()
            .verify_signature(&keys),
        Err(Status::JwksKidAlgMismatch)
    );
}

#[test]
fn keys_are_used_only_with_their_own_algorithms() {
    // An HMAC token "signed" with an RSA public key's bytes never verifies
    // (no algorithm confusion).
    let rsa = SigningKey::new("RS256", None);
    let mut jwk = rsa.jwk();
    jwk.as_object_mut().unwrap().remove("alg");
    let keys = Jwks::parse(&json!({"keys": [jwk]}).to_string()).unwrap().0;
    let hs = SigningKey::new("HS256", None);
    assert_eq!(
        Jwt::parse(&hs.sign(&claims()))
            .unwrap()
            .verify_signature(&keys),
        Err(Status::JwtVerificationFail)
    );
    // An ES384 token against a P-256 key without alg.
    let p256 = SigningKey::new("ES256", None);
    let mut jwk = p256.jwk();
    jwk.as_object_mut().unwrap().remove("alg");
    let keys = Jwks::parse(&json!({"keys": [jwk]}).to_string()).unwrap().0;
    let es384 = SigningKey::new("ES384", None);
    assert_eq!(
        Jwt::parse(&es384.sign(&claims()))
            .unwrap()
            .verify_signature(&keys),
        Err(Status::JwtVerificationFail)
    );
}

#[test]
fn time_window_has_sixty_seconds_of_skew() {
    let key = SigningKey::new("EdDSA", None);
    let t = 1_800_000_000u64;
    let at = |c: serde_json::Value| Jwt::parse(&key.sign(&c)).unwrap();
    assert_eq!(at(json!({"exp": t})).verify_time(t + 60, 60), Ok(()));
    assert_eq!(
        at(json!({"exp": t})).verify_time(t + 61, 60),
        Err(Status::JwtExpired)
    );
    assert_eq!(at(json!({"nbf": t})).verify_time(t - 60, 60), Ok(()));
    assert_eq!(
        at(json!({"nbf": t})).verify_time(t - 61, 60),
        Err(Status::JwtNotYetValid)
    );
    // No exp: never expires (Envoy).
    assert_eq!(at(json!({})).verify_time(u64::MAX / 2, 60), Ok(()));
}

#[test]
fn malformed_tokens_fail_with_envoys_reasons() {
    let key = SigningKey::new("ES256", None);
    let h = |v: serde_json::Value| b64url(v.to_string().as_bytes());
    let p = h(json!({"sub": "x"}));
    let good_h = h(json!({"alg": "ES256"}));
    for (token, status) in [
        ("abc".to_string(), Status::JwtBadFormat),
        ("a.b.c.d".to_string(), Status::JwtBadFormat),
        (format!("{good_h}.{p}."), Status::JwtBadFormat),
        (format!("!!.{p}.c2ln"), Status::JwtHeaderParseErrorBadBase64),
        (
            format!("{}.{p}.c2ln", b64url(b"[1]")),
            Status::JwtHeaderParseErrorBadJson,
        ),
        (
            format!("{}.{p}.c2ln", h(json!({"typ": "JWT"}))),
            Status::JwtHeaderBadAlg,
        ),
        (
            format!("{}.{p}.c2ln", h(json!({"alg": 5}))),
            Status::JwtHeaderBadAlg,
        ),
        (
            format!("{}.{p}.c2ln", h(json!({"alg": "none"}))),
            Status::JwtHeaderNotImplementedAlg,
        ),
        (
            format!("{}.{p}.c2ln", h(json!({"alg": "ES256", "kid": 1}))),
            Status::JwtHeaderBadKid,
        ),
        (
            format!("{good_h}.!!.c2ln"),
            Status::JwtPayloadParseErrorBadBase64,
        ),
        (
            format!("{good_h}.{}.c2ln", b64url(b"nope")),
            Status::JwtPayloadParseErrorBadJson,
        ),
        (
            format!("{good_h}.{}.c2ln", h(json!({"iss": 1}))),
            Status::JwtPayloadParseErrorIssNotString,
        ),
        (
            format!("{good_h}.{}.c2ln", h(json!({"sub": []}))),
            Status::JwtPayloadParseErrorSubNotString,
        ),
        (
            format!("{good_h}.{}.c2ln", h(json!({"iat": "1"}))),
            Status::JwtPayloadParseErrorIatNotInteger,
        ),
        (
            format!("{good_h}.{}.c2ln", h(json!({"nbf": 1.5}))),
            Status::JwtPayloadParseErrorNbfNotInteger,
        ),
        (
            format!("{good_h}.{}.c2ln", h(json!({"exp": -1}))),
            Status::JwtPayloadParseErrorExpOutOfRange,
        ),
        (
            format!("{good_h}.{}.c2ln", h(json!({"jti": 1}))),
            Status::JwtPayloadParseErrorJtiNotString,
        ),
        (
            format!("{good_h}.{}.c2ln", h(json!({"aud": ["a", 1]}))),
            Status::JwtPayloadParseErrorAudNotString,
        ),
        (
            format!("{good_h}.{p}.!!"),
            Status::JwtSignatureParseErrorBadBase64,
        ),
    ] {
        assert_eq!(Jwt::parse(&token).err(), Some(status), "{token}");
    }
    // A well-formed token parses; the Ed25519 signature length is checked.
    assert!(Jwt::parse(&key.sign(&json!({"aud": ["a", "b"]}))).is_ok());
    let ed = SigningKey::new("EdDSA", None);
    let short = format!("{}.{p}.{}", h(json!({"alg": "EdDSA"})), b64url(&[1u8; 10]));
    assert_eq!(
        Jwt::parse(&short).unwrap().verify_signature(&set(&[&ed])),
        Err(Status::JwtEd25519SignatureWrongLength)
    );
    // The 401 bodies are Envoy's words.
    assert_eq!(Status::JwtExpired.as_str(), "Jwt is expired");
    assert_eq!(
        Status::JwtUnknownIssuer.as_str(),
        "Jwt issuer is not configured"
    );
    assert_eq!(
        Status::JwtVerificationFail.as_str(),
        "Jwt verification fails"
    );
    assert_eq!(
        Status::JwksKidAlgMismatch.as_str(),
        "Jwks doesn't have key to match kid or alg from Jwt"
    );
    assert_eq!(
        Status::JwksFetchFail.as_str(),
        "Jwks remote fetch is failed"
    );
}

#[test]
fn audiences_are_compared_without_scheme_or_trailing_slash() {
    assert_eq!(sanitize_audience("https://api.example/"), "api.example");
    assert_eq!(sanitize_audience("http://api.example"), "api.example");
    assert_eq!(sanitize_audience("api"), "api");
    assert_eq!(sanitize_audience(""), "");
    let allowed = vec!["api.example".to_string()];
    assert!(audiences_allowed(&[], &[]));
    assert!(audiences_allowed(
        &allowed,
        &["x".into(), "https://api.example/".into()]
    ));
    assert!(!audiences_allowed(&allowed, &["other".into()]));
    assert!(!audiences_allowed(&allowed, &[]));
}

// === key sets ===

#[test]
fn bad_keys_are_skipped_and_the_first_failure_is_kept() {
    let good = SigningKey::new("ES256", Some("g"));
    let text = json!({"keys": [
        "not an object",
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "alg": "ES256", "n": "AQAB", "e": "AQAB"},
        {"kty": "OKP", "crv": "X25519", "x": "AA"},
        good.jwk(),
    ]})
    .to_string();
    let (jwks, findings) = Jwks::parse(&text).unwrap();
    assert_eq!(jwks.keys().len(), 1);
    assert_eq!(findings.skipped.len(), 4, "{findings:?}");
    assert!(findings.skipped[1].1.contains("2048"), "{findings:?}");
    let only_bad = json!({"keys": [{"kty": "EC", "alg": "RS256"}, {"kty": "RSA"}]}).to_string();
    assert_eq!(Jwks::parse(&only_bad).err(), Some(Status::JwksEcKeyBadAlg));
}

#[test]
fn googles_x509_form_is_read() {
    use rcgen::{CertificateParams, KeyPair, PKCS_RSA_SHA256};
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&rsa).unwrap();
    let kp = KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_ref().to_vec()),
        &PKCS_RSA_SHA256,
    )
    .unwrap();
    let cert = CertificateParams::new(vec!["signer".into()])
        .unwrap()
        .self_signed(&kp)
        .unwrap();
    let text = json!({"k1": cert.pem().replace("\r\n", "\n")}).to_string();
    let (jwks, _) = Jwks::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(jwks.keys()[0].kid, "k1");
    // Its key verifies a token signed by the certificate's key.
    let mut sig = vec![0u8; rsa.public_modulus_len()];
    let signed = format!(
        "{}.{}",
        b64url(br#"{"alg":"RS256","kid":"k1"}"#),
        b64url(br#"{"sub":"x"}"#)
    );
    rsa.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut sig,
    )
    .unwrap();
    let jwt = Jwt::parse(&format!("{signed}.{}", b64url(&sig))).unwrap();
    assert_eq!(jwt.verify_signature(&jwks), Ok(()));
}
