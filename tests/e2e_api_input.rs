//! The HTTP management API under bad input: wrong parameters, hostile endpoint names,
//! broken bodies, idle connections, a crowd of waiting commands and a deregistration
//! racing a command. Every failure is a 4xx or 5xx with a JSON `{"code","message"}` body,
//! and the gateway keeps serving afterwards.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::http::{get, request, Reply};
use common::{test_config, unique, Device};
use lwm2m_gateway::runtime::Gateway;

/// A gateway with the API on an ephemeral port.
fn start_with_api() -> (Gateway, SocketAddr) {
    let mut config = test_config(2);
    config.api.bind = Some("127.0.0.1:0".parse().expect("addr"));
    let gw = Gateway::start(config).expect("gateway starts");
    let api = gw.api_addr().expect("the API is on");
    (gw, api)
}

/// Asserts `r` has `status` and a JSON error body; returns its `code`.
fn error(r: &Reply, status: u16, what: &str) -> String {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    let json = r.json();
    assert!(json["message"].is_string(), "{what}: {}", r.body);
    json["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no code in {}", r.body))
        .to_owned()
}

/// Sends raw bytes as one request and reads the reply (status 0 if none came).
fn raw(api: SocketAddr, bytes: &[u8]) -> Reply {
    let mut s = TcpStream::connect(api).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        body: body.to_owned(),
    }
}

/// The gateway still answers a listing.
fn still_serves(api: SocketAddr) {
    let r = get(api, "/api/v1/clients?limit=1");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn bad_parameters_and_names_get_json_errors() {
    let (gw, api) = start_with_api();
    let tag = unique("input");
    let mut d = Device::bind("127.0.0.1", gw.udp_addr());
    d.register(&format!("{tag}-0"), 300);
    d.register(&format!("{tag}-1"), 300);

    for bad in [
        "page=0",
        "page=-1",
        "page=abc",
        "page=99999999999999999999999999",
        "limit=0",
        "limit=-5",
        "limit=100000",
    ] {
        let r = get(api, &format!("/api/v1/clients?{bad}"));
        assert_eq!(error(&r, 400, bad), "INVALID_PARAMETER", "{bad}");
        let r = get(api, &format!("/api/v5/gateways/lwm2m/clients?{bad}"));
        assert_eq!(r.status, 400, "EMQX path {bad}: {}", r.body);
    }
    for bad in ["security=bogus", "queue_mode=maybe", "queue_mode=TRUE"] {
        let r = get(api, &format!("/api/v1/clients?{bad}"));
        assert_eq!(error(&r, 400, bad), "BAD_REQUEST", "{bad}");
    }
    // A page past the end: no clients, and still the count.
    for page in ["3", "1000000", &usize::MAX.to_string()] {
        let r = get(
            api,
            &format!("/api/v1/clients?like={tag}&limit=1&page={page}"),
        );
        assert_eq!(r.status, 200, "page {page}: {}", r.body);
        let json = r.json();
        assert_eq!(json["data"].as_array().map(Vec::len), Some(0), "{json}");
        assert_eq!(json["meta"]["count"], 2, "{json}");
        let r = get(
            api,
            &format!("/api/v1/clients?endpoint_name={tag}-0&page={page}"),
        );
        assert_eq!(r.json()["data"].as_array().map(Vec::len), Some(0));
        assert_eq!(r.json()["meta"]["count"], 1);
    }

    // Endpoint names no device has: a slash, a NUL, unicode, 10 KB, bytes not UTF-8.
    let long = "x".repeat(10 << 10);
    for name in ["a%2Fb", "a%00b", "%E2%9C%93-caf%C3%A9", "..", long.as_str()] {
        let short = &name[..name.len().min(20)];
        let r = get(api, &format!("/api/v1/clients/{name}"));
        assert_eq!(error(&r, 404, short), "NOT_FOUND");
        let r = request(api, "DELETE", &format!("/api/v1/clients/{name}"), b"", None);
        assert_eq!(error(&r, 404, short), "NOT_FOUND");
        let r = request(
            api,
            "POST",
            &format!("/api/v1/clients/{name}/commands"),
            br#"{"msgType":"read","data":{"path":"/3/0/0"}}"#,
            None,
        );
        assert_eq!(error(&r, 404, short), "NOT_FOUND");
    }
    for path in [
        "/api/v1/clients/%FF",
        "/api/v1/clients/%FF/commands",
        "/api/v5/gateways/lwm2m/clients/%FF",
    ] {
        let method = if path.ends_with("commands") {
            "POST"
        } else {
            "GET"
        };
        let r = request(api, method, path, b"{}", None);
        assert_eq!(error(&r, 400, path), "BAD_REQUEST", "{path}");
    }
    // EMQX's paths: missing or wrong parameters.
    let emqx = format!("/api/v5/gateways/lwm2m/clients/{tag}-0");
    for bad in [
        "observe?path=/3/0/0&enable=maybe",
        "observe?path=/3/0/0",
        "read",
        "write?path=/3/0/1&type=String",
        "lookup?path=/3/0/0",
    ] {
        let method = if bad.starts_with("lookup") {
            "GET"
        } else {
            "POST"
        };
        let r = request(api, method, &format!("{emqx}/{bad}"), b"", None);
        assert_eq!(error(&r, 400, bad), "BAD_REQUEST", "{bad}");
    }
    let r = get(api, &format!("/api/v1/clients?endpoint_name={long}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["meta"]["count"], 0);
    still_serves(api);
    gw.stop();
}

#[test]
fn bad_command_bodies_and_waits_get_json_errors() {
    let (gw, api) = start_with_api();
    let tag = unique("body");
    let ep = format!("{tag}-0");
    let mut d = Device::bind("127.0.0.1", gw.udp_addr());
    d.register(&ep, 300);
    let path = format!("/api/v1/clients/{ep}/commands");
    let read = br#"{"reqID":"1","msgType":"read","data":{"path":"/3/0/0"}}"#;

    for (body, what) in [
        (&b"{not json"[..], "not JSON"),
        (b"", "empty"),
        (b"[1,2]", "an array"),
        (b"\"read\"", "a string"),
        (b"null", "null"),
        (br#"{"msgType":"dance","data":{}}"#, "an unknown msgType"),
        (br#"{"msgType":7}"#, "a msgType not a string"),
        (br#"{"data":{"path":"/3/0/0"}}"#, "no msgType"),
    ] {
        let r = request(api, "POST", &path, body, None);
        assert_eq!(error(&r, 400, what), "BAD_REQUEST", "{what}");
    }
    for wait in ["abc", "-1s", "999h", "61s", "1e9s"] {
        let r = request(api, "POST", &format!("{path}?wait={wait}"), read, None);
        assert_eq!(error(&r, 400, wait), "BAD_REQUEST", "wait={wait}");
    }
    // Over the body limit, announced by Content-Length or not (chunked).
    let big = vec![b' '; lwm2m_gateway::api::MAX_BODY + 1];
    let r = request(api, "POST", &path, &big, None);
    assert_eq!(error(&r, 413, "big"), "PAYLOAD_TOO_LARGE");
    let mut chunked = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..5 {
        let chunk = vec![b' '; 64 << 10];
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = raw(api, &chunked);
    assert_eq!(error(&r, 413, "chunked"), "PAYLOAD_TOO_LARGE");
    // A small chunked body is a body like any other.
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        read.len()
    );
    let mut small = head.into_bytes();
    small.extend_from_slice(read);
    small.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(raw(api, &small).status, 202);
    // The Content-Type is not checked (`curl -d` sends a form type): JSON is JSON.
    let r = raw(
        api,
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{}",
            read.len(),
            String::from_utf8_lossy(read)
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    // Not JSON under a JSON type is still a 400.
    let r = raw(
        api,
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/xml\r\nContent-Length: 6\r\n\r\n<a/>\r\n")
            .as_bytes(),
    );
    assert_eq!(error(&r, 400, "xml"), "BAD_REQUEST");
    // A wrong method on a known path.
    let r = request(api, "PUT", &path, read, None);
    assert!(r.status == 405 || r.status == 404, "{}", r.body);
    still_serves(api);
    gw.stop();
}

#[test]
fn connections_that_stall_are_closed() {
    let (gw, api) = start_with_api();
    let tag = unique("slow");
    let ep = format!("{tag}-0");
    Device::bind("127.0.0.1", gw.udp_addr()).register(&ep, 300);
    let started = Instant::now();
    // Requests sent back to back and none of the answers read: once the socket buffers
    // are full, the answers stop moving and the connection is closed.
    let mut deaf = TcpStream::connect(api).expect("connect");
    deaf.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let pipelined = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
    let _ = deaf.write_all(&pipelined);
    // A command waiting longer than a connection may idle still gets its answer.
    let long_wait = {
        let path = format!("/api/v1/clients/{ep}/commands?wait=12s");
        std::thread::spawn(move || {
            request(
                api,
                "POST",
                &path,
                br#"{"msgType":"read","data":{"path":"/3/0/0"}}"#,
                None,
            )
        })
    };
    // One request answered on a kept-alive connection, then silence.
    let mut kept = TcpStream::connect(api).expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    kept.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut first = [0u8; 512];
    let n = kept.read(&mut first).expect("the answer");
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    // Headers in full, then a tenth of the body announced, then nothing.
    let mut slow_body = TcpStream::connect(api).expect("connect");
    slow_body
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    slow_body
        .write_all(
            format!("POST /api/v1/clients/{ep}/commands HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"msgType\"")
                .as_bytes(),
        )
        .expect("write");
    let mut idle = TcpStream::connect(api).expect("connect");
    let mut trickle = TcpStream::connect(api).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    trickle
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    // One byte of a request line now and then, never the end of the headers.
    let mut buf = [0u8; 256];
    let mut closed = false;
    for b in b"GET /healthz HTTP/1.1\r\nX-Slow: ".iter().cycle().take(25) {
        if trickle.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        match trickle.read(&mut buf) {
            Ok(_) => {
                closed = true;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a trickling client was served for 25 s");
    // The idle one is closed as well, well before our own 30 s read timeout.
    let n = idle.read(&mut buf);
    assert!(
        matches!(n, Ok(0)) || n.is_err() && started.elapsed() < Duration::from_secs(29),
        "{n:?}"
    );
    // The body that never completes gets a 408 and the connection ends.
    let mut answer = Vec::new();
    let _ = slow_body.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    let r = long_wait.join().expect("waiting caller");
    assert_eq!(error(&r, 504, "a 12 s wait"), "TIMEOUT");
    let mut rest = Vec::new();
    let end = kept.read_to_end(&mut rest);
    assert!(
        end.is_ok(),
        "an idle kept-alive connection stayed open: {end:?}"
    );
    // The deaf client finds its connection closed, with far fewer answers than it asked.
    std::thread::sleep(Duration::from_secs(13).saturating_sub(started.elapsed()));
    deaf.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut answers = Vec::new();
    let end = deaf.read_to_end(&mut answers);
    assert!(
        !matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "the connection stayed open: {end:?}"
    );
    let served = answers.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
    assert!(served < 2000, "{served} answers");
    assert_eq!(get(api, "/healthz").status, 200);
    gw.stop();
}

#[test]
fn many_waiting_commands_to_a_silent_device_all_come_back() {
    let (gw, api) = start_with_api();
    let tag = unique("silent");
    let ep = format!("{tag}-0");
    // Registered, then never answers.
    let mut d = Device::bind("127.0.0.1", gw.udp_addr());
    d.register(&ep, 300);
    const CALLERS: usize = 200;
    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let path = format!("/api/v1/clients/{ep}/commands?wait=1s");
            std::thread::spawn(move || {
                let body =
                    format!(r#"{{"reqID":"{i}","msgType":"read","data":{{"path":"/3/0/0"}}}}"#);
                request(api, "POST", &path, body.as_bytes(), None)
            })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::new();
    for c in callers {
        let r = c.join().expect("caller");
        let code = if r.status == 200 {
            r.json()["data"]["code"].as_str().unwrap_or("?").to_owned()
        } else {
            error(&r, r.status, "a waiting command")
        };
        *codes.entry((r.status, code)).or_insert(0) += 1;
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?} {codes:?}");
    // The device never answers: each caller gets the timeout or, past the device's
    // command queue, the shard's immediate refusal; nobody hangs or gets a 2.05.
    for (status, code) in codes.keys() {
        assert!(
            (*status == 504 && code == "TIMEOUT") || (*status == 200 && code != "2.05"),
            "{codes:?}"
        );
    }
    // The waiter table does not keep growing: a scrape shows at most what the cap allows.
    let metrics = get(api, "/metrics").body;
    let waiting: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("lwm2m_queue_depth") && l.contains("queue=\"api_waiters\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(waiting <= CALLERS as f64, "{waiting} waiters");
    still_serves(api);
    gw.stop();
}

#[test]
fn a_deregistration_racing_a_waiting_command() {
    let (gw, api) = start_with_api();
    let tag = unique("race");
    let ep = format!("{tag}-0");
    let mut d = Device::bind("127.0.0.1", gw.udp_addr());
    d.register(&ep, 300);
    let path = format!("/api/v1/clients/{ep}/commands?wait=10s");
    let waiting = std::thread::spawn(move || {
        request(
            api,
            "POST",
            &path,
            br#"{"reqID":"r","msgType":"read","data":{"path":"/3/0/0"}}"#,
            None,
        )
    });
    // Once the command is in flight, the client is removed under it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(api, &format!("/api/v1/clients/{ep}"));
        if r.json()["command_in_flight"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "{}", r.body);
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let r = request(api, "DELETE", &format!("/api/v1/clients/{ep}"), b"", None);
    assert_eq!(r.status, 204, "{}", r.body);
    let answer = waiting.join().expect("caller");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the waiting caller learnt of the deregistration only at its timeout"
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["data"]["code"], "4.04", "{}", answer.body);
    let r = request(api, "DELETE", &format!("/api/v1/clients/{ep}"), b"", None);
    assert_eq!(error(&r, 404, "second DELETE"), "NOT_FOUND");
    still_serves(api);
    gw.stop();
}

#[test]
fn connections_past_the_cap_are_refused_until_some_close() {
    let (gw, api) = start_with_api();
    // Room for the held connections and the gateway's own descriptors.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reading and raising this process's own descriptor limit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max.min(8192).max(limit.rlim_cur);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    const HELD: usize = 512;
    let held: Vec<TcpStream> = (0..HELD)
        .map(|_| TcpStream::connect(api).expect("connect"))
        .collect();
    // The held ones send nothing; the next one is told at once.
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let r = get(api, "/healthz");
        if r.status != 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(error(&refused, 503, "past the cap"), "SERVICE_UNAVAILABLE");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(api, "/healthz").status != 200 {
        assert!(
            Instant::now() < deadline,
            "still refused after the others closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    still_serves(api);
    gw.stop();
}
