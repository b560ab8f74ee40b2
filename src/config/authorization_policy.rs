//! `AuthorizationPolicy` (security.istio.io): who may call what on the
//! traffic this proxy receives. Compiled and enforced by `plan::authz`.

use serde::{Deserialize, Serialize};

/// `AuthorizationPolicy.spec`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// Workloads it applies to (`{matchLabels}`); every workload of its
    /// namespace (all of them from the root namespace) when absent.
    pub selector: Option<serde_json::Value>,
    /// Istio attaches a policy with target references to Kubernetes
    /// Gateway API gateways and waypoints only, never to a sidecar.
    pub target_ref: Option<serde_json::Value>,
    /// As `target_ref`.
    #[serde(default)]
    pub target_refs: Vec<serde_json::Value>,
    /// The rules; none: an ALLOW policy allows nothing, a DENY policy
    /// denies nothing.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// ALLOW (the default), DENY, AUDIT or CUSTOM.
    pub action: Option<Action>,
    /// The external authorizer of a CUSTOM policy.
    pub provider: Option<serde_json::Value>,
}

/// `AuthorizationPolicy.Action`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Allow a request that matches a rule.
    Allow,
    /// Deny a request that matches a rule.
    Deny,
    /// Mark a matching request in the access log; decides nothing.
    Audit,
    /// Ask an external authorizer.
    Custom,
}

/// `Rule`: at least one source, one operation and every condition match.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Sources; absent: any (present and empty is refused, as Istio).
    pub from: Option<Vec<From>>,
    /// Operations; absent: any (present and empty is refused).
    pub to: Option<Vec<To>>,
    /// Conditions, all of which must hold.
    #[serde(default)]
    pub when: Vec<Condition>,
}

/// `Rule.From`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct From {
    /// The source.
    pub source: Option<SourceMatch>,
}

/// `Rule.To`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct To {
    /// The operation.
    pub operation: Option<Operation>,
}

/// `Source`: every field given must match (a value of the list, and none
/// of its `not` list).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceMatch {
    /// Peer identities (`<trust-domain>/ns/<ns>/sa/<sa>`).
    #[serde(default)]
    pub principals: Vec<String>,
    /// Peer identities that must not match.
    #[serde(default)]
    pub not_principals: Vec<String>,
    /// JWT `<iss>/<sub>`.
    #[serde(default)]
    pub request_principals: Vec<String>,
    /// JWT `<iss>/<sub>` that must not match.
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    /// The peer identity's namespace.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Namespaces that must not match.
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    /// The peer identity's service account (`<ns>/<sa>`, or `<sa>` in the
    /// policy's namespace).
    #[serde(default)]
    pub service_accounts: Vec<String>,
    /// Service accounts that must not match.
    #[serde(default)]
    pub not_service_accounts: Vec<String>,
    /// The peer identity's trust domain.
    #[serde(default)]
    pub trust_domains: Vec<String>,
    /// Trust domains that must not match.
    #[serde(default)]
    pub not_trust_domains: Vec<String>,
    /// The connection's source address (IP or CIDR).
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    /// Source addresses that must not match.
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    /// The original client address (`X-Forwarded-For` with
    /// `numTrustedProxies`).
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    /// Original client addresses that must not match.
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
}

/// `Operation`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// The request's authority (case-insensitive).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Authorities that must not match.
    #[serde(default)]
    pub not_hosts: Vec<String>,
    /// The destination port.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Ports that must not match.
    #[serde(default)]
    pub not_ports: Vec<String>,
    /// HTTP methods.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Methods that must not match.
    #[serde(default)]
    pub not_methods: Vec<String>,
    /// Paths (normalised, without the query).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Paths that must not match.
    #[serde(default)]
    pub not_paths: Vec<String>,
}

/// `Condition`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// The attribute (`request.headers[x-token]`, `source.ip`, ...).
    pub key: String,
    /// Values, one of which must match.
    #[serde(default)]
    pub values: Vec<String>,
    /// Values none of which may match.
    #[serde(default)]
    pub not_values: Vec<String>,
}
