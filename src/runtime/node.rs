//! The node: one pinned glommio executor per shard, each driving a [`Shard`] with its own
//! socket, MQTT connection and channels to every other shard.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::{self, ConnectedReceiver};
use glommio::{LocalExecutorBuilder, Placement};

use super::control::{Control, CONTROL_CHANNEL};
use super::driver::{receive, serve_control, timers, ShardIo, JOURNAL_EARLY_FLUSH};
use super::histograms::{dump_loop, ShardHistograms};
use super::port::{self, Holder};
use super::shutdown::Shutdown;
use super::steer::{bind_reuseport_group, Steering};
use super::udp::{into_glommio, SendBatch};
use crate::config::{Broker, Config};
use crate::persist::{self, JournalSender, JournalWriter};
use crate::session::{directory_shard, Handoff, Shard, ShardConfig, ShardRestore};
use crate::uplink::{self, EmbeddedBroker};

/// io_uring memory per executor. glommio's default (10 MiB) exceeds the 8 MiB memlock limit
/// unprivileged users usually have; the gateway's I/O is datagrams and one TCP stream.
const IO_MEMORY: usize = 512 << 10;

/// Capacity of each shard-to-shard channel. Handoffs only happen on rebinding and
/// re-registration, so this absorbs bursts without holding much memory.
const HANDOFF_CHANNEL: usize = 4096;

/// How often a busy-polling shard (`gateway.busy_poll`) leaves its receive loop for the
/// reactor: timers, the MQTT socket and other shards' channels wait at most this long.
const BUSY_REACTOR_POLL: Duration = Duration::from_micros(250);

/// How long a stopping shard waits for its uplink to drain.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// Errors starting the node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The UDP listener could not be bound.
    #[error("cannot bind the UDP listener on {addr}: {source}{hint}")]
    Bind {
        /// `listeners.udp.bind`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// Another process holds the UDP port: joining its SO_REUSEPORT group would take over
    /// some of its devices (see [`super::port`]).
    #[error("listeners.udp.bind: UDP port {} ({addr}) is already in use by {holder}; a second gateway on it would join its SO_REUSEPORT group and take over some of its devices: stop that process or change listeners.udp.bind", addr.port())]
    PortHeld {
        /// `listeners.udp.bind`.
        addr: SocketAddr,
        /// The socket found on the port, and its process where readable.
        holder: Holder,
    },
    /// The DTLS listener could not be bound.
    #[error("cannot bind the DTLS listener on {addr}: {source}")]
    DtlsBind {
        /// `listeners.dtls.bind`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process holds the DTLS port.
    #[error("listeners.dtls.bind: UDP port {} ({addr}) is already in use by {holder}: stop that process or change listeners.dtls.bind", addr.port())]
    DtlsPortHeld {
        /// `listeners.dtls.bind`.
        addr: SocketAddr,
        /// The socket found on the port, and its process where readable.
        holder: Holder,
    },
    /// The DTLS credentials did not load.
    #[error(transparent)]
    Credentials(#[from] crate::dtls::credentials::CredentialError),
    /// OpenSSL failed to set up a shard's DTLS server.
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    /// The object definitions in `gateway.xml_dir` did not load.
    #[error("gateway.xml_dir: {0}")]
    Objects(#[from] crate::lwm2m::ObjectError),
    /// The embedded broker did not start.
    #[error(transparent)]
    Broker(#[from] uplink::BrokerError),
    /// The journal directory could not be used.
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
    /// The HTTP API could not start.
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
    /// An executor could not be created.
    #[error("cannot start shard executor {shard}: {reason} (io_uring must be available; as a non-root user raise `ulimit -l` above {} KiB per shard)", IO_MEMORY >> 10)]
    Executor {
        /// Shard index.
        shard: usize,
        /// glommio's error.
        reason: String,
    },
}

/// A running gateway node.
#[derive(Debug)]
pub struct Gateway {
    udp_addr: SocketAddr,
    dtls_addr: Option<SocketAddr>,
    credentials: Option<Arc<crate::dtls::credentials::Credentials>>,
    mqtt_addr: String,
    steering: Steering,
    shutdown: Arc<Shutdown>,
    registered: Arc<Vec<AtomicUsize>>,
    /// Datagrams each shard dropped as truncated.
    truncated: Arc<Vec<AtomicU64>>,
    executors: Vec<glommio::ExecutorJoinHandle<()>>,
    broker: Option<EmbeddedBroker>,
    journal: Option<JournalWriter>,
    api: Option<crate::api::ApiServer>,
}

impl Gateway {
    /// Binds the listener, starts the embedded broker if configured, and starts one
    /// executor per shard. Returns once every shard is running.
    pub fn start(config: Config) -> Result<Gateway, StartError> {
        let shards = config.gateway.shards;
        // Before anything else binds (the embedded broker would fail on its own port first).
        let bind = config.udp.bind;
        if let Some(holder) = port::other_holder(bind, &[]) {
            return Err(StartError::PortHeld { addr: bind, holder });
        }
        let (registry, report) =
            crate::lwm2m::Registry::load_dir_with_report(&config.gateway.xml_dir)?;
        tracing::info!(
            dir = %config.gateway.xml_dir.display(),
            files = report.files,
            objects = registry.len(),
            older_versions = registry.older_versions(),
            skipped = report.skipped.len(),
            "object definitions loaded"
        );
        let registry = Arc::new(registry);
        super::cluster::warn_if_embedded(&config);
        let broker = match &config.mqtt.broker {
            Broker::Embedded => Some(uplink::start_embedded(config.mqtt.embedded_bind)?),
            Broker::External { .. } => None,
        };
        let mqtt_addr = match (&config.mqtt.broker, &broker) {
            (_, Some(b)) => b.local_addr().to_string(),
            (Broker::External { host, port }, None) => format!("{host}:{port}"),
            (Broker::Embedded, None) => unreachable!("embedded broker started above"),
        };
        let held = |holder| StartError::PortHeld { addr: bind, holder };
        let (sockets, steering) = bind_reuseport_group(bind, shards).map_err(|source| {
            let in_use = source.kind() == std::io::ErrorKind::AddrInUse;
            match port::other_holder(bind, &[]).filter(|_| in_use) {
                Some(holder) => held(holder),
                None => StartError::Bind {
                    addr: bind,
                    source,
                    hint: if in_use {
                        "; another process holds this port: stop it or change listeners.udp.bind"
                    } else {
                        ""
                    },
                },
            }
        })?;
        // Another gateway may have bound between the check and our bind.
        if let Some(holder) = port::other_holder(bind, &port::inodes(&sockets)) {
            return Err(held(holder));
        }
        let udp_addr = sockets[0].local_addr().map_err(|source| StartError::Bind {
            addr: bind,
            source,
            hint: "",
        })?;
        tracing::info!(%udp_addr, shards, ?steering, mqtt = %mqtt_addr, "gateway starting");
        let dtls = super::dtls::open(&config, shards)?;
        let (dtls_addr, credentials, dtls_context, mut dtls_sockets) = match dtls {
            Some(d) => (
                Some(d.addr),
                Some(d.credentials),
                Some(d.context),
                d.sockets.into_iter().map(Some).collect(),
            ),
            None => (
                None,
                None,
                None,
                (0..shards).map(|_| None).collect::<Vec<_>>(),
            ),
        };
        let (journal, mut restores) = open_journal(&config, shards)?;

        // channels[from][to]
        let mut senders: Vec<Vec<Option<shared_channel::SharedSender<Handoff>>>> = (0..shards)
            .map(|_| (0..shards).map(|_| None).collect())
            .collect();
        let mut receivers: Vec<Vec<shared_channel::SharedReceiver<Handoff>>> =
            (0..shards).map(|_| Vec::new()).collect();
        for (from, row) in senders.iter_mut().enumerate() {
            for (to, slot) in row.iter_mut().enumerate() {
                if from != to {
                    let (s, r) = shared_channel::new_bounded(HANDOFF_CHANNEL);
                    *slot = Some(s);
                    receivers[to].push(r);
                }
            }
        }

        let shutdown = Arc::new(Shutdown::default());
        let registered: Arc<Vec<AtomicUsize>> =
            Arc::new((0..shards).map(|_| AtomicUsize::new(0)).collect());
        let truncated: Arc<Vec<AtomicU64>> =
            Arc::new((0..shards).map(|_| AtomicU64::new(0)).collect());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let node = config.gateway.node.clone();
        let config = Arc::new(config);
        let (control, mut control_rx): (Vec<_>, Vec<_>) = (0..shards)
            .map(|_| {
                let (tx, rx) = flume::bounded::<Control>(CONTROL_CHANNEL);
                (tx, Some(rx))
            })
            .unzip();
        let mut executors = Vec::with_capacity(shards);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<usize>();
        for (i, ((socket, senders), receivers)) in
            sockets.into_iter().zip(senders).zip(receivers).enumerate()
        {
            let ctx = ShardContext {
                index: i,
                config: config.clone(),
                registry: registry.clone(),
                socket,
                senders,
                receivers,
                shutdown: shutdown.clone(),
                registered: registered.clone(),
                truncated: truncated.clone(),
                mqtt_addr: mqtt_addr.clone(),
                node: node.clone(),
                ready: ready_tx.clone(),
                journal: journal.as_ref().map(JournalWriter::sender),
                restore: std::mem::take(&mut restores[i]),
                control: control_rx[i].take(),
                dtls: dtls_sockets[i]
                    .take()
                    .zip(dtls_context.clone())
                    .zip(credentials.clone()),
            };
            let mut builder = LocalExecutorBuilder::new(Placement::Fixed(i % cores))
                .name(&format!("shard-{i}"))
                .io_memory(IO_MEMORY);
            if config.gateway.busy_poll {
                // The receive loop never lets the executor idle, so only this timer sends
                // it through its reactor (timers, TCP, channels).
                builder = builder.preempt_timer(BUSY_REACTOR_POLL);
            }
            let handle =
                builder
                    .spawn(move || shard_main(ctx))
                    .map_err(|e| StartError::Executor {
                        shard: i,
                        reason: e.to_string(),
                    })?;
            executors.push(handle);
        }
        drop(ready_tx);
        for _ in 0..shards {
            if ready_rx.recv().is_err() {
                break;
            }
        }
        if journal.is_some() {
            persist::release_freed_memory();
        }
        let api = match config.api.bind {
            Some(bind) => Some(crate::api::ApiServer::start(
                bind,
                config.api.token.clone(),
                control,
                node,
            )?),
            None => None,
        };
        Ok(Gateway {
            udp_addr,
            dtls_addr,
            credentials,
            mqtt_addr,
            steering,
            shutdown,
            registered,
            truncated,
            executors,
            broker,
            journal,
            api,
        })
    }

    /// The bound HTTP API address (useful with port 0), when the API is on.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().map(crate::api::ApiServer::local_addr)
    }

    /// The bound UDP listener address (useful with port 0).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The bound DTLS listener address, when it is enabled.
    pub fn dtls_addr(&self) -> Option<SocketAddr> {
        self.dtls_addr
    }

    /// Re-reads what can change while running: the DTLS PSK file. Established sessions
    /// are kept; new handshakes use the new keys.
    pub fn reload(&self) {
        if let Some(c) = &self.credentials {
            super::dtls::reload(c);
        }
    }

    /// `host:port` of the broker the uplinks connect to.
    pub fn mqtt_addr(&self) -> &str {
        &self.mqtt_addr
    }

    /// Whether the kernel steers by the BPF program or by its own hash.
    pub fn steering(&self) -> Steering {
        self.steering
    }

    /// Registered endpoints per shard.
    pub fn registered(&self) -> Vec<usize> {
        self.registered
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }

    /// Registered endpoints per shard once their sum reaches `total`, or as they are when
    /// `timeout` passes. The counters are refreshed by each shard's timer task.
    pub fn registered_eventually(&self, total: usize, timeout: Duration) -> Vec<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.registered();
            if now.iter().sum::<usize>() == total || Instant::now() >= deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Datagrams dropped because they were longer than the receive slot
    /// ([`MAX_DATAGRAM`](super::udp::MAX_DATAGRAM)), summed over the shards. Refreshed whenever the shard hands on what it produced.
    pub fn truncated(&self) -> u64 {
        self.truncated
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    /// Graceful stop: shards stop reading, flush their uplinks, then the broker stops.
    pub fn stop(self) {
        if let Some(api) = self.api {
            api.stop();
        }
        self.shutdown.stop();
        for e in self.executors {
            if let Err(e) = e.join() {
                tracing::warn!("shard ended with an error: {e}");
            }
        }
        drop(self.broker);
        if let Some(journal) = self.journal {
            journal.stop();
        }
        tracing::info!("gateway stopped");
    }
}

/// Commands a shard handles before it flushes their requests to the socket: what one read
/// from the broker brought leaves in one `sendmmsg` of up to `udp::BATCH` (64) datagrams.
/// At 10 k commands/s on two shards this took `sendmmsg` calls from 1.0 to 0.8 per command.
const COMMANDS_PER_FLUSH: usize = 64;

struct ShardContext {
    index: usize,
    config: Arc<Config>,
    registry: Arc<crate::lwm2m::Registry>,
    socket: std::net::UdpSocket,
    senders: Vec<Option<shared_channel::SharedSender<Handoff>>>,
    receivers: Vec<shared_channel::SharedReceiver<Handoff>>,
    shutdown: Arc<Shutdown>,
    registered: Arc<Vec<AtomicUsize>>,
    truncated: Arc<Vec<AtomicU64>>,
    mqtt_addr: String,
    node: String,
    ready: std::sync::mpsc::Sender<usize>,
    journal: Option<JournalSender>,
    restore: ShardRestore,
    /// Requests from the HTTP API.
    control: Option<flume::Receiver<Control>>,
    /// The shard's DTLS socket, the node's context and credentials, when DTLS is on.
    dtls: Option<(
        (std::net::UdpSocket, openssl::ssl::SslContext),
        Arc<crate::dtls::credentials::Credentials>,
    )>,
}

/// Loads the journal directory (when persistence is on), shares its registrations out
/// among the shards and starts the journal writer.
fn open_journal(
    config: &Config,
    shards: usize,
) -> Result<(Option<JournalWriter>, Vec<ShardRestore>), StartError> {
    let mut restores: Vec<ShardRestore> = (0..shards).map(|_| ShardRestore::default()).collect();
    let Some(dir) = &config.persistence.dir else {
        return Ok((None, restores));
    };
    let mut loaded = persist::load(dir)?;
    let merge = std::mem::take(&mut loaded.merge);
    let tombstones = merge.tombstones();
    let plan = persist::plan_restore(
        merge.into_live(),
        persist::unix_now(),
        shards,
        |addr| super::steer::shard_for(addr, shards),
        |ep| directory_shard(ep, shards),
    );
    tracing::info!(
        dir = %dir.display(),
        files = loaded.files,
        bytes = loaded.bytes,
        records = loaded.report.records,
        restored = plan.restored,
        expired = plan.expired,
        superseded = plan.superseded.len(),
        tombstones,
        damaged_stretches = loaded.report.corrupt,
        torn_tail_bytes = loaded.report.torn_tail,
        elapsed_ms = loaded.elapsed.as_millis() as u64,
        "journal loaded"
    );
    let writer = JournalWriter::start(loaded)?;
    if !plan.superseded.is_empty() {
        let mut buf = Vec::new();
        for (key, generation) in &plan.superseded {
            persist::encode_removed(
                &mut buf,
                *key,
                generation.wrapping_add(1),
                persist::unix_now(),
            );
        }
        writer.sender().append(buf);
    }
    restores = plan.shards;
    Ok((Some(writer), restores))
}

async fn shard_main(ctx: ShardContext) {
    let index = ctx.index;
    let socket = Rc::new(into_glommio(ctx.socket));
    let uplink = Rc::new(uplink::spawn_uplink(
        &ctx.config.mqtt,
        index,
        &ctx.node,
        ctx.mqtt_addr.clone(),
    ));
    super::cluster::set_will(&ctx.config, &ctx.node, index, &uplink);
    // Each side of a channel waits for the other to connect, so the receiving ends connect
    // in their own tasks while this one connects the sending ends.
    let receiving: Vec<_> = ctx
        .receivers
        .into_iter()
        .map(|r| glommio::spawn_local(async move { r.connect().await }))
        .collect();
    let mut peers = Vec::with_capacity(ctx.senders.len());
    for s in ctx.senders {
        peers.push(match s {
            Some(s) => Some(s.connect().await),
            None => None,
        });
    }
    let mut inbound: Vec<ConnectedReceiver<Handoff>> = Vec::new();
    for r in receiving {
        inbound.push(r.await);
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let started = Instant::now();
    let mut shard = Shard::new(
        ShardConfig::new(&ctx.config, index, ctx.registry.clone()),
        started,
        seed,
    );
    super::cluster::enable(&ctx.config, &ctx.node, started, &mut shard, &uplink);
    let mut secure_socket = None;
    if let Some(((socket, context), credentials)) = ctx.dtls {
        let hasher = shard.identity_hasher();
        match super::dtls::shard_server(&ctx.config, context, credentials, hasher, started) {
            Ok(server) => {
                shard.enable_dtls(server);
                secure_socket = Some(Rc::new(into_glommio(socket)));
            }
            Err(e) => tracing::error!(shard = index, "DTLS listener not started: {e}"),
        }
    }
    if ctx.journal.is_some() {
        shard.enable_journal(persist::unix_now());
        let restoring = ctx.restore.endpoints.len();
        shard.restore(started, ctx.restore);
        if restoring > 0 {
            tracing::info!(
                shard = index,
                endpoints = shard.registered(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "registrations restored"
            );
        }
        ctx.registered[index].store(shard.registered(), Ordering::Relaxed);
    }
    let io = Rc::new(RefCell::new(ShardIo {
        shard,
        send: SendBatch::new(),
        socket: socket.clone(),
        secure: secure_socket.clone().map(|s| (SendBatch::new(), s)),
        send_dropped: 0,
        datagrams_out: 0,
        handoffs_out: 0,
        uplink: uplink.clone(),
        peers,
        backlog: VecDeque::new(),
        pipeline: Default::default(),
        waiters: Default::default(),
        next_tag: 0,
        moderating: Vec::new(),
        gauges: (ctx.registered.clone(), ctx.truncated.clone(), index),
        timer: None,
        journal_waker: None,
        receive_pauses: 0,
        receive_paused: Duration::ZERO,
    }));
    // Commands: every shard subscribes to the wildcard command topic and keeps the
    // commands of its own endpoints (see `Shard::handle_command`). Measured against one
    // subscription per endpoint with `examples/command_intake.rs` on Mosquitto 2.0 (2-core
    // box, 100k endpoints): per-endpoint filters took 5.1 s of SUBSCRIBEs after every
    // (re)connect and ~170 MiB of broker memory, and delivered 54k commands/s; the
    // wildcard set up in 0.1 s and delivered 77k/s. At 1M endpoints the per-endpoint way
    // would spend ~50 s re-subscribing after each reconnect. The wildcard's cost is one
    // delivery per shard, which at the few shards of a node is the cheaper side.
    let command = &ctx.config.translators.command;
    let filter =
        crate::translate::Mountpoint::parse(&ctx.config.gateway.mountpoint).filter(&command.topic);
    uplink.subscribe(vec![(filter, command.qos)]);
    let hist = Rc::new(RefCell::new(ShardHistograms::new()));
    let timed = ctx.config.perf.histogram_dir.is_some();
    {
        let (io, uplink, hist) = (io.clone(), uplink.clone(), hist.clone());
        glommio::spawn_local(async move {
            loop {
                let first = uplink.next_incoming().await;
                let now = Instant::now();
                let mut io = io.borrow_mut();
                super::cluster::watch(now, &uplink, &mut io.shard);
                // Commands that arrived in one read from the broker are handled together
                // and their requests leave in one flush.
                let burst =
                    std::iter::once(first).chain(std::iter::from_fn(|| uplink.poll_incoming()));
                let mut taken = 0;
                for (topic, payload) in burst.take(COMMANDS_PER_FLUSH) {
                    io.shard.handle_command(now, &topic, &payload);
                    taken += 1;
                }
                io.flush(now);
                if timed {
                    let took = now.elapsed();
                    let mut hist = hist.borrow_mut();
                    (0..taken).for_each(|_| hist.record_command(took));
                }
            }
        })
        .detach();
    }
    if let Some(requests) = ctx.control {
        glommio::spawn_local(serve_control(io.clone(), requests)).detach();
    }
    let _ = ctx.ready.send(index);

    let journaling = ctx.journal.clone().map(|journal| {
        let interval = ctx.config.persistence.flush_interval;
        glommio::spawn_local(hand_over_journal(io.clone(), journal, interval))
    });

    for rx in inbound {
        let io = io.clone();
        glommio::spawn_local(async move {
            while let Some(h) = rx.recv().await {
                let now = Instant::now();
                let mut io = io.borrow_mut();
                io.shard.handle_handoff(now, h);
                io.flush(now);
            }
        })
        .detach();
    }
    glommio::spawn_local(timers(io.clone(), ctx.shutdown.clone())).detach();

    let dumping = ctx.config.perf.histogram_dir.clone().map(|dir| {
        let (hist, uplink, shutdown) = (hist.clone(), uplink.clone(), ctx.shutdown.clone());
        let interval = ctx.config.perf.histogram_interval;
        glommio::spawn_local(async move {
            let stop = || shutdown.is_stopping();
            if let Err(e) = dump_loop(&dir, index, interval, hist, uplink, stop).await {
                tracing::warn!(shard = index, dir = %dir.display(), "histogram dump stopped: {e}");
            }
        })
    });
    let busy = ctx.config.gateway.busy_poll;
    let moderation = ctx.config.gateway.rx_moderation;
    if let Some(socket) = secure_socket {
        glommio::spawn_local(receive(
            io.clone(),
            socket,
            ctx.shutdown.clone(),
            true,
            busy,
            moderation,
            None,
        ))
        .detach();
    }
    let timed_hist = dumping.is_some().then(|| hist.clone());
    receive(
        io.clone(),
        socket,
        ctx.shutdown.clone(),
        false,
        busy,
        moderation,
        timed_hist,
    )
    .await;
    // Stop reading; hand the uplink everything still queued, then let it drain.
    {
        let now = Instant::now();
        let mut io = io.borrow_mut();
        io.shard.handle_timeout(now);
        io.shard.leave_cluster();
        io.flush(now);
        if let Some(stats) = io.shard.dtls_stats() {
            // Until the counters have an endpoint of their own (metrics), the log has them.
            tracing::info!(
                shard = index,
                sessions = io.shard.dtls_sessions(),
                ?stats,
                "DTLS counters"
            );
        }
    }
    // Stops the periodic hand-over (dropping a glommio task cancels it); the rest goes
    // now.
    drop(journaling);
    if let Some(journal) = &ctx.journal {
        let mut buf = Vec::new();
        io.borrow_mut().shard.take_journal(&mut buf);
        journal.append(buf);
    }
    uplink.flush(Instant::now() + FLUSH_DEADLINE).await;
    if let Some(task) = dumping {
        task.await;
    }
    tracing::debug!(shard = index, "shard stopped");
}

/// Runs the gateway until SIGINT or SIGTERM, then stops it gracefully. SIGHUP (logrotate,
/// `systemctl reload`) never ends the process: it calls `on_hangup`, which reloads what can
/// change while running, and the gateway goes on serving.
pub fn run(config: Config, mut on_hangup: impl FnMut()) -> anyhow::Result<()> {
    let signals = block_signals()?;
    let gateway = Gateway::start(config)?;
    let dtls = gateway
        .dtls_addr()
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    let api = gateway
        .api_addr()
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    tracing::info!(udp = %gateway.udp_addr(), %dtls, mqtt = %gateway.mqtt_addr(), %api, "gateway running; SIGINT or SIGTERM stops it, SIGHUP reloads");
    let signal = loop {
        match wait_for(&signals)? {
            libc::SIGHUP => {
                tracing::info!("SIGHUP: reloading");
                on_hangup();
                gateway.reload();
            }
            libc::SIGTERM => break "SIGTERM",
            _ => break "SIGINT",
        }
    };
    tracing::info!(signal, "stopping: flushing the uplink");
    gateway.stop();
    Ok(())
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and the threads it starts) so that
/// [`wait_for`] takes them synchronously and none of them ends the process by default.
fn block_signals() -> std::io::Result<libc::sigset_t> {
    // SAFETY: plain libc signal-set manipulation on a local, initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

/// Waits for one of the signals in `set`; returns its number.
fn wait_for(set: &libc::sigset_t) -> std::io::Result<libc::c_int> {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised; `sig` is a valid out pointer.
    let rc = unsafe { libc::sigwait(set, &mut sig) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(sig)
}

/// Hands the shard's journal bytes to the journal thread every `interval` (at most one
/// interval after a change, the bytes leave the shard), or as soon as
/// [`JOURNAL_EARLY_FLUSH`] bytes have gathered ([`ShardIo::flush`] wakes it), until the
/// task is dropped.
async fn hand_over_journal(io: Rc<RefCell<ShardIo>>, journal: JournalSender, interval: Duration) {
    loop {
        let early = std::future::poll_fn(|cx| {
            let mut io = io.borrow_mut();
            if io.shard.pending_journal() >= JOURNAL_EARLY_FLUSH {
                return std::task::Poll::Ready(());
            }
            io.journal_waker = Some(cx.waker().clone());
            std::task::Poll::Pending
        });
        futures_lite::future::or(glommio::timer::sleep(interval), early).await;
        let mut io = io.borrow_mut();
        io.journal_waker = None;
        let pending = io.shard.pending_journal();
        if pending > 0 {
            let mut buf = Vec::with_capacity(pending);
            io.shard.take_journal(&mut buf);
            journal.append(buf);
        }
    }
}
