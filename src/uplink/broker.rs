//! The embedded MQTT broker (`mqtt.broker = "embedded"`): rumqttd running on its own
//! threads (its router thread and one tokio current-thread runtime for the listener), so
//! that one command runs the whole gateway on a fresh machine.
//!
//! Behaviour worth knowing, from rumqttd 0.19:
//! - QoS 1 is honoured end to end: publishes from the gateway are acknowledged after they
//!   are appended to the broker's log, and subscribers with a QoS 1 subscription receive
//!   them as QoS 1 and must acknowledge them.
//! - A publish is appended to the in-memory log of each subscription filter its topic
//!   matches, and dropped when none does. A log keeps at most [`SEGMENT_SIZE`] ×
//!   [`SEGMENT_COUNT`] bytes, so a subscriber that falls further behind than that skips
//!   messages. (`dynamic_filters` is set so that a publish nobody subscribed to never
//!   disconnects its publisher; 0.19 drops such publishes either way.)
//! - Which filters a topic matches is cached only when some do: a publish to a topic no
//!   filter matches is matched against every filter again. Applications should subscribe
//!   with wildcards (`lwm2m/+/up/#`) rather than thousands of exact topics, or the broker
//!   spends its time matching: 625 exact notify topics held it to ~23 k publishes/s on a
//!   2-core box, where one wildcard subscriber took all of 200 k/s.
//! - Nothing is written to disk, there is no console and no Prometheus endpoint.
//! - rumqttd cannot be stopped short of ending the process; [`EmbeddedBroker`] is kept for
//!   its address and dropped with the process.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, Disconnect};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Largest PUBLISH payload the broker accepts: commands with a firmware chunk or a large
/// SenML document still fit.
pub const MAX_PAYLOAD_SIZE: usize = 1024 * 1024;

/// QoS 1 messages the broker keeps in flight per connection.
pub const MAX_INFLIGHT_COUNT: usize = 1024;

/// Concurrent client connections: one per shard per gateway node plus applications.
pub const MAX_CONNECTIONS: usize = 10_000;

/// Bytes per segment of a topic's in-memory log.
pub const SEGMENT_SIZE: usize = 4 * 1024 * 1024;

/// Segments kept per topic log before the oldest is discarded.
pub const SEGMENT_COUNT: usize = 4;

/// How long a client has to send CONNECT after its TCP connection is accepted.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`start_embedded`] waits for the broker to accept connections.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes the broker forwards to one connection per scheduling round; also the most
/// retained messages it forwards to a QoS 0 subscription when it is made.
pub const MAX_OUTGOING_PACKET_COUNT: u64 = 200;

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Something else listens on the address.
    #[error(
        "another MQTT broker (or other program) is running on {addr}; stop it, set \
         mqtt.embedded_bind to a free port, or point mqtt.broker at it with mqtt://host:port"
    )]
    PortInUse {
        /// `mqtt.embedded_bind`.
        addr: SocketAddr,
    },
    /// The address cannot be bound for another reason (e.g. not a local address).
    #[error("cannot listen on {addr} (mqtt.embedded_bind): {source}")]
    Bind {
        /// `mqtt.embedded_bind`.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// The broker thread could not be created.
    #[error("cannot start the embedded broker thread: {0}")]
    Spawn(std::io::Error),
    /// The broker did not accept connections within [`STARTUP_TIMEOUT`].
    #[error("the embedded broker did not come up on {addr} within {timeout:?}")]
    NotListening {
        /// Where it should listen.
        addr: SocketAddr,
        /// How long it was given.
        timeout: Duration,
    },
}

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    _thread: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// The address the broker listens on (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Starts rumqttd listening for MQTT 3.1.1 on `bind` (port 0 picks a free port) and waits
/// until it accepts TCP connections.
pub fn start_embedded(bind: SocketAddr) -> Result<EmbeddedBroker, BrokerError> {
    let addr = probe_port(bind)?;
    let config = broker_config(addr);
    let thread = std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!("embedded MQTT broker stopped: {e}");
            }
        })
        .map_err(BrokerError::Spawn)?;
    let started = Instant::now();
    loop {
        if probe_mqtt(addr).is_ok() {
            match disable_nagle(addr) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(%addr, "embedded broker's listener not found; Nagle's algorithm stays on for its clients")
                }
                Err(e) => {
                    tracing::warn!(%addr, "cannot turn Nagle's algorithm off for the embedded broker's clients: {e}")
                }
            }
            tracing::info!(%addr, "embedded MQTT broker listening");
            return Ok(EmbeddedBroker {
                addr,
                _thread: thread,
            });
        }
        if thread.is_finished() || started.elapsed() >= STARTUP_TIMEOUT {
            return Err(BrokerError::NotListening {
                addr,
                timeout: STARTUP_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connects as an MQTT client and disconnects again: the broker is up when it answers
/// CONNECT with an accepting CONNACK.
fn probe_mqtt(addr: SocketAddr) -> std::io::Result<()> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut out = BytesMut::new();
    let _ = Connect::new("embedded-broker-probe").write(&mut out);
    stream.write_all(&out)?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if connack != [0x20, 0x02, 0x00, 0x00] {
        return Err(std::io::Error::other("unexpected CONNACK"));
    }
    out.clear();
    let _ = Disconnect.write(&mut out);
    stream.write_all(&out)
}

/// Turns Nagle's algorithm off for every connection the broker accepts from now on; `false`
/// when no listening socket on `addr` was found.
///
/// rumqttd 0.19 has no option for it and leaves it on, so a small PUBLISH it forwards waits
/// for the acknowledgement of the one before, which the receiver delays: command round trips
/// through it measured p50 8.7 ms at 1 k commands/s. An accepted socket inherits
/// `TCP_NODELAY` from its listening socket, and the broker's listener is a descriptor of
/// this process: the one listening on `addr`.
fn disable_nagle(addr: SocketAddr) -> std::io::Result<bool> {
    let listener = find_own_socket(|socket| {
        let listening = socket.is_listener().unwrap_or(false);
        (listening && socket.local_addr().ok()?.as_socket()? == addr)
            .then(|| socket.set_nodelay(true))
    })?;
    listener.transpose().map(|set| set.is_some())
}

/// The first `Some` that `f` returns for a socket descriptor of this process.
fn find_own_socket<T>(
    mut f: impl FnMut(socket2::SockRef<'_>) -> Option<T>,
) -> std::io::Result<Option<T>> {
    use std::os::fd::{BorrowedFd, RawFd};
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(fd) = entry?.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        // SAFETY: the descriptor is only used for the calls `f` makes; should another
        // thread close it meanwhile, they fail with EBADF.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        if let Some(found) = f(socket2::SockRef::from(&fd)) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Binds `bind` once to learn whether it is free (and which port 0 means), then releases it
/// for the broker.
fn probe_port(bind: SocketAddr) -> Result<SocketAddr, BrokerError> {
    match TcpListener::bind(bind) {
        Ok(listener) => listener
            .local_addr()
            .map_err(|source| BrokerError::Bind { addr: bind, source }),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(BrokerError::PortInUse { addr: bind })
        }
        Err(source) => Err(BrokerError::Bind { addr: bind, source }),
    }
}

fn broker_config(addr: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: CONNECTION_TIMEOUT.as_millis().min(u128::from(u16::MAX)) as u16,
        max_payload_size: MAX_PAYLOAD_SIZE,
        max_inflight_count: MAX_INFLIGHT_COUNT,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "embedded-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    let router = RouterConfig {
        max_connections: MAX_CONNECTIONS,
        max_outgoing_packet_count: MAX_OUTGOING_PACKET_COUNT,
        max_segment_size: SEGMENT_SIZE,
        max_segment_count: SEGMENT_COUNT,
        ..RouterConfig::default()
    };
    Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_in_use_says_what_to_do() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = start_embedded(addr).expect_err("port is taken");
        assert!(matches!(err, BrokerError::PortInUse { .. }));
        let text = err.to_string();
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(
            text.contains("mqtt.embedded_bind") && text.contains("mqtt://host:port"),
            "{text}"
        );
    }

    #[test]
    fn clients_of_the_embedded_broker_get_nagle_off() {
        let broker = start_embedded("127.0.0.1:0".parse().expect("addr")).expect("starts");
        let client = TcpStream::connect(broker.local_addr()).expect("broker accepts");
        let client_addr = client.local_addr().expect("client addr");
        // The broker's end of this connection is a descriptor of this process.
        let deadline = Instant::now() + Duration::from_secs(5);
        let nodelay = loop {
            let found = find_own_socket(|socket| {
                let peer = socket.peer_addr().ok()?.as_socket()?;
                let local = socket.local_addr().ok()?.as_socket()?;
                (peer == client_addr && local == broker.local_addr())
                    .then(|| socket.nodelay().expect("TCP_NODELAY"))
            })
            .expect("fd table");
            if let Some(nodelay) = found {
                break nodelay;
            }
            assert!(
                Instant::now() < deadline,
                "the broker never accepted the connection"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            nodelay,
            "the broker's end of the connection keeps Nagle's algorithm on"
        );
    }

    #[test]
    fn port_zero_reports_the_real_port_and_accepts_connections() {
        let broker = start_embedded("127.0.0.1:0".parse().expect("addr")).expect("starts");
        let addr = broker.local_addr();
        assert_ne!(addr.port(), 0);
        TcpStream::connect(addr).expect("broker accepts");
    }
}
