//! meshgate: a TLS sidecar proxy for service meshes, configured with Istio's
//! own resources.
pub mod config;
pub mod bootstrap;
pub mod plan;
pub mod creds;
pub mod devpki;
pub mod tls;
pub mod metrics;
pub mod runtime;
pub mod admin;
pub mod app;
pub mod standin;
pub mod demo;
#[cfg(feature = "testing")]
pub mod test_util;
