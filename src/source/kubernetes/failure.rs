//! What a failed list or watch means, and what to say about it: a 403
//! names the verb, the resource and the namespace to grant; anything else
//! says what failed and why, down to the root cause (a refused connection,
//! a certificate the client does not trust).

use ::kube::runtime::watcher;

use super::kinds::Scope;

/// A list or watch that failed, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 403: the service account may not `verb` the resource.
    Forbidden {
        /// `list` or `watch`.
        verb: &'static str,
        /// The API server's message.
        detail: String,
    },
    /// 404 on the list: the resource (this version of it) is not served.
    NotFound,
    /// 410: the resourceVersion is too old; the watcher lists again.
    Gone,
    /// Anything else: the API server is unreachable, answers an error, or
    /// the stream broke.
    Other {
        /// `list` or `watch`.
        verb: &'static str,
        /// Why, down to the root cause.
        detail: String,
    },
}

impl Failure {
    /// The label of `meshgate_kubernetes_watch_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Forbidden { .. } => "forbidden",
            Failure::NotFound => "not_found",
            Failure::Gone => "gone",
            Failure::Other { detail, .. } if detail.starts_with("API server ") => "error",
            Failure::Other { .. } => "unreachable",
        }
    }

    /// Whether the configuration may be out of date while this lasts (a
    /// relist after 410 does not: the watcher recovers at once).
    pub fn is_stale(&self) -> bool {
        !matches!(self, Failure::Gone)
    }
}

/// Classifies a watcher error.
pub fn classify(error: &watcher::Error) -> Failure {
    match error {
        watcher::Error::InitialListFailed(e) => classify_client("list", e),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            classify_client("watch", e)
        }
        watcher::Error::WatchError(status) => {
            status_failure("watch", status.code, &status.reason, &status.message)
        }
        watcher::Error::NoResourceVersion => Failure::Other {
            verb: "list",
            detail: "API server answered without a resourceVersion".into(),
        },
    }
}

/// Classifies a client error of a `verb` request.
pub fn classify_client(verb: &'static str, error: &::kube::Error) -> Failure {
    match error {
        ::kube::Error::Api(status) => {
            status_failure(verb, status.code, &status.reason, &status.message)
        }
        other => Failure::Other {
            verb,
            detail: chain(other),
        },
    }
}

fn status_failure(verb: &'static str, code: u16, reason: &str, message: &str) -> Failure {
    match code {
        403 => Failure::Forbidden {
            verb,
            detail: message.to_string(),
        },
        404 if verb == "list" => Failure::NotFound,
        410 => Failure::Gone,
        _ => Failure::Other {
            verb,
            detail: format!("API server answered {code} {reason}: {message}"),
        },
    }
}

/// An error and its sources, `outer: inner: root`, without repeats (many
/// errors print their source in their own text).
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

/// The log line (and readiness text) for `failure` of the watch `scope`.
pub fn message(failure: &Failure, scope: &Scope) -> String {
    let resource = scope.kind.resource();
    let ns = &scope.namespace;
    match failure {
        Failure::Forbidden { verb, detail } => {
            let names = match &scope.name {
                Some(n) => format!(" (it can be limited to resourceNames: [{n}])"),
                None => String::new(),
            };
            format!(
                "forbidden to {verb} {resource} in namespace {ns}: grant get/list/watch on \
                 {resource} in namespace {ns} to the pod's service account{names} \
                 (see deploy/kubernetes/rbac.yaml); the API server said: {detail}"
            )
        }
        Failure::NotFound => format!(
            "{resource} is not served by the API server (404 for {}): are Istio's CRDs installed?",
            scope.kind.versions.join(", ")
        ),
        Failure::Gone => format!(
            "the watch of {resource} in namespace {ns} is too far behind (410 Gone): listing again"
        ),
        Failure::Other { verb, detail } => {
            format!("cannot {verb} {resource} in namespace {ns}: {detail}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kubernetes::kinds::{ISTIO_KINDS, SECRETS};

    fn api(code: u16, reason: &str, message: &str) -> ::kube::Error {
        ::kube::Error::Api(Box::new(::kube::core::Status {
            code,
            reason: reason.into(),
            message: message.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn forbidden_names_the_verb_resource_and_namespace_to_grant() {
        let scope = Scope {
            kind: ISTIO_KINDS[0],
            namespace: "shop".into(),
            name: None,
        };
        let f = classify(&watcher::Error::InitialListFailed(api(
            403,
            "Forbidden",
            "serviceentries.networking.istio.io is forbidden: User \"system:serviceaccount:shop:app\" cannot list resource",
        )));
        assert_eq!(f.reason(), "forbidden");
        let msg = message(&f, &scope);
        assert!(
            msg.starts_with(
                "forbidden to list serviceentries.networking.istio.io in namespace shop: grant \
                 get/list/watch on serviceentries.networking.istio.io in namespace shop to the \
                 pod's service account"
            ) && msg.contains("cannot list resource"),
            "{msg}"
        );
        let secret = Scope {
            kind: SECRETS,
            namespace: "shop".into(),
            name: Some("gw-cert".into()),
        };
        let f = classify(&watcher::Error::WatchStartFailed(api(
            403,
            "Forbidden",
            "no",
        )));
        let msg = message(&f, &secret);
        assert!(
            msg.starts_with("forbidden to watch secrets in namespace shop: grant get/list/watch on secrets in namespace shop")
                && msg.contains("resourceNames: [gw-cert]"),
            "{msg}"
        );
    }

    #[test]
    fn other_failures_say_what_failed() {
        let scope = Scope {
            kind: ISTIO_KINDS[1],
            namespace: "istio-system".into(),
            name: None,
        };
        let gone = classify(&watcher::Error::WatchError(Box::new(
            ::kube::core::Status {
                code: 410,
                reason: "Expired".into(),
                ..Default::default()
            },
        )));
        assert_eq!(gone, Failure::Gone);
        assert!(!gone.is_stale());
        let missing = classify(&watcher::Error::InitialListFailed(api(404, "NotFound", "")));
        assert_eq!(missing, Failure::NotFound);
        assert!(message(&missing, &scope).contains("404 for v1, v1beta1, v1alpha3"));
        let err = classify(&watcher::Error::WatchFailed(api(
            500,
            "InternalError",
            "etcd",
        )));
        assert_eq!(err.reason(), "error");
        assert_eq!(
            message(&err, &scope),
            "cannot watch destinationrules.networking.istio.io in namespace istio-system: API server answered 500 InternalError: etcd"
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let f = classify(&watcher::Error::InitialListFailed(
            ::kube::Error::ReadEvents(io),
        ));
        assert_eq!(f.reason(), "unreachable");
        assert!(f.is_stale());
        assert!(message(&f, &scope).contains("connection refused"), "{f:?}");
    }
}
