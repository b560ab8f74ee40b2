//! Counting and splicing bytes. Every downstream connection's socket is
//! wrapped in [`Counted`], so its bytes are counted as they move (a
//! cancelled connection is still counted). CONNECT tunnels, upgrades,
//! PASSTHROUGH and TCP relays all copy through [`splice`], which propagates
//! half-close and ends a splice on which nothing has moved for the idle
//! timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes moved on one downstream connection.
#[derive(Debug, Default)]
pub struct ByteCounts {
    /// Read from the client.
    pub received: AtomicU64,
    /// Written to the client.
    pub sent: AtomicU64,
}

impl ByteCounts {
    fn total(&self) -> u64 {
        self.received.load(Ordering::Relaxed) + self.sent.load(Ordering::Relaxed)
    }
}

/// Istio's default TCP idle timeout (DestinationRule
/// `connectionPool.tcp.idleTimeout`, Envoy's `tcp_proxy` 1 h).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How a splice ended.
#[derive(Debug, PartialEq, Eq)]
pub enum SpliceEnd {
    /// Both sides closed (each direction finished with a half-close).
    Closed,
    /// Nothing moved in either direction for the idle timeout.
    Idle,
    /// A read or write failed (a reset, usually).
    Error(io::ErrorKind),
}

impl SpliceEnd {
    /// The connection's close flag: empty for a normal close.
    pub fn flag(&self) -> &'static str {
        match self {
            SpliceEnd::Closed => "",
            SpliceEnd::Idle => "idle_timeout",
            SpliceEnd::Error(_) => "connection_reset",
        }
    }
}

/// Copies both ways between `downstream` (the client, whose bytes `counts`
/// counts) and `upstream` until both directions are done or nothing moves
/// for `idle`.
pub async fn splice<D, U>(
    counts: &ByteCounts,
    downstream: D,
    upstream: U,
    idle: Duration,
) -> SpliceEnd
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut down, mut up) = (downstream, upstream);
    let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
    tokio::pin!(copy);
    // Checked a few times per idle period: a splice closes between `idle`
    // and 1.25 × `idle` after the last byte.
    let tick = (idle / 4).max(Duration::from_millis(10));
    let mut last = counts.total();
    let mut quiet = Duration::ZERO;
    loop {
        tokio::select! {
            r = &mut copy => return match r {
                Ok(_) => SpliceEnd::Closed,
                Err(e) => SpliceEnd::Error(e.kind()),
            },
            () = tokio::time::sleep(tick) => {
                let now = counts.total();
                if now == last {
                    quiet += tick;
                    if quiet >= idle {
                        return SpliceEnd::Idle;
                    }
                } else {
                    last = now;
                    quiet = Duration::ZERO;
                }
            }
        }
    }
}

/// An IO whose reads count as received and writes as sent.
pub struct Counted<T> {
    inner: T,
    counts: Arc<ByteCounts>,
}

impl<T> Counted<T> {
    /// Counts `inner`'s bytes into `counts`.
    pub fn new(inner: T, counts: Arc<ByteCounts>) -> Counted<T> {
        Counted { inner, counts }
    }

    /// The wrapped IO.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.counts.received.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.counts.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.counts.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn counts_both_ways_and_carries_half_close() {
        let (client, down) = duplex(1024);
        let (up, server) = duplex(1024);
        let counts = Arc::new(ByteCounts::default());
        let down = Counted::new(down, counts.clone());
        let relay = splice(&counts, down, up, Duration::from_secs(60));
        let peers = async {
            let (mut client, mut server) = (client, server);
            client.write_all(b"hello").await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello", "the client's half-close reached the server");
            // The other direction still works after the half-close.
            server.write_all(b"world!").await.unwrap();
            server.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, b"world!");
        };
        let (end, ()) = tokio::join!(relay, peers);
        assert_eq!(end, SpliceEnd::Closed);
        assert_eq!(counts.received.load(Ordering::Relaxed), 5);
        assert_eq!(counts.sent.load(Ordering::Relaxed), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn ends_when_nothing_moves_for_the_idle_timeout() {
        let (mut client, down) = duplex(1024);
        let (up, _server) = duplex(1024);
        let counts = Arc::new(ByteCounts::default());
        let down = Counted::new(down, counts.clone());
        let idle = Duration::from_secs(100);
        let started = tokio::time::Instant::now();
        let relay = splice(&counts, down, up, idle);
        let talk = async {
            // Traffic at 60 s keeps it open past the first 100 s.
            tokio::time::sleep(Duration::from_secs(60)).await;
            client.write_all(b"x").await.unwrap();
        };
        let (end, ()) = tokio::join!(relay, talk);
        assert_eq!(end, SpliceEnd::Idle);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(160) && took <= Duration::from_secs(60 + 125 + 1),
            "closed {took:?} after start (last byte at 60 s, idle 100 s)"
        );
    }
}
