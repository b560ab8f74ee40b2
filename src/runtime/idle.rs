//! Idle HTTP/1.1 connections without HTTP state.
//!
//! hyper keeps a read buffer and a write buffer (8 KiB each) and its
//! connection state for as long as a connection lives, idle or not: most of
//! what an idle keep-alive connection costs. Here an HTTP/1.1 connection is
//! served as a series of hyper *sessions* on one socket: once nothing has
//! been in flight for [`PARK_AFTER`] (longer for a client that keeps coming
//! back soon after: [`next_park_after`]), the session is asked to end
//! between requests, its socket is taken back with whatever bytes hyper
//! read but had not used, and the connection waits for the client's next
//! bytes with no HTTP state and no read buffer (TLS keeps only its own
//! record state).
//! A new session starts on them, the unused bytes replayed first.
//!
//! A session ends with `graceful_shutdown`, which hyper honours between
//! requests by closing; [`Parked`] keeps the socket open through that close
//! (only while the session is being parked), and `into_parts` returns it
//! with the unparsed bytes. A request in progress is never cut: hyper ends
//! the session after it, and its response was written before (a session is
//! only asked to end when no request is in flight, so no `connection: close`
//! is added to any response).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::runtime::conn::Connection;
use crate::runtime::copy::Counted;
use crate::runtime::sniff::Prefixed;

/// How long an HTTP/1.1 connection first has nothing in flight before its
/// HTTP state is released. Back-to-back keep-alive requests never wait
/// this long, so they keep one session; a connection idle between bursts
/// pays one session set-up (two buffer allocations) when it is used again.
pub const PARK_AFTER: Duration = Duration::from_millis(250);

/// The longest a connection waits before its HTTP state is released. A
/// client that keeps coming back soon after its connection was parked
/// (a request every second on each of many connections) doubles its wait
/// up to this, so it keeps one session instead of paying a set-up per
/// request.
pub const PARK_AFTER_MAX: Duration = Duration::from_secs(4);

/// The wait before the next park, for a connection parked after `current`
/// that was used again after `parked_for`: back within four times its wait
/// (it was parked too early), twice the wait, up to [`PARK_AFTER_MAX`];
/// otherwise (really idle) [`PARK_AFTER`] again. Never above `limit`.
pub fn next_park_after(current: Duration, parked_for: Duration, limit: Duration) -> Duration {
    let next = if parked_for < current * 4 {
        (current * 2).min(PARK_AFTER_MAX)
    } else {
        PARK_AFTER
    };
    next.min(limit)
}

/// The longest a session may wait before it is parked, for a request-head
/// timeout of `header_timeout`: hyper starts that timer when it waits for
/// the next head, so an idle session must be parked well before it fires
/// (a parked connection has no timer; the next head starts one).
pub fn park_limit(header_timeout: Duration) -> Duration {
    header_timeout / 2
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A downstream socket (plain or TLS) that can wait for the client's next
/// bytes without reading them.
pub trait Park {
    /// Whether input is already waiting above the socket (decrypted TLS
    /// data, the peer's `close_notify`, a TLS error to report), so a read
    /// would not block.
    fn has_input(&mut self) -> bool;
    /// Ready when the socket has bytes, EOF or an error to read.
    fn poll_socket_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Park for Counted<TcpStream> {
    fn has_input(&mut self) -> bool {
        false
    }

    fn poll_socket_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().poll_read_ready(cx)
    }
}

impl Park for tokio_rustls::server::TlsStream<Counted<TcpStream>> {
    fn has_input(&mut self) -> bool {
        let (_, tls) = self.get_mut();
        match tls.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
            // Reading reports it.
            Err(_) => true,
        }
    }

    fn poll_socket_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.get_ref().poll_read_ready(cx)
    }
}

/// A captured connection whose first bytes were read to sniff it.
impl<S: Park> Park for Prefixed<S> {
    fn has_input(&mut self) -> bool {
        self.buffered() || self.get_mut().has_input()
    }

    fn poll_socket_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_socket_readable(cx)
    }
}

/// A stream moved through a connection's futures as a pointer, so each
/// future that holds it on the way keeps a pointer's room, not the
/// stream's (a TLS stream is over a KiB).
impl<S: Park + ?Sized> Park for Box<S> {
    fn has_input(&mut self) -> bool {
        (**self).has_input()
    }

    fn poll_socket_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_socket_readable(cx)
    }
}

/// What a connection's sessions and its time bounds share.
#[derive(Default)]
pub struct ParkCtl {
    /// Set while the current session is being parked: its closing
    /// shutdown leaves the socket open.
    keep_open: AtomicBool,
    /// The connection was asked to finish (idle timeout, drain).
    closing: AtomicBool,
    wake: Notify,
}

impl AsRef<ParkCtl> for ParkCtl {
    fn as_ref(&self) -> &ParkCtl {
        self
    }
}

impl ParkCtl {
    /// Asks the connection to finish gracefully: the session in progress
    /// ends after its request; a parked connection is closed.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.keep_open.store(false, Ordering::Release);
        self.wake.notify_one();
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Ready once [`ParkCtl::close`] was called.
    pub async fn closed(&self) {
        while !self.closing() {
            self.wake.notified().await;
        }
    }
}

/// The socket a session runs on: bytes read earlier are replayed first,
/// and a shutdown while the session is being parked is left undone.
pub struct Parked<IO, C> {
    io: IO,
    prefix: Bytes,
    ctl: Arc<C>,
}

impl<IO, C: AsRef<ParkCtl>> Parked<IO, C> {
    /// `io` with nothing read yet.
    pub fn new(io: IO, ctl: Arc<C>) -> Self {
        Parked {
            io,
            prefix: Bytes::new(),
            ctl,
        }
    }
}

impl<IO: AsyncRead + Unpin, C: Unpin> AsyncRead for Parked<IO, C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin, C: AsRef<ParkCtl> + Unpin> AsyncWrite for Parked<IO, C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if (*self.ctl).as_ref().keep_open.load(Ordering::Acquire) {
            // The session is being parked: flush what it wrote, keep the
            // socket.
            return Pin::new(&mut self.io).poll_flush(cx);
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The protocol a connection without ALPN speaks, from its first bytes.
pub enum Detected {
    /// The client closed before sending anything.
    Closed,
    /// The HTTP/2 preface (prior knowledge).
    H2,
    /// Anything else: HTTP/1.x.
    H1,
}

/// Waits for the client's first bytes and reads just enough of them to
/// tell HTTP/2's preface from HTTP/1.x; what was read is replayed to the
/// session.
pub async fn detect<IO, C>(io: &mut Parked<IO, C>) -> io::Result<Detected>
where
    IO: Park + AsyncRead + Unpin,
    C: Unpin,
{
    let mut head = BytesMut::new();
    let mut chunk = [0u8; H2_PREFACE.len()];
    while head.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&head) {
        if !io.io.has_input() {
            poll_fn(|cx| io.io.poll_socket_readable(cx)).await?;
        }
        let want = H2_PREFACE.len() - head.len();
        let n = io.io.read(&mut chunk[..want]).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let detected = if head.is_empty() {
        Detected::Closed
    } else if head[..] == H2_PREFACE[..] {
        Detected::H2
    } else {
        Detected::H1
    };
    io.prefix = head.freeze();
    Ok(detected)
}

/// Serves HTTP/1.1 on `io` until the connection ends, releasing hyper's
/// state whenever nothing has been in flight for [`PARK_AFTER`], or longer
/// for a client that comes back soon after each park ([`next_park_after`],
/// never above `limit`: see [`park_limit`]; and the module). `record` tells when requests start and end; `io.ctl` carries
/// the request to finish ([`ParkCtl::close`]).
///
/// Before a session's first request hyper counts as busy, so a session
/// is parked only once it has served one; the socket is read only when it
/// has bytes, so a new session starts with a request arriving.
pub async fn serve_h1<IO, C, S>(
    mut io: Parked<IO, C>,
    builder: http1::Builder,
    service: S,
    record: Arc<Connection>,
    limit: Duration,
) -> Result<(), hyper::Error>
where
    IO: Park + AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: AsRef<ParkCtl> + Send + Sync + Unpin + 'static,
    S: HttpService<Incoming> + Clone,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let shared = io.ctl.clone();
    let ctl: &ParkCtl = (*shared).as_ref();
    let mut park_after = PARK_AFTER.min(limit);
    // When the last session was parked.
    let mut parked_at: Option<Instant> = None;
    loop {
        // Idle: wait for the client with no HTTP state.
        if io.prefix.is_empty() {
            // TLS records the last session left queued (none, usually).
            if io.io.flush().await.is_err() {
                return Ok(());
            }
            if !io.io.has_input() {
                // An error is reported by the session's first read.
                tokio::select! {
                    biased;
                    () = ctl.wake.notified() => {}
                    _ = poll_fn(|cx| io.io.poll_socket_readable(cx)) => {}
                }
                if ctl.closing() {
                    let _ = io.io.shutdown().await;
                    return Ok(());
                }
            }
        }
        if let Some(at) = parked_at.take() {
            park_after = next_park_after(park_after, at.elapsed(), limit);
        }
        let mut session = Box::pin(
            builder
                .serve_connection(TokioIo::new(io), service.clone())
                .with_upgrades(),
        );
        // A session is parked only after it has served a request: hyper
        // is then between requests (before its first one, asking it to end
        // would instead end the connection after that request).
        let served_before = record.activity().requests;
        let mut parking = false;
        let mut closing = false;
        let result = loop {
            let activity = record.activity();
            let park_at = if activity.in_flight == 0 && activity.requests > served_before {
                Instant::from_std(activity.last) + park_after
            } else {
                Instant::now() + park_after
            };
            tokio::select! {
                r = session.as_mut() => break r,
                () = ctl.wake.notified(), if !closing => {
                    if ctl.closing() {
                        closing = true;
                        session.as_mut().graceful_shutdown();
                    }
                }
                () = tokio::time::sleep_until(park_at), if !parking && !closing => {
                    let activity = record.activity();
                    if activity.in_flight == 0
                        && activity.requests > served_before
                        && Instant::now() >= Instant::from_std(activity.last) + park_after
                        && !ctl.closing()
                    {
                        parking = true;
                        ctl.keep_open.store(true, Ordering::Release);
                        session.as_mut().graceful_shutdown();
                    }
                }
            }
        };
        let kept = ctl.keep_open.swap(false, Ordering::AcqRel);
        result?;
        // `None`: upgraded (the socket went with the upgrade).
        let Some(parts) = Pin::into_inner(session).into_parts() else {
            return Ok(());
        };
        let mut next = parts.io.into_inner();
        if !kept {
            // hyper ended the connection itself (the client closed, asked
            // to close, or the connection is finishing) and shut it down.
            return Ok(());
        }
        if ctl.closing() {
            let _ = next.shutdown().await;
            return Ok(());
        }
        parked_at = Some(Instant::now());
        // Bytes hyper read but did not parse, then any it was not given.
        next.prefix = match (parts.read_buf.is_empty(), next.prefix.is_empty()) {
            (true, _) => next.prefix,
            (false, true) => parts.read_buf,
            (false, false) => {
                let mut both = BytesMut::from(&parts.read_buf[..]);
                both.extend_from_slice(&next.prefix);
                both.freeze()
            }
        };
        io = next;
    }
}

#[cfg(test)]
mod tests {
    use super::{PARK_AFTER, PARK_AFTER_MAX, park_limit};
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);

    /// With Envoy's default request-head timeout (10 s), no limit.
    fn next_park_after(current: Duration, parked_for: Duration) -> Duration {
        super::next_park_after(current, parked_for, park_limit(Duration::from_secs(10)))
    }

    #[test]
    fn a_client_back_soon_after_each_park_is_parked_later_up_to_the_maximum() {
        // A request every 800 ms: parked at 250 ms, back 550 ms later.
        let mut wait = PARK_AFTER;
        wait = next_park_after(wait, 550 * MS);
        assert_eq!(wait, 500 * MS);
        wait = next_park_after(wait, 300 * MS);
        assert_eq!(wait, 1000 * MS);
        // 800 ms gaps no longer reach the wait: one session from here on.
        for _ in 0..10 {
            wait = next_park_after(wait, wait);
        }
        assert_eq!(wait, PARK_AFTER_MAX);
    }

    #[test]
    fn a_connection_really_idle_goes_back_to_the_first_wait() {
        assert_eq!(next_park_after(PARK_AFTER, 60_000 * MS), PARK_AFTER);
        assert_eq!(next_park_after(PARK_AFTER_MAX, 16_000 * MS), PARK_AFTER);
        assert_eq!(next_park_after(2000 * MS, 7_999 * MS), 4000 * MS);
    }

    #[test]
    fn a_session_is_parked_before_the_request_head_timeout_fires() {
        let limit = park_limit(Duration::from_millis(500));
        assert_eq!(
            super::next_park_after(PARK_AFTER, 300 * MS, limit),
            250 * MS
        );
        assert_eq!(super::next_park_after(250 * MS, 300 * MS, limit), 250 * MS);
    }
}
