//! AuthorizationPolicy end to end: real listeners, certificates made at
//! test time, apps that record what reached them.

mod ip;
mod jwt;
mod mtls;
mod operations;
mod paths;
mod reload;
mod support;
mod tcp;
mod validate;
