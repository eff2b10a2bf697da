//! End to end: the broker becomes unreachable mid-run and comes back; no QoS 1 message the
//! gateway published in the meantime is lost.
//!
//! A TCP proxy between the gateway and the broker is cut and restored, so the outage is
//! real for the gateway (connections reset, new ones refused) while the test's subscriber
//! stays connected to the broker and sees everything that arrives.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{unique, Device, Subscriber};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::runtime::Gateway;
use lwm2m_gateway::uplink;

/// A TCP proxy that can be cut (every connection reset, new ones closed at once) and
/// restored.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, live2) = (up.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut live = live2.lock().expect("lock");
                for s in [&client, &server] {
                    if let Ok(c) = s.try_clone() {
                        live.push(c);
                    }
                }
                pump(
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                pump(server, client);
            }
        });
        Proxy { port, up, live }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.live.lock().expect("lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

#[test]
fn broker_outage_loses_no_qos1_message() {
    const PER_PHASE: usize = 150;
    let tag = unique("outage");
    // The real broker: CI's Mosquitto when given, otherwise an embedded one of our own.
    let (_broker, broker_addr) = match std::env::var("LWM2M_TEST_BROKER") {
        Ok(url) => (
            None,
            url.trim_start_matches("mqtt://")
                .trim_end_matches('/')
                .to_owned(),
        ),
        Err(_) => {
            let b = uplink::start_embedded("127.0.0.1:0".parse().expect("addr")).expect("broker");
            let addr = b.local_addr().to_string();
            (Some(b), addr)
        }
    };
    let proxy = Proxy::start(broker_addr.clone());
    let config = Config::from_toml(&format!(
        "[gateway]\nshards = 2\n\
         [translators]\nregister = {{ topic = \"up/resp\", qos = 1 }}\nevent = {{ topic = \"up/event\", qos = 1 }}\n\
         [listeners.udp]\nbind = \"127.0.0.1:0\"\n\
         [mqtt]\nbroker = \"mqtt://127.0.0.1:{}\"\nkeep_alive = \"2s\"\nclient_id_prefix = \"{}\"\n[api]\nbind = \"\"\n[persistence]\ndir = \"\"\n",
        proxy.port,
        common::client_id_prefix()
    ))
    .expect("config");
    let gw = Gateway::start(config).expect("gateway starts");
    let sub = Subscriber::connect(&broker_addr, "lwm2m/#", &format!("lwm2m/{tag}"));

    let mut n = 0;
    let mut register = |count: usize, locs: &mut Vec<(Device, String)>| {
        for _ in 0..count {
            let mut dev =
                Device::bind(&format!("127.2.{}.{}", n / 250, n % 250 + 1), gw.udp_addr());
            let loc = dev.register(&format!("{tag}-{n}"), 600);
            locs.push((dev, loc));
            n += 1;
        }
    };
    let mut devices = Vec::new();
    register(PER_PHASE, &mut devices);
    std::thread::sleep(Duration::from_millis(300));
    proxy.cut();
    // While the broker is unreachable: new registrations and deregistrations.
    register(PER_PHASE, &mut devices);
    for (dev, loc) in devices.iter_mut().take(PER_PHASE / 2) {
        let (code, _) = dev.request(lwm2m_gateway::coap::Code::DELETE, &["rd", loc], &[], b"");
        assert_eq!(code, lwm2m_gateway::coap::Code::DELETED);
    }
    std::thread::sleep(Duration::from_secs(3));
    proxy.restore();
    register(PER_PHASE, &mut devices);

    let expected_registers = 3 * PER_PHASE;
    let expected_events = PER_PHASE / 2;
    let got = sub.collect(
        expected_registers + expected_events,
        Duration::from_secs(60),
    );
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for m in &got {
        let ep = m.json["data"]["ep"].as_str().unwrap_or_default().to_owned();
        let kind = m.json["data"]["event"]
            .as_str()
            .or(m.json["msgType"].as_str())
            .unwrap_or("?");
        *seen.entry((ep, kind.to_owned())).or_default() += 1;
    }
    for i in 0..3 * PER_PHASE {
        let ep = format!("{tag}-{i}");
        assert!(
            seen.contains_key(&(ep.clone(), "register".into())),
            "register of {ep} lost"
        );
        if i < PER_PHASE / 2 {
            assert!(
                seen.contains_key(&(ep.clone(), "deregister".into())),
                "deregister of {ep} lost"
            );
        }
    }
    gw.stop();
}
