//! `steady-notify` against a real gateway started in this process (one shard, its
//! embedded broker, loopback): sleeping devices get their commands, and the echo baseline
//! runs beside the notify phase.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lwm2m_gateway::config::Config;
use lwm2m_gateway::runtime::Gateway;

use super::steady_notify;
use crate::device::{Format, ResourcePath};
use crate::{DeviceArgs, MqttArgs, NotifyArgs, OutputArgs};

/// A one-shard gateway on ephemeral loopback ports whose queue-mode devices are reachable
/// for `window` after each of their messages.
fn gateway(window: &str) -> Gateway {
    let xml = concat!(env!("CARGO_MANIFEST_DIR"), "/../lwm2m_xml");
    let text = format!(
        "[gateway]\nshards = 1\nqmode_time_window = \"{window}\"\nxml_dir = \"{xml}\"\n\
         [listeners.udp]\nbind = \"127.0.0.1:0\"\n\
         [mqtt]\nembedded_bind = \"127.0.0.1:0\"\nclient_id_prefix = \"lg-test-{}\"\n\
         [api]\nbind = \"\"\n[persistence]\ndir = \"\"\n",
        std::process::id()
    );
    Gateway::start(Config::from_toml(&text).expect("test config")).expect("gateway starts")
}

fn out_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("loadgen-{name}-{}", std::process::id()))
}

fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("json")
}

/// `devices` devices (half of them sleeping: awake 1.5 s of every 3 s) notifying for 4 s
/// while 10 reads per second go to them in turn.
fn args(gw: &Gateway, prefix: &str, dir: &Path) -> NotifyArgs {
    let mqtt: SocketAddr = gw.mqtt_addr().parse().expect("broker address");
    NotifyArgs {
        devices: DeviceArgs {
            gateway: gw.udp_addr(),
            devices: 20,
            rate: 1000.0,
            lifetime: 300,
            prefix: prefix.into(),
            sockets: 1,
            queue_ratio: 0.5,
            awake: Duration::from_millis(1500),
            timeout: Duration::from_secs(10),
            dtls: false,
            output: OutputArgs {
                out: Some(dir.to_path_buf()),
                gateway_pid: None,
            },
        },
        mqtt: MqttArgs {
            mqtt,
            topic_prefix: "lwm2m".into(),
        },
        path: ResourcePath {
            object: 3,
            instance: 0,
            resource: 9,
        },
        notify_rate: 20.0,
        con_ratio: 0.1,
        format: Format::Tlv,
        observe_rate: 1000.0,
        rebind_ratio: 0.0,
        duration: Duration::from_secs(4),
        wake_period: Duration::from_secs(3),
        command_rate: 10.0,
        read_path: "/3/0".into(),
        command_ttl: None,
        echo_baseline: false,
        rounds: 1,
        sample: 1,
        echo_sink: crate::net::SinkKind::Blocking,
    }
}

/// As [`args`], but every device awake, no commands, `rate` notifications/s for 1 s.
fn notify_only(gw: &Gateway, prefix: &str, dir: &Path, rate: f64) -> NotifyArgs {
    let mut a = args(gw, prefix, dir);
    a.devices.queue_ratio = 0.0;
    a.command_rate = 0.0;
    a.notify_rate = rate;
    a.duration = Duration::from_secs(1);
    a
}

#[test]
fn commands_to_sleeping_devices_are_queued_and_answered_when_they_wake() {
    let gw = gateway("1s");
    let dir = out_dir("queue-mode");
    let clean = steady_notify(&args(&gw, "qm", &dir), false).expect("run");
    let s = summary(&dir);
    let c = &s["counters"];
    assert!(clean, "{s}");
    let sent = c["commands_sent"].as_u64().expect("commands_sent");
    assert!(sent >= 30, "{s}");
    assert_eq!(c["commands_ok"], sent, "every command answered: {s}");
    let queued = c["commands_queued"].as_u64().expect("commands_queued");
    assert!(queued > 0, "some commands found their device asleep: {s}");
    assert_eq!(s["metrics"]["queued_rtt"]["count"], queued, "{s}");
    assert_eq!(c["commands_coap_timeout"], 0, "{s}");
    assert_eq!(c["sleeping_coap_timeout"], 0, "{s}");
    assert_eq!(c["commands_expired"], 0, "{s}");
    assert_eq!(c["lost"], 0, "{s}");
    assert!(c["wakes"].as_u64().expect("wakes") > 0, "{s}");
    gw.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_command_that_outlives_its_ttl_is_answered_expired() {
    let gw = gateway("1s");
    let dir = out_dir("queue-expired");
    let mut a = args(&gw, "qe", &dir);
    // Sleepers are away 1.5 s of every 3 s; a command that may wait only 1 s for one of
    // them sometimes expires first.
    a.command_ttl = Some(Duration::from_secs(1));
    let clean = steady_notify(&a, false).expect("run");
    let s = summary(&dir);
    let c = &s["counters"];
    assert!(!clean, "expired commands are failures of the run: {s}");
    let expired = c["commands_expired"].as_u64().expect("commands_expired");
    assert!(expired > 0, "{s}");
    assert_eq!(
        c["commands_ok"].as_u64().map(|ok| ok + expired),
        c["commands_sent"].as_u64(),
        "{s}"
    );
    assert_eq!(c["commands_coap_timeout"], 0, "{s}");
    gw.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_echo_baseline_runs_beside_the_notify_phase() {
    let gw = gateway("22s");
    let dir = out_dir("echo-baseline");
    let mut a = notify_only(&gw, "eb", &dir, 200.0);
    a.echo_baseline = true;
    a.rounds = 2;
    assert!(steady_notify(&a, false).expect("run"));
    let s = summary(&dir);
    let rounds = s["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "{s}");
    for r in rounds {
        assert!(r["notifications_received"].as_u64() > Some(100), "{s}");
        assert!(r["echo"]["echoed"].as_u64() > Some(100), "{s}");
        assert!(r["echo"]["cpu_us_per_datagram"].as_f64() > Some(0.0), "{s}");
    }
    assert_eq!(
        s["counters"]["pings_ok"], s["counters"]["pings_sent"],
        "{s}"
    );
    gw.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sampled_application_receives_only_the_sampled_devices_notifications() {
    let gw = gateway("22s");
    let dir = out_dir("sample");
    let mut a = notify_only(&gw, "sm", &dir, 400.0);
    a.sample = 4;
    assert!(steady_notify(&a, false).expect("run"));
    let s = summary(&dir);
    let c = &s["counters"];
    // Devices 0, 4, 8, 12 and 16 of 20 are watched: a quarter of the notifications.
    let watched = c["notify_sent"].as_u64().expect("notify_sent");
    let unwatched = c["notify_unwatched"].as_u64().expect("notify_unwatched");
    assert!(watched > 50, "{s}");
    assert!(unwatched > 2 * watched, "{s}");
    assert_eq!(
        c["notify_received"], watched,
        "every watched one arrived, no other: {s}"
    );
    assert_eq!(
        c["observed"], 20,
        "every device still observed through up/resp: {s}"
    );
    assert_eq!(c["lost"], 0, "{s}");
    let round = &s["rounds"][0];
    let delivered = round["notifications_delivered"]
        .as_u64()
        .expect("delivered");
    assert_eq!(
        delivered,
        round["notifications_received"].as_u64().expect("received") * (watched + unwatched)
            / watched,
        "{s}"
    );
    gw.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
