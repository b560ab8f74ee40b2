//! Mesh routing: the VirtualService routes bound to `mesh` and the route
//! a piece of outbound traffic follows (`MeshRouting`), which
//! `outbound::select` chooses before
//! [`OutboundPlan::decide`](super::OutboundPlan::decide) asks the
//! registry where that goes.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::Serialize;

use super::net::IpNetwork;
use crate::plan::host::{HostPattern, normalize};
use crate::plan::route::{HttpRoutePlan, Matched, RequestView, RouteDestinationPlan};
use crate::plan::weighted::pick_weighted;

/// The routes of one VirtualService bound to `mesh`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshRoutes {
    /// `kind/namespace/name` and where it was read.
    pub resource: String,
    /// Hosts the routes apply to.
    pub hosts: Vec<HostPattern>,
    /// HTTP routes in order (the gateway routes' compiled form); the first
    /// match wins.
    pub http: Vec<HttpRoutePlan>,
    /// TLS routes in order, for tunnels that start with a ClientHello.
    pub tls: Vec<L4RoutePlan>,
    /// TCP routes in order, for tunnels that start with anything else.
    pub tcp: Vec<L4RoutePlan>,
}

/// A mesh `tls` or `tcp` route.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct L4RoutePlan {
    /// Conditions, any one selects the route; empty (TCP only) matches
    /// everything.
    pub matches: Vec<L4MatchPlan>,
    /// Weighted destinations (no header operations).
    pub destinations: Vec<RouteDestinationPlan>,
}

/// One `TLSMatchAttributes` / `L4MatchAttributes`; every condition must
/// hold.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct L4MatchPlan {
    /// SNI patterns, one must match (TLS routes; empty for TCP).
    pub sni_hosts: Vec<HostPattern>,
    /// The port the app connects to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Networks the original destination IP must be in, one of them.
    pub destination_subnets: Vec<IpNetwork>,
}

/// What mesh routing looks at in one request: its host and port as the app
/// addressed them, and the request (after path normalisation) as route
/// matches see it. `request.port` is the port the app addressed.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The host the app addressed, without the port.
    pub host: &'a str,
    /// Method, scheme, authority, path, headers and port.
    pub request: RequestView<'a>,
}

/// What the mesh routes say about some traffic, before the registry is
/// asked where the chosen destination is ([`OutboundPlan::decide`](super::OutboundPlan::decide)).
#[derive(Debug, Clone, Copy)]
pub enum MeshRouting<'p> {
    /// No VirtualService route applies: the registry decides by host.
    Unrouted,
    /// A route matched and one of its destinations was picked.
    Routed(RouteChoice<'p>),
    /// The host's VirtualService has routes for this traffic and none of
    /// them matched: 404 for a request, a refused tunnel.
    NoMatch(&'p MeshRoutes),
}

/// The route a request or tunnel follows.
#[derive(Debug, Clone, Copy)]
pub struct RouteChoice<'p> {
    /// The VirtualService.
    pub vs: &'p MeshRoutes,
    /// The HTTP route and what it matched (for rewrites); `None` for a TLS
    /// or TCP route.
    pub http: Option<(&'p HttpRoutePlan, Matched<'p>)>,
    /// The destination picked.
    pub dest: &'p RouteDestinationPlan,
    /// Picked by weight among several (another request may go elsewhere).
    pub weighted: bool,
}

impl MeshRouting<'_> {
    /// A number naming the chosen destination within its plan (0 when no
    /// route applies): with the host and port, what a prepared
    /// destination may be cached by.
    pub fn key(&self) -> usize {
        match self {
            MeshRouting::Routed(c) => std::ptr::from_ref(c.dest) as usize,
            MeshRouting::Unrouted | MeshRouting::NoMatch(_) => 0,
        }
    }

    /// The HTTP route that matched and the destination picked, for their
    /// rewrites and header operations.
    pub fn http(&self) -> Option<(&HttpRoutePlan, &RouteDestinationPlan, Matched<'_>)> {
        match self {
            MeshRouting::Routed(RouteChoice {
                http: Some((route, matched)),
                dest,
                ..
            }) => Some((route, dest, *matched)),
            _ => None,
        }
    }
}

/// No route matched: Envoy's 404 / refused tunnel when the VirtualService
/// has routes for the traffic (`for_port`), else the registry decides.
pub(super) fn unmatched(vs: &MeshRoutes, for_port: bool) -> MeshRouting<'_> {
    if for_port {
        MeshRouting::NoMatch(vs)
    } else {
        MeshRouting::Unrouted
    }
}

/// A TLS or TCP route's destination, picked by weight.
pub(super) fn l4_choice<'p>(vs: &'p MeshRoutes, r: &'p L4RoutePlan, pick: u64) -> MeshRouting<'p> {
    match pick_weighted(&r.destinations, |d| d.weight, pick) {
        Some(dest) => MeshRouting::Routed(RouteChoice {
            vs,
            http: None,
            dest,
            weighted: r.destinations.len() > 1,
        }),
        None => MeshRouting::NoMatch(vs),
    }
}

/// `host` lower case without a trailing dot, borrowed when it already is.
pub(super) fn normalized(host: &str) -> Cow<'_, str> {
    if host.ends_with('.') || host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(normalize(host))
    } else {
        Cow::Borrowed(host)
    }
}

impl L4MatchPlan {
    /// Whether the match is for traffic to `port`.
    pub fn fits_port(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    /// Whether `dest_ip` is in `destinationSubnets` (any address when
    /// there are none; an unknown address is in none).
    pub fn fits_ip(&self, dest_ip: Option<IpAddr>) -> bool {
        self.destination_subnets.is_empty()
            || dest_ip.is_some_and(|ip| self.destination_subnets.iter().any(|n| n.contains(ip)))
    }
}
