//! A destination's `connectionPool` limits (Envoy's circuit breakers),
//! shared by every worker: connections open, requests waiting for a
//! connection, requests in flight. A refused request is an overflow,
//! answered at once; a waiting one waits at most the connect timeout.

use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::error::{OverflowKind, UpstreamError};
use super::outlier::Outlier;
use crate::plan::outbound::UpstreamPolicy;

/// What every worker shares about one pool key: its limits and the health
/// of its endpoints.
pub struct DestState {
    /// Connection and request limits.
    pub limits: Arc<Limits>,
    /// Endpoint ejection, when the DestinationRule asks for it.
    pub outlier: Option<Outlier>,
}

impl DestState {
    /// The state of a destination with `endpoints` endpoints under `policy`.
    pub fn new(policy: &UpstreamPolicy, endpoints: usize) -> DestState {
        DestState {
            limits: Arc::new(Limits::new(policy)),
            outlier: policy.outlier.map(|plan| Outlier::new(plan, endpoints)),
        }
    }

    /// Whether endpoint `i` is ejected now.
    pub fn is_ejected(&self, i: usize) -> bool {
        self.outlier.as_ref().is_some_and(|o| o.is_ejected(i))
    }
}

/// The three limits of one destination.
pub struct Limits {
    max_connections: u32,
    max_pending: u32,
    max_requests: u32,
    connections: Arc<Semaphore>,
    pending: Semaphore,
    requests: Arc<Semaphore>,
    /// Woken when a connection closes or goes back to a pool.
    freed: Notify,
}

impl Limits {
    fn new(policy: &UpstreamPolicy) -> Limits {
        let l = policy.limits;
        let permits = |n: u32| (n as usize).min(Semaphore::MAX_PERMITS);
        Limits {
            max_connections: l.max_connections,
            max_pending: l.http1_max_pending_requests,
            max_requests: l.http2_max_requests,
            connections: Arc::new(Semaphore::new(permits(l.max_connections))),
            pending: Semaphore::new(permits(l.http1_max_pending_requests)),
            requests: Arc::new(Semaphore::new(permits(l.http2_max_requests))),
            freed: Notify::new(),
        }
    }

    /// A place among the requests in flight, or an overflow.
    pub fn request(&self) -> Result<OwnedSemaphorePermit, UpstreamError> {
        self.requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| UpstreamError::Overflow {
                kind: OverflowKind::Requests,
                limit: self.max_requests,
            })
    }

    /// A place among the requests waiting for a connection, or an overflow.
    pub fn pending(&self) -> Result<tokio::sync::SemaphorePermit<'_>, UpstreamError> {
        self.pending
            .try_acquire()
            .map_err(|_| UpstreamError::Overflow {
                kind: OverflowKind::Pending,
                limit: self.max_pending,
            })
    }

    /// The error of a request that waited the connect timeout without a
    /// connection.
    pub fn pending_timeout(&self) -> UpstreamError {
        UpstreamError::Overflow {
            kind: OverflowKind::PendingTimeout,
            limit: self.max_connections,
        }
    }

    /// A slot for a new connection, if the limit allows one now.
    pub fn try_connection(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let permit = self.connections.clone().try_acquire_owned().ok()?;
        Some(ConnectionSlot {
            permit: Some(permit),
            limits: self.clone(),
        })
    }

    /// Registers interest in the next freed connection; enable the future
    /// before checking the pool so no wake-up is missed.
    pub fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    /// Wakes the requests waiting for a connection.
    pub fn notify_freed(&self) {
        self.freed.notify_waiters();
    }
}

/// A connection's place in the limit, held by the task that drives the
/// connection: released (and waiters woken) when the connection ends.
pub struct ConnectionSlot {
    permit: Option<OwnedSemaphorePermit>,
    limits: Arc<Limits>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.limits.notify_freed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::outbound::PoolLimits;

    fn limits(c: u32, p: u32, r: u32) -> Arc<Limits> {
        let policy = UpstreamPolicy {
            limits: PoolLimits {
                max_connections: c,
                http1_max_pending_requests: p,
                http2_max_requests: r,
            },
            ..UpstreamPolicy::default()
        };
        Arc::new(Limits::new(&policy))
    }

    #[test]
    fn each_limit_refuses_beyond_its_value_and_frees_on_drop() {
        let l = limits(2, 1, 3);
        let a = l.try_connection().unwrap();
        let _b = l.try_connection().unwrap();
        assert!(l.try_connection().is_none());
        drop(a);
        assert!(l.try_connection().is_some());

        let p = l.pending().unwrap();
        let e = l.pending().unwrap_err();
        assert_eq!(e.code(), "overflow");
        drop(p);
        assert!(l.pending().is_ok());

        let held: Vec<_> = (0..3).map(|_| l.request().unwrap()).collect();
        assert!(matches!(
            l.request(),
            Err(UpstreamError::Overflow {
                kind: OverflowKind::Requests,
                limit: 3
            })
        ));
        drop(held);
        assert!(l.request().is_ok());
    }

    #[tokio::test]
    async fn a_closed_connection_wakes_the_waiters() {
        let l = limits(1, 1, 1);
        let slot = l.try_connection().unwrap();
        let waiter = async {
            let freed = l.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if l.try_connection().is_some() {
                return true;
            }
            freed.await;
            l.try_connection().is_some()
        };
        let release = async {
            tokio::task::yield_now().await;
            drop(slot);
        };
        let bounded = tokio::time::timeout(std::time::Duration::from_secs(5), waiter);
        let (woken, ()) = tokio::join!(bounded, release);
        assert!(woken.expect("the waiter is woken, not left waiting"));
    }
}
