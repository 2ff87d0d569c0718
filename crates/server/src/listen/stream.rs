//! The byte stream of one accepted connection, plain TCP or TLS, and the hook
//! through which TLS plugs in.
//!
//! Owns: [`ConnStream`] (what hyper and the WebSocket codec read and write) and
//! the [`TlsAcceptor`] trait the TLS module implements. With no acceptor
//! configured (`Shared::tls` is `None`) a connection is plain TCP and has no
//! channel binding. Must not: know certificates or rustls (the TLS module does).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Anything a connection can run over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// An accepted connection's stream.
pub enum ConnStream {
    Tcp(TcpStream),
    /// A TLS session (or any other wrapped stream) over the TCP connection.
    Wrapped(Box<dyn Io>),
}

impl std::fmt::Debug for ConnStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnStream::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            ConnStream::Wrapped(_) => f.write_str("Wrapped"),
        }
    }
}

/// What a TLS handshake yields.
pub struct Secured {
    pub stream: ConnStream,
    /// The RFC 9266 `tls-exporter` value (TLS 1.3 only) for channel binding (§3).
    pub channel_binding: Option<[u8; 32]>,
}

/// A future returned by [`TlsAcceptor::accept`].
pub type AcceptFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Secured>> + Send + 'a>>;

/// Server-side TLS, implemented by the TLS module. The handshake runs under the
/// connection's request-head deadline (a peer that never finishes it holds only
/// its socket until then).
pub trait TlsAcceptor: Send + Sync + std::fmt::Debug {
    fn accept(&self, tcp: TcpStream) -> AcceptFuture<'_>;
}

impl AsyncRead for ConnStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ConnStream::Wrapped(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ConnStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ConnStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            ConnStream::Wrapped(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ConnStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ConnStream::Wrapped(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ConnStream::Tcp(s) => s.is_write_vectored(),
            ConnStream::Wrapped(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            ConnStream::Wrapped(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            ConnStream::Wrapped(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
