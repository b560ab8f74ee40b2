//! rustls configuration built from plans and credentials, and the
//! classification of handshake failures into stable reasons.
//!
//! The only module that builds rustls configs; keeping them in one place
//! keeps a future rustls 0.24 migration cheap.

pub mod client;
pub mod failure;
pub mod server;

pub use failure::{FailureReason, classify};
