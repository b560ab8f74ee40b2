//! The running proxy: listeners, connections, upstream pools.
//!
//! Layers, each depending only on those above it:
//! - `per_worker`, `http`, `tls_fact`, `drain`, `copy`, `sniff`: leaves;
//! - `conn`: the accept loop and the connection guard every connection
//!   holds (access log and close metrics on drop);
//! - `upstream`, `prepared`: pooled upstream connections and destinations
//!   made ready for requests;
//! - `state`: the configuration in force ([`state::Snapshot`] behind an
//!   `ArcSwap`; each connection takes one when accepted, so it never sees
//!   half of a reload) and what every connection shares;
//! - `exchange`: one HTTP exchange, the same for both directions;
//! - `idle`: HTTP/1.1 served in sessions that let go of hyper's state
//!   while a connection is idle (both directions' listeners use it);
//! - `outbound`, `inbound_http`, `inbound`: the listener kinds; `capture`:
//!   connections capture rules redirected, by original destination;
//! - `workers`: the worker threads and the set of listening ports.

mod authn;
pub mod authz;
pub mod capture;
pub mod conn;
pub mod copy;
pub mod drain;
pub mod exchange;
pub mod http;
mod idle;
pub mod inbound;
mod inbound_http;
pub mod jwks;
pub mod log_limit;
pub mod outbound;
pub mod per_worker;
pub mod prepared;
pub mod sniff;
pub mod state;
pub mod timeouts;
pub mod tls_fact;
pub mod upstream;
pub mod workers;
