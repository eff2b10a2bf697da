//! The configuration file as written: strings where the typed config has durations and
//! addresses, and the validation that turns it into [`super::Config`].

use super::*;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ConfigFile {
    gateway: Gateway,
    translators: TranslatorsFile,
    listeners: Listeners,
    mqtt: Mqtt,
    cluster: Cluster,
    api: Api,
    log: Log,
    perf: Perf,
    persistence: Persistence,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Gateway {
    shards: i64,
    xml_dir: String,
    lifetime_min: String,
    lifetime_max: String,
    qmode_time_window: String,
    auto_observe: AutoObserveFile,
    idle_timeout: String,
    update_msg_publish_condition: String,
    mountpoint: String,
    max_queued_commands: i64,
    psm_apns: Vec<String>,
    node: String,
    busy_poll: bool,
    rx_moderation: String,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            shards: 0,
            xml_dir: "lwm2m_xml".into(),
            lifetime_min: "1s".into(),
            lifetime_max: "86400s".into(),
            qmode_time_window: "22s".into(),
            auto_observe: AutoObserveFile::Flag(false),
            idle_timeout: "30s".into(),
            update_msg_publish_condition: "always".into(),
            mountpoint: "lwm2m/${endpoint_name}/".into(),
            max_queued_commands: 100,
            psm_apns: Vec::new(),
            node: String::new(),
            busy_poll: false,
            rx_moderation: "4ms".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AutoObserveFile {
    Flag(bool),
    Paths(Vec<String>),
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct TranslatorFile {
    topic: String,
    #[serde(default)]
    qos: i64,
}

/// `dm_notify`: `false`, or a translator (`true` is the default one).
#[derive(Deserialize)]
#[serde(untagged)]
enum DmNotifyFile {
    Flag(bool),
    Topic(TranslatorFile),
}

fn tr(topic: &str, qos: i64) -> TranslatorFile {
    TranslatorFile {
        topic: topic.into(),
        qos,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TranslatorsFile {
    command: TranslatorFile,
    response: TranslatorFile,
    notify: TranslatorFile,
    register: TranslatorFile,
    update: TranslatorFile,
    event: TranslatorFile,
    dm_notify: DmNotifyFile,
}

impl Default for TranslatorsFile {
    fn default() -> Self {
        TranslatorsFile {
            command: tr("dn/#", 0),
            response: tr("up/resp", 0),
            notify: tr("up/notify", 0),
            register: tr("up/resp", 0),
            update: tr("up/update", 0),
            event: tr("up/event", 1),
            dm_notify: DmNotifyFile::Flag(true),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Listeners {
    udp: Udp,
    dtls: Dtls,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Udp {
    bind: String,
    max_connections: i64,
    max_conn_rate: i64,
}

impl Default for Udp {
    fn default() -> Self {
        Udp {
            bind: "0.0.0.0:5683".into(),
            max_connections: 1_024_000,
            max_conn_rate: 100_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Dtls {
    enabled: bool,
    bind: String,
    psk_file: String,
    certfile: String,
    keyfile: String,
    cacertfile: String,
}

impl Default for Dtls {
    fn default() -> Self {
        Dtls {
            enabled: false,
            bind: "0.0.0.0:5684".into(),
            psk_file: String::new(),
            certfile: String::new(),
            keyfile: String::new(),
            cacertfile: String::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Mqtt {
    broker: String,
    embedded_bind: String,
    client_id_prefix: String,
    username: String,
    password: String,
    keep_alive: String,
    max_batch: i64,
    offline_buffer: i64,
}

impl Default for Mqtt {
    fn default() -> Self {
        Mqtt {
            broker: "embedded".into(),
            embedded_bind: "127.0.0.1:1883".into(),
            client_id_prefix: "lwm2m-gw".into(),
            username: String::new(),
            password: String::new(),
            keep_alive: "30s".into(),
            max_batch: 128,
            offline_buffer: 100_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Cluster {
    enabled: bool,
    topic_prefix: String,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            enabled: false,
            topic_prefix: "lwm2m-cluster".into(),
        }
    }
}

/// `[api]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Api {
    bind: String,
    token: String,
}

impl Default for Api {
    fn default() -> Api {
        Api {
            bind: "127.0.0.1:8080".into(),
            token: String::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Log {
    filter: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            filter: "info,rumqttd=off".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Perf {
    histogram_dir: String,
    histogram_interval: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Persistence {
    dir: String,
    flush_interval: String,
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence {
            dir: "data".into(),
            flush_interval: "1s".into(),
        }
    }
}

impl Default for Perf {
    fn default() -> Self {
        Perf {
            histogram_dir: String::new(),
            histogram_interval: "10s".into(),
        }
    }
}

fn count(key: &'static str, v: i64, min: i64, max: i64) -> Result<usize, ConfigError> {
    if v < min || v > max {
        return Err(invalid(key, format!("{v} is outside {min}..={max}")));
    }
    Ok(v as usize)
}

/// Longest APN (3GPP TS 23.003 §9.1: at most 100 octets).
const MAX_APN_LEN: usize = 100;

/// Longest `gateway.rx_moderation`: beyond 10 ms a notification's added latency would
/// rival the broker's whole delivery, for a CPU saving already within ~10 % of its limit
/// (the window gathers about ten datagrams per wake-up; commands keep a 250 µs bound).
const MAX_RX_MODERATION: Duration = Duration::from_millis(10);

/// `gateway.psm_apns`, lower-cased for the case-insensitive comparison with a
/// registration's `apn`: each a non-empty APN of letters, digits, `-` and `.`.
fn psm_apns(apns: Vec<String>) -> Result<Vec<String>, ConfigError> {
    apns.into_iter()
        .map(|apn| {
            let ok = !apn.is_empty()
                && apn.len() <= MAX_APN_LEN
                && apn
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if ok {
                Ok(apn.to_ascii_lowercase())
            } else {
                Err(invalid(
                    "gateway.psm_apns",
                    format!(
                        "{apn:?} is not an APN (1 to {MAX_APN_LEN} letters, digits, '-' and '.')"
                    ),
                ))
            }
        })
        .collect()
}

fn translator(key: &'static str, t: TranslatorFile) -> Result<Translator, ConfigError> {
    let qos = match t.qos {
        0 => Qos::AtMostOnce,
        1 => Qos::AtLeastOnce,
        q => {
            return Err(invalid(
                key,
                format!("qos {q} is not supported (use 0 or 1)"),
            ))
        }
    };
    if t.topic.is_empty() || t.topic.starts_with('/') {
        return Err(invalid(
            key,
            format!("topic {:?} must be non-empty and relative", t.topic),
        ));
    }
    Ok(Translator {
        topic: t.topic,
        qos,
    })
}

impl ConfigFile {
    pub(super) fn validate(self) -> Result<Config, ConfigError> {
        let g = self.gateway;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let shards = match count("gateway.shards", g.shards, 0, MAX_SHARDS as i64)? {
            0 => cores.min(MAX_SHARDS),
            n => n,
        };
        let lifetime_min = duration("gateway.lifetime_min", &g.lifetime_min)?;
        let lifetime_max = duration("gateway.lifetime_max", &g.lifetime_max)?;
        if lifetime_min.is_zero() {
            return Err(invalid("gateway.lifetime_min", "must be at least 1s"));
        }
        if lifetime_max < lifetime_min {
            return Err(invalid(
                "gateway.lifetime_max",
                "is below gateway.lifetime_min",
            ));
        }
        let auto_observe = match g.auto_observe {
            AutoObserveFile::Flag(false) => AutoObserve::Off,
            AutoObserveFile::Flag(true) => AutoObserve::All,
            AutoObserveFile::Paths(p) => {
                if let Some(bad) = p.iter().find(|p| !p.starts_with('/')) {
                    return Err(invalid(
                        "gateway.auto_observe",
                        format!("path {bad:?} must start with '/'"),
                    ));
                }
                AutoObserve::Paths(p)
            }
        };
        let qmode_time_window = duration("gateway.qmode_time_window", &g.qmode_time_window)?;
        if qmode_time_window.is_zero() {
            return Err(invalid(
                "gateway.qmode_time_window",
                "must be at least 1s: a queue-mode device is reachable that long after it sends",
            ));
        }
        let update_msg_publish_condition = match g.update_msg_publish_condition.as_str() {
            "always" => UpdatePublishCondition::Always,
            "contains_object_list" => UpdatePublishCondition::ContainsObjectList,
            other => {
                return Err(invalid(
                    "gateway.update_msg_publish_condition",
                    format!("{other:?} is neither \"always\" nor \"contains_object_list\""),
                ))
            }
        };
        let mountpoint = g.mountpoint;
        let unknown_var = mountpoint
            .match_indices("${")
            .map(|(i, _)| &mountpoint[i..])
            .find(|rest| !rest.starts_with("${endpoint_name}") && !rest.starts_with("${peerhost}"));
        if let Some(rest) = unknown_var {
            let var: String = rest
                .chars()
                .take_while(|c| *c != '}')
                .chain(['}'])
                .collect();
            return Err(invalid(
                "gateway.mountpoint",
                format!("unknown variable {var} (use ${{endpoint_name}} or ${{peerhost}})"),
            ));
        }
        if mountpoint.contains(['+', '#']) {
            return Err(invalid(
                "gateway.mountpoint",
                "must not contain MQTT wildcards",
            ));
        }
        let idle_timeout = duration("gateway.idle_timeout", &g.idle_timeout)?;
        if idle_timeout < Duration::from_secs(1) {
            return Err(invalid("gateway.idle_timeout", "must be at least 1s"));
        }
        let psm_apns = psm_apns(g.psm_apns)?;
        let rx_moderation = duration("gateway.rx_moderation", &g.rx_moderation)?;
        if rx_moderation > MAX_RX_MODERATION {
            return Err(invalid(
                "gateway.rx_moderation",
                format!("must be at most {}ms", MAX_RX_MODERATION.as_millis()),
            ));
        }
        let node = if g.node.is_empty() {
            host_node_name()
        } else if g.node.len() > MAX_NODE_NAME || !g.node.chars().all(valid_node_char) {
            return Err(invalid(
                "gateway.node",
                format!(
                    "{:?} must be 1 to {MAX_NODE_NAME} characters of A-Z a-z 0-9 . _ - (or \"\" for the host name)",
                    g.node
                ),
            ));
        } else {
            g.node
        };
        let gateway = GatewayConfig {
            node,
            shards,
            xml_dir: PathBuf::from(g.xml_dir),
            lifetime_min,
            lifetime_max,
            qmode_time_window,
            auto_observe,
            idle_timeout,
            update_msg_publish_condition,
            mountpoint,
            max_queued_commands: count(
                "gateway.max_queued_commands",
                g.max_queued_commands,
                0,
                1_000_000,
            )?,
            psm_apns,
            busy_poll: g.busy_poll,
            rx_moderation,
        };

        let t = self.translators;
        let translators = Translators {
            command: translator("translators.command", t.command)?,
            response: translator("translators.response", t.response)?,
            notify: translator("translators.notify", t.notify)?,
            register: translator("translators.register", t.register)?,
            update: translator("translators.update", t.update)?,
            event: translator("translators.event", t.event)?,
            dm_notify: match t.dm_notify {
                DmNotifyFile::Flag(false) => None,
                DmNotifyFile::Flag(true) => Some(tr("v1/up/dm", 0)),
                DmNotifyFile::Topic(t) => Some(t),
            }
            .map(|t| translator("translators.dm_notify", t))
            .transpose()?,
        };

        let u = self.listeners.udp;
        let udp = UdpListenerConfig {
            bind: socket_addr("listeners.udp.bind", &u.bind)?,
            max_connections: count(
                "listeners.udp.max_connections",
                u.max_connections,
                1,
                100_000_000,
            )?,
            max_conn_rate: count(
                "listeners.udp.max_conn_rate",
                u.max_conn_rate,
                1,
                100_000_000,
            )? as u32,
        };

        let d = self.listeners.dtls;
        let dtls = DtlsListenerConfig {
            enabled: d.enabled,
            bind: socket_addr("listeners.dtls.bind", &d.bind)?,
            psk_file: optional_path(d.psk_file),
            certfile: optional_path(d.certfile),
            keyfile: optional_path(d.keyfile),
            cacertfile: optional_path(d.cacertfile),
        };
        dtls_rules(&dtls, &udp)?;

        let m = self.mqtt;
        if m.client_id_prefix.is_empty() || m.client_id_prefix.len() > 40 {
            return Err(invalid(
                "mqtt.client_id_prefix",
                "must be 1 to 40 characters",
            ));
        }
        let keep_alive = duration("mqtt.keep_alive", &m.keep_alive)?;
        if keep_alive < Duration::from_secs(1) || keep_alive.as_secs() > u16::MAX as u64 {
            return Err(invalid("mqtt.keep_alive", "must be between 1s and 65535s"));
        }
        let mqtt = MqttConfig {
            broker: broker(&m.broker)?,
            embedded_bind: socket_addr("mqtt.embedded_bind", &m.embedded_bind)?,
            client_id_prefix: m.client_id_prefix,
            username: (!m.username.is_empty()).then_some(m.username),
            password: (!m.password.is_empty()).then(|| Secret::new(m.password)),
            keep_alive,
            max_batch: count("mqtt.max_batch", m.max_batch, 1, 65_536)?,
            offline_buffer: count("mqtt.offline_buffer", m.offline_buffer, 0, 100_000_000)?,
        };

        let api = ApiConfig {
            bind: match self.api.bind.as_str() {
                "" => None,
                bind => Some(socket_addr("api.bind", bind)?),
            },
            token: (!self.api.token.is_empty()).then(|| Secret::new(self.api.token)),
        };

        let c = self.cluster;
        let prefix = &c.topic_prefix;
        if prefix.is_empty()
            || prefix.starts_with(['/', '$'])
            || prefix.ends_with('/')
            || prefix.contains(['+', '#'])
        {
            return Err(invalid(
                "cluster.topic_prefix",
                format!("{prefix:?} must be a topic like \"lwm2m-cluster\": non-empty, no wildcards, no leading '$' or '/', no trailing '/'"),
            ));
        }
        let cluster = ClusterConfig {
            enabled: c.enabled,
            topic_prefix: c.topic_prefix,
        };

        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err(invalid(
                "log.filter",
                format!("{:?} is not a filter like \"info\" ({e})", self.log.filter),
            ));
        }
        let log = LogConfig {
            filter: self.log.filter,
        };

        let histogram_interval =
            duration("perf.histogram_interval", &self.perf.histogram_interval)?;
        if histogram_interval < Duration::from_millis(100) {
            return Err(invalid("perf.histogram_interval", "must be at least 100ms"));
        }
        let perf = PerfConfig {
            histogram_dir: optional_path(self.perf.histogram_dir),
            histogram_interval,
        };

        let flush_interval = duration(
            "persistence.flush_interval",
            &self.persistence.flush_interval,
        )?;
        if flush_interval < Duration::from_millis(10) || flush_interval > Duration::from_secs(60) {
            return Err(invalid(
                "persistence.flush_interval",
                "must be between 10ms and 60s",
            ));
        }
        let persistence = PersistenceConfig {
            dir: optional_path(self.persistence.dir),
            flush_interval,
        };

        Ok(Config {
            gateway,
            translators,
            udp,
            dtls,
            mqtt,
            cluster,
            log,
            perf,
            persistence,
            api,
        })
    }
}
