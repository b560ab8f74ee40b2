//! Outlier detection per endpoint, as Envoy does it for Istio's
//! `outlierDetection`: an endpoint with `consecutive5xxErrors` 5xx
//! responses in a row (or `consecutiveGatewayErrors` 502/503/504), connect
//! failures and resets counting as both, is ejected for `baseEjectionTime`
//! times the number of times it was ejected (at most 300 s or the base
//! time, Envoy's `max_ejection_time`). At most `maxEjectionPercent` of the
//! endpoints are out at once, but one always may be. A healthy `interval`
//! takes one off the ejection count. When every endpoint is out, none is
//! skipped (Envoy's panic routing).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::plan::outbound::OutlierPlan;

/// Envoy's default `max_ejection_time`.
const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// What one try at an endpoint came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// A response with this status.
    Status(u16),
    /// No response: connect failure, reset, timeout.
    LocalFailure,
}

#[derive(Debug, Default, Clone)]
struct Health {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<Instant>,
    /// Times ejected (decays by one per healthy interval).
    times: u32,
    /// When the ejection count last changed or decayed.
    since: Option<Instant>,
}

/// The health of a destination's endpoints.
pub struct Outlier {
    plan: OutlierPlan,
    endpoints: Mutex<Vec<Health>>,
}

impl Outlier {
    /// `n` endpoints, all in service.
    pub fn new(plan: OutlierPlan, n: usize) -> Outlier {
        Outlier {
            plan,
            endpoints: Mutex::new(vec![Health::default(); n]),
        }
    }

    /// Whether endpoint `i` is out of service now (never when every
    /// endpoint is).
    pub fn is_ejected(&self, i: usize) -> bool {
        let now = Instant::now();
        let mut eps = lock(&self.endpoints);
        let out = |h: &Health| h.ejected_until.is_some_and(|t| t > now);
        if !eps.get(i).is_some_and(out) {
            return false;
        }
        let all_out = eps.iter().all(out);
        if all_out {
            // Panic routing: a destination whose endpoints are all out
            // still gets traffic.
            for h in eps.iter_mut() {
                h.ejected_until = None;
            }
        }
        !all_out
    }

    /// Records what a try at endpoint `i` came to; `true` when this
    /// ejected it.
    pub fn record(&self, i: usize, result: Observed) -> bool {
        let (is_5xx, is_gateway) = match result {
            Observed::Status(s) => ((500..600).contains(&s), matches!(s, 502..=504)),
            Observed::LocalFailure => (true, true),
        };
        let now = Instant::now();
        let mut eps = lock(&self.endpoints);
        let n = eps.len();
        let ejected_now = eps
            .iter()
            .filter(|h| h.ejected_until.is_some_and(|t| t > now))
            .count();
        let Some(h) = eps.get_mut(i) else {
            return false;
        };
        if h.ejected_until.is_some_and(|t| t <= now) {
            h.ejected_until = None;
            h.since = Some(now);
        }
        if !is_5xx {
            h.consecutive_5xx = 0;
        } else {
            h.consecutive_5xx += 1;
        }
        if !is_gateway {
            h.consecutive_gateway = 0;
        } else {
            h.consecutive_gateway += 1;
        }
        if h.ejected_until.is_some() {
            return false;
        }
        let p = &self.plan;
        let trips = (p.consecutive_5xx_errors > 0 && h.consecutive_5xx >= p.consecutive_5xx_errors)
            || (p.consecutive_gateway_errors > 0
                && h.consecutive_gateway >= p.consecutive_gateway_errors);
        if !trips {
            return false;
        }
        // Envoy: at most maxEjectionPercent out, but one always may be.
        let allowed =
            ejected_now == 0 || (ejected_now + 1) * 100 <= n * p.max_ejection_percent as usize;
        if !allowed {
            return false;
        }
        if let Some(since) = h.since
            && !p.interval.is_zero()
        {
            let healthy = now.saturating_duration_since(since);
            let decay = (healthy.as_nanos() / p.interval.as_nanos()).min(u128::from(h.times));
            h.times -= decay as u32;
        }
        h.times = h.times.saturating_add(1);
        let time = p
            .base_ejection_time
            .saturating_mul(h.times)
            .min(MAX_EJECTION_TIME.max(p.base_ejection_time));
        h.ejected_until = Some(now + time);
        h.since = Some(now + time);
        h.consecutive_5xx = 0;
        h.consecutive_gateway = 0;
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters only: a panic elsewhere cannot leave them inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(c5: u32, gw: u32, pct: u32, base_ms: u64) -> OutlierPlan {
        OutlierPlan {
            consecutive_5xx_errors: c5,
            consecutive_gateway_errors: gw,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_millis(base_ms),
            max_ejection_percent: pct,
        }
    }

    #[test]
    fn consecutive_5xx_eject_and_a_success_resets_the_count() {
        let o = Outlier::new(plan(3, 0, 100, 60_000), 2);
        assert!(!o.record(0, Observed::Status(500)));
        assert!(!o.record(0, Observed::Status(500)));
        assert!(!o.record(0, Observed::Status(200)));
        assert!(!o.record(0, Observed::Status(503)));
        assert!(!o.record(0, Observed::LocalFailure));
        assert!(o.record(0, Observed::Status(500)));
        assert!(o.is_ejected(0));
        assert!(!o.is_ejected(1));
    }

    #[test]
    fn gateway_errors_count_only_502_to_504_and_local_failures() {
        let o = Outlier::new(plan(0, 2, 100, 60_000), 3);
        assert!(!o.record(1, Observed::Status(500)));
        assert!(!o.record(1, Observed::Status(502)));
        assert!(!o.record(1, Observed::Status(500)));
        assert!(!o.record(1, Observed::LocalFailure));
        assert!(o.record(1, Observed::Status(504)));
    }

    #[test]
    fn one_endpoint_may_always_be_ejected_but_not_more_than_the_percent() {
        let o = Outlier::new(plan(1, 0, 10, 60_000), 2);
        assert!(
            o.record(0, Observed::Status(500)),
            "10% of 2 still allows one"
        );
        assert!(
            !o.record(1, Observed::Status(500)),
            "a second would be 100%"
        );
        assert!(o.is_ejected(0) && !o.is_ejected(1));
    }

    #[test]
    fn all_out_means_none_skipped() {
        let o = Outlier::new(plan(1, 0, 100, 60_000), 1);
        assert!(o.record(0, Observed::Status(503)));
        assert!(
            !o.is_ejected(0),
            "panic routing: the only endpoint stays in use"
        );
    }

    #[test]
    fn ejection_ends_after_base_time_times_ejections() {
        let o = Outlier::new(plan(1, 0, 100, 30), 2);
        assert!(o.record(0, Observed::Status(500)));
        assert!(o.is_ejected(0));
        std::thread::sleep(Duration::from_millis(45));
        assert!(!o.is_ejected(0));
        assert!(o.record(0, Observed::Status(500)), "ejected a second time");
        std::thread::sleep(Duration::from_millis(45));
        assert!(o.is_ejected(0), "twice the base time the second time");
        std::thread::sleep(Duration::from_millis(30));
        assert!(!o.is_ejected(0));
    }
}
