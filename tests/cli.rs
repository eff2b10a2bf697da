//! The binary as an operator runs it: flags, configuration errors, port conflicts, signals.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{Running, BIN};
use common::Device;

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lwm2m-gw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// Runs the binary to completion (bounded) and returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn print_default_config_is_the_shipped_file_and_loads() {
    let (code, out, _) = run(&["--print-default-config"]);
    assert_eq!(code, 0);
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/gateway.toml"))
            .expect("file");
    assert_eq!(out, shipped);
    let path = write_config("default.toml", &out);
    let (code, out, err) = run(&["--config", path.to_str().expect("utf-8"), "--check-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration OK"));
}

#[test]
fn help_lists_the_flags() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in ["--config", "--print-default-config", "--check-config"] {
        assert!(out.contains(flag), "{flag} in --help");
    }
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let cases = [
        (
            "[gateway]\nlifetime_min = \"soon\"\n",
            "gateway.lifetime_min",
        ),
        ("[mqtt]\nbroker = \"amqp://x\"\n", "mqtt.broker"),
        ("[gateway]\nshardz = 3\n", "shardz"),
        (
            "[listeners.udp]\nbind = \"localhost\"\n",
            "listeners.udp.bind",
        ),
        ("[api]\nbind = \"localhost\"\n", "api.bind"),
        ("[log]\nfilter = \"info,=[\"\n", "log.filter"),
        ("not toml at all [", "TOML"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = write_config(&format!("bad{i}.toml"), text);
        let (code, _, err) = run(&["--config", path.to_str().expect("utf-8")]);
        assert_eq!(code, 2, "case {i}: {err}");
        assert!(err.contains("bad configuration"), "case {i}: {err}");
        if *key != "TOML" {
            assert!(err.contains(key), "case {i} names {key}: {err}");
        }
    }
    let (code, _, err) = run(&["--config", "/nonexistent/gateway.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/gateway.toml"), "{err}");
}

#[test]
fn a_missing_object_directory_is_named_once_with_its_reason() {
    let missing = std::env::temp_dir().join(format!("lwm2m-gw-no-xml-{}", std::process::id()));
    let path = write_config(
        "no-xml.toml",
        &format!(
            "[gateway]\nxml_dir = \"{}\"\n[listeners.udp]\nbind = \"127.0.0.1:0\"\n\
             [mqtt]\nembedded_bind = \"127.0.0.1:0\"\n[api]\nbind = \"\"\n\
             [persistence]\ndir = \"\"\n",
            missing.display()
        ),
    );
    let (code, _, err) = run(&["--config", path.to_str().expect("utf-8")]);
    assert_ne!(code, 0, "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("lwm2m-gateway: "))
        .expect("the reason on stderr");
    assert_eq!(
        line,
        format!(
            "lwm2m-gateway: gateway.xml_dir: {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

#[test]
fn embedded_broker_port_in_use_says_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let path = write_config(
        "busy.toml",
        &format!("[listeners.udp]\nbind = \"127.0.0.1:0\"\n[mqtt]\nembedded_bind = \"127.0.0.1:{port}\"\n[api]\nbind = \"\"\n[persistence]\ndir = \"\"\n"),
    );
    let (code, _, err) = run(&["--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(
        err.contains("mqtt.embedded_bind"),
        "tells which key to change: {err}"
    );
}

#[test]
fn sigterm_stops_gracefully_with_exit_0() {
    let path = write_config(
        "run.toml",
        "[gateway]\nshards = 2\n[listeners.udp]\nbind = \"127.0.0.1:0\"\n[mqtt]\nembedded_bind = \"127.0.0.1:0\"\n[api]\nbind = \"\"\n[persistence]\ndir = \"\"\n",
    );
    let mut child = Command::new(BIN)
        .args(["--config", path.to_str().expect("utf-8")])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    // Wait for the "running" line, bounded.
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let out_reader = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stdout.read_to_string(&mut all);
        all
    });
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gateway did not stop within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = reader.join().expect("stderr") + &out_reader.join().expect("stdout");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("gateway running"), "{log}");
    assert!(log.contains("gateway stopped"), "{log}");
}

#[test]
fn a_second_gateway_on_a_held_port_exits_2_naming_the_port_and_pid() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let text = format!(
        "[gateway]\nshards = 2\n[listeners.udp]\nbind = \"127.0.0.1:{port}\"\n[mqtt]\nembedded_bind = \"127.0.0.1:0\"\n[api]\nbind = \"\"\n[persistence]\ndir = \"\"\n"
    );
    let path = write_config(&format!("held-{port}.toml"), &text);
    let mut first = Running::start(&path);
    let addr = first.udp_addr();
    assert_eq!(addr.port(), port, "both shards of the first share the port");

    let (code, _, err) = run(&["--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("UDP port {port}")),
        "names the port: {err}"
    );
    assert!(
        err.contains(&format!("PID {}", first.child.id())),
        "names the holder: {err}"
    );
    assert!(err.contains("listeners.udp.bind"), "{err}");

    // The first one still owns its devices.
    Device::bind("127.0.0.1", addr).register("held-port-ep", 60);
    first.signal(libc::SIGTERM);
    let (status, log) = first.exit();
    assert_eq!(status.code(), Some(0), "{log}");
}

#[test]
fn sighup_reloads_the_log_filter_and_keeps_serving() {
    let base = "[gateway]\nshards = 2\n[listeners.udp]\nbind = \"127.0.0.1:0\"\n[mqtt]\nembedded_bind = \"127.0.0.1:0\"\n[api]\nbind = \"\"\n[persistence]\ndir = \"\"\n";
    let path = write_config(
        "hup.toml",
        &format!("{base}[log]\nfilter = \"info,rumqttd=off\"\n"),
    );
    let mut gw = Running::start(&path);
    let addr = gw.udp_addr();

    std::fs::write(&path, "[gateway]\nshards = \"many\"\n").expect("rewrite");
    gw.signal(libc::SIGHUP);
    gw.wait_for("running configuration is kept");

    let debug = "info,rumqttd=off,lwm2m_gateway=debug";
    let changed = base.replace("shards = 2", "shards = 1");
    std::fs::write(&path, format!("{changed}[log]\nfilter = \"{debug}\"\n")).expect("rewrite");
    gw.signal(libc::SIGHUP);
    gw.wait_for("log filter applied");
    gw.wait_for("take effect only after a restart");

    Device::bind("127.0.0.1", addr).register("hup-ep", 60);
    gw.signal(libc::SIGTERM);
    let (status, log) = gw.exit();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("gateway stopped"), "{log}");
    assert!(
        log.contains("shard stopped"),
        "debug lines appear once the reloaded filter allows them: {log}"
    );
}
