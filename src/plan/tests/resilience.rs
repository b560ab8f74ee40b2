//! connectionPool limits, outlierDetection and VirtualService retries:
//! Envoy's / Istio's defaults where the configuration is silent, merged
//! per port and subset like every other DestinationRule component.

use super::outbound::ONE_SERVICE;
use super::*;
use crate::plan::outbound::{DEFAULT_CIRCUIT_LIMIT, OutlierPlan, PoolLimits};
use crate::plan::route::{RetryCondition, RetryPlan};

fn with_rule(traffic_policy: &str) -> Plan {
    compiled(&format!(
        "{ONE_SERVICE}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata:\n  name: pool\nspec:\n  host: api.example.com\n  trafficPolicy:\n{}",
        indent(traffic_policy, 4)
    ))
}

fn with_route(http_route: &str) -> Plan {
    compiled(&format!(
        "{ONE_SERVICE}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata:\n  name: api\nspec:\n  hosts: [api.example.com]\n  http:\n{}",
        indent(http_route, 2)
    ))
}

#[test]
fn limits_take_istios_defaults_where_the_rule_is_silent() {
    let unruled = registered(&compiled(ONE_SERVICE), "api.example.com", 443);
    assert_eq!(unruled.policy.limits, PoolLimits::default());
    assert_eq!(PoolLimits::default().max_connections, DEFAULT_CIRCUIT_LIMIT);
    // Istio's MaxUint32, not Envoy's 1024.
    assert_eq!(DEFAULT_CIRCUIT_LIMIT, u32::MAX);
    assert_eq!(
        unruled.policy.outlier, None,
        "no outlierDetection, no ejection"
    );

    let rows: [(&str, PoolLimits); 4] = [
        (
            "connectionPool: {tcp: {maxConnections: 10}}",
            PoolLimits {
                max_connections: 10,
                ..PoolLimits::default()
            },
        ),
        (
            "connectionPool: {http: {http1MaxPendingRequests: 3, http2MaxRequests: 50}}",
            PoolLimits {
                http1_max_pending_requests: 3,
                http2_max_requests: 50,
                ..PoolLimits::default()
            },
        ),
        (
            // 0 is the proto's unset: the default stays, as in Istio.
            "connectionPool: {tcp: {maxConnections: 0}, http: {http2MaxRequests: 0}}",
            PoolLimits::default(),
        ),
        (
            "connectionPool: {tcp: {connectTimeout: 2s}}",
            PoolLimits::default(),
        ),
    ];
    for (policy, want) in rows {
        let t = registered(&with_rule(policy), "api.example.com", 443);
        assert_eq!(t.policy.limits, want, "{policy}");
    }
}

#[test]
fn port_level_connection_pool_replaces_the_top_level_one() {
    let plan = with_rule(
        "connectionPool: {tcp: {maxConnections: 10}}
portLevelSettings:
- port: {number: 443}
  connectionPool: {http: {http1MaxPendingRequests: 2}}",
    );
    let t = registered(&plan, "api.example.com", 443);
    assert_eq!(
        t.policy.limits,
        PoolLimits {
            http1_max_pending_requests: 2,
            ..PoolLimits::default()
        },
        "Istio: the port entry replaces the component entirely"
    );
}

#[test]
fn outlier_detection_takes_istios_defaults_for_silent_fields() {
    let plan = with_rule("outlierDetection: {}");
    assert!(
        !plan.warnings.iter().any(|w| w.contains("outlierDetection")),
        "{:?}",
        plan.warnings
    );
    let t = registered(&plan, "api.example.com", 443);
    assert_eq!(
        t.policy.outlier,
        Some(OutlierPlan {
            consecutive_5xx_errors: 5,
            consecutive_gateway_errors: 0,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
        })
    );
    let t = registered(
        &with_rule(
            "outlierDetection:
  consecutive5xxErrors: 2
  consecutiveGatewayErrors: 1
  interval: 1s
  baseEjectionTime: 500ms
  maxEjectionPercent: 50",
        ),
        "api.example.com",
        443,
    );
    assert_eq!(
        t.policy.outlier,
        Some(OutlierPlan {
            consecutive_5xx_errors: 2,
            consecutive_gateway_errors: 1,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_millis(500),
            max_ejection_percent: 50,
        })
    );
}

#[test]
fn outlier_detection_errors_name_the_field() {
    let e = compile_errors(
        FILE,
        &format!(
            "{ONE_SERVICE}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata:\n  name: pool\nspec:\n  host: api.example.com\n  trafficPolicy:\n    \
             outlierDetection: {{baseEjectionTime: soon, maxEjectionPercent: 101}}\n"
        ),
    )
    .to_string();
    assert!(
        e.contains("spec.trafficPolicy.outlierDetection.baseEjectionTime"),
        "{e}"
    );
    assert!(
        e.contains("spec.trafficPolicy.outlierDetection.maxEjectionPercent"),
        "{e}"
    );
}

#[test]
fn routes_without_retries_get_istios_default_policy() {
    let want = RetryPlan::istio_default();
    assert_eq!(want.attempts, 2);
    assert_eq!(want.retriable_status_codes, vec![503]);
    for c in [
        RetryCondition::ConnectFailure,
        RetryCondition::RefusedStream,
        RetryCondition::Unavailable,
        RetryCondition::Cancelled,
        RetryCondition::RetriableStatusCodes,
    ] {
        assert!(want.on(c), "{c:?}");
    }
    assert!(!want.on(RetryCondition::FiveXx));
    // No VirtualService, and one whose route is silent.
    let t = registered(&compiled(ONE_SERVICE), "api.example.com", 443);
    assert_eq!(*t.retries, want);
    let plan = with_route("- route: [{destination: {host: api.example.com}}]");
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    assert_eq!(*registered(&plan, "api.example.com", 443).retries, want);
}

#[test]
fn mesh_route_retries_are_compiled_as_istio_does() {
    let rows: [(&str, RetryPlan); 4] = [
        ("{attempts: 0}", RetryPlan::disabled()),
        (
            // Istio: a retries block without attempts retries nothing.
            "{perTryTimeout: 1s}",
            RetryPlan {
                attempts: 0,
                per_try_timeout: Some(Duration::from_secs(1)),
                ..RetryPlan::istio_default()
            },
        ),
        (
            "{attempts: 3, perTryTimeout: 250ms, retryOn: \"gateway-error,reset,429\"}",
            RetryPlan {
                attempts: 3,
                per_try_timeout: Some(Duration::from_millis(250)),
                retry_on: [
                    RetryCondition::GatewayError,
                    RetryCondition::Reset,
                    RetryCondition::RetriableStatusCodes,
                ]
                .into_iter()
                .collect(),
                retriable_status_codes: vec![429],
                ..RetryPlan::istio_default()
            },
        ),
        (
            "{attempts: 1, retryIgnorePreviousHosts: true}",
            RetryPlan {
                attempts: 1,
                other_endpoint: false,
                ..RetryPlan::istio_default()
            },
        ),
    ];
    for (retries, want) in rows {
        let plan = with_route(&format!(
            "- retries: {retries}\n  route: [{{destination: {{host: api.example.com}}}}]"
        ));
        assert!(
            !plan.warnings.iter().any(|w| w.contains("retries")),
            "{retries}: {:?}",
            plan.warnings
        );
        let t = registered(&plan, "api.example.com", 443);
        assert_eq!(*t.retries, want, "{retries}");
    }
}

#[test]
fn an_unknown_retry_condition_is_an_error() {
    let e = compile_errors(
        FILE,
        &format!(
            "{ONE_SERVICE}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
             metadata:\n  name: api\nspec:\n  hosts: [api.example.com]\n  http:\n  \
             - retries: {{attempts: 2, retryOn: \"connect-failure,sometimes\"}}\n    \
             route: [{{destination: {{host: api.example.com}}}}]\n"
        ),
    )
    .to_string();
    assert!(e.contains("spec.http[0].retries.retryOn"), "{e}");
    assert!(e.contains("sometimes"), "{e}");
}
