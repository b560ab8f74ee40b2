//! `validate`'s warnings for `outboundTlsPolicy: REQUIRE`: each
//! ServiceEntry host and port that plain text would be refused to.

use crate::bootstrap::TlsPolicyMode;
use crate::config::Resource;
use crate::config::service_entry::ServiceEntrySpec;
use crate::plan::diagnostics::Diagnostics;
use crate::plan::outbound::{Decision, OutboundPlan, ServicePlan, Target};
use crate::plan::tls::TlsMode;

/// Under REQUIRE, warns for each ServiceEntry host and port that plain
/// text would be refused to: no DestinationRule originates TLS there and
/// no exception lists it. Apps may still reach it with their own TLS, so
/// it is a warning; ports declared HTTPS or TLS (the app's own TLS, by
/// Istio's meaning) are not warned about.
pub(crate) fn check_services(
    entries: &[Resource<ServiceEntrySpec>],
    plan: &OutboundPlan,
    diag: &mut Diagnostics,
) {
    if plan.tls_policy.mode != TlsPolicyMode::Require {
        return;
    }
    for se in entries {
        let resource = se.source.to_string();
        let Some(service) = plan.services.iter().find(|s| s.resource == resource) else {
            continue; // did not compile: its errors say why
        };
        check_service(se, service, plan, diag);
    }
}

fn check_service(
    se: &Resource<ServiceEntrySpec>,
    service: &ServicePlan,
    plan: &OutboundPlan,
    diag: &mut Diagnostics,
) {
    for port in &service.ports {
        if matches!(port.protocol.as_str(), "HTTPS" | "TLS") {
            continue;
        }
        let field = se
            .spec
            .ports
            .iter()
            .position(|p| p.number == Some(u32::from(port.number)))
            .map_or_else(|| "spec.ports".to_string(), |j| format!("spec.ports[{j}]"));
        for host in &service.hosts {
            let name = host.to_string();
            let excepted = plan
                .tls_policy
                .exceptions
                .iter()
                .any(|e| e.covers(host, port.number));
            if excepted || originates_tls(plan, &name, port.number) {
                continue;
            }
            diag.warn(
                &se.source,
                &field,
                format!(
                    "plain text to {name}:{} will be refused under outboundTlsPolicy REQUIRE: add a \
                     DestinationRule with tls.mode SIMPLE/MUTUAL/ISTIO_MUTUAL, or list it in \
                     outboundTlsPolicy.exceptions (an app that speaks TLS itself still reaches it)",
                    port.number
                ),
            );
        }
    }
}

/// Whether meshgate originates TLS to `host:port` (any route or subset
/// aside): where plain HTTP to it goes by its mesh route without a
/// request, else by its ServiceEntry.
fn originates_tls(plan: &OutboundPlan, host: &str, port: u16) -> bool {
    let tls = |t: &Target| t.policy.tls.mode != TlsMode::Disable;
    match plan.route(host, port, 0) {
        Decision::Registered(t) => tls(&t),
        _ => plan
            .registered(host, host, port, None)
            .is_some_and(|t| tls(&t)),
    }
}
