//! Byte-level tests of the journal format: round trips, damage, and a newer version.

use super::*;
use crate::dtls::Security;
use crate::persist::frame::{scan, ScanReport};

pub(crate) fn endpoint(key: u64, generation: u32, ep: &str) -> StoredEndpoint {
    StoredEndpoint {
        key,
        home: 1,
        generation,
        ep: ep.to_owned(),
        addr: "127.0.0.2:5683".parse().expect("addr"),
        registered_unix: 1_800_000_000,
        expires_unix: 1_800_086_400,
        lifetime: 86_400,
        version: "1.1".into(),
        binding: "UQ".into(),
        params: vec![
            ("apn".into(), "nb.iot".into()),
            ("sms".into(), String::new()),
        ],
        object_list: Some(Arc::new(ObjectList {
            alternate_path: "/".into(),
            content_formats: vec![110, 112],
            links: vec![
                ObjectLink {
                    path: "/1/0".into(),
                    version: None,
                },
                ObjectLink {
                    path: "/3".into(),
                    version: Some("1.1".into()),
                },
            ],
            pins: Box::default(),
        })),
        observations: vec![StoredObservation {
            token: [1, 2, 3, 4, 5, 6, 7, 8],
            last_seq: Some(17),
            echo: r#""requestID":41"#.into(),
            req_path: "/3/0/9".into(),
        }],
        security: Security::None,
        queued: vec![StoredCommand {
            command: br#"{"requestID":3,"msgType":"read","data":{"path":"/3/0/0"}}"#.to_vec(),
            expires_unix: 1_800_000_000,
        }],
    }
}

pub(crate) fn records() -> Vec<Record> {
    let mut v6 = endpoint(7, 3, "dev-ü");
    v6.addr = "[2001:db8::1]:61000".parse().expect("addr");
    v6.object_list = None;
    v6.observations.clear();
    v6.security = Security::Psk;
    vec![
        Record::Endpoint(Box::new(endpoint(u64::MAX, 1, "dev-1"))),
        Record::Removed {
            key: 42,
            generation: 9,
            at_unix: 1_800_000_123,
        },
        Record::Endpoint(Box::new(v6)),
    ]
}

pub(crate) fn encode_all(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        r.encode(&mut out);
    }
    out
}

pub(crate) fn scan_all(data: &[u8]) -> (Vec<Record>, ScanReport) {
    let mut got = Vec::new();
    let report = scan(data, |r| got.push(r)).expect("current format");
    (got, report)
}

#[test]
fn records_round_trip() {
    let records = records();
    let bytes = encode_all(&records);
    let (got, report) = scan_all(&bytes);
    assert_eq!(got, records);
    assert_eq!(
        report,
        ScanReport {
            records: 3,
            ..ScanReport::default()
        }
    );
}

#[test]
fn frame_layout_is_as_documented() {
    let mut out = Vec::new();
    encode_removed(&mut out, 0x0102_0304_0506_0708, 5, 6);
    assert_eq!(&out[..4], b"LW\x01\x02");
    assert_eq!(u32::from_le_bytes(out[4..8].try_into().expect("4")), 20);
    assert_eq!(out.len(), HEADER_LEN + 20);
    assert_eq!(&out[12..20], &0x0102_0304_0506_0708u64.to_le_bytes());
}
