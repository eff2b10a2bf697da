//! A shard's I/O state and the tasks that drive it: the receive loop over its sockets and
//! the control task answering requests from outside the data path ([`super::control`]).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use futures_channel::oneshot;
use glommio::channels::shared_channel::ConnectedSender;

use super::control::{ClientPage, CommandTaken, Control, ShardSnapshot};
use super::histograms::ShardHistograms;
use super::moderation::Moderation;
use super::shutdown::Shutdown;
use super::udp::{readable, RecvBatch, SendBatch, MAX_DATAGRAM};
use crate::session::{
    ClientCursor, ClientFilter, ClientInfo, Handoff, LatencyBuckets, ListStep, Shard,
};
use crate::uplink::{Outgoing, UplinkHandle};

/// Receive-loop turns between cooperative yields, so timers, handoffs and the uplink run
/// even while a socket stays readable under load.
const TURNS_PER_YIELD: usize = 16;

/// The receive moderation window while the shard is interactive ([`Shard::interactive`]:
/// commands await answers, devices register), when `gateway.rx_moderation` is longer:
/// short enough for a command's round trip (SPEC P5, p99 < 1 ms) and a register storm's
/// (P3, p99 < 5 ms), long enough to gather a few answers per wake-up at 10 k commands/s
/// (~200 µs apart per shard on two shards).
const INTERACTIVE_MODERATION: Duration = Duration::from_micros(250);

/// How long a receive loop waits before trying again after its socket's readiness failed,
/// and how long the timer task sleeps when the shard has no deadline at all.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Journal bytes a shard hands over before its flush interval is up: under a register
/// storm (~3 MB/s per shard) this keeps the buffers small instead of a second's worth.
pub(super) const JOURNAL_EARLY_FLUSH: usize = 256 << 10;

/// API callers one shard keeps waiting for command outcomes; beyond, a command that asks
/// to wait is refused (503) rather than holding an unbounded table.
const MAX_WAITERS: usize = 4096;

/// Name-index buckets a listing or count looks at before the control task lets the
/// datagram loop run. Each occupied bucket costs a few cache misses (index, record, name):
/// `examples/list_clients.rs` measured ~0.15 ms for 1024 buckets (~500 endpoints).
const LIST_BUDGET: usize = 1024;

/// Clients a listing builds per turn, for the same reason: each is a handful of small
/// allocations (~0.5 µs).
const LIST_ITEMS_PER_TURN: usize = 250;

/// Listings and counts a shard walks at once in tasks of their own; more wait their turn
/// in the control task. Walks woken together run their turns back to back, so this bounds
/// what a datagram batch can wait behind them: 4 turns, ~0.6 ms.
const MAX_WALKS: usize = 4;

/// How long the control task steps aside between two budgets of a listing. Sleeping (not
/// just yielding) sends the executor through its reactor, so readable sockets are served.
const LIST_PAUSE: Duration = Duration::from_micros(20);

/// Everything a shard's tasks share.
pub(super) struct ShardIo {
    pub(super) shard: Shard,
    pub(super) send: SendBatch,
    pub(super) socket: Rc<glommio::net::UdpSocket>,
    /// The DTLS socket and its send queue, when the DTLS listener is on.
    pub(super) secure: Option<(SendBatch, Rc<glommio::net::UdpSocket>)>,
    /// Replies dropped because the socket buffer stayed full.
    pub(super) send_dropped: u64,
    /// Datagrams handed to the sockets.
    pub(super) datagrams_out: u64,
    /// Handoffs sent to other shards.
    pub(super) handoffs_out: u64,
    pub(super) uplink: Rc<UplinkHandle>,
    pub(super) peers: Vec<Option<ConnectedSender<Handoff>>>,
    pub(super) backlog: VecDeque<(usize, Handoff)>,
    /// Latency of datagram batches, for `/metrics`.
    pub(super) pipeline: LatencyBuckets,
    /// API callers waiting for a command's outcome, by tag.
    pub(super) waiters: AHashMap<u64, oneshot::Sender<Vec<u8>>>,
    /// Tag of the next API command.
    pub(super) next_tag: u64,
    /// Receive loops sleeping out a long moderation window, woken when the shard turns
    /// interactive (see [`receive`]).
    pub(super) moderating: Vec<Waker>,
    /// Where the gateway's handle reads this shard's registered endpoints and truncated
    /// datagrams (`Gateway::registered`, `Gateway::truncated`): the vectors and the index.
    pub(super) gauges: (Arc<Vec<AtomicUsize>>, Arc<Vec<AtomicU64>>, usize),
    /// While the timer task sleeps: until when, and its waker ([`timers`]).
    pub(super) timer: Option<(Instant, Waker)>,
    /// The journal hand-over task, waiting for its interval, woken early when
    /// [`JOURNAL_EARLY_FLUSH`] bytes have gathered.
    pub(super) journal_waker: Option<Waker>,
    /// Times a receive loop stopped reading devices because the broker fell behind.
    pub(super) receive_pauses: u64,
    /// How long receive loops stayed stopped, all told.
    pub(super) receive_paused: Duration,
}

impl ShardIo {
    /// Moves everything the shard produced to the socket, the uplink, other shards and
    /// waiting API callers.
    pub(super) fn flush(&mut self, now: Instant) {
        let (send, socket, dropped) = (&mut self.send, &*self.socket, &mut self.send_dropped);
        let out = &mut self.datagrams_out;
        self.shard.drain_transmits(|to, data| {
            if send.is_full() {
                flush_udp(send, socket);
            }
            match send.push(to, data) {
                Ok(_) => *out += 1,
                Err(_) => *dropped += 1,
            }
        });
        flush_udp(&mut self.send, &self.socket);
        if let Some((send, socket)) = &mut self.secure {
            self.shard.drain_secure_transmits(|to, data| {
                if send.is_full() {
                    flush_udp(send, socket);
                }
                match send.push(to, data) {
                    Ok(_) => *out += 1,
                    Err(_) => *dropped += 1,
                }
            });
            flush_udp(send, socket);
        }
        let uplink = &self.uplink;
        super::cluster::watch(now, uplink, &mut self.shard);
        super::cluster::drain(now, &mut self.shard, uplink);
        self.shard.drain_publishes(|p| {
            uplink.publish(
                now,
                Outgoing {
                    topic: p.topic,
                    payload: p.payload,
                    qos: p.qos,
                },
            );
        });
        while let Some(h) = self.shard.poll_handoff() {
            self.backlog.push_back(h);
        }
        while let Some((to, h)) = self.backlog.pop_front() {
            let Some(Some(peer)) = self.peers.get(to) else {
                continue;
            };
            if let Err(e) = peer.try_send(h) {
                tracing::warn!(to, "handoff channel full, retrying: {e}");
                break;
            }
            self.handoffs_out += 1;
        }
        while let Some((tag, json)) = self.shard.poll_answer() {
            if let Some(waiter) = self.waiters.remove(&tag) {
                // The caller may have given up; then nobody needs it.
                let _ = waiter.send(json);
            }
        }
        if !self.moderating.is_empty() && self.shard.interactive(now) {
            self.moderating.drain(..).for_each(Waker::wake);
        }
        let (registered, truncated, index) = &self.gauges;
        registered[*index].store(self.shard.registered(), Ordering::Relaxed);
        truncated[*index].store(self.shard.stats().truncated, Ordering::Relaxed);
        self.wake_sleepers();
    }

    /// Wakes the timer task when the shard's next deadline now comes before the one it
    /// sleeps for, and the journal hand-over when enough bytes have gathered.
    fn wake_sleepers(&mut self) {
        if let Some((armed, _)) = &self.timer {
            if self.shard.poll_timeout().is_some_and(|at| at < *armed) {
                if let Some((_, waker)) = self.timer.take() {
                    waker.wake();
                }
            }
        }
        if self.shard.pending_journal() >= JOURNAL_EARLY_FLUSH {
            if let Some(waker) = self.journal_waker.take() {
                waker.wake();
            }
        }
    }

    fn snapshot(&self) -> ShardSnapshot {
        ShardSnapshot {
            shard: self.shard.id(),
            registered: self.shard.registered(),
            stats: self.shard.stats().clone(),
            uplink: self.uplink.stats(),
            connected: self.uplink.is_connected(),
            dtls: self.shard.dtls_stats().cloned(),
            dtls_sessions: self.shard.dtls_sessions(),
            pipeline: self.pipeline.clone(),
            send_dropped: self.send_dropped,
            datagrams_out: self.datagrams_out,
            handoffs_out: self.handoffs_out,
            pending_transmits: self.shard.pending_transmits(),
            pending_publishes: self.shard.pending_publishes(),
            handoff_backlog: self.backlog.len(),
            pending_journal: self.shard.pending_journal(),
            waiting_commands: self.waiters.len(),
            receive_pauses: self.receive_pauses,
            receive_paused: self.receive_paused,
            cluster: self.shard.cluster_stats(),
        }
    }

    /// Takes an API command: `CommandTaken::Taken` with a receiver when `wait`.
    fn take_command(&mut self, ep: &str, payload: &[u8], wait: bool) -> CommandTaken {
        if wait && self.waiters.len() >= MAX_WAITERS {
            // Callers that gave up leave their entries behind until answered.
            self.waiters.retain(|_, w| !w.is_canceled());
        }
        let busy = wait && self.waiters.len() >= MAX_WAITERS;
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        let now = Instant::now();
        if busy {
            return match self.shard.client(now, ep) {
                Some(_) => CommandTaken::Busy,
                None => CommandTaken::NotHere,
            };
        }
        let (tx, rx) = oneshot::channel();
        if wait {
            self.waiters.insert(tag, tx);
        }
        if !self.shard.handle_api_command(now, ep, payload, tag) {
            self.waiters.remove(&tag);
            return CommandTaken::NotHere;
        }
        self.flush(now);
        CommandTaken::Taken(wait.then_some(rx))
    }
}

fn flush_udp(send: &mut SendBatch, socket: &glommio::net::UdpSocket) {
    if let Err(e) = send.flush(socket) {
        tracing::warn!("UDP send failed: {e}");
    }
}

/// Answers control requests until every sender is gone.
pub(super) async fn serve_control(io: Rc<RefCell<ShardIo>>, requests: flume::Receiver<Control>) {
    let walks = Rc::new(Cell::new(0));
    while let Ok(request) = requests.recv_async().await {
        match request {
            Control::Snapshot(reply) => {
                let _ = reply.send(io.borrow().snapshot());
            }
            Control::Client { ep, reply } => {
                let _ = reply.send(io.borrow().shard.client(Instant::now(), &ep));
            }
            Control::Deregister { ep, reply } => {
                let now = Instant::now();
                let mut io = io.borrow_mut();
                let held = io.shard.deregister_client(now, &ep);
                io.flush(now);
                let _ = reply.send(held);
            }
            Control::Command {
                ep,
                payload,
                wait,
                reply,
            } => {
                let taken = io.borrow_mut().take_command(&ep, &payload, wait);
                let _ = reply.send(taken);
            }
            Control::Count { filter, reply } => {
                let walk = count(io.clone(), filter, reply);
                run_walk(walk, &walks).await;
            }
            Control::List {
                filter,
                cursor,
                limit,
                reply,
            } => {
                let walk = list(io.clone(), filter, cursor, limit, reply);
                run_walk(walk, &walks).await;
            }
        }
    }
}

/// Runs a walk over the name index in a task of its own, so snapshots and lookups are not
/// queued behind it; beyond [`MAX_WALKS`] at once, in the control task itself, which holds
/// back further requests until it is done.
async fn run_walk(walk: impl std::future::Future<Output = ()> + 'static, walks: &Rc<Cell<usize>>) {
    if walks.get() >= MAX_WALKS {
        return walk.await;
    }
    walks.set(walks.get() + 1);
    let walks = walks.clone();
    glommio::spawn_local(async move {
        walk.await;
        walks.set(walks.get() - 1);
    })
    .detach();
}

/// Counts the clients matching `filter`, a budget of buckets per turn.
async fn count(io: Rc<RefCell<ShardIo>>, filter: Arc<ClientFilter>, reply: oneshot::Sender<usize>) {
    let mut total = 0;
    let mut from = Some(0);
    while let Some(at) = from {
        if reply.is_canceled() {
            return;
        }
        let (n, next) = io.borrow().shard.count_clients(&filter, at, LIST_BUDGET);
        total += n;
        from = next;
        if from.is_some() {
            glommio::timer::sleep(LIST_PAUSE).await;
        }
    }
    let _ = reply.send(total);
}

/// Collects up to `limit` clients matching `filter` from `cursor` on, a budget of buckets
/// and clients per turn.
async fn list(
    io: Rc<RefCell<ShardIo>>,
    filter: Arc<ClientFilter>,
    mut cursor: ClientCursor,
    limit: usize,
    reply: oneshot::Sender<ClientPage>,
) {
    let mut items: Vec<ClientInfo> = Vec::with_capacity(limit.min(1024));
    let next = loop {
        if reply.is_canceled() {
            return;
        }
        let turn_limit = (items.len() + LIST_ITEMS_PER_TURN).min(limit);
        let step = io.borrow().shard.list_clients(
            Instant::now(),
            &filter,
            cursor,
            turn_limit,
            LIST_BUDGET,
            &mut items,
        );
        match step {
            ListStep::Full(at) if items.len() >= limit => break Some(at),
            ListStep::End => break None,
            ListStep::Full(at) | ListStep::Paused(at) => cursor = at,
        }
        glommio::timer::sleep(LIST_PAUSE).await;
    };
    let _ = reply.send(ClientPage { items, next });
}

/// Runs the shard's timers (retransmissions, lifetimes, housekeeping) until shutdown,
/// sleeping until the next deadline. A deadline earlier than the one it sleeps for (a
/// request just sent) wakes it through [`ShardIo::flush`], so it needs no polling: an idle
/// shard's timer wakes once a second, for housekeeping.
pub(super) async fn timers(io: Rc<RefCell<ShardIo>>, shutdown: Arc<Shutdown>) {
    while !shutdown.is_stopping() {
        let now = Instant::now();
        let next = {
            let mut io = io.borrow_mut();
            io.shard.handle_timeout(now);
            io.flush(now);
            // At least a millisecond: a deadline due now was just handled.
            let next = io.shard.poll_timeout().unwrap_or(now + RETRY_PAUSE);
            next.max(now + Duration::from_millis(1))
        };
        let sleep = glommio::timer::sleep(next.saturating_duration_since(now));
        let mut first = true;
        let rearmed = std::future::poll_fn(|cx| {
            let mut io = io.borrow_mut();
            if std::mem::take(&mut first) {
                io.timer = Some((next, cx.waker().clone()));
                return Poll::Pending;
            }
            match &mut io.timer {
                None => Poll::Ready(()),
                Some((_, waker)) => {
                    waker.clone_from(cx.waker());
                    Poll::Pending
                }
            }
        });
        futures_lite::future::or(sleep, rearmed).await;
        io.borrow_mut().timer = None;
    }
}

/// Completes once the shard is interactive; [`ShardIo::flush`] wakes it.
async fn turned_interactive(io: &RefCell<ShardIo>) {
    std::future::poll_fn(|cx| {
        let mut io = io.borrow_mut();
        if io.shard.interactive(Instant::now()) {
            return Poll::Ready(());
        }
        if !io.moderating.iter().any(|w| w.will_wake(cx.waker())) {
            io.moderating.push(cx.waker().clone());
        }
        Poll::Pending
    })
    .await
}

/// Receives on one of a shard's sockets until shutdown: the UDP socket, or (`secure`) the
/// DTLS one, whose datagrams are handshakes or records the shard opens first. Drains with
/// `recvmmsg` while datagrams are there and waits for readiness only when none are; with
/// `busy` (`gateway.busy_poll`) it never waits but polls again after letting the shard's
/// other tasks run.
///
/// Interrupt moderation ([`Moderation`], `gateway.rx_moderation` the longest window): once
/// a drain finds datagrams less than a window after the previous one, the loop sleeps after
/// each drain instead of waking per datagram, long enough for about
/// [`GATHER`](super::moderation::GATHER) to arrive at the rate it sees, so one wake-up
/// handles them; the first empty drain ends it. A full batch is drained again at once. The
/// longest window applies to traffic the gateway only forwards (notifications, Sends: an
/// NB-IoT radio's own latency is seconds); while the shard is interactive (commands await
/// answers, devices register) it is at most [`INTERACTIVE_MODERATION`], and a long sleep
/// ends early when the shard turns so.
///
/// Backpressure: while the uplink is congested (the broker takes messages more slowly
/// than the devices send them, [`UplinkHandle::is_congested`]), the loop reads nothing.
/// Datagrams wait in the socket buffer, and beyond it the kernel drops them, at no cost to
/// the shard; CON messages stay unacknowledged, so their devices send them again. Reading
/// on would spend the CPU the broker lacks on messages the full buffer then drops, after
/// their CON was acknowledged.
pub(super) async fn receive(
    io: Rc<RefCell<ShardIo>>,
    socket: Rc<glommio::net::UdpSocket>,
    shutdown: Arc<Shutdown>,
    secure: bool,
    busy: bool,
    moderation: Duration,
    hist: Option<Rc<RefCell<ShardHistograms>>>,
) {
    let mut recv = RecvBatch::new();
    let mut turns = 0;
    let mut moderation = Moderation::new(if busy { Duration::ZERO } else { moderation });
    let uplink = io.borrow().uplink.clone();
    let mut paused_since: Option<Instant> = None;
    while !shutdown.is_stopping() {
        if uplink.is_congested() {
            if paused_since.is_none() {
                paused_since = Some(Instant::now());
                io.borrow_mut().receive_pauses += 1;
            }
            futures_lite::future::or(uplink.uncongested(), shutdown.stopped()).await;
            continue;
        }
        if let Some(since) = paused_since.take() {
            io.borrow_mut().receive_paused += since.elapsed();
        }
        let n = match recv.recv(&*socket) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(secure, "UDP receive failed: {e}");
                0
            }
        };
        if n == 0 {
            moderation.idle();
            if busy {
                glommio::executor().yield_now().await;
                continue;
            }
            let wake =
                futures_lite::future::or(async { readable(&socket).await.map(|_| ()) }, async {
                    shutdown.stopped().await;
                    Ok(())
                });
            if let Err(e) = wake.await {
                tracing::warn!(secure, "UDP readiness failed: {e}");
                glommio::timer::sleep(RETRY_PAUSE).await;
            }
            continue;
        }
        let now = Instant::now();
        {
            let mut io = io.borrow_mut();
            for i in 0..n {
                let (from, data) = recv.get(i);
                if recv.is_truncated(i) {
                    io.shard.handle_truncated(now, from, MAX_DATAGRAM);
                } else if secure {
                    io.shard.handle_secure_datagram(now, from, data);
                } else {
                    io.shard.handle_datagram(now, from, data);
                }
            }
            io.flush(now);
            let waited = now.elapsed();
            io.pipeline.record_n(waited, n as u64);
            if let Some(hist) = &hist {
                hist.borrow_mut().record_pipeline(waited, n as u64);
            }
        }
        // Decided after the batch, which may itself have made the shard interactive.
        let limit = if io.borrow().shard.interactive(now) {
            INTERACTIVE_MODERATION
        } else {
            Duration::MAX
        };
        let window = moderation.drained(now, n, limit);
        if let Some(window) = window.filter(|_| n < super::udp::BATCH) {
            if window > INTERACTIVE_MODERATION {
                futures_lite::future::or(glommio::timer::sleep(window), turned_interactive(&io))
                    .await;
            } else {
                glommio::timer::sleep(window).await;
            }
            continue;
        }
        turns += 1;
        if turns % TURNS_PER_YIELD == 0 {
            glommio::yield_if_needed().await;
        }
    }
}
