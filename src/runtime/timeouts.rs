//! Time bounds of a downstream HTTP connection, beyond hyper's own timer
//! for request heads:
//!
//! - the first request: a connection that has not sent a whole request
//!   head within `requestHeaderTimeout` of being served is closed, whatever
//!   its protocol (an HTTP/2 preface alone, or nothing at all, included);
//! - idle: a connection with no request in flight for `idleTimeout`
//!   (Envoy's `common_http_protocol_options.idle_timeout`, 1 h) is asked to
//!   close gracefully (HTTP/2 GOAWAY; HTTP/1.1 closes between requests);
//! - stream idle: a request or response body that moves nothing for
//!   `streamIdleTimeout` (Envoy's `stream_idle_timeout`, 5 min) ends with
//!   an error, which frees the upstream request it feeds. A request whose
//!   body stalls, or whose framing the client breaks, is answered by the
//!   proxy (408 or 400), never blamed on the upstream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::Error as HyperError;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::conn::Connection;
use super::http::{Body, BoxError};
use crate::bootstrap::Bootstrap;

/// The flag of a connection closed before its first request head.
pub const REQUEST_HEADER_TIMEOUT: &str = "request_header_timeout";
/// The flag of a connection closed for having nothing in flight too long.
pub const IDLE_TIMEOUT: &str = "idle_timeout";
/// The flag of a request whose body stalled.
pub const STREAM_IDLE_TIMEOUT: &str = "stream_idle_timeout";

/// A downstream connection's time bounds, from the bootstrap.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From serving to the first request head.
    pub first_request: Duration,
    /// With no request in flight.
    pub idle: Duration,
    /// With nothing moving on one body.
    pub stream_idle: Duration,
}

impl Timeouts {
    /// The bounds the bootstrap sets.
    pub fn of(b: &Bootstrap) -> Timeouts {
        Timeouts {
            first_request: b.request_header_timeout,
            idle: b.idle_timeout,
            stream_idle: b.stream_idle_timeout,
        }
    }
}

/// Drives a served HTTP connection (`conn`, pinned) to its end under its
/// time bounds: closed at once when no request head came in time, asked
/// to finish gracefully (`graceful`) when idle too long or when `stop` is
/// cancelled (the listener removed, shutdown). Errors are logged at debug:
/// a client's reset is normal.
pub async fn serve_bounded<C, E>(
    mut conn: Pin<Box<C>>,
    record: Arc<Connection>,
    timeouts: Timeouts,
    stop: CancellationToken,
    graceful: impl Fn(&mut Pin<Box<C>>),
) where
    C: Future<Output = Result<(), E>> + ?Sized,
    E: ServeError,
{
    let served = Instant::now();
    // Zero turns a bound off, as in Envoy.
    let far = Duration::from_secs(365 * 86_400);
    let or_far = |d: Duration| if d.is_zero() { far } else { d };
    let (first_request, idle) = (or_far(timeouts.first_request), or_far(timeouts.idle));
    // Once asked to finish, the connection is left to do so: drain limits
    // stop it at shutdown, body timeouts stop a stalled stream.
    let mut finishing = false;
    let mut stopping = false;
    let result = loop {
        let activity = record.activity();
        let deadline = if activity.requests == 0 {
            // Also wakes in time to start the idle clock of a connection
            // whose first request comes sooner.
            served + first_request.min(idle)
        } else if activity.in_flight == 0 {
            Instant::from_std(activity.last) + idle
        } else {
            Instant::now() + idle
        };
        tokio::select! {
            r = conn.as_mut() => break r,
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                if !finishing {
                    finishing = true;
                    graceful(&mut conn);
                }
            }
            () = tokio::time::sleep_until(deadline), if !finishing => {
                let now = Instant::now();
                let activity = record.activity();
                if activity.requests == 0 && now >= served + first_request {
                    record.set_flag(REQUEST_HEADER_TIMEOUT);
                    record.metrics().count_timeout(REQUEST_HEADER_TIMEOUT);
                    // Closed at once: a client that never sent a request
                    // is owed nothing more.
                    return;
                }
                if activity.requests > 0
                    && activity.in_flight == 0
                    && now >= Instant::from_std(activity.last) + idle
                {
                    record.set_flag(IDLE_TIMEOUT);
                    record.metrics().count_timeout(IDLE_TIMEOUT);
                    finishing = true;
                    graceful(&mut conn);
                }
            }
        }
    };
    if let Err(e) = result {
        if e.header_timeout() {
            // hyper's own timer for a request head (HTTP/1.1).
            record.set_flag(REQUEST_HEADER_TIMEOUT);
            record.metrics().count_timeout(REQUEST_HEADER_TIMEOUT);
        }
        tracing::debug!(error = %e, "downstream connection ended with an error");
    }
}

/// The error a served connection ends with.
pub trait ServeError: std::fmt::Display {
    /// Whether hyper's request-head timer ended the connection.
    fn header_timeout(&self) -> bool;
}

impl ServeError for HyperError {
    fn header_timeout(&self) -> bool {
        self.is_timeout()
    }
}

impl ServeError for Box<dyn std::error::Error + Send + Sync> {
    fn header_timeout(&self) -> bool {
        self.downcast_ref::<HyperError>()
            .is_some_and(HyperError::is_timeout)
    }
}

/// What went wrong with a request body on its way to the upstream, as seen
/// by the proxy (so the reply names the client's fault, not the upstream).
#[derive(Debug, Clone, Default)]
pub struct BodyFault(Arc<AtomicU8>);

const FAULT_NONE: u8 = 0;
const FAULT_IDLE: u8 = 1;
const FAULT_CLIENT: u8 = 2;

impl BodyFault {
    fn set(&self, fault: u8) {
        let _ = self
            .0
            .compare_exchange(FAULT_NONE, fault, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The client's fault, if its body stalled (408) or was malformed
    /// (400): the status, the stable reason and a message. A stall is
    /// counted here.
    pub fn client_fault(
        &self,
        conn: &Connection,
    ) -> Option<(StatusCode, &'static str, &'static str)> {
        match self.0.load(Ordering::Relaxed) {
            FAULT_IDLE => {
                conn.metrics().count_timeout(STREAM_IDLE_TIMEOUT);
                Some((
                    StatusCode::REQUEST_TIMEOUT,
                    STREAM_IDLE_TIMEOUT,
                    "meshgate: the request body stalled (stream idle timeout)",
                ))
            }
            FAULT_CLIENT => Some((
                StatusCode::BAD_REQUEST,
                "bad_request_body",
                "meshgate: the request body is malformed",
            )),
            _ => None,
        }
    }
}

/// The downstream request body bounded by the stream idle timeout, and the
/// handle that tells why it failed.
pub fn request_body(body: Incoming, timeout: Duration) -> (Body, BodyFault) {
    let fault = BodyFault::default();
    if timeout.is_zero() {
        let watched = fault.clone();
        let body = body.map_err(move |e| {
            watched.set(FAULT_CLIENT);
            BoxError::from(e)
        });
        return (body.boxed(), fault);
    }
    let body = IdleBody {
        inner: body,
        timeout,
        sleep: None,
        last: None,
        fault: Some(fault.clone()),
    };
    (body.boxed(), fault)
}

/// An upstream response body bounded by the stream idle timeout.
pub fn response_body(body: Incoming, timeout: Duration) -> Body {
    if timeout.is_zero() {
        return body.map_err(BoxError::from).boxed();
    }
    IdleBody {
        inner: body,
        timeout,
        sleep: None,
        last: None,
        fault: None,
    }
    .boxed()
}

/// The body did not move within the stream idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("stream idle timeout ({0:?} without data)")]
pub struct StreamIdle(Duration);

/// A body that fails when nothing moves for `timeout`. The timer is made
/// only when the body first has to wait, so bodies that are already there
/// cost nothing.
struct IdleBody {
    inner: Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the body last moved, once it has waited.
    last: Option<Instant>,
    /// Set on failure, for a downstream request body.
    fault: Option<BodyFault>,
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(frame) => {
                    if this.sleep.is_some() {
                        this.last = Some(Instant::now());
                    }
                    if let (Some(Err(_)), Some(fault)) = (&frame, &this.fault) {
                        fault.set(FAULT_CLIENT);
                    }
                    return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
                }
                Poll::Pending => {}
            }
            let timeout = this.timeout;
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The timer fired: idle only if nothing moved since it was set.
            match this.last.take() {
                Some(last) if last + timeout > Instant::now() => {
                    sleep.as_mut().reset(last + timeout);
                }
                _ => {
                    if let Some(fault) = &this.fault {
                        fault.set(FAULT_IDLE);
                    }
                    return Poll::Ready(Some(Err(StreamIdle(timeout).into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
