//! The first step of routing outbound traffic: which mesh route (a
//! VirtualService bound to `mesh`) a request, a connection or a tunnel
//! follows, before [`OutboundPlan::decide`] asks the registry where that
//! goes.

use std::net::IpAddr;

use super::OutboundPlan;
use super::mesh::{
    MeshRoutes, MeshRouting, RequestFacts, RouteChoice, l4_choice, normalized, unmatched,
};
use crate::plan::host::most_specific;
use crate::plan::route::{HttpRoutePlan, Matched};

impl OutboundPlan {
    /// The mesh route an HTTP request follows (first step of
    /// [`OutboundPlan::route_request`]).
    pub fn select<'p>(&'p self, facts: &RequestFacts<'_>, pick: u64) -> MeshRouting<'p> {
        let port = facts.request.port;
        self.select_http(facts.host, port, pick, |r| r.matched(&facts.request))
    }

    /// The mesh route a connection to `host:port` follows before any
    /// request is read (first step of [`OutboundPlan::route`]).
    pub fn select_connection(&self, host: &str, port: u16, pick: u64) -> MeshRouting<'_> {
        self.select_http(host, port, pick, |r| {
            let port_only = |m: &crate::plan::route::HttpMatchPlan| {
                m.is_port_only() && m.port.is_none_or(|p| p == port)
            };
            (r.matches.is_empty() || r.matches.iter().any(port_only)).then_some(Matched {
                uri_prefix: Some("/"),
            })
        })
    }

    fn select_http<'p>(
        &'p self,
        host: &str,
        port: u16,
        pick: u64,
        matched: impl Fn(&'p HttpRoutePlan) -> Option<Matched<'p>>,
    ) -> MeshRouting<'p> {
        let Some(vs) = self.mesh_routes(host) else {
            return MeshRouting::Unrouted;
        };
        let mut for_port = false;
        for r in &vs.http {
            // Istio drops the matches (and routes) for other ports when it
            // builds a port's routes.
            if !(r.matches.is_empty() || r.matches.iter().any(|m| m.port.is_none_or(|p| p == port)))
            {
                continue;
            }
            for_port = true;
            if let Some(m) = matched(r)
                && let Some(dest) = r.pick(pick)
            {
                return MeshRouting::Routed(RouteChoice {
                    vs,
                    http: Some((r, m)),
                    dest,
                    weighted: r.destinations.len() > 1,
                });
            }
        }
        unmatched(vs, for_port)
    }

    /// The mesh route of a tunnel to `host:port` whose first bytes are a
    /// ClientHello with `sni`; `dest_ip` is the original destination
    /// address when known (a CONNECT to an IP). [`MeshRouting::NoMatch`]
    /// when the VirtualService has TLS routes for the port and none fits.
    pub fn select_tls(
        &self,
        host: &str,
        port: u16,
        sni: Option<&str>,
        dest_ip: Option<IpAddr>,
        pick: u64,
    ) -> MeshRouting<'_> {
        let Some(vs) = self.mesh_routes(host) else {
            return MeshRouting::Unrouted;
        };
        let sni = sni.map(normalized);
        let mut for_port = false;
        for r in &vs.tls {
            for m in r.matches.iter().filter(|m| m.fits_port(port)) {
                for_port = true;
                let sni_ok = sni
                    .as_deref()
                    .is_some_and(|s| m.sni_hosts.iter().any(|h| h.matches(s)));
                if sni_ok && m.fits_ip(dest_ip) {
                    return l4_choice(vs, r, pick);
                }
            }
        }
        unmatched(vs, for_port)
    }

    /// The mesh route of a tunnel to `host:port` whose first bytes are not
    /// TLS (or that stays silent); `dest_ip` as for
    /// [`OutboundPlan::select_tls`]. No TCP route matching leaves the
    /// tunnel to the registry, as Istio's default filter chain does.
    pub fn select_tcp(
        &self,
        host: &str,
        port: u16,
        dest_ip: Option<IpAddr>,
        pick: u64,
    ) -> MeshRouting<'_> {
        let Some(vs) = self.mesh_routes(host) else {
            return MeshRouting::Unrouted;
        };
        vs.tcp
            .iter()
            .find(|r| {
                r.matches.is_empty()
                    || r.matches
                        .iter()
                        .any(|m| m.fits_port(port) && m.fits_ip(dest_ip))
            })
            .map_or(MeshRouting::Unrouted, |r| l4_choice(vs, r, pick))
    }

    /// The VirtualService of `host` when it has TLS routes for `port`: a
    /// tunnel there is routed by its first bytes (a ClientHello's SNI).
    pub fn routes_by_sni(&self, host: &str, port: u16) -> Option<&MeshRoutes> {
        let vs = self.mesh_routes(host)?;
        vs.tls
            .iter()
            .flat_map(|r| &r.matches)
            .any(|m| m.fits_port(port))
            .then_some(vs)
    }

    /// The mesh route of a tunnel to `host:port` routed without its
    /// bytes (no TLS routes for the port): a TCP route, else the HTTP
    /// routes that need no request ([`OutboundPlan::select_connection`]).
    pub fn select_tunnel(
        &self,
        host: &str,
        port: u16,
        dest_ip: Option<IpAddr>,
        pick: u64,
    ) -> MeshRouting<'_> {
        match self.select_tcp(host, port, dest_ip, pick) {
            MeshRouting::Unrouted => self.select_connection(host, port, pick),
            r => r,
        }
    }

    /// The VirtualService bound to `mesh` for `host`: the most specific.
    pub fn mesh_routes(&self, host: &str) -> Option<&MeshRoutes> {
        most_specific(&self.routes, &normalized(host), |r| &r.hosts)
    }
}
