//! VirtualService `fault` (Istio's `HTTPFaultInjection`): a fixed delay
//! and/or an abort with an HTTP status, each for a percentage of requests.
//!
//! As Istio translates it for Envoy's fault filter: the delay comes first,
//! then the abort; a `percentage` that is absent injects into no request
//! (Envoy's unset fraction is 0), which `validate` warns about because a
//! route meant to refuse (Istio's own `abort: {httpStatus: 421}` hardening
//! example) would then refuse nothing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A route's compiled fault injection.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultPlan {
    /// Delay before anything else, for a share of requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<(Duration, Share)>,
    /// Answer with this status instead of routing, for a share of requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<(u16, Share)>,
}

/// A share of requests, in millionths (Envoy's FractionalPercent MILLION).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Share(pub u32);

impl Share {
    /// Every request.
    pub const ALL: Share = Share(1_000_000);

    /// Whether the request drawn as `draw` (uniform over `u64`) is in it.
    pub fn includes(self, draw: u64) -> bool {
        self.0 >= 1_000_000 || (draw % 1_000_000) < u64::from(self.0)
    }
}

/// `HTTPFaultInjection` as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawFault {
    delay: Option<RawDelay>,
    abort: Option<RawAbort>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDelay {
    fixed_delay: Option<String>,
    exponential_delay: Option<serde_json::Value>,
    percentage: Option<RawPercent>,
    /// Deprecated integer percentage.
    percent: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAbort {
    http_status: Option<i64>,
    grpc_status: Option<String>,
    http2_error: Option<String>,
    percentage: Option<RawPercent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPercent {
    value: Option<f64>,
}

/// What compiling a fault found: the plan, errors and warnings as
/// (field suffix, reason).
pub(crate) struct Compiled {
    pub plan: Option<FaultPlan>,
    pub errors: Vec<(String, String)>,
    pub warnings: Vec<(String, String)>,
}

fn share(p: Option<&RawPercent>, percent: Option<i64>, field: &str, out: &mut Compiled) -> Share {
    let value = match (p.and_then(|p| p.value), percent) {
        (Some(v), _) => v,
        (None, Some(i)) => i as f64,
        (None, None) => {
            out.warnings.push((
                format!("{field}.percentage"),
                "absent: Istio injects this fault into no request; set percentage.value (100 for every request)".into(),
            ));
            0.0
        }
    };
    if !(0.0..=100.0).contains(&value) || value.is_nan() {
        out.errors.push((
            format!("{field}.percentage.value"),
            format!("{value} must be in the range 0-100"),
        ));
        return Share(0);
    }
    Share((value * 10_000.0).round() as u32)
}

/// Compiles `raw` (at `fault`).
pub(crate) fn compile(raw: &RawFault) -> Compiled {
    let mut out = Compiled {
        plan: None,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let mut plan = FaultPlan {
        delay: None,
        abort: None,
    };
    if let Some(d) = &raw.delay {
        let s = share(d.percentage.as_ref(), d.percent, "delay", &mut out);
        if d.exponential_delay.is_some() {
            out.errors.push((
                "delay.exponentialDelay".into(),
                "not supported (Istio does not support it either); use fixedDelay".into(),
            ));
        }
        match d.fixed_delay.as_deref().map(crate::plan::duration::parse) {
            Some(Ok(t)) if t >= Duration::from_millis(1) => plan.delay = Some((t, s)),
            Some(Ok(_)) => out
                .errors
                .push(("delay.fixedDelay".into(), "must be at least 1ms".into())),
            Some(Err(e)) => out.errors.push(("delay.fixedDelay".into(), e.to_string())),
            None if d.exponential_delay.is_none() => out
                .errors
                .push(("delay.fixedDelay".into(), "required".into())),
            None => {}
        }
    }
    if let Some(a) = &raw.abort {
        let s = share(a.percentage.as_ref(), None, "abort", &mut out);
        match (a.http_status, &a.grpc_status, &a.http2_error) {
            (Some(code), None, None) if (200..=599).contains(&code) => {
                plan.abort = Some((code as u16, s));
            }
            (Some(code), None, None) => out.errors.push((
                "abort.httpStatus".into(),
                format!("{code} must be in the range 200-599"),
            )),
            (None, Some(_), None) => out.errors.push((
                "abort.grpcStatus".into(),
                "not supported yet; use httpStatus".into(),
            )),
            (None, None, Some(_)) => out.errors.push((
                "abort.http2Error".into(),
                "not supported (deprecated in Istio); use httpStatus".into(),
            )),
            (None, None, None) => out
                .errors
                .push(("abort.httpStatus".into(), "required".into())),
            _ => out.errors.push((
                "abort".into(),
                "only one of httpStatus, grpcStatus or http2Error may be set".into(),
            )),
        }
    }
    if raw.delay.is_none() && raw.abort.is_none() {
        out.errors
            .push((String::new(), "one of delay or abort is required".into()));
    }
    if out.errors.is_empty() {
        out.plan = Some(plan);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_json(v: serde_json::Value) -> Compiled {
        compile(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn delay_and_abort_compile_with_their_shares() {
        let c = compile_json(serde_json::json!({
            "delay": {"fixedDelay": "1.5s", "percentage": {"value": 12.5}},
            "abort": {"httpStatus": 421, "percentage": {"value": 100}},
        }));
        assert!(c.errors.is_empty() && c.warnings.is_empty());
        let plan = c.plan.unwrap();
        assert_eq!(
            plan.delay,
            Some((Duration::from_millis(1500), Share(125_000)))
        );
        assert_eq!(plan.abort, Some((421, Share::ALL)));
    }

    #[test]
    fn an_absent_percentage_injects_nothing_and_is_warned() {
        let c = compile_json(serde_json::json!({"abort": {"httpStatus": 503}}));
        assert_eq!(c.plan.unwrap().abort, Some((503, Share(0))));
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].0 == "abort.percentage");
        // The deprecated integer percent still counts for delays.
        let c = compile_json(serde_json::json!({"delay": {"fixedDelay": "1s", "percent": 50}}));
        assert_eq!(c.plan.unwrap().delay.unwrap().1, Share(500_000));
    }

    #[test]
    fn bad_faults_are_errors() {
        for (v, field) in [
            (
                serde_json::json!({"abort": {"httpStatus": 700, "percentage": {"value": 1}}}),
                "abort.httpStatus",
            ),
            (
                serde_json::json!({"abort": {"grpcStatus": "UNAVAILABLE"}}),
                "abort.grpcStatus",
            ),
            (
                serde_json::json!({"delay": {"percentage": {"value": 1}}}),
                "delay.fixedDelay",
            ),
            (
                serde_json::json!({"delay": {"fixedDelay": "1s", "percentage": {"value": 101}}}),
                "delay.percentage.value",
            ),
            (serde_json::json!({}), ""),
        ] {
            let c = compile_json(v.clone());
            assert!(c.plan.is_none(), "{v}");
            assert!(
                c.errors.iter().any(|(f, _)| f == field),
                "{v}: {:?}",
                c.errors
            );
        }
    }

    #[test]
    fn shares_sample_their_fraction() {
        assert!(Share::ALL.includes(u64::MAX));
        assert!(!Share(0).includes(0));
        let half = Share(500_000);
        let hits = (0..1_000_000u64).filter(|d| half.includes(*d)).count();
        assert_eq!(hits, 500_000);
    }
}
