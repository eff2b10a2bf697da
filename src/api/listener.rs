//! The API's accepted connections, each closed when its peer stops taking a response: a
//! client that sends requests and reads none of the answers would otherwise hold its
//! connection, a file descriptor and a buffered response forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// How long a response may make no progress into the socket (the peer reads nothing)
/// before the connection is closed: a reader that is merely slow moves some bytes in
/// far less.
pub(super) const WRITE_STALL: Duration = Duration::from_secs(10);

/// How long the accept loop pauses after a failed accept (out of file descriptors, say)
/// rather than spinning on the error.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// An accepted connection whose writes fail with `TimedOut` after [`WRITE_STALL`] without
/// progress.
#[derive(Debug)]
pub(super) struct TimedStream {
    inner: TcpStream,
    stall: Option<Pin<Box<Sleep>>>,
}

impl TimedStream {
    /// Registers the stall timer while a write is pending; an error once it ran out.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timer = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
        timer.as_mut().poll(cx).map(|()| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the client has taken no response bytes for too long",
            )
        })
    }

    /// Passes a write's outcome on: progress resets the stall timer, waiting runs it.
    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.stalled(cx).map(Err),
            ready => {
                self.stall = None;
                ready
            }
        }
    }
}

impl AsyncRead for TimedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(cx, polled)
    }
}

/// The connections of `listener`, for `hyper::Server::builder`.
pub(super) fn incoming(
    listener: tokio::net::TcpListener,
) -> impl hyper::server::accept::Accept<Conn = TimedStream, Error = io::Error> {
    let accepted = futures_lite::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((inner, _)) => {
                    let _ = inner.set_nodelay(true);
                    let conn = TimedStream { inner, stall: None };
                    return Some((Ok(conn), listener));
                }
                Err(e) => {
                    tracing::warn!("HTTP API accept failed: {e}");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            }
        }
    });
    hyper::server::accept::from_stream(accepted)
}
