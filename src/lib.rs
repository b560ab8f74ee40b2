//! meshgate: a TLS sidecar proxy for service meshes, configured with Istio's
//! own resources.
pub mod admin;
pub mod app;
pub mod bootstrap;
pub mod ca;
pub mod config;
pub mod creds;
pub mod demo;
pub mod devpki;
pub mod metrics;
pub mod plan;
pub mod runtime;
pub mod standin;
#[cfg(feature = "testing")]
pub mod test_util;
pub mod tls;
pub mod watch;
