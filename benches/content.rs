//! The read-response path of a device object: TLV `/3/0` (15 resources, 18 values) →
//! typed entries → the §5 `content` JSON; SenML JSON decode of the same object for
//! comparison.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lwm2m_gateway::content::{
    decode, encode_senml_json, encode_tlv, format, write_content_json, Content, Entry, Value,
};
use lwm2m_gateway::lwm2m::{Path, Registry};

fn device_entries() -> Vec<Entry> {
    let s = |t: &str| Value::String(t.into());
    [
        ("/3/0/0", s("Open Mobile Alliance")),
        ("/3/0/1", s("Lightweight M2M Client")),
        ("/3/0/2", s("345000123")),
        ("/3/0/3", s("1.0")),
        ("/3/0/6/0", Value::Integer(1)),
        ("/3/0/6/1", Value::Integer(5)),
        ("/3/0/7/0", Value::Integer(3800)),
        ("/3/0/7/1", Value::Integer(5000)),
        ("/3/0/8/0", Value::Integer(125)),
        ("/3/0/8/1", Value::Integer(900)),
        ("/3/0/9", Value::Integer(100)),
        ("/3/0/10", Value::Integer(15)),
        ("/3/0/11/0", Value::Integer(0)),
        ("/3/0/13", Value::Time(1_367_491_215)),
        ("/3/0/14", s("+02:00")),
        ("/3/0/15", s("Europe/Berlin")),
        ("/3/0/16", s("U")),
        ("/3/0/17", s("Smart meter")),
    ]
    .into_iter()
    .map(|(p, value)| Entry {
        path: Path::parse(p).expect("path"),
        value,
    })
    .collect()
}

fn read_path(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lwm2m_xml");
    let registry = Registry::load_dir(&dir).expect("lwm2m_xml loads");
    let base = Path::parse("/3/0").expect("path");
    let entries = device_entries();
    let mut tlv = Vec::new();
    encode_tlv(&entries, &base, &mut tlv).expect("encodes");
    let mut senml = Vec::new();
    encode_senml_json(&entries, &base, &mut senml).expect("encodes");
    let content = decode(format::TLV, &tlv, &base, &registry).expect("decodes");
    assert_eq!(content, Content::Entries(entries.clone()));

    let mut group = c.benchmark_group("content");
    group.throughput(Throughput::Elements(1));
    group.bench_function("tlv_decode_device", |b| {
        b.iter(|| decode(format::TLV, black_box(&tlv), &base, &registry))
    });
    let mut json = Vec::with_capacity(1024);
    group.bench_function("write_content_json_device", |b| {
        b.iter(|| {
            json.clear();
            write_content_json(&mut json, black_box(&content));
            json.len()
        })
    });
    group.bench_function("tlv_to_json_device", |b| {
        b.iter(|| {
            json.clear();
            let content = decode(format::TLV, black_box(&tlv), &base, &registry).expect("decodes");
            write_content_json(&mut json, &content);
            json.len()
        })
    });
    group.bench_function("senml_json_decode_device", |b| {
        b.iter(|| decode(format::SENML_JSON, black_box(&senml), &base, &registry))
    });
    let mut out = Vec::with_capacity(512);
    group.bench_function("tlv_encode_device", |b| {
        b.iter(|| {
            out.clear();
            encode_tlv(black_box(&entries), &base, &mut out).expect("encodes");
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, read_path);
criterion_main!(benches);
