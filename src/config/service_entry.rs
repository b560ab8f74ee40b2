//! `ServiceEntry` (networking.istio.io): hosts outside the registry.
//!
//! A faithful mirror of the fields in `service_entry.proto`; meaning is
//! given to them in `plan`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `ServiceEntry.spec`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    /// Hosts (exact or left-most wildcard) matched against Host / SNI.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDRs associated with the service.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Ports the service listens on.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// `MESH_EXTERNAL` (default) or `MESH_INTERNAL`.
    pub location: Option<Location>,
    /// How endpoints are found.
    pub resolution: Option<Resolution>,
    /// Explicit endpoints (`WorkloadEntry`).
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntry>,
    /// Selects workloads (pods, WorkloadEntries) as endpoints, instead of
    /// `endpoints`. meshgate has no workload registry, so an entry with a
    /// selector has no endpoints (see `plan::outbound`).
    pub workload_selector: Option<WorkloadSelector>,
    /// Namespaces the entry is visible to (validated as Istio does);
    /// meshgate serves one workload and uses every entry.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// SANs accepted on the server certificate (a DestinationRule's own
    /// `subjectAltNames` takes precedence).
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

/// `WorkloadSelector` (networking.istio.io): labels a workload must carry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels to match; none selects every workload of the namespace.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `ServicePort`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Port number clients use.
    pub number: Option<u32>,
    /// HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP or TLS.
    pub protocol: Option<String>,
    /// Port name; endpoint `ports` maps are keyed by it.
    pub name: Option<String>,
    /// Port on the endpoint; defaults to `number`.
    pub target_port: Option<u32>,
}

/// `ServiceEntry.Location`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh (default).
    MeshExternal,
    /// Part of the mesh.
    MeshInternal,
}

/// `ServiceEntry.Resolution`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Use the address the application dialled (default).
    None,
    /// Use the listed endpoint addresses.
    Static,
    /// Resolve endpoints (or hosts) through DNS, all addresses.
    Dns,
    /// Resolve through DNS, first address only.
    DnsRoundRobin,
    /// Resolve the request's own host per request (wildcard hosts).
    DynamicDns,
}

/// `WorkloadEntry`, used as a ServiceEntry endpoint.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// IP address or DNS name.
    pub address: Option<String>,
    /// Per port-name overrides of the target port.
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    /// Labels (subsets); kept for `config_dump`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Network name; single-network only here.
    pub network: Option<String>,
    /// Locality; locality load balancing is not implemented.
    pub locality: Option<String>,
    /// Load balancing weight.
    pub weight: Option<u32>,
    /// Service account of the endpoint (ISTIO_MUTUAL identity).
    pub service_account: Option<String>,
}
