//! Transparent (captured) mode end to end, in real network namespaces: a
//! "pod" namespace with NAT REDIRECT rules where the app runs as uid 1000
//! and meshgate as uid 1337, joined by a veth pair to a "world" namespace
//! holding the external servers. Needs root, `ip`, `iptables`, `nft`,
//! `setpriv` and `curl`; without them the tests print `skipped: <reason>`
//! and pass, unless `CI=true`, where they fail.

#[path = "../common/mod.rs"]
mod common;

mod capture;
mod demo;
mod netns;
mod smoke;
