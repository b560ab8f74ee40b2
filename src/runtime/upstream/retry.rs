//! When a failed try may be tried again, per the route's retry policy,
//! and only when that is safe: the request never reached the upstream
//! (it comes back unsent), or it had no body and can be rebuilt as it was
//! sent. A request whose body was (partly) sent is never retried.

use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::{Body as _, Incoming};

use super::error::UpstreamError;
use crate::plan::route::{RetryCondition, RetryPlan};
use crate::runtime::http::{Body, boxed};

/// Envoy caps the retry back-off at ten times its base interval.
const MAX_BACKOFF_FACTOR: u32 = 10;

/// A bodiless request, kept so it can be sent again.
pub struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    /// Keeps what is needed to rebuild `req` when the policy retries at all
    /// and the request has no body.
    pub fn of(req: &Request<Body>, plan: &RetryPlan) -> Option<Replay> {
        let body = req.body();
        let empty = body.is_end_stream() || body.size_hint().exact() == Some(0);
        (plan.attempts > 0 && empty).then(|| Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        })
    }

    /// The request again, with an empty body.
    pub fn request(&self) -> Request<Body> {
        let mut req = Request::new(boxed(http_body_util::Empty::new()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Whether a response may be retried (the request is replayable).
pub fn retriable_response(resp: &Response<Incoming>, plan: &RetryPlan) -> bool {
    if plan.retriable_status(resp.status().as_u16()) {
        return true;
    }
    // gRPC puts its status in the headers of a trailers-only response.
    let grpc = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok());
    grpc.is_some_and(|code| plan.retry_on.iter().any(|c| c.grpc_status() == Some(code)))
}

/// Whether a failed try may be retried: `unsent` when the request came
/// back without reaching the upstream, `replayable` when it can be
/// rebuilt.
pub fn retriable_error(
    e: &UpstreamError,
    plan: &RetryPlan,
    unsent: bool,
    replayable: bool,
) -> bool {
    if e.is_overflow() {
        return false;
    }
    if e.is_connect_failure() {
        return plan.on(RetryCondition::ConnectFailure);
    }
    if unsent {
        return plan.on(RetryCondition::ConnectFailure)
            || plan.on(RetryCondition::RefusedStream)
            || plan.on(RetryCondition::Reset);
    }
    if !replayable {
        return false;
    }
    match e {
        UpstreamError::Exchange { detail, .. } => {
            // The upstream refused the stream: it did not process it.
            (plan.on(RetryCondition::RefusedStream) && detail.contains("refused stream"))
                || plan.on(RetryCondition::Reset)
                || plan.on(RetryCondition::FiveXx)
        }
        UpstreamError::PerTryTimeout(_) => {
            plan.on(RetryCondition::FiveXx) || plan.on(RetryCondition::GatewayError)
        }
        _ => false,
    }
}

/// How long to wait before retry number `n` (from 1): Envoy's jittered
/// exponential back-off from the plan's base interval, at most ten times
/// it. `seed` is any changing number (the jitter).
pub fn backoff(plan: &RetryPlan, n: u32, seed: u64) -> Duration {
    let factor = 1u32
        .checked_shl(n.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(MAX_BACKOFF_FACTOR);
    let ceiling = plan.backoff.saturating_mul(factor);
    // Between half the ceiling and the ceiling.
    let permille = 500 + (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) % 501;
    ceiling.mul_f64(permille as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::FailureReason;

    fn reset() -> UpstreamError {
        UpstreamError::Exchange {
            reason: FailureReason::ConnectionReset,
            detail: "connection closed before message completed".into(),
        }
    }

    #[test]
    fn istio_default_retries_connect_failures_and_unsent_requests_only() {
        let plan = RetryPlan::istio_default();
        let refused = UpstreamError::Connect {
            host: "a".into(),
            addr: ([127, 0, 0, 1], 1).into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert!(retriable_error(&refused, &plan, false, false));
        assert!(retriable_error(&reset(), &plan, true, false));
        // Sent, reset: not with the default policy, even without a body.
        assert!(!retriable_error(&reset(), &plan, false, true));
        let refused_stream = UpstreamError::Exchange {
            reason: FailureReason::ConnectionReset,
            detail: "http2 error: stream error received: refused stream before processing any application logic".into(),
        };
        assert!(retriable_error(&refused_stream, &plan, false, true));
        assert!(!retriable_error(&refused_stream, &plan, false, false));
        let overflow = UpstreamError::Overflow {
            kind: super::super::error::OverflowKind::Pending,
            limit: 1,
        };
        assert!(!retriable_error(&overflow, &plan, true, true));
        assert!(!retriable_error(
            &refused,
            &RetryPlan {
                retry_on: Default::default(),
                ..RetryPlan::istio_default()
            },
            false,
            true
        ));
    }

    #[test]
    fn a_request_with_a_body_is_not_replayable() {
        let plan = RetryPlan::istio_default();
        let bodiless = Request::post("/x")
            .header("x-a", "1")
            .body(boxed(http_body_util::Empty::<bytes::Bytes>::new()))
            .unwrap();
        let replay = Replay::of(&bodiless, &plan).expect("bodiless");
        let again = replay.request();
        assert_eq!(again.method(), Method::POST);
        assert_eq!(again.headers()["x-a"], "1");
        let with_body = Request::post("/x")
            .body(boxed(http_body_util::Full::new(bytes::Bytes::from("data"))))
            .unwrap();
        assert!(Replay::of(&with_body, &plan).is_none());
        assert!(Replay::of(&bodiless, &RetryPlan::disabled()).is_none());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let plan = RetryPlan::istio_default();
        let b1 = backoff(&plan, 1, 7);
        assert!(b1 >= plan.backoff / 2 && b1 <= plan.backoff, "{b1:?}");
        let b9 = backoff(&plan, 9, 7);
        assert!(b9 <= plan.backoff * MAX_BACKOFF_FACTOR, "{b9:?}");
        assert!(b9 >= plan.backoff * MAX_BACKOFF_FACTOR / 2, "{b9:?}");
    }
}
