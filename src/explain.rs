//! `meshgate explain`: what meshgate would do with a request, without
//! sending any traffic — the resources that match (with file and line),
//! the destination and endpoints, the TLS on each side, and why a request
//! would be refused with what to change.
//!
//! Every decision is taken by the code the proxy runs: the configuration
//! is loaded by `load::load`, outbound requests are routed by
//! `OutboundPlan::select` and `decide`, TLS servers are chosen by
//! `plan::inbound::select_server`, HTTP routes matched by
//! `HttpRoutePlan::matched`, route destinations resolved by
//! `plan::destination::resolve`, and a client certificate is checked by
//! the verifier the server's TLS config is built with. Only the order of
//! the steps is restated here, after `runtime::outbound`,
//! `runtime::inbound` and `runtime::inbound_http`.

pub mod cli;
pub mod client_cert;
pub mod inbound;
mod inbound_http;
mod mesh;
pub mod model;
pub mod outbound;
pub mod request;
mod server;
pub mod text;
mod upstream;
