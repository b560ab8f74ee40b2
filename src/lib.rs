//! meshgate: a TLS sidecar proxy for service meshes, configured with Istio's
//! own resources.
pub mod config;
