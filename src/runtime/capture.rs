//! Connections that capture rules (`meshgate iptables`) redirected to the
//! outbound listener: each is served by where the app was going (its
//! original destination) and what its first bytes are.
//!
//! - HTTP/1.x: served as the outbound listener serves the app's requests,
//!   routed by Host with the dialled port choosing the ServiceEntry port
//!   (and the dialled IP standing in for a Host the registry does not
//!   know, when a ServiceEntry's `addresses` hold it).
//! - A TLS ClientHello (the app speaks TLS itself): routed by SNI and
//!   passed through byte for byte, never encrypted again; under
//!   REGISTRY_ONLY an unknown name gets a TLS alert.
//! - Anything else, or silence past `protocolDetectionTimeout`: TCP to
//!   the ServiceEntry whose `addresses` hold the dialled IP (wrapped in TLS
//!   when its DestinationRule says so), else to the dialled address itself
//!   (`PassthroughCluster`, ALLOW_ANY) or closed (`BlackHoleCluster`,
//!   REGISTRY_ONLY).
//!
//! A connection not redirected (no original destination, or the listener's
//! own address) is an explicit-proxy client and served as before.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::conn::Connection;
use super::copy::Counted;
use super::exchange::Ctx;
use super::log_limit::LogLimit;
use super::outbound::{self, Tunnel};
use super::sniff::{self, Prefixed, Protocol};
use super::state::State;
use super::tls_fact::{NoTls, TlsFact};
use crate::metrics::CapturedLabels;
use crate::plan::outbound::MeshRouting;
use crate::tls::hello;

/// Loop warnings: a misapplied rule can cause one per connection.
static LOOP_LOG: LogLimit = LogLimit::per_10s(5);

/// Serves one connection accepted on the outbound listener: captured ones
/// by their original destination, the others as an explicit proxy.
pub async fn serve_outbound(stream: Counted<TcpStream>, conn: Arc<Connection>, state: Arc<State>) {
    let Some(orig) = sniff::original_dst(stream.get_ref()) else {
        return outbound::serve(stream, conn, state).await;
    };
    conn.set_original_dst(orig);
    if is_own_port(orig, stream.get_ref(), &state) {
        return refuse_loop(&conn, &state, orig, "outbound");
    }
    let mut stream = stream;
    let bootstrap = &state.bootstrap;
    // What follows is boxed branch by branch: the connection's task keeps
    // room only for the branch it takes, and a plain (uncaptured)
    // connection none for the captured ones.
    let sniffed = Box::pin(sniff::sniff(
        &mut stream,
        bootstrap.protocol_detection_timeout,
        bootstrap.request_header_timeout,
    ))
    .await;
    let (protocol, first) = match sniffed {
        Ok(s) => s,
        Err(flag) => return conn.set_flag(flag),
    };
    conn.set_protocol(protocol.as_str());
    count(&state, "outbound", protocol.as_str());
    match protocol {
        Protocol::Http => {
            Box::pin(outbound::serve_http(
                Prefixed::new(first, stream),
                conn,
                state,
            ))
            .await;
        }
        Protocol::Tls | Protocol::Tcp => {
            let ctx = Ctx {
                snapshot: state.snapshot(),
                state,
                conn,
            };
            Box::pin(tunnel(&ctx, stream, orig, protocol, first)).await;
        }
    }
}

fn count(state: &State, direction: &'static str, protocol: &'static str) {
    state
        .metrics
        .captured
        .get_or_create(&CapturedLabels {
            direction,
            protocol,
        })
        .inc();
}

/// Counts a captured inbound connection by what it carries.
pub(super) fn count_inbound(ctx: &Ctx, protocol: &'static str) {
    ctx.conn.set_protocol(protocol);
    count(&ctx.state, "inbound", protocol);
}

/// Whether a captured connection was going to one of meshgate's own ports
/// on this host: following it would loop.
pub(super) fn is_own_port(orig: SocketAddr, stream: &TcpStream, state: &State) -> bool {
    let b = &state.bootstrap;
    let mut own = vec![
        b.outbound_addr.port(),
        b.mesh_inbound_addr.port(),
        b.admin_addr.port(),
        b.stats_addr.port(),
        b.ready_addr.port(),
    ];
    if let Ok(local) = stream.local_addr() {
        own.push(local.port());
    }
    own.contains(&orig.port()) && is_local(orig.ip())
}

/// Whether `ip` is an address of this network namespace (one a socket can
/// be bound to).
fn is_local(ip: std::net::IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || std::net::TcpListener::bind((ip, 0)).is_ok()
}

pub(super) fn refuse_loop(
    conn: &Connection,
    state: &State,
    orig: SocketAddr,
    direction: &'static str,
) {
    conn.set_flag("loop");
    count(state, direction, "loop");
    if let Some(suppressed) = LOOP_LOG.allow("loop") {
        warn!(
            peer = %conn.peer,
            original_dst = %orig,
            suppressed,
            "captured connection refused: its original destination {orig} is meshgate's own \
             port, so following it would loop (are the capture rules excluding meshgate's \
             uid/gid, and is meshgate running as that user?){}",
            LOOP_LOG.note(suppressed)
        );
    }
}

/// A captured connection that is not HTTP: routed by SNI (TLS) or by the
/// dialled address, then relayed.
async fn tunnel(
    ctx: &Ctx,
    mut down: Counted<TcpStream>,
    orig: SocketAddr,
    protocol: Protocol,
    first: Vec<u8>,
) {
    let conn = &ctx.conn;
    let outbound = &ctx.snapshot.plan.outbound;
    let (ip, port) = (orig.ip(), orig.port());
    let sni = match protocol {
        Protocol::Tls => outbound::client_hello_sni(&first),
        _ => None,
    };
    conn.set_tls(match protocol {
        Protocol::Tls => TlsFact::Passthrough {
            sni: sni.as_deref().map(Arc::from),
        },
        _ => TlsFact::NoTls(NoTls::Plaintext),
    });
    // The host to route by: the SNI when the registry knows it, else the
    // ServiceEntry holding the dialled IP, else the SNI or the IP itself
    // (unregistered).
    let host = outbound
        .captured_host(sni.as_deref(), ip, port)
        .or_else(|| sni.clone())
        .unwrap_or_else(|| ip.to_string());
    let pick = ctx.state.random();
    let routing = match protocol {
        Protocol::Tls => match outbound.select_tls(&host, port, sni.as_deref(), Some(ip), pick) {
            MeshRouting::Unrouted => outbound.select_connection(&host, port, pick),
            r => r,
        },
        _ => outbound.select_tunnel(&host, port, Some(ip), pick),
    };
    if let MeshRouting::NoMatch(vs) = routing {
        debug!(peer = %conn.peer, %orig, host, route = %vs.resource, "captured connection: no route matched; closing");
        return conn.set_flag("no_route");
    }
    let authority = format!("{host}:{port}");
    let key = outbound::prepared_key(ctx, &host, port, &routing);
    let prepared = match ctx.prepared(key, &authority, || {
        outbound::choose(ctx, &host, port, &routing)
    }) {
        Ok(p) => p,
        Err(reply) => {
            let flag = reply.outcome.flag;
            if protocol == Protocol::Tls && flag == "registry_only" {
                // The app's TLS client learns why from an alert.
                let alert = hello::fatal_alert(hello::UNRECOGNIZED_NAME);
                let _ = down.write_all(&alert).await;
            }
            debug!(peer = %conn.peer, %orig, host, flag, "captured connection refused");
            conn.spliced(reply.outcome.destination.clone(), "-".into(), true);
            return conn.set_flag(flag);
        }
    };
    let dest = &prepared.dest;
    let upstream = match ctx
        .state
        .upstreams
        .connect_tcp(
            &dest.endpoints,
            dest.policy.connect_timeout,
            ctx.state.next(),
        )
        .await
    {
        Ok(s) => s,
        Err(e) => return conn.set_flag(ctx.failure(e, dest, &authority).outcome.flag),
    };
    conn.spliced(dest.label.clone(), dest.describe(), true);
    // The app's own TLS goes through untouched; other bytes are wrapped in
    // the destination's TLS when its DestinationRule originates it.
    let originate = match protocol {
        Protocol::Tls => None,
        _ => outbound::originates(&prepared),
    };
    // Plain bytes that are not wrapped need outboundTlsPolicy's leave.
    let refused = outbound.plaintext_allowed(&host, port).err();
    let opened = outbound::open_tunnel(
        &first,
        upstream,
        originate,
        refused,
        dest.policy.connect_timeout,
        conn.metrics(),
    )
    .await;
    let end = match opened {
        Ok(up @ (Tunnel::Plain(_) | Tunnel::Originated(_))) => up.splice(conn, down).await,
        Err(flag) => return conn.set_flag(flag),
    };
    conn.set_flag(end.flag());
}
