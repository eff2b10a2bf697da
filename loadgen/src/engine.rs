//! The sending engine every scenario shares: one thread per socket, each speaking for the
//! devices `g` with `g % sockets == shard`. Everything a device sends is paced open-loop
//! (request `g` of a schedule is due at `start + g / rate` whether or not earlier ones were
//! answered) and latency is measured from that due time, so a slow gateway cannot hide
//! behind a slow load generator. CON requests are retransmitted per RFC 7252.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lwm2m_gateway::coap::{option, Code, Message, MessageType, MessageWriter};
use lwm2m_gateway::dtls::client::ClientConfig;

use crate::device::{self, Device, Format, Life, Pending, ResourcePath, Served};
use crate::dtls::{Event, Peers};
use crate::metrics::{Clock, Counter, Counters, Metric, Recorder};
use crate::net::{device_index, device_ip, MultiSource};

mod wake;

/// RFC 7252 ACK_TIMEOUT: first retransmission after this long, doubling each time.
const ACK_TIMEOUT_NS: u64 = 2_000_000_000;
/// RFC 7252 MAX_RETRANSMIT.
const MAX_RETRANSMIT: u8 = 4;
/// Datagrams drained per loop turn before sending again, so replies cannot starve pacing.
const RECV_BATCH: usize = 256;
/// Datagrams sent per loop turn before draining replies, so a sender that fell behind
/// catches up without starving its own receive queue.
const SEND_BATCH: usize = 256;
/// Largest decrypted datagram a device reads: a CoAP message from the gateway fits.
const MAX_DTLS_PLAINTEXT: usize = 4096;
/// Longest idle wait, so stop requests and new phases are seen promptly.
const MAX_IDLE: Duration = Duration::from_millis(2);
/// Updates are sent this fraction of the lifetime after the previous one (wakaama sends
/// them well before expiry, too).
pub const UPDATE_FRACTION: f64 = 0.75;

/// What the devices of a run do; fixed for the whole run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where requests go: the gateway, or the echo sink for `udp-baseline`.
    pub target: SocketAddrV4,
    /// Number of devices.
    pub devices: u32,
    /// Sockets (threads).
    pub sockets: u32,
    /// Registrations (and deregistrations) per second over all devices; 0 = none.
    pub register_rate: f64,
    /// When registration starts (ns since run start).
    pub register_start: u64,
    /// Registration lifetime (s).
    pub lifetime: u32,
    /// Endpoint name prefix: device `g` is `<prefix>-<g>`.
    pub prefix: String,
    /// Registration payload.
    pub objects: String,
    /// Send updates every `UPDATE_FRACTION × lifetime`.
    pub updates: bool,
    /// The resource notifications are about.
    pub notify_path: ResourcePath,
    /// Notification payload format.
    pub format: Format,
    /// Fraction of notifications sent CON.
    pub con_ratio: f64,
    /// Fraction of Updates sent from the device's other address (a NAT rebinding).
    pub rebind_ratio: f64,
    /// Fraction of devices in queue mode (`b=UQ`): they sleep `awake` after each send.
    pub queue_ratio: f64,
    /// How long a queue-mode device listens after each of its sends (ms).
    pub awake_ms: u32,
    /// Once [`Control::start_wakes`]: every queue-mode device wakes this often (ns), and
    /// notifies only then; 0 = never (it then notifies on the common schedule).
    pub wake_period_ns: u64,
    /// The echo sink pings go to (`udp-baseline`, `steady-notify --echo-baseline`).
    pub echo: Option<SocketAddrV4>,
    /// `--dtls`: every device handshakes (PSK) before its first request and speaks CoAP
    /// inside DTLS records.
    pub dtls: Option<Arc<ClientConfig>>,
    /// `--sample N`: the MQTT application watches the notifications of devices `g` with
    /// `g % N == 0` only; the others count as [`Counter::NotifyUnwatched`].
    pub notify_sample: u32,
}

impl Plan {
    /// `devices` on `sockets` aimed at `target` that do nothing until a scenario says what:
    /// no registrations, notifications, wakes or pings.
    pub fn new(target: SocketAddrV4, devices: u32, sockets: u32) -> Plan {
        Plan {
            target,
            devices,
            sockets,
            register_rate: 0.0,
            register_start: 0,
            lifetime: 0,
            prefix: String::new(),
            objects: String::new(),
            updates: false,
            notify_path: ResourcePath {
                object: 3,
                instance: 0,
                resource: 9,
            },
            format: Format::Tlv,
            con_ratio: 0.0,
            rebind_ratio: 0.0,
            queue_ratio: 0.0,
            awake_ms: 1,
            wake_period_ns: 0,
            echo: None,
            dtls: None,
            notify_sample: 1,
        }
    }
}

/// Phase switches the scenario flips while the workers run.
#[derive(Debug, Default)]
pub struct Control {
    /// Workers return as soon as they see this.
    pub stop: AtomicBool,
    /// Notifications start at this time + 1 ns (0: not yet).
    notify_start: AtomicU64,
    /// Notifications per second over all devices (f64 bits).
    notify_rate: AtomicU64,
    /// Deregistration starts at this time + 1 ns (0: never).
    deregister_start: AtomicU64,
    /// Queue-mode devices start waking at this time + 1 ns (0: not yet).
    wake_start: AtomicU64,
    /// Pings to the echo sink start at this time + 1 ns (0: none).
    ping_start: AtomicU64,
    /// Pings per second over all devices (f64 bits).
    ping_rate: AtomicU64,
    /// No ping is due at or after this time (ns).
    ping_end: AtomicU64,
}

impl Control {
    /// Starts notifications at `start_ns`, `rate` per second in total.
    pub fn start_notify(&self, start_ns: u64, rate: f64) {
        self.notify_rate.store(rate.to_bits(), Ordering::Relaxed);
        self.notify_start.store(start_ns + 1, Ordering::Release);
    }

    /// Stops notifications.
    pub fn stop_notify(&self) {
        self.notify_start.store(0, Ordering::Release);
    }

    /// Starts deregistering every registered device at `start_ns`.
    pub fn start_deregister(&self, start_ns: u64) {
        self.deregister_start.store(start_ns + 1, Ordering::Release);
    }

    /// Starts the queue-mode devices' wake cycles (`Plan::wake_period_ns`) at `start_ns`;
    /// they go on until the run stops, so queued commands reach them after notifying ends.
    pub fn start_wakes(&self, start_ns: u64) {
        self.wake_start.store(start_ns + 1, Ordering::Release);
    }

    /// Stops the wake cycles.
    pub fn stop_wakes(&self) {
        self.wake_start.store(0, Ordering::Release);
    }

    /// Sends `rate` pings per second in total to `Plan::echo` from `start_ns` until `end_ns`.
    pub fn start_pings(&self, start_ns: u64, rate: f64, end_ns: u64) {
        self.ping_rate.store(rate.to_bits(), Ordering::Relaxed);
        self.ping_end.store(end_ns, Ordering::Relaxed);
        self.ping_start.store(start_ns + 1, Ordering::Release);
    }

    /// The current ping schedule: start, rate, end.
    fn pings(&self) -> Option<(u64, f64, u64)> {
        let start = self.ping_start.load(Ordering::Acquire).checked_sub(1)?;
        Some((
            start,
            f64::from_bits(self.ping_rate.load(Ordering::Relaxed)),
            self.ping_end.load(Ordering::Relaxed),
        ))
    }

    fn wake_start(&self) -> Option<u64> {
        self.wake_start.load(Ordering::Acquire).checked_sub(1)
    }

    fn notify(&self) -> Option<(u64, f64)> {
        let start = self.notify_start.load(Ordering::Acquire).checked_sub(1)?;
        Some((
            start,
            f64::from_bits(self.notify_rate.load(Ordering::Relaxed)),
        ))
    }
}

/// Whether item `n` of a sequence is one of the `ratio` share picked evenly (every 10th
/// for 0.1), without randomness so runs repeat.
pub fn every(n: u64, ratio: f64) -> bool {
    ((n + 1) as f64 * ratio).floor() - (n as f64 * ratio).floor() >= 1.0
}

/// Ns from a schedule's start until item `g` is due at `rate` per second.
fn offset(g: u64, rate: f64) -> u64 {
    (g as f64 * 1e9 / rate) as u64
}

/// One socket's share of the devices.
struct Worker<'a> {
    plan: &'a Plan,
    ctl: &'a Control,
    counters: &'a Counters,
    clock: Clock,
    socket: &'a MultiSource,
    shard: u32,
    devices: Vec<Device>,
    retransmit: BinaryHeap<Reverse<(u64, u32, u16)>>,
    observed: Vec<u32>,
    /// The queue-mode devices of this worker, in wake order.
    sleepers: Vec<u32>,
    rec: Recorder,
    out: Vec<u8>,
    /// With `--dtls`: the devices' connections, and a buffer for decrypted datagrams.
    dtls: Option<Peers>,
    plain: Vec<u8>,
}

/// Runs one worker until `ctl.stop`.
pub fn run_worker(
    plan: &Plan,
    ctl: &Control,
    counters: &Counters,
    clock: Clock,
    socket: &MultiSource,
    shard: u32,
    rec: Recorder,
) -> anyhow::Result<()> {
    let local = plan.devices.saturating_sub(shard).div_ceil(plan.sockets);
    let mut w = Worker {
        plan,
        ctl,
        counters,
        clock,
        socket,
        shard,
        devices: (0..local)
            .map(|j| Device::new(j * plan.sockets + shard))
            .collect(),
        retransmit: BinaryHeap::new(),
        observed: Vec::new(),
        sleepers: Vec::new(),
        rec,
        out: Vec::with_capacity(512),
        dtls: plan
            .dtls
            .as_ref()
            .map(|c| Peers::new(Arc::clone(c), &plan.prefix, local as usize)),
        plain: if plan.dtls.is_some() {
            vec![0; MAX_DTLS_PLAINTEXT]
        } else {
            Vec::new()
        },
    };
    w.sleepers = (0..local).filter(|&j| w.queue_mode(j)).collect();
    w.run()
}

impl Worker<'_> {
    fn global(&self, j: u32) -> u32 {
        j * self.plan.sockets + self.shard
    }

    fn run(&mut self) -> anyhow::Result<()> {
        let n = self.devices.len() as u64;
        let k = u64::from(self.plan.sockets);
        let s = u64::from(self.shard);
        let (mut reg_next, mut dereg_next, mut update_next) = (0u64, 0u64, 0u64);
        let (mut notify_next, mut notify_epoch) = (0u64, u64::MAX);
        let (mut ping_next, mut ping_epoch, mut wake_next) = (0u64, u64::MAX, 0u64);
        let update_period = (f64::from(self.plan.lifetime) * UPDATE_FRACTION * 1e9) as u64;
        let mut rx = [0u8; 2048];
        while !self.ctl.stop.load(Ordering::Relaxed) {
            let now = self.clock.now_ns();
            let mut wake = now + MAX_IDLE.as_nanos() as u64;
            let mut budget = SEND_BATCH;
            let rate = self.plan.register_rate;
            if rate > 0.0 {
                while reg_next < n && budget > 0 {
                    budget -= 1;
                    let due = self.plan.register_start + offset(reg_next * k + s, rate);
                    if due > now {
                        wake = wake.min(due);
                        break;
                    }
                    self.send_request(reg_next as u32, Pending::Register, due, now)?;
                    reg_next += 1;
                }
                if self.plan.updates {
                    // Round r ≥ 1 of device j: its register due time + r × period.
                    loop {
                        let (round, j) = (update_next / n.max(1) + 1, update_next % n.max(1));
                        let due = self.plan.register_start
                            + offset(j * k + s, rate)
                            + round * update_period;
                        if n == 0 || due > now {
                            wake = wake.min(due);
                            break;
                        }
                        let d = &mut self.devices[j as usize];
                        if d.life == Life::Registered
                            && !matches!(d.pending, Pending::Register | Pending::Update)
                        {
                            if every(update_next, self.plan.rebind_ratio) {
                                d.addr_gen ^= 1;
                                self.counters.add(Counter::Rebound, 1);
                            }
                            self.send_request(j as u32, Pending::Update, due, now)?;
                        }
                        update_next += 1;
                    }
                }
                if let Some(start) = self
                    .ctl
                    .deregister_start
                    .load(Ordering::Acquire)
                    .checked_sub(1)
                {
                    while dereg_next < n {
                        let due = start + offset(dereg_next * k + s, rate);
                        if due > now {
                            wake = wake.min(due);
                            break;
                        }
                        if self.devices[dereg_next as usize].life == Life::Registered {
                            self.send_request(dereg_next as u32, Pending::Deregister, due, now)?;
                        }
                        dereg_next += 1;
                    }
                }
            }
            if let Some((start, rate)) = self.ctl.notify() {
                if notify_epoch != start {
                    notify_epoch = start;
                    notify_next = 0;
                }
                while rate > 0.0 && !self.observed.is_empty() && budget > 0 {
                    budget -= 1;
                    let due = start + offset(notify_next * k + s, rate);
                    if due > now {
                        wake = wake.min(due);
                        break;
                    }
                    let j = self.observed[(notify_next % self.observed.len() as u64) as usize];
                    let con = every(notify_next, self.plan.con_ratio);
                    self.notify(j, con, due, now)?;
                    notify_next += 1;
                }
            }
            if let Some((start, rate, end)) = self.ctl.pings() {
                if ping_epoch != start {
                    ping_epoch = start;
                    ping_next = 0;
                }
                while rate > 0.0 && budget > 0 {
                    let g = ping_next * k + s;
                    let due = start + offset(g, rate);
                    if due >= end {
                        break;
                    }
                    if due > now {
                        wake = wake.min(due);
                        break;
                    }
                    budget -= 1;
                    self.ping(g)?;
                    ping_next += 1;
                }
            }
            if let Some(start) = self.ctl.wake_start() {
                self.wakes(start, now, &mut wake_next, &mut wake, &mut budget)?;
            }
            self.retransmit(now)?;
            if self.dtls.is_some() {
                self.dtls_timeouts(now)?;
            }
            let mut received = 0;
            while received < RECV_BATCH {
                match self.socket.try_recv_to(&mut rx) {
                    Ok((len, local, from)) => {
                        received += 1;
                        if self.plan.echo.is_some_and(|e| from == SocketAddr::V4(e)) {
                            self.ping_reply(&rx[..len]);
                        } else if from.ip() == IpAddr::V4(*self.plan.target.ip()) {
                            if let Some(j) = self.local_of(device_index(local)) {
                                if self.dtls.is_some() {
                                    self.receive_dtls(j, &rx[..len])?;
                                } else {
                                    self.receive(j, &rx[..len])?;
                                }
                            }
                        }
                    }
                    Err(e)
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) =>
                    {
                        break
                    }
                    // ICMP port unreachable and the like surface here; the request times out.
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
                    Err(e) => return Err(e).context("receiving"),
                }
            }
            self.rec.tick(self.clock.now_ns());
            if received == 0 && budget > 0 {
                if let Some(&Reverse((at, _, _))) = self.retransmit.peek() {
                    wake = wake.min(at);
                }
                if let Some(at) = self.dtls.as_ref().and_then(Peers::next_timeout) {
                    wake = wake.min(at);
                }
                let now = self.clock.now_ns();
                if wake > now {
                    let wait = Duration::from_nanos(wake - now).min(MAX_IDLE);
                    self.socket.wait_readable(wait).context("polling")?;
                }
            }
        }
        Ok(())
    }

    fn local_of(&self, index: Option<u32>) -> Option<u32> {
        // A device's second address is its index plus the number of devices.
        let g = index? % self.plan.devices.max(1);
        let k = self.plan.sockets;
        (g % k == self.shard && (g / k) < self.devices.len() as u32).then_some(g / k)
    }

    /// Whether device `j` is one of the queue-mode share.
    fn queue_mode(&self, j: u32) -> bool {
        every(u64::from(self.global(j)), self.plan.queue_ratio)
    }

    fn now_ms(&self) -> u32 {
        u32::try_from(self.clock.now_ns() / 1_000_000).unwrap_or(u32::MAX)
    }

    fn send(&mut self, j: u32) -> anyhow::Result<()> {
        if self.queue_mode(j) {
            let until = self.now_ms().saturating_add(self.plan.awake_ms);
            self.devices[j as usize].awake_until_ms = until;
        }
        if self.dtls.is_some() {
            return self.send_dtls(j);
        }
        let gen = u32::from(self.devices[j as usize].addr_gen);
        let ip = device_ip(self.global(j) + gen * self.plan.devices);
        match self.socket.send_from(ip, self.plan.target, &self.out) {
            Ok(()) => Ok(()),
            // A full send buffer loses the datagram as a network would; CON retransmits.
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e).context("sending"),
        }
    }

    /// `send` with `--dtls`: encrypts `out` when the device's connection is up; else
    /// starts the handshake, and the pending request goes out once it finished (a CoAP
    /// retransmission meanwhile is dropped, as a device's DTLS stack would hold it).
    fn send_dtls(&mut self, j: u32) -> anyhow::Result<()> {
        let g = u64::from(self.global(j));
        let now = self.clock.now_ns();
        let d = &self.devices[j as usize];
        let due = if d.pending == Pending::None {
            now
        } else {
            d.pending_due
        };
        let Some(peers) = self.dtls.as_mut() else {
            return Ok(());
        };
        if !peers.is_started(j) {
            peers.start(j, g, due, now, None)?;
        } else if let Some(client) = peers.established(j) {
            // A full outbound queue loses the record, as a full socket buffer would.
            let _ = client.send(&self.out);
        }
        self.flush_dtls(j)
    }

    /// Sends what device `j`'s DTLS connection has queued.
    fn flush_dtls(&mut self, j: u32) -> anyhow::Result<()> {
        let ip = device_ip(self.global(j));
        let (socket, target) = (self.socket, self.plan.target);
        let Some(peers) = self.dtls.as_mut() else {
            return Ok(());
        };
        peers
            .drain(j, |d| match socket.send_from(ip, target, d) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
                other => other,
            })
            .context("sending")
    }

    /// A datagram for device `j` with `--dtls`: handshake flights, then the CoAP inside.
    fn receive_dtls(&mut self, j: u32, datagram: &[u8]) -> anyhow::Result<()> {
        let now = self.clock.now_ns();
        let Some(peers) = self.dtls.as_mut() else {
            return Ok(());
        };
        let event = peers.handle(j, datagram, now);
        self.flush_dtls(j)?;
        self.dtls_event(j, event)?;
        let mut plain = std::mem::take(&mut self.plain);
        let result = loop {
            let Some(peers) = self.dtls.as_mut() else {
                break Ok(());
            };
            match peers.recv_into(j, &mut plain) {
                Some(n) => {
                    if let Err(e) = self.receive(j, &plain[..n]) {
                        break Err(e);
                    }
                }
                None => {
                    let event = peers.after_recv(j, now);
                    break self.dtls_event(j, event);
                }
            }
        };
        self.plain = plain;
        result.and_then(|()| self.flush_dtls(j))
    }

    /// Fires the DTLS retransmission timers due by `now`.
    fn dtls_timeouts(&mut self, now: u64) -> anyhow::Result<()> {
        let mut fired = Vec::new();
        if let Some(peers) = self.dtls.as_mut() {
            peers.handle_timeouts(now, |_, j, event| fired.push((j, event)));
        }
        for (j, event) in fired {
            self.flush_dtls(j)?;
            self.dtls_event(j, event)?;
        }
        Ok(())
    }

    /// Counts a handshake's end; a finished one sends the request that waited for it.
    fn dtls_event(&mut self, j: u32, event: Event) -> anyhow::Result<()> {
        match event {
            Event::None => Ok(()),
            Event::Established { latency_ns, .. } => {
                self.counters.add(Counter::Handshakes, 1);
                self.rec
                    .record(Metric::DtlsHandshake, self.clock.now_ns(), latency_ns);
                if self.devices[j as usize].pending == Pending::None {
                    return Ok(());
                }
                self.encode(j);
                self.send(j)
            }
            // The next CoAP retransmission starts a new handshake.
            Event::Failed(_) | Event::Closed => {
                self.counters.add(Counter::DtlsFailed, 1);
                Ok(())
            }
        }
    }

    fn encode(&mut self, j: u32) {
        let g = self.global(j);
        let binding: &[u8] = if self.queue_mode(j) { b"b=UQ" } else { b"b=U" };
        let d = &self.devices[j as usize];
        let token = g.to_be_bytes();
        let out = &mut self.out;
        out.clear();
        match d.pending {
            Pending::Register => {
                let ep = format!("ep={}-{g}", self.plan.prefix);
                let lt = format!("lt={}", self.plan.lifetime);
                let mut w =
                    MessageWriter::new(out, MessageType::Con, Code::POST, d.pending_mid, &token);
                w.option(option::URI_PATH, b"rd")
                    .uint_option(option::CONTENT_FORMAT, 40)
                    .option(option::URI_QUERY, b"lwm2m=1.1")
                    .option(option::URI_QUERY, ep.as_bytes())
                    .option(option::URI_QUERY, binding)
                    .option(option::URI_QUERY, lt.as_bytes())
                    .payload(self.plan.objects.as_bytes());
                w.finish();
            }
            Pending::Update | Pending::Deregister => {
                let code = if d.pending == Pending::Update {
                    Code::POST
                } else {
                    Code::DELETE
                };
                let mut w = MessageWriter::new(out, MessageType::Con, code, d.pending_mid, &token);
                w.option(option::URI_PATH, b"rd")
                    .option(option::URI_PATH, d.location());
                w.finish();
            }
            Pending::Notify => {
                let mut d = *d;
                let due = d.pending_due;
                d.mid = d.pending_mid.wrapping_sub(1);
                d.obs_seq = d.obs_seq.wrapping_sub(1);
                device::notification(
                    &mut d,
                    true,
                    self.plan.notify_path,
                    self.plan.format,
                    due,
                    out,
                );
            }
            Pending::None => {}
        }
    }

    fn start_pending(&mut self, j: u32, kind: Pending, due: u64, now: u64, mid: u16) {
        let d = &mut self.devices[j as usize];
        d.pending = kind;
        d.pending_mid = mid;
        d.pending_due = due;
        d.attempts = 0;
        // RFC 7252 randomises the first timeout in [ACK_TIMEOUT, 1.5 × ACK_TIMEOUT].
        let jitter = u64::from(mid) * (ACK_TIMEOUT_NS / 2) / 65_536;
        self.retransmit
            .push(Reverse((now + ACK_TIMEOUT_NS + jitter, j, mid)));
    }

    fn send_request(&mut self, j: u32, kind: Pending, due: u64, now: u64) -> anyhow::Result<()> {
        let mid = self.devices[j as usize].next_mid();
        self.start_pending(j, kind, due, now, mid);
        self.encode(j);
        self.send(j)
    }

    fn notify(&mut self, j: u32, con: bool, due: u64, now: u64) -> anyhow::Result<()> {
        let d = &mut self.devices[j as usize];
        if !d.observed {
            return Ok(());
        }
        // NSTART = 1: while a CON is in flight the next notification goes NON.
        let con = con && d.pending == Pending::None;
        let mid = device::notification(
            d,
            con,
            self.plan.notify_path,
            self.plan.format,
            due,
            &mut self.out,
        );
        if con {
            self.start_pending(j, Pending::Notify, due, now, mid);
        }
        let watched = self.global(j) % self.plan.notify_sample.max(1) == 0;
        let counter = if watched {
            Counter::NotifySent
        } else {
            Counter::NotifyUnwatched
        };
        self.counters.add(counter, 1);
        self.send(j)
    }

    fn retransmit(&mut self, now: u64) -> anyhow::Result<()> {
        while let Some(&Reverse((at, j, mid))) = self.retransmit.peek() {
            if at > now {
                break;
            }
            self.retransmit.pop();
            let d = &mut self.devices[j as usize];
            if d.pending == Pending::None || d.pending_mid != mid {
                continue;
            }
            if d.attempts >= MAX_RETRANSMIT {
                if d.pending == Pending::Register {
                    d.life = Life::Failed;
                }
                d.pending = Pending::None;
                self.counters.add(Counter::Timeouts, 1);
                continue;
            }
            d.attempts += 1;
            let next = now + (ACK_TIMEOUT_NS << d.attempts);
            self.retransmit.push(Reverse((next, j, mid)));
            self.encode(j);
            self.send(j)?;
        }
        Ok(())
    }

    fn receive(&mut self, j: u32, datagram: &[u8]) -> anyhow::Result<()> {
        let now = self.clock.now_ns();
        let Ok(msg) = Message::parse(datagram) else {
            self.counters.add(Counter::Malformed, 1);
            return Ok(());
        };
        match msg.ty() {
            MessageType::Ack | MessageType::Rst => self.complete(j, &msg, now),
            MessageType::Con | MessageType::Non if msg.code().is_request() => {
                if self.queue_mode(j) && self.now_ms() > self.devices[j as usize].awake_until_ms {
                    // Asleep: the radio is off, the request is never seen.
                    self.counters.add(Counter::Asleep, 1);
                    return Ok(());
                }
                let g = self.global(j);
                let d = &mut self.devices[j as usize];
                let served = device::answer(
                    d,
                    g,
                    &msg,
                    self.plan.notify_path,
                    self.plan.format,
                    now,
                    &mut self.out,
                );
                self.counters.add(Counter::RequestsAnswered, 1);
                if served == Served::Observed {
                    self.counters.add(Counter::Observed, 1);
                    // A sleeping device notifies only when it wakes.
                    let sleeper = self.plan.wake_period_ns > 0 && self.queue_mode(j);
                    if !sleeper && !self.observed.contains(&j) {
                        self.observed.push(j);
                    }
                }
                self.send(j)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn complete(&mut self, j: u32, msg: &Message<'_>, now: u64) {
        let d = &mut self.devices[j as usize];
        if d.pending == Pending::None || msg.mid() != d.pending_mid {
            return;
        }
        let kind = d.pending;
        d.pending = Pending::None;
        let latency = now.saturating_sub(d.pending_due);
        let code = msg.code();
        match kind {
            Pending::Register if code == Code::CREATED => {
                let loc = msg.location_path().nth(1).unwrap_or_default();
                let len = loc.len().min(d.location.len());
                d.location[..len].copy_from_slice(&loc[..len]);
                d.location_len = len as u8;
                d.life = Life::Registered;
                self.counters.add(Counter::Registered, 1);
                self.rec.record(Metric::Register, now, latency);
            }
            Pending::Register => {
                d.life = Life::Failed;
                self.counters.add(Counter::RegisterFailed, 1);
            }
            Pending::Update if code == Code::CHANGED => {
                self.counters.add(Counter::Updated, 1);
                self.rec.record(Metric::Update, now, latency);
            }
            Pending::Update => self.counters.add(Counter::UpdateFailed, 1),
            Pending::Deregister => {
                d.life = Life::Gone;
                if code == Code::DELETED {
                    self.counters.add(Counter::Deregistered, 1);
                    self.rec.record(Metric::Deregister, now, latency);
                } else {
                    self.counters.add(Counter::Malformed, 1);
                }
            }
            Pending::Notify if msg.ty() == MessageType::Rst => d.observed = false,
            Pending::Notify | Pending::None => {}
        }
    }
}
