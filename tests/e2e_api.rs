//! The HTTP management API end to end: a gateway with the API on 127.0.0.1:0, real UDP
//! devices, the embedded broker; every endpoint, EMQX 5's LwM2M paths and `/metrics`
//! parsed with a Prometheus text parser.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{get, request, Reply};
use common::{test_config, unique, Device, Subscriber};
use lwm2m_gateway::coap::{Code, Message, MessageType, MessageWriter};
use lwm2m_gateway::runtime::Gateway;
use serde_json::Value;

/// A gateway with the API on an ephemeral port and, if given, a token.
fn start_with_api(token: Option<&str>) -> (Gateway, SocketAddr) {
    let mut config = test_config(2);
    config.api.bind = Some("127.0.0.1:0".parse().expect("addr"));
    config.api.token = token.map(lwm2m_gateway::config::Secret::new);
    let gw = Gateway::start(config).expect("gateway starts");
    let api = gw.api_addr().expect("the API is on");
    (gw, api)
}

/// Answers reads of /3/0/0 on `socket` until `stop`.
fn serve_reads(socket: UdpSocket, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok(req) = Message::parse(&buf[..n]) else {
                continue;
            };
            if !req.code().is_request() {
                continue;
            }
            let mut resp = Vec::new();
            let mut w = MessageWriter::new(
                &mut resp,
                MessageType::Ack,
                Code::CONTENT,
                req.mid(),
                req.token(),
            );
            w.uint_option(lwm2m_gateway::coap::option::CONTENT_FORMAT, 0)
                .payload(b"Open Mobile Alliance");
            w.finish();
            let _ = socket.send_to(&resp, from);
        }
    })
}

/// Waits until `/readyz` answers 200 (the uplinks connect just after start).
fn wait_ready(api: SocketAddr) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(api, "/readyz");
        if r.status == 200 || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sample values of `/metrics` by metric name and label set, summed over shards.
fn scrape(api: SocketAddr) -> (String, HashMap<String, f64>) {
    let r = get(api, "/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    let lines = r.body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text parses");
    let mut out = HashMap::new();
    for s in scrape.samples {
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(b) => b.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => continue,
        };
        let mut labels: Vec<String> = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "shard")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        *out.entry(key).or_insert(0.0) += value;
    }
    (r.body, out)
}

#[test]
fn every_endpoint_against_a_running_gateway() {
    let (gw, api) = start_with_api(None);
    let tag = unique("api");
    let sub = Subscriber::connect(gw.mqtt_addr(), "lwm2m/+/up/#", &format!("lwm2m/{tag}"));

    assert_eq!(get(api, "/healthz").status, 200);
    let ready = wait_ready(api);
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["status"], "ready");

    // Three devices register; one answers reads.
    let mut devices = Vec::new();
    for i in 0..3 {
        let mut d = Device::bind("127.0.0.1", gw.udp_addr());
        d.register(&format!("{tag}-{i}"), 300);
        devices.push(d);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reader = serve_reads(
        devices[0].socket.try_clone().expect("clone socket"),
        stop.clone(),
    );
    let registered = sub.collect(3, Duration::from_secs(5));
    assert_eq!(registered.len(), 3, "three register messages");

    // Listing, filters and paging.
    let all = get(api, &format!("/api/v1/clients?like={tag}")).json();
    assert_eq!(all["meta"]["count"], 3, "{all}");
    assert_eq!(all["data"].as_array().map(Vec::len), Some(3));
    let page2 = get(api, &format!("/api/v1/clients?like={tag}&limit=2&page=2")).json();
    assert_eq!(page2["data"].as_array().map(Vec::len), Some(1), "{page2}");
    assert_eq!(page2["meta"]["page"], 2);
    assert_eq!(page2["meta"]["count"], 3);
    let mut seen: Vec<String> = all["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|c| c["endpoint_name"].as_str().expect("name").to_owned())
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        (0..3).map(|i| format!("{tag}-{i}")).collect::<Vec<_>>()
    );
    let exact = get(api, &format!("/api/v1/clients?endpoint_name={tag}-1")).json();
    assert_eq!(exact["meta"]["count"], 1);
    assert_eq!(exact["data"][0]["endpoint_name"], format!("{tag}-1"));
    let secure = get(api, &format!("/api/v1/clients?like={tag}&security=psk")).json();
    assert_eq!(secure["meta"]["count"], 0);
    let plain = get(
        api,
        &format!("/api/v1/clients?like={tag}&security=none&queue_mode=false"),
    )
    .json();
    assert_eq!(plain["meta"]["count"], 3);
    for bad in [
        "limit=0",
        "limit=1001",
        "page=0",
        "page=x",
        "security=tls",
        "queue_mode=maybe",
    ] {
        let r = get(api, &format!("/api/v1/clients?{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.json()["code"].is_string() && r.json()["message"].is_string());
    }

    // One client's details.
    let ep0 = format!("{tag}-0");
    let detail = get(api, &format!("/api/v1/clients/{ep0}"));
    assert_eq!(detail.status, 200);
    let detail = detail.json();
    assert_eq!(detail["address"], devices[0].addr().to_string());
    assert_eq!(detail["lifetime"], 300);
    assert!(
        detail["lifetime_left"]
            .as_u64()
            .is_some_and(|l| l > 290 && l <= 300),
        "{detail}"
    );
    assert_eq!(detail["lwm2m"], "1.1");
    assert_eq!(detail["queued_commands"], 0);
    assert!(detail["location"]
        .as_str()
        .is_some_and(|l| l.starts_with("rd/")));
    assert!(detail["object_list"]
        .as_array()
        .is_some_and(|l| l.iter().any(|p| p == "/3/0")));
    let missing = get(api, "/api/v1/clients/nobody-here");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], "NOT_FOUND");

    // A command that waits for the device's answer; it is also published on MQTT.
    let cmd = br#"{"reqID":"42","msgType":"read","data":{"path":"/3/0/0"}}"#;
    let r = request(
        api,
        "POST",
        &format!("/api/v1/clients/{ep0}/commands?wait=5s"),
        cmd,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let answer = r.json();
    assert_eq!(answer["msgType"], "read");
    assert_eq!(answer["data"]["code"], "2.05", "{answer}");
    assert_eq!(
        answer["data"]["content"][0]["value"],
        "Open Mobile Alliance"
    );
    let published = sub.collect(1, Duration::from_secs(5));
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].json, answer, "the HTTP reply is what MQTT got");
    // Without wait: accepted at once.
    let r = request(
        api,
        "POST",
        &format!("/api/v1/clients/{ep0}/commands"),
        cmd,
        None,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(sub.collect(1, Duration::from_secs(5)).len(), 1);
    // The operation in the path, with the same JSON (msgType may be left out).
    let read = br#"{"data":{"path":"/3/0/0"}}"#;
    let r = request(
        api,
        "POST",
        &format!("/api/v1/clients/{ep0}/read?wait=5s"),
        read,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["code"], "2.05");
    assert_eq!(sub.collect(1, Duration::from_secs(5)).len(), 1);
    let r = request(
        api,
        "POST",
        &format!("/api/v1/clients/{ep0}/write"),
        cmd,
        None,
    );
    assert_eq!(r.status, 400, "a body's msgType must match the path");
    let r = request(
        api,
        "POST",
        &format!("/api/v1/clients/{ep0}/dance"),
        cmd,
        None,
    );
    assert_eq!(r.status, 404);
    // Bad input.
    let r = request(
        api,
        "POST",
        &format!("/api/v1/clients/{ep0}/commands"),
        b"{not json",
        None,
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("BAD_REQUEST"))
    );
    let r = request(
        api,
        "POST",
        "/api/v1/clients/nobody-here/commands?wait=1s",
        cmd,
        None,
    );
    assert_eq!(r.status, 404);
    let r = request(
        api,
        "POST",
        &format!("/api/v1/clients/{ep0}/commands?wait=forever"),
        cmd,
        None,
    );
    assert_eq!(r.status, 400);
    let huge = vec![b' '; lwm2m_gateway::api::MAX_BODY + 1];
    let r = request(
        api,
        "POST",
        &format!("/api/v1/clients/{ep0}/commands"),
        &huge,
        None,
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE"))
    );
    // A device that never answers: the wait ends with 504, the gateway keeps going.
    let ep2 = format!("{tag}-2");
    let r = request(
        api,
        "POST",
        &format!("/api/v1/clients/{ep2}/commands?wait=300ms"),
        cmd,
        None,
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (504, Some("TIMEOUT"))
    );

    // EMQX 5 paths.
    let list = get(
        api,
        &format!("/api/v5/gateways/lwm2m/clients?like_endpoint_name={tag}&limit=2"),
    )
    .json();
    assert_eq!(list["meta"]["count"], 3);
    assert_eq!(list["meta"]["hasnext"], true);
    assert_eq!(list["data"].as_array().map(Vec::len), Some(2));
    let one = get(api, &format!("/api/v5/gateways/lwm2m/clients/{ep0}")).json();
    assert_eq!(one["clientid"], ep0.as_str());
    assert_eq!(one["endpoint_name"], ep0.as_str());
    assert_eq!(one["proto_name"], "LwM2M");
    assert_eq!(one["ip_address"], "127.0.0.1");
    assert_eq!(one["port"], devices[0].addr().port());
    assert_eq!(one["lifetime"], 300);
    let r = get(api, "/api/v5/gateways/lwm2m/clients/nobody-here");
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("RESOURCE_NOT_FOUND"))
    );
    let lookup = format!("/api/v5/gateways/lwm2m/clients/{ep0}/lookup?path=/3/0/0&action=read");
    assert_eq!(get(api, &lookup).json()["code"], "6.01", "nothing sent yet");
    let r = request(
        api,
        "POST",
        &format!("/api/v5/gateways/lwm2m/clients/{ep0}/read?path=/3/0/0"),
        b"",
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(5);
    let looked = loop {
        let l = get(api, &lookup).json();
        if l["code"] != "6.01" || Instant::now() > deadline {
            break l;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(looked["code"], "2.05", "{looked}");
    assert_eq!(looked["codeMsg"], "content");
    assert_eq!(looked["clientid"], ep0.as_str());
    assert_eq!(looked["content"][0]["value"], "Open Mobile Alliance");
    assert_eq!(
        sub.collect(1, Duration::from_secs(5)).len(),
        1,
        "read response on MQTT"
    );
    let r = request(
        api,
        "POST",
        "/api/v5/gateways/lwm2m/clients/nobody-here/read?path=/3/0/0",
        b"",
        None,
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("CLIENT_NOT_FOUND"))
    );
    let r = request(
        api,
        "POST",
        &format!("/api/v5/gateways/lwm2m/clients/{ep0}/observe?path=/3/0/0&enable=true"),
        b"",
        None,
    );
    assert_eq!(r.status, 204);
    let r = request(
        api,
        "POST",
        &format!("/api/v5/gateways/lwm2m/clients/{ep0}/write?path=/3/0/14&type=String&value=%2B02"),
        b"",
        None,
    );
    assert_eq!(r.status, 204);
    let r = get(api, "/api/v5/gateways/lwm2m/clients?limit=0");
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (400, Some("page_limit_invalid"))
    );

    // DELETE deregisters with the deregister event.
    let ep1 = format!("{tag}-1");
    sub.drain(Duration::from_millis(300));
    let r = request(api, "DELETE", &format!("/api/v1/clients/{ep1}"), b"", None);
    assert_eq!(r.status, 204, "{}", r.body);
    let events = sub.collect(1, Duration::from_secs(5));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].json["data"]["event"], "deregister");
    assert_eq!(events[0].json["data"]["ep"], ep1.as_str());
    assert_eq!(get(api, &format!("/api/v1/clients/{ep1}")).status, 404);
    assert_eq!(
        request(api, "DELETE", &format!("/api/v1/clients/{ep1}"), b"", None).status,
        404
    );
    let r = request(
        api,
        "DELETE",
        &format!("/api/v5/gateways/lwm2m/clients/{ep2}"),
        b"",
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        get(api, &format!("/api/v1/clients?like={tag}")).json()["meta"]["count"],
        1
    );

    // /metrics agrees with what the test did.
    let (text, m) = scrape(api);
    let v = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in\n{text}"))
    };
    assert_eq!(v("lwm2m_registrations_total"), 3.0);
    assert_eq!(v("lwm2m_deregistrations_total"), 2.0);
    assert_eq!(v("lwm2m_registered_endpoints"), 1.0);
    assert_eq!(v("lwm2m_commands_total{msg_type=read,result=ok}"), 4.0);
    assert_eq!(v("lwm2m_drops_total{reason=malformed}"), 0.0);
    assert!(v("lwm2m_datagrams_in_total") >= 6.0);
    assert!(v("lwm2m_datagrams_out_total") >= 6.0);
    assert_eq!(v("lwm2m_uplink_connected"), 2.0, "both shards connected");
    assert!(
        v("lwm2m_command_rtt_seconds") >= 4.0,
        "round trips recorded"
    );
    assert!(
        v("lwm2m_pipeline_seconds") >= 6.0,
        "datagram batches recorded"
    );
    assert!(text.contains("lwm2m_pipeline_seconds_bucket"));

    assert_eq!(get(api, "/no/such/path").status, 404);
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("device thread");
    gw.stop();
}

#[test]
fn a_token_guards_everything_but_health() {
    let (gw, api) = start_with_api(Some("s3cret"));
    assert_eq!(get(api, "/healthz").status, 200);
    assert_eq!(wait_ready(api).status, 200);
    for token in [None, Some("wrong")] {
        let r = request(api, "GET", "/api/v1/clients", b"", token);
        assert_eq!(r.status, 401, "{token:?}");
        assert_eq!(r.json()["code"], "UNAUTHORIZED");
        assert_eq!(request(api, "GET", "/metrics", b"", token).status, 401);
    }
    let r = request(api, "GET", "/api/v1/clients", b"", Some("s3cret"));
    assert_eq!(r.status, 200, "{}", r.body);
    let body: Value = r.json();
    assert_eq!(body["meta"]["limit"], 100);
    gw.stop();
}

#[test]
fn readyz_is_503_with_a_reason_while_the_broker_is_unreachable() {
    let mut config = test_config(2);
    config.api.bind = Some("127.0.0.1:0".parse().expect("addr"));
    // A port nothing listens on: the uplinks keep retrying.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    config.mqtt.broker = lwm2m_gateway::config::Broker::External {
        host: "127.0.0.1".into(),
        port,
    };
    let gw = Gateway::start(config).expect("gateway starts");
    let api = gw.api_addr().expect("the API is on");
    assert_eq!(get(api, "/healthz").status, 200, "up, though not ready");
    let r = get(api, "/readyz");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["code"], "NOT_READY");
    assert!(r.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains("broker")));
    gw.stop();
}
