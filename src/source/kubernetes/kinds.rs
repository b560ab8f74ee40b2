//! The kinds the Kubernetes source reads and the scope of each watch.

use std::collections::BTreeSet;
use std::fmt;

use ::kube::api::ApiResource;

use crate::bootstrap::Bootstrap;
use crate::source::ObjectKey;

/// A kind meshgate reads: its API group, the versions to try (newest
/// first), `kind` and plural resource name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Versions tried in order while the list answers 404.
    pub versions: &'static [&'static str],
    /// `kind`.
    pub kind: &'static str,
    /// Plural resource name (the URL's).
    pub plural: &'static str,
}

const NETWORKING: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const SECURITY: &[&str] = &["v1", "v1beta1"];

const fn networking(kind: &'static str, plural: &'static str) -> Kind {
    Kind {
        group: "networking.istio.io",
        versions: NETWORKING,
        kind,
        plural,
    }
}

const fn security(kind: &'static str, plural: &'static str) -> Kind {
    Kind {
        group: "security.istio.io",
        versions: SECURITY,
        kind,
        plural,
    }
}

/// The Istio kinds watched in the proxy's and the root namespace.
pub const ISTIO_KINDS: [Kind; 8] = [
    networking("ServiceEntry", "serviceentries"),
    networking("DestinationRule", "destinationrules"),
    networking("Gateway", "gateways"),
    networking("VirtualService", "virtualservices"),
    networking("Sidecar", "sidecars"),
    security("PeerAuthentication", "peerauthentications"),
    security("AuthorizationPolicy", "authorizationpolicies"),
    security("RequestAuthentication", "requestauthentications"),
];

/// `v1` Secrets (by name only).
pub const SECRETS: Kind = Kind {
    group: "",
    versions: &["v1"],
    kind: "Secret",
    plural: "secrets",
};

/// `v1` ConfigMaps (by name only, for `caCertCredentialName`).
pub const CONFIG_MAPS: Kind = Kind {
    group: "",
    versions: &["v1"],
    kind: "ConfigMap",
    plural: "configmaps",
};

impl Kind {
    /// The resource as RBAC and kubectl name it: `plural.group`, or
    /// `plural` for the core group.
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The resource at `version`, for the kube client.
    pub fn api_resource(&self, version: &str) -> ApiResource {
        ApiResource {
            group: self.group.into(),
            version: version.into(),
            api_version: if self.group.is_empty() {
                version.into()
            } else {
                format!("{}/{version}", self.group)
            },
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }

    pub fn is_istio(&self) -> bool {
        !self.group.is_empty()
    }
}

/// What one watch reads: a kind in a namespace, every object or one name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    /// The kind.
    pub kind: Kind,
    /// The namespace.
    pub namespace: String,
    /// One object's name (Secrets, ConfigMaps); every object when `None`.
    pub name: Option<String>,
}

impl Scope {
    /// Whether the object `key` is one this watch reads.
    pub fn contains(&self, key: &ObjectKey) -> bool {
        key.kind == self.kind.kind
            && key.namespace == self.namespace
            && self.name.as_ref().is_none_or(|n| *n == key.name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{n} in {}", self.kind.resource(), self.namespace),
            None => write!(f, "{} in {}", self.kind.resource(), self.namespace),
        }
    }
}

/// The Istio watches: every kind in the proxy's namespace and in the root
/// namespace.
pub fn istio_scopes(bootstrap: &Bootstrap) -> BTreeSet<Scope> {
    let mut namespaces = vec![bootstrap.namespace.clone()];
    if bootstrap.root_namespace != bootstrap.namespace {
        namespaces.push(bootstrap.root_namespace.clone());
    }
    namespaces
        .iter()
        .flat_map(|ns| {
            ISTIO_KINDS.iter().map(|k| Scope {
                kind: *k,
                namespace: ns.clone(),
                name: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_name_resources_as_rbac_does() {
        let bootstrap = Bootstrap {
            namespace: "shop".into(),
            ..Bootstrap::default()
        };
        let scopes: Vec<String> = istio_scopes(&bootstrap)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(scopes.len(), 16, "{scopes:?}");
        assert!(scopes.contains(&"serviceentries.networking.istio.io in shop".to_string()));
        assert!(
            scopes.contains(&"authorizationpolicies.security.istio.io in istio-system".to_string())
        );
        let same = Bootstrap {
            namespace: "istio-system".into(),
            ..Bootstrap::default()
        };
        assert_eq!(istio_scopes(&same).len(), 8, "one namespace");
        assert_eq!(ISTIO_KINDS[5].versions, &["v1", "v1beta1"]);
        assert_eq!(ISTIO_KINDS[4].versions, &["v1", "v1beta1", "v1alpha3"]);
        let secret = Scope {
            kind: SECRETS,
            namespace: "shop".into(),
            name: Some("gw-cert".into()),
        };
        assert_eq!(secret.to_string(), "secrets/gw-cert in shop");
        assert!(secret.contains(&ObjectKey::new("shop", "Secret", "gw-cert")));
        assert!(!secret.contains(&ObjectKey::new("shop", "Secret", "other")));
        assert!(!secret.contains(&ObjectKey::new("x", "Secret", "gw-cert")));
        assert_eq!(SECRETS.api_resource("v1").api_version, "v1");
        assert_eq!(
            ISTIO_KINDS[2].api_resource("v1beta1").api_version,
            "networking.istio.io/v1beta1"
        );
    }
}
