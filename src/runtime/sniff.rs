//! What a captured connection is: its original destination (read from the
//! NAT table) and its protocol (from the first bytes the client sends, as
//! Envoy's `tls_inspector` and `http_inspector` decide it).
//!
//! Sniffing is bounded: the client has `protocolDetectionTimeout` to send
//! anything (silence is TCP: a protocol whose server speaks first), and
//! once it has started, the ClientHello or request line must be whole
//! within the connection's header deadline and [`MAX_SNIFF_BYTES`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::tls::hello::{self, RawSni};

/// Most bytes read before the protocol is decided: a ClientHello (which
/// may span records) or an HTTP request line longer than this is not
/// waited for.
pub const MAX_SNIFF_BYTES: usize = 64 * 1024;

/// The pre-NAT destination of `stream` when a REDIRECT rule sent it here
/// (it differs from the address the connection arrived on); `None` for a
/// connection made to the listener itself.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let sock = socket2::SockRef::from(stream);
    let v4 = match local {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
    };
    let found = if v4 {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    let orig = found.ok()?.as_socket()?;
    let same = |a: SocketAddr, b: SocketAddr| {
        a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
    };
    (!same(orig, local)).then_some(orig)
}

/// The protocol of a captured connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// An HTTP/1.x request line.
    Http,
    /// A TLS ClientHello.
    Tls,
    /// Anything else, or nothing within the detection timeout.
    Tcp,
}

impl Protocol {
    /// The name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tls => "tls",
            Protocol::Tcp => "tcp",
        }
    }
}

/// What the first bytes say so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Decided(Protocol),
    /// A prefix of a ClientHello or of an HTTP request line: read more.
    Pending,
}

/// Reads the first bytes of `stream` and decides its protocol: `detect`
/// bounds the wait for the first byte, `whole` (from the start) the wait
/// for a ClientHello or request line to complete. The bytes read are
/// returned to be replayed. `Err` is the connection's flag (the client
/// closed before sending anything).
pub async fn sniff<S>(
    stream: &mut S,
    detect: Duration,
    whole: Duration,
) -> Result<(Protocol, Vec<u8>), &'static str>
where
    S: AsyncRead + Unpin,
{
    let start = tokio::time::Instant::now();
    let mut first = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        let deadline = if first.is_empty() {
            start + detect
        } else {
            start + whole.max(detect)
        };
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) if first.is_empty() => return Err("downstream_closed"),
            // Closed part way through: what there is goes through as TCP
            // (a ClientHello is still recognised by its record header).
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Ok((settle(&first), first)),
            Ok(Ok(n)) => first.extend_from_slice(&chunk[..n]),
        }
        match classify(&first) {
            Verdict::Decided(p) => return Ok((p, first)),
            Verdict::Pending if first.len() >= MAX_SNIFF_BYTES => {
                return Ok((settle(&first), first));
            }
            Verdict::Pending => {}
        }
    }
}

/// The protocol of bytes that will not grow: a TLS record is TLS (its
/// ClientHello may be cut short or malformed; the server will say so),
/// anything else undecided is TCP.
fn settle(bytes: &[u8]) -> Protocol {
    if bytes.len() >= 2 && bytes[0] == 0x16 && bytes[1] == 0x03 {
        Protocol::Tls
    } else {
        Protocol::Tcp
    }
}

fn classify(bytes: &[u8]) -> Verdict {
    match bytes.first() {
        None => Verdict::Pending,
        Some(0x16) => classify_tls(bytes),
        Some(_) => classify_http(bytes),
    }
}

fn classify_tls(bytes: &[u8]) -> Verdict {
    if bytes.len() < 2 {
        return Verdict::Pending;
    }
    if bytes[1] != 0x03 {
        return Verdict::Decided(Protocol::Tcp);
    }
    // A ClientHello not yet whole (it may span records): wait, unless it
    // cannot be one (another handshake message first).
    if hello::raw_server_name(bytes) == RawSni::Unreadable {
        let record_end = 5 + usize::from(u16::from_be_bytes([
            *bytes.get(3).unwrap_or(&0),
            *bytes.get(4).unwrap_or(&0),
        ]));
        if bytes.len() < 6 || bytes.len() < record_end || bytes[5] == 1 {
            return Verdict::Pending;
        }
    }
    Verdict::Decided(Protocol::Tls)
}

/// An HTTP/1.x request line: `token SP target SP HTTP/1.d CRLF`.
fn classify_http(bytes: &[u8]) -> Verdict {
    const TOKEN: &[u8] = b"!#$%&'*+-.^_`|~";
    let is_token = |b: u8| b.is_ascii_alphanumeric() || TOKEN.contains(&b);
    let line_end = bytes.iter().position(|&b| b == b'\n');
    let line = &bytes[..line_end.unwrap_or(bytes.len())];
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    if method.is_empty() && line_end.is_none() {
        return Verdict::Pending;
    }
    if method.is_empty() || !method.iter().all(|&b| is_token(b)) {
        return Verdict::Decided(Protocol::Tcp);
    }
    let Some(target) = parts.next() else {
        return pending_or_tcp(line_end);
    };
    if target.iter().any(|&b| b.is_ascii_control()) {
        return Verdict::Decided(Protocol::Tcp);
    }
    let Some(version) = parts.next() else {
        return pending_or_tcp(line_end);
    };
    let version = version.strip_suffix(b"\r").unwrap_or(version);
    const HTTP1: &[u8] = b"HTTP/1.";
    match line_end {
        None if version.len() <= HTTP1.len() => {
            if HTTP1.starts_with(version) {
                Verdict::Pending
            } else {
                Verdict::Decided(Protocol::Tcp)
            }
        }
        None if version.len() == HTTP1.len() + 1
            && version.starts_with(HTTP1)
            && version[HTTP1.len()].is_ascii_digit() =>
        {
            Verdict::Pending
        }
        None => Verdict::Decided(Protocol::Tcp),
        Some(_) => {
            let ok = version.len() == HTTP1.len() + 1
                && version.starts_with(HTTP1)
                && version[HTTP1.len()].is_ascii_digit();
            Verdict::Decided(if ok { Protocol::Http } else { Protocol::Tcp })
        }
    }
}

fn pending_or_tcp(line_end: Option<usize>) -> Verdict {
    match line_end {
        None => Verdict::Pending,
        Some(_) => Verdict::Decided(Protocol::Tcp),
    }
}

/// A stream whose first reads give back bytes already read from it.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, read from `prefix` first.
    pub fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }

    /// Whether bytes read earlier are still to be given back.
    pub fn buffered(&self) -> bool {
        self.at < self.prefix.len()
    }

    /// The stream under the prefix.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ClientHello, as rustls writes it.
    fn client_hello(name: &str) -> Vec<u8> {
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    fn verdict(bytes: &[u8]) -> Verdict {
        classify(bytes)
    }

    #[test]
    fn request_lines_are_http_once_whole() {
        for line in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /upload?x=1 HTTP/1.0\r\nHost: a\r\n",
            b"OPTIONS * HTTP/1.1\n",
            b"GET http://api.example.com/ HTTP/1.1\r\n",
        ] {
            assert_eq!(verdict(line), Verdict::Decided(Protocol::Http), "{line:?}");
        }
        for prefix in [
            &b"G"[..],
            b"GET",
            b"GET ",
            b"GET /a",
            b"GET / ",
            b"GET / HTTP/",
            b"GET / HTTP/1.1",
            b"GET / HTTP/1.1\r",
        ] {
            assert_eq!(verdict(prefix), Verdict::Pending, "{prefix:?}");
        }
    }

    #[test]
    fn other_first_bytes_are_tcp() {
        for bytes in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"GET / SPDY/3\r\n",
            b"GET /\x01 HTTP/1.1\r\n",
            b"HELO mail\r\n",
            b" GET / HTTP/1.1\r\n",
            b"\x16\x01\x00",
        ] {
            assert_eq!(verdict(bytes), Verdict::Decided(Protocol::Tcp), "{bytes:?}");
        }
    }

    #[test]
    fn a_client_hello_is_tls_once_whole() {
        let hello = client_hello("api.example.com");
        assert_eq!(verdict(&hello), Verdict::Decided(Protocol::Tls));
        for cut in [1, 3, 5, 9, hello.len() - 1] {
            assert_eq!(verdict(&hello[..cut]), Verdict::Pending, "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn silence_is_tcp_after_the_detection_timeout() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let sniffed = sniff(
            &mut server,
            Duration::from_millis(20),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(sniffed, Ok((Protocol::Tcp, Vec::new())));
        use tokio::io::AsyncWriteExt as _;
        client.write_all(b"x").await.unwrap();
    }

    #[tokio::test]
    async fn a_request_line_in_pieces_is_read_whole_then_replayed() {
        use tokio::io::AsyncWriteExt as _;
        let (mut client, mut server) = tokio::io::duplex(1024);
        let writer = async {
            client.write_all(b"GET /pa").await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            client
                .write_all(b"th HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap();
        };
        let reader = sniff(
            &mut server,
            Duration::from_millis(20),
            Duration::from_secs(5),
        );
        let ((), sniffed) = tokio::join!(writer, reader);
        let (protocol, first) = sniffed.unwrap();
        assert_eq!(
            protocol,
            Protocol::Http,
            "the detection timeout bounds only the first byte"
        );
        let mut replay = Prefixed::new(first, server);
        let mut line = vec![0u8; 18];
        replay.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"GET /path HTTP/1.1");
    }

    #[tokio::test]
    async fn a_client_that_closes_at_once_is_flagged() {
        let (client, mut server) = tokio::io::duplex(1024);
        drop(client);
        let sniffed = sniff(&mut server, Duration::from_secs(1), Duration::from_secs(1)).await;
        assert_eq!(sniffed, Err("downstream_closed"));
    }
}
