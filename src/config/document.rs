//! What every document parse shares: the Istio API versions meshgate
//! reads and the YAML parser's limits.

/// Istio networking API versions meshgate accepts.
pub const NETWORKING_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// Istio security API versions meshgate accepts.
pub const SECURITY_VERSIONS: [&str; 2] = ["security.istio.io/v1", "security.istio.io/v1beta1"];

/// Parser limits for one Istio document. serde-saphyr's defaults allow 50,000
/// aliases and a million replayed anchor events: an "alias bomb" of a few
/// hundred bytes then costs seconds and tens of MiB before it is refused.
/// Istio resources use few anchors, so aliases and what they replay are
/// held far lower; the node and event limits (250,000 / 1,000,000) stay,
/// which a ServiceEntry with thousands of endpoints needs.
pub(super) fn parse_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_aliases: 1_000,
            max_recorded_anchor_events: 20_000,
        },
    }
}
