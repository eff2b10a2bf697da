//! End to end: the broker becomes unreachable mid-run and comes back; no QoS 1 message the
//! gateway published in the meantime is lost.
//!
//! A TCP proxy between the gateway and the broker is cut and restored, so the outage is
//! real for the gateway (connections reset, new ones refused) while the test's subscriber
//! stays connected to the broker and sees everything that arrives.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::proxy::Proxy;
use common::{unique, Device, Subscriber};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::runtime::Gateway;

#[test]
fn broker_outage_loses_no_qos1_message() {
    const PER_PHASE: usize = 150;
    let tag = unique("outage");
    let (_broker, broker_addr) = common::standalone_broker();
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
