//! CoAP codec hot path: decode of a registration and of a notification, encode of a
//! registration response.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lwm2m_gateway::coap::{option, Code, Message, MessageType, MessageWriter};

/// wakaama 1.1 Register (`POST /rd?lwm2m=1.1&ep=peer-ep1&b=U&lt=300`, link-format body).
const REGISTER: &str = "4402d38080d30952b272641128396c776d326d3d312e310b65703d706565722d65703103623d55066c743d333030ff3c2f3e3b72743d226f6d612e6c776d326d223b63743d3131302c3c2f313e3b7665723d312e312c3c2f312f303e2c3c2f322f303e2c3c2f332f303e2c3c2f342f303e2c3c2f352f303e2c3c2f362f303e2c3c2f372f303e2c3c2f33313032343e3b7665723d312e302c3c2f33313032342f31303e2c3c2f33313032342f31313e2c3c2f33313032342f31323e";

/// Anjay NON notification: 2.05, Observe 1, Content-Format TLV, 4-byte payload.
const NOTIFY: &str = "5445607f000000016101622d16ffe1157c01";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Parses and touches what a registration handler reads.
fn decode_register(bytes: &[u8]) -> usize {
    let msg = Message::parse(bytes).expect("valid capture");
    msg.uri_path().count() + msg.uri_query().map(<[u8]>::len).sum::<usize>() + msg.payload().len()
}

/// Parses and touches what a notification handler reads.
fn decode_notify(bytes: &[u8]) -> usize {
    let msg = Message::parse(bytes).expect("valid capture");
    msg.token().len() + msg.observe().unwrap_or(0) as usize + msg.payload().len()
}

fn codec(c: &mut Criterion) {
    let register = hex(REGISTER);
    let notify = hex(NOTIFY);
    let mut group = c.benchmark_group("coap");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_register", |b| {
        b.iter(|| decode_register(black_box(&register)))
    });
    group.bench_function("parse_notify", |b| {
        b.iter(|| decode_notify(black_box(&notify)))
    });
    let mut buf = Vec::with_capacity(64);
    group.bench_function("encode_created", |b| {
        b.iter(|| {
            buf.clear();
            let token = black_box(&[0x80, 0xd3, 0x09, 0x52]);
            let mut w = MessageWriter::new(&mut buf, MessageType::Ack, Code::CREATED, 54144, token);
            w.option(option::LOCATION_PATH, b"rd")
                .option(option::LOCATION_PATH, b"a3");
            w.finish()
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
