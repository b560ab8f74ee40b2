//! One parse per document in the common case.
//!
//! A document is read in two passes by default (its head, then the object
//! typed by its kind) so that an error carries its resource, line and field
//! path. When `apiVersion` and `kind` come before `spec`, as in everything
//! `kubectl` and Helm write, the kind is known by the time the parser
//! reaches the spec, and the spec is read typed in the same pass. This
//! halves the parse time of a large configuration.
//!
//! The single pass only ever succeeds on documents the two passes would
//! accept with the same result; on anything else (a spec before its kind,
//! an unknown or repeated field, any error) it gives up and the two passes
//! run, with their exact messages.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

use super::authorization_policy::AuthorizationPolicySpec;
use super::destination_rule::DestinationRuleSpec;
use super::document::{NETWORKING_VERSIONS, SECURITY_VERSIONS, parse_options};
use super::gateway::GatewaySpec;
use super::meta::ObjectMeta;
use super::peer_authentication::PeerAuthenticationSpec;
use super::request_authentication::RequestAuthenticationSpec;
use super::service_entry::ServiceEntrySpec;
use super::sidecar::SidecarSpec;
use super::simple_yaml;
use super::virtual_service::VirtualServiceSpec;

/// The kinds whose spec is read typed, as dispatched on kind and
/// apiVersion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Typed {
    ServiceEntry,
    DestinationRule,
    VirtualService,
    Gateway,
    Sidecar,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
}

impl Typed {
    /// The typed kind a document of `kind` at `api_version` is read as, or
    /// `None` for everything else (Secrets, ConfigMaps, Lists, unsupported
    /// versions, kinds meshgate skips).
    pub(super) fn of(kind: &str, api_version: &str) -> Option<Self> {
        let networking = NETWORKING_VERSIONS.contains(&api_version);
        let security = SECURITY_VERSIONS.contains(&api_version);
        Some(match kind {
            "ServiceEntry" if networking => Self::ServiceEntry,
            "DestinationRule" if networking => Self::DestinationRule,
            "VirtualService" if networking => Self::VirtualService,
            "Gateway" if networking => Self::Gateway,
            "Sidecar" if networking => Self::Sidecar,
            "PeerAuthentication" if security => Self::PeerAuthentication,
            "AuthorizationPolicy" if security => Self::AuthorizationPolicy,
            "RequestAuthentication" if security => Self::RequestAuthentication,
            _ => return None,
        })
    }
}

/// A typed spec read in the single pass, boxed: a large file's documents
/// are all held at once between parsing and adding them in order.
#[derive(Debug)]
pub(super) enum Spec {
    ServiceEntry(Box<ServiceEntrySpec>),
    DestinationRule(Box<DestinationRuleSpec>),
    VirtualService(Box<VirtualServiceSpec>),
    Gateway(Box<GatewaySpec>),
    Sidecar(Box<SidecarSpec>),
    PeerAuthentication(Box<PeerAuthenticationSpec>),
    AuthorizationPolicy(Box<AuthorizationPolicySpec>),
    RequestAuthentication(Box<RequestAuthenticationSpec>),
}

/// A whole document read in one pass.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) api_version: String,
    pub(super) kind: String,
    pub(super) metadata: ObjectMeta,
    pub(super) spec: Spec,
}

/// Reads `text` in one pass, or `None` when the two passes must run.
/// A document in YAML's everyday subset is read without the general
/// parser (see [`simple_yaml`]).
pub(super) fn parse(text: &str) -> Option<Parsed> {
    let simple = simple_yaml::read(text)
        .and_then(|node| Raw::deserialize(simple_yaml::NodeDeserializer(&node)).ok());
    let raw = match simple {
        Some(raw) => raw,
        None => serde_saphyr::from_str_with_options(text, parse_options()).ok()?,
    };
    finish(raw)
}

/// Reads `text` in one pass with the general parser only.
#[cfg(test)]
pub(super) fn parse_general(text: &str) -> Option<Parsed> {
    finish(serde_saphyr::from_str_with_options(text, parse_options()).ok()?)
}

/// Reads `text` in one pass with the subset reader only.
#[cfg(test)]
pub(super) fn parse_simple(text: &str) -> Option<Parsed> {
    let node = simple_yaml::read(text)?;
    finish(Raw::deserialize(simple_yaml::NodeDeserializer(&node)).ok()?)
}

fn finish(raw: Raw) -> Option<Parsed> {
    // As `Object<S>` reads it: absent is the default, anything present must
    // be a valid ObjectMeta.
    let metadata = match raw.metadata {
        None => ObjectMeta::default(),
        Some(v) => serde_json::from_value(v).ok()?,
    };
    Some(Parsed {
        api_version: raw.api_version?,
        kind: raw.kind?,
        metadata,
        spec: raw.spec?,
    })
}

/// The document's fields in the order met. Any field `Object<S>` would
/// refuse, or a spec met before its kind is known, is an error (which
/// sends the document to the two passes).
struct Raw {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<serde_json::Value>,
    spec: Option<Spec>,
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut raw = Raw {
            api_version: None,
            kind: None,
            metadata: None,
            spec: None,
        };
        let mut status = false;
        let repeated = |key: &str| de::Error::custom(format_args!("repeated field {key}"));
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "apiVersion" if raw.api_version.is_none() => {
                    raw.api_version = Some(map.next_value()?);
                }
                "kind" if raw.kind.is_none() => raw.kind = Some(map.next_value()?),
                "metadata" if raw.metadata.is_none() => raw.metadata = Some(map.next_value()?),
                "status" if !status => {
                    // Read as `Object<S>` reads it (it must parse as a value).
                    map.next_value::<serde_json::Value>()?;
                    status = true;
                }
                "spec" if raw.spec.is_none() => {
                    let typed = match (&raw.kind, &raw.api_version) {
                        (Some(kind), Some(version)) => Typed::of(kind, version),
                        _ => None,
                    };
                    let Some(typed) = typed else {
                        return Err(de::Error::custom("spec before a typed kind"));
                    };
                    raw.spec = Some(match typed {
                        Typed::ServiceEntry => Spec::ServiceEntry(map.next_value()?),
                        Typed::DestinationRule => Spec::DestinationRule(map.next_value()?),
                        Typed::VirtualService => Spec::VirtualService(map.next_value()?),
                        Typed::Gateway => Spec::Gateway(map.next_value()?),
                        Typed::Sidecar => Spec::Sidecar(map.next_value()?),
                        Typed::PeerAuthentication => Spec::PeerAuthentication(map.next_value()?),
                        Typed::AuthorizationPolicy => Spec::AuthorizationPolicy(map.next_value()?),
                        Typed::RequestAuthentication => {
                            Spec::RequestAuthentication(map.next_value()?)
                        }
                    });
                }
                "apiVersion" | "kind" | "metadata" | "status" | "spec" => {
                    return Err(repeated(&key));
                }
                _ => return Err(de::Error::custom("unknown field")),
            }
        }
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(text: &str) -> Option<&'static str> {
        parse(text).map(|p| match p.spec {
            Spec::ServiceEntry(_) => "ServiceEntry",
            Spec::DestinationRule(_) => "DestinationRule",
            Spec::VirtualService(_) => "VirtualService",
            Spec::Gateway(_) => "Gateway",
            Spec::Sidecar(_) => "Sidecar",
            Spec::PeerAuthentication(_) => "PeerAuthentication",
            Spec::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Spec::RequestAuthentication(_) => "RequestAuthentication",
        })
    }

    const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: a\n  namespace: ns\n  labels: {app: x}\nspec:\n  hosts: [a.example.com]\n  ports:\n  - {number: 80, name: http, protocol: HTTP}\n";

    #[test]
    fn kind_before_spec_is_read_in_one_pass() {
        let p = parse(SE).expect("one pass");
        assert_eq!(p.kind, "ServiceEntry");
        assert_eq!(p.metadata.name.as_deref(), Some("a"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(kind_of(SE), Some("ServiceEntry"));
        let pa = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: d}\nspec: {mtls: {mode: STRICT}}\nstatus: {x: 1}\n";
        assert_eq!(kind_of(pa), Some("PeerAuthentication"));
    }

    #[test]
    fn anything_else_goes_to_the_two_passes() {
        let cases = [
            // spec before kind
            "spec:\n  hosts: [a]\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\n",
            // an unknown field, as Object<S> refuses
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\nextra: 1\nspec: {hosts: [a]}\n",
            // a repeated field
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nkind: ServiceEntry\nmetadata: {name: a}\nspec: {hosts: [a]}\n",
            // a spec error
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\nspec: {hostz: [a]}\n",
            // metadata that is not ObjectMeta
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a, labels: [x]}\nspec: {hosts: [a]}\n",
            // no spec
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\n",
            // kinds not typed here
            "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ndata: {}\n",
            "apiVersion: networking.istio.io/v2\nkind: ServiceEntry\nmetadata: {name: a}\nspec: {hosts: [a]}\n",
            "apiVersion: networking.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\nspec: {}\n",
            // not YAML
            "apiVersion: [\n",
        ];
        for text in cases {
            assert!(parse(text).is_none(), "{text}");
        }
    }
}
