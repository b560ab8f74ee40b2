//! Rate limits for warnings a client can cause (failed handshakes, refused
//! requests): at most `per_window` lines per reason per window, the first
//! line of each window always logged, and the next logged line says how
//! many were left out. Metrics keep the exact counts; only the log is
//! thinned.
//!
//! ```
//! use meshgate::runtime::log_limit::LogLimit;
//! static REFUSED: LogLimit = LogLimit::per_10s(10);
//! if let Some(suppressed) = REFUSED.allow("bad_request") {
//!     tracing::warn!("request refused{}", LogLimit::suffix(suppressed));
//! }
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Distinct reasons tracked one by one; any further reason shares one slot.
/// Reasons are `&'static str`, so the set is small and fixed.
const MAX_REASONS: usize = 64;

/// The reason under which reasons beyond [`MAX_REASONS`] are counted.
const OVERFLOW: &str = "other";

/// Per-reason log rate limit. A tiny mutex guards a short vector: a call
/// is a few comparisons, cheap beside the line it may write.
#[derive(Debug)]
pub struct LogLimit {
    per_window: u32,
    window: Duration,
    slots: Mutex<Vec<Slot>>,
}

#[derive(Debug)]
struct Slot {
    reason: &'static str,
    window_start: Instant,
    /// Lines logged in the current window.
    logged: u32,
    /// Lines left out since the last logged one.
    suppressed: u64,
}

impl LogLimit {
    /// At most `per_window` lines (at least 1) per reason per `window`.
    pub const fn new(per_window: u32, window: Duration) -> LogLimit {
        LogLimit {
            per_window: if per_window == 0 { 1 } else { per_window },
            window,
            slots: Mutex::new(Vec::new()),
        }
    }

    /// At most `per_window` lines per reason per 10 seconds.
    pub const fn per_10s(per_window: u32) -> LogLimit {
        LogLimit::new(per_window, Duration::from_secs(10))
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether a line for `reason` may be logged now: `Some(n)` where `n`
    /// lines for this reason were left out since the last one logged
    /// (say so in the line, see [`LogLimit::suffix`]); `None` to leave
    /// this one out.
    pub fn allow(&self, reason: &'static str) -> Option<u64> {
        // tokio's clock: paused time in tests moves it.
        self.allow_at(reason, tokio::time::Instant::now().into_std())
    }

    /// [`LogLimit::allow`] at a given time (an injected clock).
    pub fn allow_at(&self, reason: &'static str, now: Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked while holding
        // it; the counters are still usable.
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let index = match slots.iter().position(|s| s.reason == reason) {
            Some(i) => i,
            None => {
                let reason = if slots.len() < MAX_REASONS - 1 {
                    reason
                } else {
                    OVERFLOW
                };
                match slots.iter().position(|s| s.reason == reason) {
                    Some(i) => i,
                    None => {
                        slots.push(Slot {
                            reason,
                            window_start: now,
                            logged: 0,
                            suppressed: 0,
                        });
                        slots.len() - 1
                    }
                }
            }
        };
        let slot = &mut slots[index];
        if now.saturating_duration_since(slot.window_start) >= self.window {
            slot.window_start = now;
            slot.logged = 0;
        }
        if slot.logged < self.per_window {
            slot.logged += 1;
            Some(std::mem::take(&mut slot.suppressed))
        } else {
            slot.suppressed = slot.suppressed.saturating_add(1);
            None
        }
    }

    /// Reasons with lines left out whose window has ended, with their
    /// counts (reset): for a periodic flush, so a flood that stops is
    /// still reported.
    pub fn flush_at(&self, now: Instant) -> Vec<(&'static str, u64)> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .iter_mut()
            .filter(|s| {
                s.suppressed > 0 && now.saturating_duration_since(s.window_start) >= self.window
            })
            .map(|s| (s.reason, std::mem::take(&mut s.suppressed)))
            .collect()
    }

    /// `" (N similar suppressed in the last 10s)"`, or nothing for 0.
    pub fn suffix(suppressed: u64) -> String {
        LogLimit::suffix_for(suppressed, Duration::from_secs(10))
    }

    /// [`LogLimit::suffix`] naming this limit's window.
    pub fn note(&self, suppressed: u64) -> String {
        LogLimit::suffix_for(suppressed, self.window)
    }

    fn suffix_for(suppressed: u64, window: Duration) -> String {
        if suppressed == 0 {
            String::new()
        } else {
            format!(
                " ({suppressed} similar suppressed in the last {}s)",
                window.as_secs()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines_of_a_window_pass_then_the_rest_are_counted() {
        let limit = LogLimit::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limit.allow_at("bad_sni", t0), Some(0));
        }
        for i in 0..1234 {
            let at = t0 + Duration::from_millis(i);
            assert_eq!(limit.allow_at("bad_sni", at), None);
        }
        // Another reason has its own budget.
        assert_eq!(limit.allow_at("not_tls", t0), Some(0));
        // Next window: the first line says how many were left out, once.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(limit.allow_at("bad_sni", t1), Some(1234));
        assert_eq!(limit.allow_at("bad_sni", t1), Some(0));
        assert_eq!(
            LogLimit::suffix(1234),
            " (1234 similar suppressed in the last 10s)"
        );
        assert_eq!(LogLimit::suffix(0), "");
    }

    #[test]
    fn flush_reports_a_flood_that_stopped() {
        let limit = LogLimit::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.allow_at("expired", t0), Some(0));
        assert_eq!(limit.allow_at("expired", t0), None);
        assert_eq!(limit.allow_at("expired", t0), None);
        assert!(limit.flush_at(t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(
            limit.flush_at(t0 + Duration::from_secs(10)),
            vec![("expired", 2)]
        );
        assert!(limit.flush_at(t0 + Duration::from_secs(20)).is_empty());
        assert_eq!(
            limit.allow_at("expired", t0 + Duration::from_secs(20)),
            Some(0)
        );
    }

    #[test]
    fn reasons_beyond_the_bound_share_one_slot() {
        // Reasons are static strings; make more than the bound.
        let names: Vec<&'static str> = (0..200)
            .map(|i| &*Box::leak(format!("r{i}").into_boxed_str()))
            .collect();
        let limit = LogLimit::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        for n in &names {
            let _ = limit.allow_at(n, t0);
        }
        assert!(limit.slots.lock().unwrap().len() <= MAX_REASONS);
    }

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_time() {
        let limit = LogLimit::per_10s(2);
        assert_eq!(limit.allow("handshake_timeout"), Some(0));
        assert_eq!(limit.allow("handshake_timeout"), Some(0));
        assert_eq!(limit.allow("handshake_timeout"), None);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(limit.allow("handshake_timeout"), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limit.allow("handshake_timeout"), Some(2));
    }
}
