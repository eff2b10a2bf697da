//! Configuration: the TOML file structs (`file::*`), validated into a typed [`Config`].
//!
//! Every key has the default of SPEC §3; `config/gateway.toml` lists them all and is
//! embedded as [`DEFAULT_CONFIG`]. A bad value is a [`ConfigError`] naming the key, never
//! a panic or a silent default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The default configuration file, byte for byte (printed by `--print-default-config`).
pub const DEFAULT_CONFIG: &str = include_str!("../config/gateway.toml");

/// Largest number of shards accepted: the location id spends one character on the shard.
pub const MAX_SHARDS: usize = 36;

/// Longest node name: it is one MQTT topic level and part of every client id.
pub const MAX_NODE_NAME: usize = 64;

/// A configuration problem, naming the key (`section.key`) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file named on the command line.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has the wrong type.
    #[error("{0}")]
    Syntax(String),
    /// A key has a value of the right type that is not acceptable.
    #[error("{key}: {problem}")]
    Invalid {
        /// `section.key` of the offending value.
        key: &'static str,
        /// What is wrong, in words an operator can act on.
        problem: String,
    },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// MQTT quality of service used by a translator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// At most once.
    AtMostOnce,
    /// At least once: held in the offline buffer and retried until PUBACK.
    AtLeastOnce,
}

/// Topic suffix and QoS of one kind of MQTT message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translator {
    /// Topic after the mountpoint, e.g. `up/resp`.
    pub topic: String,
    /// QoS of publishes (or of the subscription, for `command`).
    pub qos: Qos,
}

/// The translators of SPEC §3 `[translators]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translators {
    /// Subscribed; commands arrive here.
    pub command: Translator,
    /// Responses to commands.
    pub response: Translator,
    /// Observe notifications.
    pub notify: Translator,
    /// Register messages.
    pub register: Translator,
    /// Update messages.
    pub update: Translator,
    /// Lifecycle events (deregister, expired, replaced, rebound).
    pub event: Translator,
    /// Notifications of the Firmware Update object (5), as EMQX publishes them (`v1/up/dm`);
    /// `None` (`dm_notify = false`) sends them to `notify` like any other.
    pub dm_notify: Option<Translator>,
}

/// When an Update is published (`update_msg_publish_condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdatePublishCondition {
    /// Every Update is published.
    Always,
    /// Only Updates that carry an object list payload.
    ContainsObjectList,
}

/// `auto_observe`: which paths are observed as soon as a device registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoObserve {
    /// Nothing is observed automatically.
    Off,
    /// Every object instance in the registration's object list.
    All,
    /// These paths, when the device lists them.
    Paths(Vec<String>),
}

/// A secret from the configuration (`mqtt.password`): its `Debug` output is redacted, so
/// logging a configuration never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where the MQTT uplink connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// Start an in-process broker on `mqtt.embedded_bind` and connect to it.
    Embedded,
    /// An external broker, `mqtt://host:port`.
    External {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
    },
}

/// `[gateway]`.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Number of shards (executors); resolved from 0 to the core count.
    pub shards: usize,
    /// Directory of object definition XML files.
    pub xml_dir: PathBuf,
    /// Smallest accepted registration lifetime.
    pub lifetime_min: Duration,
    /// Largest accepted registration lifetime.
    pub lifetime_max: Duration,
    /// How long a queue-mode device stays reachable after an uplink.
    pub qmode_time_window: Duration,
    /// Automatic observation after register.
    pub auto_observe: AutoObserve,
    /// How long an unfinished block-wise (Block1) request body is kept without a new block:
    /// the only state the gateway holds for a peer that has not registered (yet), so a
    /// peer that has not registered by then is forgotten.
    pub idle_timeout: Duration,
    /// When Updates are published.
    pub update_msg_publish_condition: UpdatePublishCondition,
    /// Topic prefix template with `${endpoint_name}` and `${peerhost}`.
    pub mountpoint: String,
    /// Commands queued per sleeping device.
    pub max_queued_commands: usize,
    /// APNs (lower case) whose devices are in queue mode without a `Q` binding: they sleep
    /// in PSM as the carrier configures it for that APN.
    pub psm_apns: Vec<String>,
    /// This node's name (`gateway.node`, the host name when empty): in MQTT client ids and
    /// in the cluster's presence records.
    pub node: String,
    /// Shards never park: each polls its sockets between its other tasks and keeps its
    /// core busy (`gateway.busy_poll`).
    pub busy_poll: bool,
    /// The longest a shard under load lets forwarded datagrams gather between two drains
    /// (`gateway.rx_moderation`; see `runtime::moderation`); zero wakes for every datagram.
    pub rx_moderation: Duration,
}

/// `[listeners.udp]`.
#[derive(Debug, Clone)]
pub struct UdpListenerConfig {
    /// Address every shard binds with SO_REUSEPORT.
    pub bind: SocketAddr,
    /// Registered endpoints per node; beyond, Register gets 5.03.
    pub max_connections: usize,
    /// New registrations per second per node; beyond, Register gets 5.03.
    pub max_conn_rate: u32,
}

/// `[listeners.dtls]`.
#[derive(Debug, Clone)]
pub struct DtlsListenerConfig {
    /// Whether the DTLS listener runs.
    pub enabled: bool,
    /// Its address.
    pub bind: SocketAddr,
    /// PSK file, lines `identity:hexkey[:endpoint]`.
    pub psk_file: Option<PathBuf>,
    /// Server certificate (PEM).
    pub certfile: Option<PathBuf>,
    /// Server key (PEM).
    pub keyfile: Option<PathBuf>,
    /// CA used to verify client certificates.
    pub cacertfile: Option<PathBuf>,
}

/// `[mqtt]`.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Embedded or external broker.
    pub broker: Broker,
    /// Where the embedded broker listens.
    pub embedded_bind: SocketAddr,
    /// Client id prefix: `<prefix>-<node>-<shard>`.
    pub client_id_prefix: String,
    /// Username, if any.
    pub username: Option<String>,
    /// Password, if any; redacted in `Debug` output.
    pub password: Option<Secret>,
    /// MQTT keep-alive interval.
    pub keep_alive: Duration,
    /// PUBLISH packets per socket write.
    pub max_batch: usize,
    /// Messages held per shard while the broker is unreachable.
    pub offline_buffer: usize,
}

/// `[cluster]`: several nodes on one broker (README "Several nodes").
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Whether this node publishes presence records and answers commands for unknown
    /// endpoints only when no live node holds them.
    pub enabled: bool,
    /// Topic prefix of the presence and live-node records (`<prefix>/presence/...`,
    /// `<prefix>/nodes/...`); the nodes of one cluster share it.
    pub topic_prefix: String,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `tracing` filter directives (`RUST_LOG` syntax); `RUST_LOG`, when set, overrides it.
    /// Re-read from the file on SIGHUP.
    pub filter: String,
}

/// `[perf]`.
#[derive(Debug, Clone)]
pub struct PerfConfig {
    /// Where interval histograms are written; `None` disables them.
    pub histogram_dir: Option<PathBuf>,
    /// Interval between histogram dumps.
    pub histogram_interval: Duration,
}

/// `[persistence]`.
#[derive(Debug, Clone)]
pub struct PersistenceConfig {
    /// Journal directory; `None` disables persistence.
    pub dir: Option<PathBuf>,
    /// Longest time a change waits in a shard before it is handed to the journal: what a
    /// crash can lose.
    pub flush_interval: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[gateway]`.
    pub gateway: GatewayConfig,
    /// `[translators]`.
    pub translators: Translators,
    /// `[listeners.udp]`.
    pub udp: UdpListenerConfig,
    /// `[listeners.dtls]`.
    pub dtls: DtlsListenerConfig,
    /// `[mqtt]`.
    pub mqtt: MqttConfig,
    /// `[cluster]`.
    pub cluster: ClusterConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[perf]`.
    pub perf: PerfConfig,
    /// `[persistence]`.
    pub persistence: PersistenceConfig,
    /// `[api]`.
    pub api: ApiConfig,
}

/// `[api]`: the HTTP management API and `/metrics`.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Where it listens; `None` (`bind = ""`) disables it.
    pub bind: Option<SocketAddr>,
    /// Bearer token every request except `/healthz` and `/readyz` must carry; `None`
    /// (`token = ""`) lets any request in.
    pub token: Option<Secret>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|e| match e {
            ConfigError::Syntax(m) => ConfigError::Syntax(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses and validates configuration text; absent keys take their defaults.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let file: file::ConfigFile =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        file.validate()
    }

    /// The built-in defaults (SPEC §3).
    pub fn default_config() -> Config {
        Config::from_toml("").expect("the built-in defaults are valid")
    }

    /// The sections of `newer` that differ from this configuration and take effect only
    /// at a restart: everything except `[log]`, which a SIGHUP reloads.
    pub fn restart_needed(&self, newer: &Config) -> Vec<&'static str> {
        use std::fmt::Debug;
        // `Debug` redacts the password, so it is compared in the clear next to `[mqtt]`.
        let password = |c: &Config| c.mqtt.password.as_ref().map(|p| p.expose().to_owned());
        let sections: [(&'static str, &dyn Debug, &dyn Debug); 8] = [
            ("gateway", &self.gateway, &newer.gateway),
            ("translators", &self.translators, &newer.translators),
            ("listeners.udp", &self.udp, &newer.udp),
            ("listeners.dtls", &self.dtls, &newer.dtls),
            (
                "mqtt",
                &(&self.mqtt, password(self)),
                &(&newer.mqtt, password(newer)),
            ),
            ("cluster", &self.cluster, &newer.cluster),
            ("perf", &self.perf, &newer.perf),
            ("persistence", &self.persistence, &newer.persistence),
        ];
        sections
            .into_iter()
            .filter(|(_, a, b)| format!("{a:?}") != format!("{b:?}"))
            .map(|(name, _, _)| name)
            .collect()
    }
}

fn duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(
            key,
            format!("{text:?} is not a duration like \"30s\" ({e})"),
        )
    })
}

fn socket_addr(key: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        invalid(
            key,
            format!("{text:?} is not an address like \"0.0.0.0:5683\""),
        )
    })
}

/// The `[listeners.dtls]` rules that need no file: which keys go together, and a port of
/// its own. Whether the files exist and hold usable credentials is checked when the
/// listener loads them (`dtls::credentials::Credentials::load`), not here.
fn dtls_rules(dtls: &DtlsListenerConfig, udp: &UdpListenerConfig) -> Result<(), ConfigError> {
    match (&dtls.certfile, &dtls.keyfile) {
        (Some(_), None) => {
            return Err(invalid(
                "listeners.dtls.keyfile",
                "certfile is set, so keyfile (its private key) must be set too",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "listeners.dtls.certfile",
                "keyfile is set, so certfile (the server certificate) must be set too",
            ))
        }
        _ => {}
    }
    if dtls.cacertfile.is_some() && dtls.certfile.is_none() {
        return Err(invalid(
            "listeners.dtls.cacertfile",
            "client certificates are only asked for in the certificate (ECDHE-ECDSA) \
             suites, which need the server's own certificate: set certfile and keyfile",
        ));
    }
    if !dtls.enabled {
        return Ok(());
    }
    if dtls.psk_file.is_none() && dtls.certfile.is_none() {
        return Err(invalid(
            "listeners.dtls.enabled",
            "DTLS needs credentials: set psk_file, or certfile and keyfile, or both",
        ));
    }
    // With SO_REUSEPORT the two listeners could bind the same port and share its
    // datagrams, so a wildcard address overlaps every address on its port. Port 0 asks
    // the OS for a free port each, which never collide.
    let (d, u) = (dtls.bind, udp.bind);
    if d.port() == u.port()
        && d.port() != 0
        && (d.ip() == u.ip() || d.ip().is_unspecified() || u.ip().is_unspecified())
    {
        return Err(invalid(
            "listeners.dtls.bind",
            format!("{d} overlaps listeners.udp.bind {u}; DTLS needs a port of its own"),
        ));
    }
    Ok(())
}

/// The host name reduced to what a node name may hold (`[A-Za-z0-9._-]`, at most
/// [`MAX_NODE_NAME`] characters), or `node` if nothing is left.
pub fn host_node_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|b| *b == 0).unwrap_or(0);
    let name = if rc == 0 {
        String::from_utf8_lossy(&buf[..len]).into_owned()
    } else {
        String::new()
    };
    let name: String = name
        .chars()
        .filter(|c| valid_node_char(*c))
        .take(MAX_NODE_NAME)
        .collect();
    if name.is_empty() {
        "node".into()
    } else {
        name
    }
}

/// Characters a node name may hold: safe in a topic level and a client id.
fn valid_node_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn optional_path(text: String) -> Option<PathBuf> {
    (!text.is_empty()).then(|| PathBuf::from(text))
}

/// Parses `mqtt://host:port` (port defaults to 1883).
fn broker(text: &str) -> Result<Broker, ConfigError> {
    if text == "embedded" {
        return Ok(Broker::Embedded);
    }
    let bad = || {
        invalid(
            "mqtt.broker",
            format!("{text:?} is neither \"embedded\" nor \"mqtt://host:port\""),
        )
    };
    let rest = text.strip_prefix("mqtt://").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h, p.parse::<u16>().map_err(|_| bad())?)
        }
        _ => (rest, 1883),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(Broker::External {
        host: host.to_owned(),
        port,
    })
}

mod file;

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
