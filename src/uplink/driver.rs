//! The glommio driver of an [`UplinkSession`]: one TCP connection to the broker per shard.
//!
//! The driver task owns the socket and moves bytes; all protocol decisions are the
//! session's. Producers on the same executor call [`UplinkHandle::publish`], which queues
//! into the session and wakes the driver.
//!
//! # Waking
//!
//! A [`Wake`] is a flag plus the parked task's waker, both in `Cell`s: `notify` sets the
//! flag and wakes the task only when the flag goes from clear to set, so a burst of
//! publishes between two driver turns costs one wake-up, with no allocation, lock or
//! atomic. The driver waits on everything at once in one `poll_fn`: socket writable (while
//! a batch is being written), socket readable, the wake flag, and the session's timer.
//!
//! # Reconnect and flush
//!
//! A failed connect or a lost connection is retried after an exponential backoff (from
//! [`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`], with jitter); the warning is rate limited.
//! [`UplinkHandle::flush`] asks the driver to write until the session is idle or the
//! deadline passes, then send DISCONNECT and stop.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt, Future};
use glommio::net::TcpStream;
use glommio::timer::Timer;

use super::session::{Outgoing, SessionOptions, UplinkSession, UplinkStats};
use crate::config::{MqttConfig, Qos};

/// First reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest reconnect delay: an outage is noticed within seconds of the broker's return.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How long a TCP connect may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest interval between two "broker unreachable" warnings of one shard.
pub const UNREACHABLE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Bytes read from the socket per read call.
const READ_CHUNK: usize = 64 * 1024;

/// How long the final DISCONNECT may take to write during a flush.
const DISCONNECT_WRITE_TIMEOUT: Duration = Duration::from_millis(500);

/// A flag plus a parked waker; see the module documentation.
#[derive(Default)]
struct Wake {
    set: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wake")
            .field("set", &self.set.get())
            .finish_non_exhaustive()
    }
}

impl Wake {
    fn notify(&self) {
        if !self.set.replace(true) {
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    fn poll(&self, cx: &Context<'_>) -> Poll<()> {
        if self.set.replace(false) {
            return Poll::Ready(());
        }
        self.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// State shared by the driver task and the handle (same executor, so `Rc` and `Cell`).
#[derive(Debug)]
struct Shared {
    session: RefCell<UplinkSession>,
    target: String,
    /// Producers → driver: something to send, or flush requested.
    to_driver: Wake,
    /// Driver → consumer: commands arrived.
    incoming: Wake,
    /// Receive loops waiting for the broker to catch up ([`UplinkHandle::uncongested`]).
    relieved: RefCell<Vec<Waker>>,
    /// Set by [`UplinkHandle::flush`]: drain, disconnect and stop by then.
    flush_deadline: Cell<Option<Instant>>,
    /// PUBLISH/control packets per socket write since the last
    /// [`UplinkHandle::take_batch_histogram`].
    batch_sizes: RefCell<hdrhistogram::Histogram<u64>>,
}

/// Largest batch recorded; `mqtt.max_batch` is bounded far below.
const MAX_RECORDED_BATCH: u64 = 1 << 20;

fn batch_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, MAX_RECORDED_BATCH, 2)
        .expect("static histogram bounds are valid")
}

/// The shard's handle on its uplink; dropping it stops the driver.
#[derive(Debug)]
pub struct UplinkHandle {
    shared: Rc<Shared>,
    task: RefCell<Option<glommio::Task<()>>>,
}

impl UplinkHandle {
    /// Packets per socket write since the last call (for `[perf] histogram_dir`).
    pub fn take_batch_histogram(&self) -> hdrhistogram::Histogram<u64> {
        std::mem::replace(
            &mut *self.shared.batch_sizes.borrow_mut(),
            batch_histogram(),
        )
    }

    /// Queues a message (see [`UplinkSession::publish`]) and wakes the driver.
    pub fn publish(&self, now: Instant, msg: Outgoing<'_>) {
        self.shared.session.borrow_mut().publish(now, msg);
        self.shared.to_driver.notify();
    }

    /// Queues a retained message (see [`UplinkSession::publish_retained`]).
    pub fn publish_retained(&self, now: Instant, msg: Outgoing<'_>) {
        self.shared.session.borrow_mut().publish_retained(now, msg);
        self.shared.to_driver.notify();
    }

    /// Sets the Last Will of the next connections (see [`UplinkSession::set_will`]).
    pub fn set_will(&self, topic: Option<String>) {
        self.shared.session.borrow_mut().set_will(topic);
    }

    /// Which connection to the broker is up: `Some(n)` while the n-th successful
    /// connection (counting from 0) is up, `None` while there is none.
    pub fn connection(&self) -> Option<u64> {
        let s = self.shared.session.borrow();
        s.is_connected().then(|| s.stats().reconnects)
    }

    /// Remembers and subscribes topic filters (re-subscribed after every reconnect).
    pub fn subscribe(&self, filters: Vec<(String, Qos)>) {
        self.shared.session.borrow_mut().subscribe(filters);
        self.shared.to_driver.notify();
    }

    /// Forgets and unsubscribes topic filters.
    pub fn unsubscribe(&self, filters: Vec<String>) {
        self.shared.session.borrow_mut().unsubscribe(filters);
        self.shared.to_driver.notify();
    }

    /// Takes the next command received from the broker: `(topic, payload)`.
    pub fn poll_incoming(&self) -> Option<(String, bytes::Bytes)> {
        self.shared.session.borrow_mut().poll_incoming_publish()
    }

    /// Waits for the next command received from the broker.
    pub async fn next_incoming(&self) -> (String, bytes::Bytes) {
        loop {
            if let Some(m) = self.poll_incoming() {
                return m;
            }
            poll_fn(|cx| self.shared.incoming.poll(cx)).await;
        }
    }

    /// Counters and gauges of the session.
    pub fn stats(&self) -> UplinkStats {
        self.shared.session.borrow().stats()
    }

    /// Whether the broker takes messages more slowly than they come (see
    /// [`UplinkSession::is_congested`]): the shard stops reading devices meanwhile.
    pub fn is_congested(&self) -> bool {
        self.shared.session.borrow().is_congested()
    }

    /// Waits until the uplink is no longer congested: half its backlog written, or the
    /// connection lost (then the offline buffer takes what comes).
    pub async fn uncongested(&self) {
        poll_fn(|cx| {
            if !self.is_congested() {
                return Poll::Ready(());
            }
            let mut waiting = self.shared.relieved.borrow_mut();
            if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                waiting.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Whether the broker connection is up.
    pub fn is_connected(&self) -> bool {
        self.shared.session.borrow().is_connected()
    }

    /// Writes everything buffered (waiting for QoS 1 acknowledgements) until done or
    /// `deadline`, sends DISCONNECT and stops the driver. Returns the final stats; their
    /// `buffered` and `in_flight` say what was left behind.
    pub async fn flush(&self, deadline: Instant) -> UplinkStats {
        self.shared.flush_deadline.set(Some(deadline));
        self.shared.to_driver.notify();
        let task = self.task.borrow_mut().take();
        if let Some(task) = task {
            task.await;
        }
        self.stats()
    }
}

/// The client id of a shard's connection: `<client_id_prefix>-<node>-<shard>`.
pub fn client_id(config: &MqttConfig, node: &str, shard: usize) -> String {
    format!("{}-{node}-{shard}", config.client_id_prefix)
}

/// Creates the shard's session from `[mqtt]` and spawns its driver on the current glommio
/// executor; `target` is `host:port` of the broker.
pub fn spawn_uplink(config: &MqttConfig, shard: usize, node: &str, target: String) -> UplinkHandle {
    let opts = SessionOptions {
        client_id: client_id(config, node, shard),
        username: config.username.clone(),
        password: config.password.clone(),
        keep_alive: config.keep_alive,
        max_batch: config.max_batch,
        offline_buffer: config.offline_buffer,
    };
    let shared = Rc::new(Shared {
        session: RefCell::new(UplinkSession::new(opts)),
        target,
        to_driver: Wake::default(),
        incoming: Wake::default(),
        relieved: RefCell::default(),
        flush_deadline: Cell::new(None),
        batch_sizes: RefCell::new(batch_histogram()),
    });
    let task = glommio::spawn_local(run_uplink(shared.clone()));
    UplinkHandle {
        shared,
        task: RefCell::new(Some(task)),
    }
}

impl Shared {
    /// Wakes the receive loops waiting in [`UplinkHandle::uncongested`] once the session
    /// is no longer congested.
    fn wake_relieved(&self) {
        let mut waiting = self.relieved.borrow_mut();
        if !waiting.is_empty() && !self.session.borrow().is_congested() {
            waiting.drain(..).for_each(Waker::wake);
        }
    }
}

/// Why a connection ended.
enum Ended {
    /// Flush finished: stop the driver.
    Shutdown,
    /// The connection failed; reconnect.
    Lost(String),
}

/// The driver task: connect, serve, reconnect with backoff, until a flush completes.
async fn run_uplink(shared: Rc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    let mut last_warning: Option<Instant> = None;
    let mut jitter = Jitter::new(&shared.target);
    loop {
        let failure = match connect(&shared.target).await {
            Ok(stream) => {
                backoff = BACKOFF_MIN;
                tracing::info!(target = %shared.target, "connected to MQTT broker");
                match serve(&shared, stream).await {
                    Ended::Shutdown => return,
                    Ended::Lost(why) => format!("connection lost: {why}"),
                }
            }
            Err(e) => e.to_string(),
        };
        let now = Instant::now();
        shared.session.borrow_mut().on_disconnected(now);
        shared.wake_relieved();
        if let Some(deadline) = shared.flush_deadline.get() {
            if now >= deadline || shared.session.borrow().is_idle() {
                return;
            }
        }
        let delay = jitter.apply(backoff);
        if last_warning.is_none_or(|t| now.duration_since(t) >= UNREACHABLE_LOG_INTERVAL) {
            tracing::warn!(
                "broker unreachable at {}, retrying in {delay:?}: {failure}",
                shared.target
            );
            last_warning = Some(now);
        }
        let wait = match shared.flush_deadline.get() {
            Some(deadline) => delay.min(deadline.saturating_duration_since(now)),
            None => delay,
        };
        Timer::new(wait).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn connect(target: &str) -> std::io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = target.to_socket_addrs()?.collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT).await {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = e.into(),
        }
    }
    Err(last)
}

/// What woke the serving loop.
enum Event {
    Progress,
    Read(usize),
    Closed,
    Failed(std::io::Error),
}

/// Runs one connection until it fails or a flush completes.
async fn serve(shared: &Shared, mut stream: TcpStream) -> Ended {
    shared.session.borrow_mut().on_connected(Instant::now());
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut inbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut timer: Option<(Instant, Timer)> = None;
    loop {
        glommio::yield_if_needed().await;
        let now = Instant::now();
        let (deadline, finished) = {
            let mut s = shared.session.borrow_mut();
            s.handle_timeout(now);
            if s.is_dead() {
                return Ended::Lost("broker stopped answering".into());
            }
            if out.is_empty() {
                s.on_transmit_complete();
                let packets = s.poll_transmit(now, &mut out);
                if packets > 0 {
                    shared
                        .batch_sizes
                        .borrow_mut()
                        .saturating_record(packets as u64);
                }
            }
            let flush_by = shared.flush_deadline.get();
            let finished = flush_by.is_some_and(|by| out.is_empty() && (s.is_idle() || now >= by));
            if finished {
                s.close(now, &mut out);
            }
            let deadline = match (s.poll_timeout(), flush_by) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            (deadline, finished)
        };
        shared.wake_relieved();
        if finished {
            let write = stream.write_all(&out);
            let _ = futures_lite::future::or(async { write.await.ok() }, async {
                Timer::new(DISCONNECT_WRITE_TIMEOUT).await;
                None
            })
            .await;
            return Ended::Shutdown;
        }
        if let Some(at) = deadline {
            if timer.as_ref().is_none_or(|(armed, _)| at < *armed) {
                timer = Some((at, Timer::new(at.saturating_duration_since(now))));
            }
        }
        let event = poll_fn(|cx| {
            if !out.is_empty() {
                match Pin::new(&mut stream).poll_write(cx, &out) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Event::Closed),
                    Poll::Ready(Ok(n)) => {
                        out.advance(n);
                        return Poll::Ready(Event::Progress);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Event::Failed(e)),
                    Poll::Pending => {}
                }
            }
            match Pin::new(&mut stream).poll_read(cx, &mut scratch) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Event::Closed),
                Poll::Ready(Ok(n)) => return Poll::Ready(Event::Read(n)),
                Poll::Ready(Err(e)) => return Poll::Ready(Event::Failed(e)),
                Poll::Pending => {}
            }
            if shared.to_driver.poll(cx).is_ready() {
                return Poll::Ready(Event::Progress);
            }
            if let Some((_, t)) = timer.as_mut() {
                if Pin::new(t).poll(cx).is_ready() {
                    timer = None;
                    return Poll::Ready(Event::Progress);
                }
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Progress => {}
            Event::Read(n) => {
                inbuf.extend_from_slice(&scratch[..n]);
                let mut s = shared.session.borrow_mut();
                let before = s.stats().incoming;
                if let Err(e) = s.handle_incoming(Instant::now(), &mut inbuf) {
                    return Ended::Lost(e.to_string());
                }
                if s.stats().incoming != before {
                    shared.incoming.notify();
                }
            }
            Event::Closed => return Ended::Lost("closed by broker".into()),
            Event::Failed(e) => return Ended::Lost(e.to_string()),
        }
    }
}

/// Spreads reconnect attempts of many shards over time: a delay in [d/2, d).
#[derive(Debug)]
struct Jitter(u64);

impl Jitter {
    fn new(seed: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mixed = seed.bytes().fold(u64::from(nanos) | 1, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Jitter(mixed | 1)
    }

    fn apply(&mut self, d: Duration) -> Duration {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let fraction = (self.0 % 1000) as u32;
        d / 2 + d / 2 * fraction / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_to_full_delay() {
        let mut j = Jitter::new("127.0.0.1:1883");
        for _ in 0..1000 {
            let d = j.apply(Duration::from_secs(4));
            assert!(
                d >= Duration::from_secs(2) && d < Duration::from_secs(4),
                "{d:?}"
            );
        }
    }

    #[test]
    fn wake_fires_once_per_burst() {
        let wake = Wake::default();
        let waker = Waker::noop();
        let cx = Context::from_waker(waker);
        assert!(wake.poll(&cx).is_pending());
        wake.notify();
        wake.notify();
        assert!(wake.poll(&cx).is_ready());
        assert!(wake.poll(&cx).is_pending());
    }
}
