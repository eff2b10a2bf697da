//! Behaviour tests of [`UplinkSession`] with a fake clock and byte vectors.

use super::*;
use rumqttc::mqttbytes::v4::Publish;

fn opts() -> SessionOptions {
    SessionOptions {
        client_id: "gw-n1-0".into(),
        username: None,
        password: None,
        keep_alive: Duration::from_secs(30),
        max_batch: 128,
        offline_buffer: 1000,
    }
}

const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

/// A message whose payload is its number; `.out()` borrows it for `publish`.
struct Msg {
    topic: String,
    payload: [u8; 4],
    qos: Qos,
}

impl Msg {
    fn out(&self) -> Outgoing<'_> {
        Outgoing {
            topic: &self.topic,
            payload: &self.payload,
            qos: self.qos,
        }
    }
}

fn msg(topic: &str, n: u32, qos: Qos) -> Msg {
    Msg {
        topic: topic.into(),
        payload: n.to_be_bytes(),
        qos,
    }
}

/// Everything `poll_transmit` writes until it returns 0, decoded.
fn drain(s: &mut UplinkSession, now: Instant) -> Vec<Packet> {
    let mut out = BytesMut::new();
    while s.poll_transmit(now, &mut out) > 0 {}
    s.on_transmit_complete();
    decode(&mut out)
}

fn decode(out: &mut BytesMut) -> Vec<Packet> {
    let mut packets = Vec::new();
    while !out.is_empty() {
        packets.push(v4::read(out, usize::MAX).expect("session writes valid packets"));
    }
    packets
}

fn feed(s: &mut UplinkSession, now: Instant, bytes: &[u8]) -> Result<(), UplinkError> {
    let mut buf = BytesMut::from(bytes);
    let r = s.handle_incoming(now, &mut buf);
    if r.is_ok() {
        assert!(buf.is_empty(), "complete packets are consumed");
    }
    r
}

fn puback(pkid: u16) -> [u8; 4] {
    let [hi, lo] = pkid.to_be_bytes();
    [0x40, 0x02, hi, lo]
}

fn connected(now: Instant, o: SessionOptions) -> UplinkSession {
    let mut s = UplinkSession::new(o);
    s.on_connected(now);
    let packets = drain(&mut s, now);
    assert!(matches!(packets.as_slice(), [Packet::Connect(_)]));
    feed(&mut s, now, &CONNACK_OK).expect("CONNACK accepted");
    assert!(s.is_connected());
    s
}

fn publishes(packets: &[Packet]) -> Vec<&Publish> {
    packets
        .iter()
        .filter_map(|p| {
            if let Packet::Publish(p) = p {
                Some(p)
            } else {
                None
            }
        })
        .collect()
}

fn seq_of(p: &Publish) -> u32 {
    u32::from_be_bytes(p.payload[..4].try_into().expect("4-byte payload"))
}

#[test]
fn connect_bytes() {
    let now = Instant::now();
    let mut s = UplinkSession::new(SessionOptions {
        client_id: "c".into(),
        username: Some("u".into()),
        password: Some(crate::config::Secret::new("p")),
        keep_alive: Duration::from_secs(30),
        ..opts()
    });
    let mut out = BytesMut::new();
    assert_eq!(
        s.poll_transmit(now, &mut out),
        0,
        "nothing before the transport is up"
    );
    s.on_connected(now);
    assert_eq!(s.poll_transmit(now, &mut out), 1);
    #[rustfmt::skip]
    let expected = [
        0x10, 19,                          // CONNECT, remaining length
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, // protocol name and level 4
        0b1100_0010,                       // username, password, clean session
        0x00, 30,                          // keep alive
        0x00, 0x01, b'c',                  // client id
        0x00, 0x01, b'u', 0x00, 0x01, b'p', // username, password
    ];
    assert_eq!(&out[..], &expected[..]);
    assert_eq!(s.state(), LinkState::Connecting);
}

#[test]
fn publishes_wait_for_connack_then_batch_respects_max_batch() {
    let now = Instant::now();
    let mut s = UplinkSession::new(SessionOptions {
        max_batch: 10,
        ..opts()
    });
    s.on_connected(now);
    for i in 0..25 {
        s.publish(now, msg("t", i, Qos::AtMostOnce).out());
    }
    let mut out = BytesMut::new();
    assert_eq!(
        s.poll_transmit(now, &mut out),
        1,
        "only CONNECT before CONNACK"
    );
    out.clear();
    assert_eq!(s.poll_transmit(now, &mut out), 0);
    feed(&mut s, now, &CONNACK_OK).expect("ok");
    assert_eq!(s.poll_transmit(now, &mut out), 10);
    assert_eq!(publishes(&decode(&mut out)).len(), 10);
    assert_eq!(s.poll_transmit(now, &mut out), 10);
    assert_eq!(s.poll_transmit(now, &mut out), 5);
    assert_eq!(s.poll_transmit(now, &mut out), 0);
    let seqs: Vec<u32> = publishes(&decode(&mut out))
        .iter()
        .map(|p| seq_of(p))
        .collect();
    assert_eq!(seqs, (10..25).collect::<Vec<_>>());
    assert_eq!(s.stats().published, 25);
    assert!(s.is_idle());
}

#[test]
fn qos0_publish_bytes() {
    let now = Instant::now();
    let mut s = connected(now, opts());
    s.publish(
        now,
        Outgoing {
            topic: "a/b",
            payload: b"hi",
            qos: Qos::AtMostOnce,
        },
    );
    let mut out = BytesMut::new();
    assert_eq!(s.poll_transmit(now, &mut out), 1);
    assert_eq!(&out[..], &[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i']);
}

#[test]
fn puback_releases_in_flight() {
    let now = Instant::now();
    let mut s = connected(now, opts());
    for i in 0..3 {
        s.publish(now, msg("t", i, Qos::AtLeastOnce).out());
    }
    let packets = drain(&mut s, now);
    let ids: Vec<u16> = publishes(&packets).iter().map(|p| p.pkid).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(s.stats().in_flight, 3);
    assert!(!s.is_idle());
    feed(&mut s, now, &puback(2)).expect("ok");
    assert_eq!(s.stats().in_flight, 2);
    feed(&mut s, now, &[puback(1), puback(3)].concat()).expect("ok");
    feed(&mut s, now, &puback(3)).expect("duplicate PUBACK is harmless");
    assert_eq!(s.stats().in_flight, 0);
    assert_eq!(s.stats().acked, 3);
    assert!(s.is_idle());
}

#[test]
fn in_flight_window_is_bounded() {
    let now = Instant::now();
    let mut s = connected(
        now,
        SessionOptions {
            offline_buffer: 5000,
            ..opts()
        },
    );
    for i in 0..(MAX_IN_FLIGHT as u32 + 10) {
        s.publish(now, msg("t", i, Qos::AtLeastOnce).out());
    }
    let sent = publishes(&drain(&mut s, now)).len();
    assert_eq!(sent, MAX_IN_FLIGHT);
    assert_eq!(s.stats().buffered, 10);
    assert!(!s.wants_transmit());
    feed(&mut s, now, &puback(1)).expect("ok");
    assert_eq!(publishes(&drain(&mut s, now)).len(), 1);
}

#[test]
fn keepalive_ping_and_dead_connection() {
    let t0 = Instant::now();
    let ka = Duration::from_secs(30);
    let mut s = connected(t0, opts());
    assert_eq!(s.poll_timeout(), Some(t0 + ka));
    s.handle_timeout(t0 + ka - Duration::from_millis(1));
    assert!(drain(&mut s, t0).is_empty(), "no ping before keep_alive");

    let t1 = t0 + ka;
    s.handle_timeout(t1);
    assert!(matches!(drain(&mut s, t1).as_slice(), [Packet::PingReq]));
    assert_eq!(s.poll_timeout(), Some(t1 + ka / 2));
    feed(&mut s, t1 + Duration::from_secs(1), &[0xD0, 0x00]).expect("PINGRESP");
    assert!(s.is_connected());
    assert_eq!(
        s.poll_timeout(),
        Some(t1 + ka),
        "next ping a keep_alive after the last send"
    );

    let t2 = t1 + ka;
    s.handle_timeout(t2);
    assert!(matches!(drain(&mut s, t2).as_slice(), [Packet::PingReq]));
    s.handle_timeout(t2 + ka / 2 - Duration::from_millis(1));
    assert!(s.is_connected());
    s.handle_timeout(t2 + ka / 2);
    assert!(!s.is_connected());
    assert!(s.is_dead());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn missing_connack_is_dead() {
    let t0 = Instant::now();
    let mut s = UplinkSession::new(opts());
    s.on_connected(t0);
    drain(&mut s, t0);
    assert_eq!(s.poll_timeout(), Some(t0 + CONNACK_TIMEOUT));
    s.handle_timeout(t0 + CONNACK_TIMEOUT);
    assert!(s.is_dead());
}

#[test]
fn offline_buffer_bound_drops_oldest_qos0_first() {
    let now = Instant::now();
    let mut s = UplinkSession::new(SessionOptions {
        offline_buffer: 4,
        ..opts()
    });
    s.publish(now, msg("t", 0, Qos::AtLeastOnce).out());
    s.publish(now, msg("t", 1, Qos::AtMostOnce).out());
    s.publish(now, msg("t", 2, Qos::AtLeastOnce).out());
    s.publish(now, msg("t", 3, Qos::AtMostOnce).out());
    assert_eq!(s.stats().buffered, 4);
    s.publish(now, msg("t", 4, Qos::AtLeastOnce).out()); // drops 1 (oldest QoS 0)
    s.publish(now, msg("t", 5, Qos::AtLeastOnce).out()); // drops 3
    s.publish(now, msg("t", 6, Qos::AtLeastOnce).out()); // no QoS 0 left: drops 0
    let st = s.stats();
    assert_eq!((st.buffered, st.dropped_overflow), (4, 3));
    let mut s2 = s;
    s2.on_connected(now);
    drain(&mut s2, now);
    feed(&mut s2, now, &CONNACK_OK).expect("ok");
    let seqs: Vec<u32> = publishes(&drain(&mut s2, now))
        .iter()
        .map(|p| seq_of(p))
        .collect();
    assert_eq!(seqs, [2, 4, 5, 6]);
}

#[test]
fn zero_offline_buffer_holds_nothing_while_down() {
    let now = Instant::now();
    let mut s = UplinkSession::new(SessionOptions {
        offline_buffer: 0,
        ..opts()
    });
    s.publish(now, msg("t", 0, Qos::AtLeastOnce).out());
    assert_eq!((s.stats().buffered, s.stats().dropped_overflow), (0, 1));
}

#[test]
fn qos1_redelivered_in_order_with_dup_after_reconnect() {
    let now = Instant::now();
    let mut s = connected(now, opts());
    for i in 0..5 {
        s.publish(now, msg("t", i, Qos::AtLeastOnce).out());
    }
    s.publish(now, msg("t", 100, Qos::AtMostOnce).out());
    let first = drain(&mut s, now);
    assert_eq!(publishes(&first).len(), 6);
    feed(&mut s, now, &puback(2)).expect("ok");
    // A QoS 0 message written but not confirmed when the link drops is lost.
    s.publish(now, msg("t", 101, Qos::AtMostOnce).out());
    let mut out = BytesMut::new();
    s.poll_transmit(now, &mut out);
    s.publish(now, msg("t", 5, Qos::AtLeastOnce).out());
    s.on_disconnected(now);
    assert!(!s.is_connected());
    assert_eq!(s.stats().dropped_qos0_disconnect, 1);
    assert_eq!(s.stats().buffered, 5);

    s.on_connected(now);
    drain(&mut s, now);
    feed(&mut s, now, &CONNACK_OK).expect("ok");
    let again = drain(&mut s, now);
    let p = publishes(&again);
    let seqs: Vec<u32> = p.iter().map(|p| seq_of(p)).collect();
    assert_eq!(
        seqs,
        [0, 2, 3, 4, 5],
        "seq 1 (packet id 2) was acknowledged"
    );
    assert_eq!(
        p.iter().map(|p| p.dup).collect::<Vec<_>>(),
        [true, true, true, true, false]
    );
    assert!(p.iter().all(|p| p.qos == QoS::AtLeastOnce && p.pkid != 0));
    let st = s.stats();
    assert_eq!((st.redelivered, st.reconnects, st.in_flight), (4, 1, 5));
}

#[test]
fn packet_ids_wrap_and_skip_ids_in_flight() {
    let now = Instant::now();
    let mut s = connected(
        now,
        SessionOptions {
            max_batch: 1024,
            offline_buffer: 100_000,
            ..opts()
        },
    );
    // The first message stays unacknowledged with id 1 for the whole run.
    s.publish(now, msg("t", 0, Qos::AtLeastOnce).out());
    assert_eq!(publishes(&drain(&mut s, now))[0].pkid, 1);
    let mut seen_wrap = false;
    let mut last = 1u16;
    for i in 1..=70_000u32 {
        s.publish(now, msg("t", i, Qos::AtLeastOnce).out());
        let packets = drain(&mut s, now);
        let p = publishes(&packets);
        assert_eq!(p.len(), 1);
        let id = p[0].pkid;
        assert_ne!(id, 0);
        assert_ne!(id, 1, "id 1 is still in flight");
        if id < last {
            seen_wrap = true;
            assert_eq!(id, 2, "wraps past 65535 to the first free id");
        }
        last = id;
        feed(&mut s, now, &puback(id)).expect("ok");
    }
    assert!(seen_wrap);
    assert_eq!(s.stats().in_flight, 1);
}

#[test]
fn subscriptions_batched_and_resent_after_reconnect() {
    let now = Instant::now();
    let mut s = UplinkSession::new(opts());
    let filters: Vec<(String, Qos)> = (0..100)
        .map(|i| (format!("lwm2m/ep{i}/dn/#"), Qos::AtLeastOnce))
        .collect();
    s.subscribe(filters.clone());
    s.on_connected(now);
    drain(&mut s, now);
    feed(&mut s, now, &CONNACK_OK).expect("ok");
    let subs = |packets: &[Packet]| -> Vec<(u16, usize)> {
        packets
            .iter()
            .filter_map(|p| {
                if let Packet::Subscribe(s) = p {
                    Some((s.pkid, s.filters.len()))
                } else {
                    None
                }
            })
            .collect()
    };
    let first = subs(&drain(&mut s, now));
    assert_eq!(first.iter().map(|s| s.1).collect::<Vec<_>>(), [64, 36]);
    assert!(first.iter().all(|(_, n)| *n <= MAX_FILTERS_PER_SUBSCRIBE));
    feed(&mut s, now, &[0x90, 0x03, 0x00, first[0].0 as u8, 0x01]).expect("SUBACK");

    s.on_disconnected(now);
    s.on_connected(now);
    drain(&mut s, now);
    feed(&mut s, now, &CONNACK_OK).expect("ok");
    let again = subs(&drain(&mut s, now));
    assert_eq!(again.iter().map(|s| s.1).sum::<usize>(), 100);

    // A new filter while connected goes out at once, alone.
    s.subscribe(vec![("x/#".into(), Qos::AtMostOnce)]);
    assert_eq!(
        subs(&drain(&mut s, now))
            .iter()
            .map(|s| s.1)
            .collect::<Vec<_>>(),
        [1]
    );
    s.subscribe(vec![("x/#".into(), Qos::AtMostOnce)]);
    assert!(
        drain(&mut s, now).is_empty(),
        "known filter is not subscribed twice"
    );
}

#[test]
fn incoming_publish_surfaced_and_qos1_acked() {
    let now = Instant::now();
    let mut s = connected(now, opts());
    #[rustfmt::skip]
    let bytes = [
        0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x07, b'o', b'k', // QoS 1, id 7
        0x30, 0x05, 0x00, 0x01, b'c', b'x', b'y',                          // QoS 0
    ];
    // Split in the middle of the second packet: the tail stays buffered.
    let mut buf = BytesMut::from(&bytes[..14]);
    s.handle_incoming(now, &mut buf).expect("ok");
    assert_eq!(buf.len(), 3);
    buf.extend_from_slice(&bytes[14..]);
    s.handle_incoming(now, &mut buf).expect("ok");
    assert!(buf.is_empty());
    assert_eq!(
        s.poll_incoming_publish(),
        Some(("a/b".into(), Bytes::from_static(b"ok")))
    );
    assert_eq!(
        s.poll_incoming_publish(),
        Some(("c".into(), Bytes::from_static(b"xy")))
    );
    assert_eq!(s.poll_incoming_publish(), None);
    let mut out = BytesMut::new();
    assert_eq!(s.poll_transmit(now, &mut out), 1);
    assert_eq!(&out[..], &[0x40, 0x02, 0x00, 0x07]);
    assert_eq!(s.stats().incoming, 2);
}

#[test]
fn refused_connack_names_the_reason() {
    let now = Instant::now();
    let mut s = UplinkSession::new(opts());
    s.on_connected(now);
    drain(&mut s, now);
    let err = feed(&mut s, now, &[0x20, 0x02, 0x00, 0x04]).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "broker refused the connection: bad user name or password"
    );
    assert!(!s.is_connected());
}

#[test]
fn malformed_broker_bytes_are_errors_not_panics() {
    let now = Instant::now();
    let cases: &[&[u8]] = &[
        &[0xF0, 0x00],                               // reserved packet type 15
        &[0x20, 0x02, 0x00, 0x09],                   // CONNACK with unknown return code
        &[0x30, 0x02, 0x00, 0x05],                   // topic longer than the packet
        &[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00], // QoS 1 with packet id 0
        &[0x36, 0x04, 0x00, 0x01, b'a', 0x00],       // QoS 3
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],       // remaining length of five bytes
        &[0x30, 0xFF, 0xFF, 0xFF, 0x7F],             // larger than MAX_INCOMING_PACKET
        &[0x90, 0x02, 0x00, 0x01],                   // SUBACK without return codes
        &[0x10, 0x00],                               // CONNECT from the broker
        &[0x40, 0x00],                               // PUBACK without packet id
    ];
    for bytes in cases {
        let mut s = connected(now, opts());
        assert!(
            feed(&mut s, now, bytes).is_err(),
            "{bytes:02x?} must be rejected"
        );
    }
    let mut s = UplinkSession::new(opts());
    s.on_connected(now);
    assert!(
        feed(&mut s, now, &[0x30, 0x03, 0x00, 0x01, b'a']).is_err(),
        "PUBLISH before CONNACK"
    );
    let mut s = connected(now, opts());
    assert!(feed(&mut s, now, &CONNACK_OK).is_err(), "second CONNACK");
}

#[test]
fn unencodable_messages_are_refused() {
    let now = Instant::now();
    let mut s = connected(now, opts());
    s.publish(now, msg("", 0, Qos::AtMostOnce).out());
    s.publish(
        now,
        Outgoing {
            topic: &"x".repeat(70_000),
            payload: &[],
            qos: Qos::AtLeastOnce,
        },
    );
    assert_eq!(s.stats().dropped_invalid, 2);
    assert!(drain(&mut s, now).is_empty());
}

#[test]
fn close_writes_disconnect() {
    let now = Instant::now();
    let mut s = connected(now, opts());
    let mut out = BytesMut::new();
    s.close(now, &mut out);
    assert_eq!(&out[..], &[0xE0, 0x00]);
    assert_eq!(s.state(), LinkState::Down);
}

#[test]
fn a_will_rides_every_connect_and_retained_messages_keep_their_flag() {
    let t0 = Instant::now();
    let mut s = UplinkSession::new(opts());
    s.set_will(Some("cluster/nodes/n1/0".into()));
    let retained = |topic, payload| Outgoing {
        topic,
        payload,
        qos: Qos::AtLeastOnce,
    };
    s.publish_retained(t0, retained("cluster/nodes/n1/0", b"{}"));
    s.publish_retained(t0, retained("cluster/presence/7/ep", b""));
    for _ in 0..2 {
        s.on_connected(t0);
        let packets = drain(&mut s, t0);
        let [Packet::Connect(c)] = packets.as_slice() else {
            panic!("CONNECT first: {packets:?}");
        };
        let will = c.last_will.as_ref().expect("will set");
        assert_eq!(will.topic, "cluster/nodes/n1/0");
        assert!(will.retain && will.message.is_empty(), "{will:?}");
        feed(&mut s, t0, &CONNACK_OK).expect("CONNACK");
        let packets = drain(&mut s, t0);
        let sent = publishes(&packets);
        assert_eq!(sent.len(), 2, "{packets:?}");
        assert!(sent.iter().all(|p| p.retain && p.qos == QoS::AtLeastOnce));
        assert_eq!(sent[0].payload.as_ref(), b"{}");
        assert!(
            sent[1].payload.is_empty(),
            "an empty retained message clears"
        );
        // Lost before the PUBACKs: both are sent again, still retained.
        s.on_disconnected(t0);
    }
}

/// Publishes `n` QoS 0 messages numbered from `from`.
fn publish_n(s: &mut UplinkSession, now: Instant, from: u32, n: u32) {
    for i in from..from + n {
        s.publish(now, msg("lwm2m/ep/up/notify", i, Qos::AtMostOnce).out());
    }
}

#[test]
fn a_broker_that_falls_behind_congests_the_session_until_half_the_backlog_is_written() {
    let now = Instant::now();
    // offline_buffer 1000: high mark 500, low mark 250.
    let mut s = connected(now, opts());
    publish_n(&mut s, now, 0, 499);
    assert!(!s.is_congested(), "below the high mark");
    publish_n(&mut s, now, 499, 1);
    assert!(s.is_congested(), "at the high mark");
    // One socket write of max_batch (128): 372 left, still above the low mark.
    let mut out = BytesMut::new();
    assert_eq!(s.poll_transmit(now, &mut out), 128);
    assert!(s.is_congested(), "hysteresis: 372 buffered");
    publish_n(&mut s, now, 500, 10);
    assert!(s.is_congested());
    assert_eq!(s.poll_transmit(now, &mut out), 128);
    assert!(s.is_congested(), "254 buffered");
    assert_eq!(s.poll_transmit(now, &mut out), 128);
    assert!(!s.is_congested(), "126 buffered, below the low mark");
    // Nothing was dropped on the way: the gateway stopped short of the buffer's bound.
    assert_eq!(s.stats().dropped_overflow, 0);
    let written = decode(&mut out);
    let seqs: Vec<u32> = publishes(&written).iter().map(|p| seq_of(p)).collect();
    assert_eq!(seqs, (0..384).collect::<Vec<_>>(), "written in order");
}

#[test]
fn a_session_without_a_connection_is_never_congested_and_buffers_instead() {
    let now = Instant::now();
    let mut s = UplinkSession::new(opts());
    publish_n(&mut s, now, 0, 900);
    assert!(
        !s.is_congested(),
        "down: the offline buffer holds what comes"
    );
    // A backlog found at CONNACK congests the session until it is half written.
    s.on_connected(now);
    assert!(!s.is_congested(), "CONNECT sent, no CONNACK yet");
    let connect = drain(&mut s, now);
    assert!(matches!(connect.as_slice(), [Packet::Connect(_)]));
    feed(&mut s, now, &CONNACK_OK).expect("CONNACK accepted");
    assert!(s.is_congested(), "900 buffered at CONNACK");
    let mut out = BytesMut::new();
    let mut writes = 0;
    while s.is_congested() {
        assert_eq!(s.poll_transmit(now, &mut out), 128);
        writes += 1;
    }
    assert_eq!(writes, 6, "900 - 6 × 128 = 132 ≤ 250");
    // A connection lost while congested ends the congestion.
    publish_n(&mut s, now, 900, 400);
    assert!(s.is_congested());
    s.on_disconnected(now);
    assert!(!s.is_congested());
}

#[test]
fn a_small_offline_buffer_congests_before_it_overflows() {
    let now = Instant::now();
    // offline_buffer 0: the bound while connected is max_batch (128), high mark 64.
    let mut s = connected(
        now,
        SessionOptions {
            offline_buffer: 0,
            ..opts()
        },
    );
    publish_n(&mut s, now, 0, 63);
    assert!(!s.is_congested());
    publish_n(&mut s, now, 63, 1);
    assert!(s.is_congested());
    assert_eq!(s.stats().dropped_overflow, 0);
}
