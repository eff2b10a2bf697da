//! The API's accepted connections, each closed when its peer stops taking a response or
//! sits idle between requests: a client that sends requests and reads none of the answers,
//! or keeps a connection alive and goes away, would otherwise hold a file descriptor (and
//! a buffered response) forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// How long a response may make no progress into the socket (the peer reads nothing)
/// before the connection is closed: a reader that is merely slow moves some bytes in
/// far less.
pub(super) const WRITE_STALL: Duration = Duration::from_secs(10);

/// How long a connection may go with no request in progress and nothing read before it is
/// closed: a kept-alive connection whose client went quiet.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; one more is answered 503 and closed at once. Every
/// connection costs a descriptor of the process, which the journal and the broker
/// connections need too: the API must not be able to take them all.
pub(super) const MAX_CONNECTIONS: usize = 512;

/// What a connection past [`MAX_CONNECTIONS`] gets before it is closed.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 74\r\nconnection: close\r\n\r\n{\"code\":\"SERVICE_UNAVAILABLE\",\"message\":\"too many connections to the API\"}";

/// How long the accept loop pauses after a failed accept (out of file descriptors, say)
/// rather than spinning on the error.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// An accepted connection whose writes fail with `TimedOut` after [`WRITE_STALL`] without
/// progress, and whose reads after [`IDLE_TIMEOUT`] without a byte while no request is in
/// progress.
#[derive(Debug)]
pub(super) struct TimedStream {
    inner: TcpStream,
    stall: Option<Pin<Box<Sleep>>>,
    idle: Option<Pin<Box<Sleep>>>,
    requests: Arc<AtomicUsize>,
    _slot: Slot,
}

/// One of the [`MAX_CONNECTIONS`], given back when the connection closes.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's count of requests in progress, handed to each request (as axum's
/// `ConnectInfo`) so that [`Busy::enter`] marks the time a handler runs, when the
/// connection may read nothing for as long as the request takes.
#[derive(Debug, Clone)]
pub(super) struct Busy(Arc<AtomicUsize>);

impl axum::extract::connect_info::Connected<&TimedStream> for Busy {
    fn connect_info(target: &TimedStream) -> Busy {
        Busy(target.requests.clone())
    }
}

impl Busy {
    /// Counts a request in progress until the guard is dropped.
    pub(super) fn enter(&self) -> BusyGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        BusyGuard(self.0.clone())
    }
}

/// A request in progress; see [`Busy::enter`].
#[derive(Debug)]
pub(super) struct BusyGuard(Arc<AtomicUsize>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() || self.requests.load(Ordering::Relaxed) > 0 {
            self.idle = None;
            return polled;
        }
        let timer = self
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(IDLE_TIMEOUT)));
        timer.as_mut().poll(cx).map(|()| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection was idle for too long",
            ))
        })
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
    let open = Arc::new(AtomicUsize::new(0));
    let accepted = futures_lite::stream::unfold((listener, open), |(listener, open)| async move {
        loop {
            match listener.accept().await {
                Ok((inner, _)) => {
                    if open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
                        open.fetch_sub(1, Ordering::Relaxed);
                        // A fresh socket's send buffer is empty: this never blocks.
                        let _ = inner.try_write(TOO_MANY);
                        continue;
                    }
                    let _ = inner.set_nodelay(true);
                    let conn = TimedStream {
                        inner,
                        stall: None,
                        idle: None,
                        requests: Arc::new(AtomicUsize::new(0)),
                        _slot: Slot(open.clone()),
                    };
                    return Some((Ok(conn), (listener, open)));
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

#[cfg(test)]
mod tests {
    use super::TOO_MANY;

    #[test]
    fn the_refusal_announces_its_own_length() {
        let text = std::str::from_utf8(TOO_MANY).expect("ASCII");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let length = format!("content-length: {}\r\n", body.len());
        assert!(head.contains(length.trim_end()), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(json["code"], "SERVICE_UNAVAILABLE");
    }
}
