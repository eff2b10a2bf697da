//! Tests of [`super`]: defaults, validation messages, the forms a key may take.

use super::*;

#[test]
fn default_file_equals_built_in_defaults() {
    let from_file = Config::from_toml(DEFAULT_CONFIG).expect("default file is valid");
    let built_in = Config::default_config();
    assert_eq!(format!("{from_file:?}"), format!("{built_in:?}"));
    assert_eq!(built_in.gateway.lifetime_max, Duration::from_secs(86400));
    assert_eq!(built_in.translators.event.qos, Qos::AtLeastOnce);
    let dm = built_in
        .translators
        .dm_notify
        .expect("on by default, as EMQX");
    assert_eq!((dm.topic.as_str(), dm.qos), ("v1/up/dm", Qos::AtMostOnce));
    assert_eq!(
        built_in.persistence.dir.as_deref(),
        Some(std::path::Path::new("data"))
    );
    assert_eq!(built_in.persistence.flush_interval, Duration::from_secs(1));
    assert_eq!(built_in.translators.command.topic, "dn/#");
    assert_eq!(built_in.mqtt.broker, Broker::Embedded);
    assert_eq!(built_in.mqtt.max_batch, 128);
    assert!(built_in.gateway.shards >= 1);
}

fn problem(text: &str) -> String {
    Config::from_toml(text)
        .expect_err("config must be rejected")
        .to_string()
}

#[test]
fn bad_values_name_their_key() {
    assert!(problem("[gateway]\nlifetime_min = \"soon\"").starts_with("gateway.lifetime_min:"));
    assert!(problem("[mqtt]\nbroker = \"tcp://x\"").starts_with("mqtt.broker:"));
    assert!(problem("[translators]\nevent = { topic = \"e\", qos = 2 }")
        .starts_with("translators.event:"));
    assert!(problem("[listeners.udp]\nbind = \"nowhere\"").starts_with("listeners.udp.bind:"));
    assert!(problem("[gateway]\nmountpoint = \"x/${nope}/\"").contains("${nope}"));
    assert!(problem("[gateway]\nshards = 99").starts_with("gateway.shards:"));
    assert!(
        problem("[gateway]\nlifetime_min = \"10s\"\nlifetime_max = \"5s\"")
            .starts_with("gateway.lifetime_max:")
    );
}

#[test]
fn unknown_keys_and_wrong_types_are_rejected() {
    assert!(problem("[gateway]\nshardz = 2").contains("shardz"));
    assert!(problem("[mqtt]\nmax_batch = \"many\"").contains("max_batch"));
}

#[test]
fn broker_urls() {
    assert_eq!(
        broker("mqtt://127.0.0.1:1999").expect("valid"),
        Broker::External {
            host: "127.0.0.1".into(),
            port: 1999
        }
    );
    assert_eq!(
        broker("mqtt://broker.example").expect("valid"),
        Broker::External {
            host: "broker.example".into(),
            port: 1883
        }
    );
    assert_eq!(
        broker("mqtt://[::1]:1884").expect("valid"),
        Broker::External {
            host: "::1".into(),
            port: 1884
        }
    );
    assert!(broker("mqtt://:1883").is_err());
    assert!(broker("mqtt://h:0").is_err());
}

#[test]
fn auto_observe_takes_a_flag_or_paths() {
    let c = |t: &str| Config::from_toml(t).expect("valid").gateway.auto_observe;
    assert_eq!(c("[gateway]\nauto_observe = true"), AutoObserve::All);
    assert_eq!(c("[gateway]\nauto_observe = false"), AutoObserve::Off);
    assert_eq!(
        c("[gateway]\nauto_observe = [\"/3/0\", \"/3303\"]"),
        AutoObserve::Paths(vec!["/3/0".into(), "/3303".into()])
    );
    assert!(problem("[gateway]\nauto_observe = [\"3/0\"]").contains("must start with '/'"));
}

#[test]
fn busy_poll_is_off_by_default_and_takes_a_flag() {
    assert!(!Config::default_config().gateway.busy_poll);
    let on = Config::from_toml("[gateway]\nbusy_poll = true").expect("valid");
    assert!(on.gateway.busy_poll);
    assert!(problem("[gateway]\nbusy_poll = \"yes\"").contains("busy_poll"));
}

#[test]
fn rx_moderation_is_a_bounded_duration() {
    let built_in = Config::default_config();
    assert_eq!(built_in.gateway.rx_moderation, Duration::from_millis(4));
    let off = Config::from_toml("[gateway]\nrx_moderation = \"0s\"").expect("valid");
    assert_eq!(off.gateway.rx_moderation, Duration::ZERO);
    assert!(problem("[gateway]\nrx_moderation = \"11ms\"").starts_with("gateway.rx_moderation:"));
    assert!(problem("[gateway]\nrx_moderation = \"soon\"").starts_with("gateway.rx_moderation:"));
}

#[test]
fn queue_mode_window_is_a_positive_duration() {
    let c = Config::from_toml("[gateway]\nqmode_time_window = \"60s\"").expect("valid");
    assert_eq!(c.gateway.qmode_time_window, Duration::from_secs(60));
    let err = problem("[gateway]\nqmode_time_window = \"0s\"");
    assert!(err.starts_with("gateway.qmode_time_window:"), "{err}");
}

#[test]
fn api_bind_defaults_to_loopback_and_empty_disables_it() {
    let c = Config::default_config();
    assert_eq!(c.api.bind, Some("127.0.0.1:8080".parse().expect("addr")));
    assert!(c.api.token.is_none());
    let off = Config::from_toml("[api]\nbind = \"\"").expect("empty is accepted");
    assert!(off.api.bind.is_none());
    let err = problem("[api]\nbind = \"localhost\"");
    assert!(err.starts_with("api.bind:"), "{err}");
    let t = Config::from_toml("[api]\ntoken = \"s3cret\"").expect("token");
    assert_eq!(
        t.api.token.map(|t| t.expose().to_owned()).as_deref(),
        Some("s3cret")
    );
}

#[test]
fn password_is_redacted_in_debug_output() {
    let c = Config::from_toml("[mqtt]\nusername = \"gw\"\npassword = \"hunter2-s3cret\"")
        .expect("valid");
    assert_eq!(
        c.mqtt.password.as_ref().map(Secret::expose),
        Some("hunter2-s3cret")
    );
    let debug = format!("{c:?} {:?} {c:#?}", c.mqtt);
    assert!(!debug.contains("hunter2-s3cret"), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");
}

#[test]
fn idle_timeout_and_log_filter_are_checked() {
    assert!(problem("[gateway]\nidle_timeout = \"0s\"").starts_with("gateway.idle_timeout:"));
    assert!(problem("[log]\nfilter = \"info,=[\"").starts_with("log.filter:"));
    let c = Config::from_toml("[log]\nfilter = \"debug\"").expect("valid");
    assert_eq!(c.log.filter, "debug");
}

#[test]
fn restart_needed_names_changed_sections_but_not_log() {
    let old = Config::default_config();
    let new = Config::from_toml("[log]\nfilter = \"debug\"").expect("valid");
    assert!(old.restart_needed(&new).is_empty());
    let new = Config::from_toml("[mqtt]\npassword = \"x\"\n[gateway]\nlifetime_min = \"2s\"")
        .expect("valid");
    assert_eq!(old.restart_needed(&new), vec!["gateway", "mqtt"]);
}

fn dtls(keys: &str) -> Result<Config, ConfigError> {
    Config::from_toml(&format!("[listeners.dtls]\n{keys}"))
}

#[test]
fn dtls_needs_credentials_when_enabled() {
    let err = dtls("enabled = true")
        .expect_err("no credentials")
        .to_string();
    assert!(err.starts_with("listeners.dtls.enabled:"), "{err}");
    assert!(err.contains("psk_file"), "{err}");
    let c = dtls("enabled = true\npsk_file = \"psk.txt\"").expect("psk only");
    assert_eq!(
        c.dtls.psk_file.as_deref(),
        Some(std::path::Path::new("psk.txt"))
    );
    dtls("enabled = true\ncertfile = \"s.pem\"\nkeyfile = \"s.key\"").expect("cert only");
    dtls("enabled = true\ncertfile = \"s.pem\"\nkeyfile = \"s.key\"\ncacertfile = \"ca.pem\"\npsk_file = \"p\"")
        .expect("everything");
    // Disabled, nothing is needed; the files are not opened either way.
    dtls("enabled = false").expect("disabled");
}

#[test]
fn dtls_certfile_and_keyfile_come_together() {
    for enabled in ["true", "false"] {
        let err = dtls(&format!("enabled = {enabled}\ncertfile = \"s.pem\""))
            .expect_err("no key")
            .to_string();
        assert!(err.starts_with("listeners.dtls.keyfile:"), "{err}");
        let err = dtls(&format!(
            "enabled = {enabled}\npsk_file = \"p\"\nkeyfile = \"s.key\""
        ))
        .expect_err("no cert")
        .to_string();
        assert!(err.starts_with("listeners.dtls.certfile:"), "{err}");
    }
}

#[test]
fn dtls_cacertfile_needs_a_server_certificate() {
    let err = dtls("enabled = true\npsk_file = \"p\"\ncacertfile = \"ca.pem\"")
        .expect_err("client certs without a server cert")
        .to_string();
    assert!(err.starts_with("listeners.dtls.cacertfile:"), "{err}");
    assert!(err.contains("certfile"), "{err}");
}

#[test]
fn dtls_bind_needs_its_own_port() {
    for (udp, dtls_bind) in [
        ("0.0.0.0:5683", "0.0.0.0:5683"),
        ("127.0.0.1:5683", "0.0.0.0:5683"),
        ("0.0.0.0:5683", "127.0.0.1:5683"),
    ] {
        let err = Config::from_toml(&format!(
            "[listeners.udp]\nbind = \"{udp}\"\n[listeners.dtls]\nenabled = true\n\
             psk_file = \"p\"\nbind = \"{dtls_bind}\""
        ))
        .expect_err("same port")
        .to_string();
        assert!(err.starts_with("listeners.dtls.bind:"), "{err}");
    }
    Config::from_toml(
        "[listeners.udp]\nbind = \"127.0.0.1:5683\"\n[listeners.dtls]\nenabled = true\n\
         psk_file = \"p\"\nbind = \"127.0.0.2:5683\"",
    )
    .expect("distinct addresses on one port");
    dtls("enabled = true\npsk_file = \"p\"\nbind = \"0.0.0.0:5684\"").expect("default ports");
}

#[test]
fn psm_apns_are_apns_compared_in_lower_case() {
    let c = Config::from_toml("[gateway]\npsm_apns = [\"IoT.PSM\", \"nb-1\"]").expect("valid");
    assert_eq!(
        c.gateway.psm_apns,
        vec!["iot.psm".to_owned(), "nb-1".to_owned()]
    );
    assert!(Config::from_toml("")
        .expect("valid")
        .gateway
        .psm_apns
        .is_empty());
    for bad in ["[\"\"]", "[\"iot psm\"]", "\"iot.psm\"", "[1]"] {
        let err = problem(&format!("[gateway]\npsm_apns = {bad}"));
        assert!(err.contains("psm_apns"), "{bad}: {err}");
    }
}

#[test]
fn node_name_and_cluster_keys() {
    let built_in = Config::default_config();
    assert_eq!(built_in.gateway.node, host_node_name());
    assert!(!built_in.cluster.enabled);
    assert_eq!(built_in.cluster.topic_prefix, "lwm2m-cluster");
    let c = Config::from_toml(
        "[gateway]\nnode = \"gw-1.dc_a\"\n[cluster]\nenabled = true\ntopic_prefix = \"fleet/x\"",
    )
    .expect("valid");
    assert_eq!(c.gateway.node, "gw-1.dc_a");
    assert!(c.cluster.enabled);
    assert_eq!(c.cluster.topic_prefix, "fleet/x");
    for bad in ["a/b", "a+b", "a b", &"n".repeat(MAX_NODE_NAME + 1)] {
        let text = format!("[gateway]\nnode = \"{bad}\"");
        assert!(problem(&text).starts_with("gateway.node:"), "{bad}");
    }
    for bad in ["", "/x", "x/", "$SYS", "a/+", "a/#"] {
        let text = format!("[cluster]\ntopic_prefix = \"{bad}\"");
        assert!(
            problem(&text).starts_with("cluster.topic_prefix:"),
            "{bad:?}"
        );
    }
    assert!(problem("[cluster]\nenabeld = true").contains("enabeld"));
}
