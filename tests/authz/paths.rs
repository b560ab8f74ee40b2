//! Path normalisation cannot step around a DENY rule: every spelling of a
//! denied path is normalised (MeshConfig `pathNormalization`, BASE by
//! default) before the policy sees it, so it is denied (403) or refused
//! (400) and never reaches the app.
//!
//! What Istio leaves to the path's owner is asserted as Istio does it
//! ("Authorization Policy Normalization" and the security best practices,
//! "Customize your system on path normalization"): BASE does not merge
//! slashes (`//admin` is another path; MERGE_SLASHES closes that), path
//! matches are case-sensitive (`/ADMIN` is another path), and
//! `/admin/{**}` needs the `/` after `/admin` (Envoy's uri_template).

use meshgate::bootstrap::PathNormalization;

use crate::support::*;

#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// 403 with Envoy's body.
    Denied,
    /// 400: the request is refused before authorization.
    Refused,
    /// Denied (403) or refused (400): a fragment, which Envoy refuses with
    /// 400 and an HTTP parser may drop before anything reads the path.
    Blocked,
    /// Served: the app saw this path.
    Served(&'static str),
}
use Outcome::*;

fn deny_paths(paths: &str) -> String {
    policy(
        "deny-admin",
        &format!("action: DENY\nrules:\n- to:\n  - operation:\n      paths: [{paths}]"),
    )
}

/// Sends each target on a plain HTTP Gateway server behind which `app`
/// records what reaches it, with `paths` denied, and checks every outcome
/// and that the app saw exactly the served paths.
async fn check(paths: &str, mode: PathNormalization, cases: &[(&str, Outcome)]) {
    let app = App::start().await;
    let yaml = plain_gateway(app.addr) + &deny_paths(paths);
    let p = start(&yaml, &[8080], move |b| b.path_normalization = mode).await;
    let addr = p.proxy.inbound()[&8080];
    let mut wrong = Vec::new();
    let mut served = Vec::new();
    let mut denied = 0.0;
    for (target, want) in cases {
        let r = plain_get(addr, target, &[]).await;
        let ok = match want {
            Denied => {
                denied += 1.0;
                r.status == 403
                    && r.body == RBAC_BODY
                    && r.header("x-meshgate-error") == Some(RBAC_FLAG)
            }
            Refused => r.status == 400,
            Blocked => {
                if r.status == 403 {
                    denied += 1.0;
                }
                r.status == 400 || (r.status == 403 && r.body == RBAC_BODY)
            }
            Served(path) => {
                served.push(path.to_string());
                r.status == 200
                    && serde_json::from_str::<serde_json::Value>(&r.body)
                        .is_ok_and(|v| v["path"] == *path)
            }
        };
        if !ok {
            wrong.push(format!(
                "{target}: expected {want:?}, got {} {:?}",
                r.status, r.body
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "DENY paths [{paths}], {mode:?}:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        app.seen(),
        served,
        "DENY paths [{paths}], {mode:?}: what reached the app"
    );
    assert_eq!(
        wait_metric(&p, &decisions("deny", "default/deny-admin"), denied).await,
        denied,
        "{}",
        p.metrics().await
    );
}

#[tokio::test]
async fn a_prefix_deny_under_base() {
    check(
        "\"/admin*\"",
        PathNormalization::Base,
        &[
            ("/admin", Denied),
            ("/admin/users", Denied),
            ("/./admin", Denied),
            ("/a/../admin", Denied),
            ("/a/b/../../admin", Denied),
            ("/%61dmin", Denied),
            ("/%2e%2e/admin", Denied),
            ("/x/%2E%2E/admin", Denied),
            ("/x/..;/admin", Denied),
            ("/admin?x", Denied),
            ("/admin?next=/public", Denied),
            ("/admin#frag", Blocked),
            ("/admin?x#frag", Blocked),
            ("/adm%00in", Refused),
            // Not the denied path once normalised.
            ("/admin/../public", Served("/public")),
            ("/public", Served("/public")),
            // Istio: BASE keeps `//`; MERGE_SLASHES (below) closes it.
            ("//admin", Served("//admin")),
            // Istio: paths are matched case-sensitively.
            ("/ADMIN", Served("/ADMIN")),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_template_deny_under_base() {
    check(
        "\"/admin/{**}\"",
        PathNormalization::Base,
        &[
            ("/admin/", Denied),
            ("/admin/users", Denied),
            ("/admin/users/1", Denied),
            ("/./admin/users", Denied),
            ("/admin/./users", Denied),
            ("/a/../admin/users", Denied),
            ("/%61dmin/users", Denied),
            ("/admin//users", Denied),
            ("/admin/users?x", Denied),
            ("/admin/users#frag", Blocked),
            // `/admin/{**}` is `/admin/` followed by anything (Envoy's
            // `/admin/[pchar/]*`): `/admin` itself is another path.
            ("/admin", Served("/admin")),
            ("//admin/users", Served("//admin/users")),
            ("/ADMIN/users", Served("/ADMIN/users")),
        ],
    )
    .await;
}

#[tokio::test]
async fn merge_slashes_closes_the_doubled_slash() {
    check(
        "\"/admin*\"",
        PathNormalization::MergeSlashes,
        &[
            ("//admin", Denied),
            ("///admin", Denied),
            ("/x/..//admin", Denied),
            ("//./admin", Denied),
            ("/admin#frag", Blocked),
            ("//public", Served("/public")),
            ("/ADMIN", Served("/ADMIN")),
        ],
    )
    .await;
    check(
        "\"/admin/{**}\"",
        PathNormalization::MergeSlashes,
        &[("//admin/users", Denied), ("//admin//users", Denied)],
    )
    .await;
}

/// DECODE_AND_MERGE_SLASHES: an escaped slash is a slash.
#[tokio::test]
async fn decode_and_merge_slashes_decodes_escaped_slashes() {
    check(
        "\"/admin*\"",
        PathNormalization::DecodeAndMergeSlashes,
        &[
            ("/%2Fadmin", Denied),
            ("/x%2F..%2Fadmin", Denied),
            ("/x%5C..%5Cadmin", Denied),
        ],
    )
    .await;
}

/// An ALLOW by path: a request outside the allowed paths cannot be
/// normalised into them, nor an allowed spelling smuggle a denied one.
#[tokio::test]
async fn an_allow_by_path_is_matched_on_the_normalised_path() {
    let app = App::start().await;
    let yaml = plain_gateway(app.addr)
        + &policy(
            "allow-public",
            "rules:\n- to:\n  - operation:\n      paths: [\"/public/*\"]",
        );
    let p = start(&yaml, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/..;/admin",
    ] {
        let r = plain_get(addr, target, &[]).await;
        assert_denied(r.status, &r.body, target);
    }
    let r = plain_get(addr, "/x/../public/a", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.seen(), vec!["/public/a"]);
}
