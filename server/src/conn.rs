//! Connections: how many the listeners keep open together, and how long a
//! client may take to send a request's headers.
//!
//! Both listeners share one budget of connections ([`Connections`]): a
//! connection past it waits, accepted, until another closes, so that idle
//! or slow clients cannot take every file descriptor the process has (and
//! `/healthz` with them). On HTTP, a client that does not send a whole
//! request head within the header timeout (a slowloris, or a keep-alive
//! connection left idle) is disconnected; on gRPC, HTTP/2 keep-alive pings
//! close connections whose peer went away.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The default of `limits.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The default of `limits.header_timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The connections both listeners may hold open together.
#[derive(Clone)]
pub struct Connections {
    open: Arc<Semaphore>,
    /// The most at once.
    pub limit: usize,
}

impl Connections {
    /// A budget of `limit` connections.
    pub fn new(limit: usize) -> Connections {
        let limit = limit.max(1);
        Connections {
            open: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.limit - self.open.available_permits()
    }

    /// Waits for room, then counts `stream` as open until it is dropped.
    pub async fn admit(&self, stream: TcpStream) -> io::Result<Counted> {
        // Small replies must not wait for Nagle's algorithm to meet the
        // client's delayed ACK (a 40 ms stall per request otherwise).
        let _ = stream.set_nodelay(true);
        if self.open.available_permits() == 0 {
            tracing::warn!(
                limit = self.limit,
                "Every connection the server allows is open; new ones wait (limits.max_connections)."
            );
        }
        let permit = Arc::clone(&self.open)
            .acquire_owned()
            .await
            .map_err(|_| io::Error::other("the server is stopping"))?;
        Ok(Counted {
            stream,
            _permit: permit,
        })
    }
}

/// A connection counted against [`Connections`] while it lives.
pub struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// The HTTP listener's acceptor (`axum_server`): counts each connection.
impl<S: Send + 'static> axum_server::accept::Accept<TcpStream, S> for Connections {
    type Stream = Counted;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Counted, S)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let connections = self.clone();
        Box::pin(async move { Ok((connections.admit(stream).await?, service)) })
    }
}
