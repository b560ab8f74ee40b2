//! One shutdown for every task a worker runs: connection tasks (and what
//! they spawn: tunnels, upgrades, splices) and the tasks that drive pooled
//! upstream connections.
//!
//! At shutdown listeners stop accepting and HTTP connections finish their
//! current request (graceful); whatever is still open when the drain limit
//! (`terminationDrainDuration`, one setting in the bootstrap) has passed is
//! closed, which drops its guards, so it is still logged and counted. Then
//! the pooled upstream connections are closed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

/// A worker's tasks and the signals that end them. Cheap to clone.
#[derive(Clone)]
pub struct Drain {
    /// Connection tasks and everything they spawn.
    tasks: TaskTracker,
    /// Tasks driving pooled upstream connections.
    upstream: TaskTracker,
    /// Cancelled at shutdown: stop accepting, finish gracefully.
    shutdown: CancellationToken,
    /// Cancelled when the drain limit has passed: close what is left.
    force: CancellationToken,
    /// Cancelled once connections are gone: close pooled upstreams.
    upstream_stop: CancellationToken,
    /// How long connections may finish after shutdown.
    limit: Duration,
}

impl Drain {
    /// A drain that starts when `shutdown` is cancelled and closes what is
    /// left after `limit`.
    pub fn new(shutdown: CancellationToken, limit: Duration) -> Drain {
        Drain {
            tasks: TaskTracker::new(),
            upstream: TaskTracker::new(),
            shutdown,
            force: CancellationToken::new(),
            upstream_stop: CancellationToken::new(),
            limit,
        }
    }

    /// Cancelled when shutdown begins.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Runs connection work `fut` as a tracked task; if it is still
    /// running at the drain limit, `on_force` runs and `fut` is dropped
    /// (its guards write their records).
    pub fn spawn<F>(&self, fut: F, on_force: impl FnOnce() + Send + 'static)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(Until {
            fut,
            stop: self.force.clone().cancelled_owned(),
            on_stop: Some(on_force),
        });
    }

    /// Runs the task driving an upstream connection; it ends with the
    /// connection, or once every downstream connection is gone after
    /// shutdown.
    pub fn spawn_upstream<F>(&self, fut: F)
    where
        F: Future + Send + 'static,
    {
        self.upstream.spawn(Until {
            fut,
            stop: self.upstream_stop.clone().cancelled_owned(),
            on_stop: Some(|| {}),
        });
    }

    /// Waits for shutdown, then drains: connections get up to the limit,
    /// then the rest are closed, then the upstream connections.
    pub async fn run(self) {
        self.shutdown.cancelled().await;
        self.tasks.close();
        if tokio::time::timeout(self.limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::info!(
                open = self.tasks.len(),
                limit = ?self.limit,
                "drain limit reached; closing the remaining connections"
            );
            self.force.cancel();
            self.tasks.wait().await;
        }
        self.upstream_stop.cancel();
        self.upstream.close();
        self.upstream.wait().await;
    }
}

pin_project_lite::pin_project! {
    /// `fut` (its output ignored) until `stop`: then `on_stop` runs and
    /// `fut` is dropped with the task. A task lives as long as its
    /// connection, so this holds `fut` once (an `async` block selecting
    /// on it would hold it twice: as the value it captured and as the
    /// future it polls).
    struct Until<F, G> {
        #[pin]
        fut: F,
        #[pin]
        stop: WaitForCancellationFutureOwned,
        on_stop: Option<G>,
    }
}

impl<F: Future, G: FnOnce()> Future for Until<F, G> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.fut.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if this.stop.poll(cx).is_ready() {
            if let Some(on_stop) = this.on_stop.take() {
                on_stop();
            }
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_task_holds_its_work_once() {
        let work = async {
            let held = [1u8; 1024];
            tokio::task::yield_now().await;
            std::hint::black_box(&held);
        };
        let alone = std::mem::size_of_val(&work);
        let until = Until {
            fut: work,
            stop: CancellationToken::new().cancelled_owned(),
            on_stop: Some(|| {}),
        };
        // The work, the stop signal and the closure: not the work twice.
        let task = std::mem::size_of_val(&until);
        assert!(alone >= 1024 && task < alone + 256, "{alone} -> {task}");
    }

    #[tokio::test(start_paused = true)]
    async fn work_finishes_within_the_limit_or_is_stopped_there() {
        let shutdown = CancellationToken::new();
        let drain = Drain::new(shutdown.clone(), Duration::from_secs(5));
        let forced = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        for secs in [1, 3, 60] {
            let (forced, finished) = (forced.clone(), finished.clone());
            drain.spawn(
                async move {
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                },
                move || {
                    forced.fetch_add(1, Ordering::SeqCst);
                },
            );
        }
        let upstream_closed = Arc::new(AtomicUsize::new(0));
        let closed = upstream_closed.clone();
        drain.spawn_upstream(async move {
            // A pooled connection: open until told to stop.
            struct Closed(Arc<AtomicUsize>);
            impl Drop for Closed {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            let _c = Closed(closed);
            std::future::pending::<()>().await;
        });
        let started = tokio::time::Instant::now();
        shutdown.cancel();
        drain.clone().run().await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(5),
            "the limit, no more"
        );
        assert_eq!(finished.load(Ordering::SeqCst), 2, "1 s and 3 s finished");
        assert_eq!(forced.load(Ordering::SeqCst), 1, "the 60 s one was stopped");
        assert_eq!(upstream_closed.load(Ordering::SeqCst), 1, "then the pools");
    }
}
