//! Byte-vector tests of every format, from the LwM2M specification's examples and from
//! captures of real clients.

use super::test_vectors::*;
use super::*;
use crate::coap::Message;
use crate::lwm2m::{Operations, Registry, ResourceDef};

pub(super) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

pub(super) fn path(s: &str) -> Path {
    Path::parse(s).expect("path")
}

/// The object definitions shipped in `lwm2m_xml/` (the OMA registry; the Anjay capture
/// observes the IPSO push button, 3347, which it defines).
pub(super) fn registry() -> Registry {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lwm2m_xml");
    Registry::load_dir(&dir).expect("lwm2m_xml loads")
}

pub(super) fn resource(id: u16, kind: ResourceType, multiple: bool) -> ResourceDef {
    ResourceDef {
        id,
        name: format!("r{id}"),
        operations: Operations {
            read: true,
            write: true,
            execute: false,
        },
        multiple,
        mandatory: false,
        kind,
    }
}

pub(super) fn entry(p: &str, value: Value) -> Entry {
    Entry {
        path: path(p),
        value,
    }
}

pub(super) fn entries(content: Content) -> Vec<Entry> {
    match content {
        Content::Entries(e) => e,
        other => panic!("expected entries, got {other:?}"),
    }
}

pub(super) fn json(content: &Content) -> serde_json::Value {
    let mut out = Vec::new();
    write_content_json(&mut out, content);
    serde_json::from_slice(&out).expect("valid JSON")
}

/// The Device object example of LwM2M Core (TLV appendix): a read of `/3/0`.
pub(super) const SPEC_DEVICE_TLV: &str = "
    c800144f70656e204d6f62696c6520416c6c69616e6365
    c801164c69676874776569676874204d324d20436c69656e74
    c80209333435303030313233
    c303312e30
    8606 4100014101 05
    880708 42000ed8 42011388
    8708 41007d 42010384
    c10964
    c10a0f
    830b 410000
    c40d5182428f
    c60e2b30323a3030
    c11055";

pub(super) fn spec_device_entries() -> Vec<Entry> {
    let s = |t: &str| Value::String(t.into());
    vec![
        entry("/3/0/0", s("Open Mobile Alliance")),
        entry("/3/0/1", s("Lightweight M2M Client")),
        entry("/3/0/2", s("345000123")),
        entry("/3/0/3", s("1.0")),
        entry("/3/0/6/0", Value::Integer(1)),
        entry("/3/0/6/1", Value::Integer(5)),
        entry("/3/0/7/0", Value::Integer(3800)),
        entry("/3/0/7/1", Value::Integer(5000)),
        entry("/3/0/8/0", Value::Integer(125)),
        entry("/3/0/8/1", Value::Integer(900)),
        entry("/3/0/9", Value::Integer(100)),
        entry("/3/0/10", Value::Integer(15)),
        entry("/3/0/11/0", Value::Integer(0)),
        entry("/3/0/13", Value::Time(1_367_491_215)),
        entry("/3/0/14", s("+02:00")),
        entry("/3/0/16", s("U")),
    ]
}

#[test]
fn tlv_spec_device_object_decodes_and_encodes() {
    let bytes = hex(SPEC_DEVICE_TLV);
    let got = decode(format::TLV, &bytes, &path("/3/0"), &registry()).expect("decodes");
    assert_eq!(entries(got), spec_device_entries());

    let mut out = Vec::new();
    encode_tlv(&spec_device_entries(), &path("/3/0"), &mut out).expect("encodes");
    assert_eq!(out, bytes, "encoder reproduces the specification's bytes");
}

#[test]
fn tlv_spec_device_object_as_content_json() {
    let content = decode(
        format::TLV,
        &hex(SPEC_DEVICE_TLV),
        &path("/3/0"),
        &registry(),
    )
    .expect("decodes");
    let v = json(&content);
    assert_eq!(
        v[0],
        serde_json::json!({"path":"/3/0/0","value":"Open Mobile Alliance"})
    );
    assert_eq!(v[6], serde_json::json!({"path":"/3/0/7/0","value":3800}));
    assert_eq!(
        v[13],
        serde_json::json!({"path":"/3/0/13","value":1_367_491_215})
    );
    assert_eq!(v.as_array().map(Vec::len), Some(16));
}

/// Anjay answering `GET /3347/0/5500 Observe=0 Accept=TLV` and two NON notifications.
#[test]
fn tlv_anjay_capture_notifications() {
    let mut values = Vec::new();
    for datagram in ANJAY_TLV_NOTIFICATIONS {
        let bytes = hex(datagram);
        let msg = Message::parse(&bytes).expect("capture parses");
        assert_eq!(msg.content_format(), Some(format::TLV));
        let got = decode(
            format::TLV,
            msg.payload(),
            &path("/3347/0/5500"),
            &registry(),
        )
        .expect("decodes");
        values.extend(entries(got));
    }
    assert_eq!(
        values,
        vec![
            entry("/3347/0/5500", Value::Boolean(false)),
            entry("/3347/0/5500", Value::Boolean(true)),
            entry("/3347/0/5500", Value::Boolean(false)),
        ]
    );
}

#[test]
fn tlv_nesting_follows_the_request_path() {
    let reg = registry();
    // Read of /3: object instance 0 wrapping resource 9.
    let wrapped = hex("0300 c10964");
    assert_eq!(
        entries(decode(format::TLV, &wrapped, &path("/3"), &reg).expect("decodes")),
        vec![entry("/3/0/9", Value::Integer(100))]
    );
    // Read of /3/0 answered with the instance wrapper too.
    assert_eq!(
        entries(decode(format::TLV, &wrapped, &path("/3/0"), &reg).expect("decodes")),
        vec![entry("/3/0/9", Value::Integer(100))]
    );
    // Read of /3/0/7: the multiple resource TLV, or its bare instances.
    let want = vec![
        entry("/3/0/7/0", Value::Integer(3800)),
        entry("/3/0/7/1", Value::Integer(5000)),
    ];
    for bytes in ["880708 42000ed8 42011388", "42000ed8 42011388"] {
        let got = decode(format::TLV, &hex(bytes), &path("/3/0/7"), &reg).expect("decodes");
        assert_eq!(entries(got), want, "{bytes}");
    }
    // Read of /3/0/7/1: one resource instance.
    let got = decode(format::TLV, &hex("42011388"), &path("/3/0/7/1"), &reg).expect("decodes");
    assert_eq!(entries(got), vec![entry("/3/0/7/1", Value::Integer(5000))]);
    // Read of /3/0/6/0 answered with a list of object instances (EMQX's
    // case20_read_tlv_variants): each value at its own path.
    let list = hex("0600 c40041434d45 0601 c40041434d45");
    assert_eq!(
        entries(decode(format::TLV, &list, &path("/3/0/6/0"), &reg).expect("decodes")),
        vec![
            entry("/3/0/0", Value::String("ACME".into())),
            entry("/3/1/0", Value::String("ACME".into())),
        ]
    );
    // ... or with the instance, multiple resource and resource instance nested.
    let nested = hex("0500 8306 410001");
    assert_eq!(
        entries(decode(format::TLV, &nested, &path("/3/0/6/0"), &reg).expect("decodes")),
        vec![entry("/3/0/6/0", Value::Integer(1))]
    );
    // An instance TLV inside an instance TLV is not a placement the path allows.
    assert!(matches!(
        decode(format::TLV, &hex("0200 0000"), &path("/3"), &reg),
        Err(ContentError::Invalid { .. })
    ));
}

#[test]
fn tlv_header_forms() {
    let reg = registry();
    // 16-bit identifier (resource 5500), 16-bit length, 24-bit length.
    let s300 = "a".repeat(300);
    let mut b16 = hex("f0157c012c");
    b16.extend_from_slice(s300.as_bytes());
    let got = decode(format::TLV, &b16, &path("/3347/0"), &reg);
    assert!(
        matches!(
            &got,
            Err(ContentError::TypeMismatch {
                reason: "length not 1",
                ..
            })
        ),
        "{got:?}"
    );
    let mut b24 = hex("d80e00012c");
    b24.extend_from_slice(s300.as_bytes());
    let got = decode(format::TLV, &b24, &path("/3/0"), &reg).expect("24-bit length");
    assert_eq!(
        entries(got),
        vec![entry("/3/0/14", Value::String(s300.clone()))]
    );
    // Encoding picks the 16-bit length for 300 bytes.
    let mut out = Vec::new();
    encode_tlv(
        &[entry("/3/0/14", Value::String(s300))],
        &path("/3/0"),
        &mut out,
    )
    .expect("encodes");
    assert_eq!(out[..4], hex("d00e012c")[..]);
}

#[test]
fn tlv_rejects_malformed_values() {
    let reg = registry();
    let cases: &[(&str, &str)] = &[
        ("c109", "truncated value"),
        ("c8", "truncated header"),
        ("c80905 0102", "length beyond the payload"),
        ("f8157c", "truncated 16-bit id and length"),
        ("c8090901 02030405 06070809", "9-byte integer"),
        ("c009", "empty integer"),
    ];
    for (bytes, what) in cases {
        let got = decode(format::TLV, &hex(bytes), &path("/3/0"), &reg);
        assert!(got.is_err(), "{what}: {got:?}");
    }
    assert!(matches!(
        decode(format::TLV, &hex("e1157c02"), &path("/3347/0/5500"), &reg),
        Err(ContentError::TypeMismatch { .. })
    ));
    assert!(matches!(
        decode(format::TLV, &hex("c109"), &path("/3/0"), &reg),
        Err(ContentError::Truncated { .. })
    ));
}

#[test]
fn tlv_unknown_object_resource_and_bad_utf8() {
    let reg = registry();
    let payload = hex("c10064");
    assert_eq!(
        decode(format::TLV, &payload, &path("/32000/0"), &reg).expect("undecoded"),
        Content::Undecoded {
            path: path("/32000/0"),
            payload: payload.clone()
        }
    );
    // Resource 99 is not in the Device definition: its bytes stay Opaque.
    let got = decode(format::TLV, &hex("c16364"), &path("/3/0"), &reg).expect("decodes");
    assert_eq!(
        entries(got),
        vec![entry("/3/0/99", Value::Opaque(vec![0x64]))]
    );
    // A String that is not UTF-8 is kept losslessly as Opaque.
    let got = decode(format::TLV, &hex("c200ff41"), &path("/3/0"), &reg).expect("decodes");
    assert_eq!(
        entries(got),
        vec![entry("/3/0/0", Value::Opaque(vec![0xff, 0x41]))]
    );
}

#[test]
fn tlv_integers_use_the_minimal_signed_width() {
    for (n, bytes) in [
        (0i64, "c10900"),
        (127, "c1097f"),
        (-128, "c10980"),
        (128, "c2090080"),
        (200, "c20900c8"),
        (-129, "c209ff7f"),
        (32_767, "c2097fff"),
        (32_768, "c40900008000"),
        (2_147_483_648, "c8090800000000 80000000"),
        (i64::MIN, "c809088000000000000000"),
    ] {
        let mut out = Vec::new();
        encode_tlv(
            &[entry("/3/0/9", Value::Integer(n))],
            &path("/3/0/9"),
            &mut out,
        )
        .expect("encodes");
        assert_eq!(out, hex(bytes), "{n}");
    }
    // Unsigned keeps the same width, so a signed decoder reads the same number.
    let mut out = Vec::new();
    encode_tlv(
        &[entry("/3/0/9", Value::Unsigned(200))],
        &path("/3/0/9"),
        &mut out,
    )
    .expect("encodes");
    assert_eq!(out, hex("c20900c8"));
    // Floats: 4 bytes when exact in f32.
    let mut out = Vec::new();
    let floats = [
        entry("/3303/0/5700", Value::Float(1.5)),
        entry("/3303/0/5701", Value::Float(0.1)),
    ];
    encode_tlv(&floats, &path("/3303/0"), &mut out).expect("encodes");
    assert_eq!(out[..7], hex("e41644 3fc00000")[..]);
    assert_eq!(out[7..], hex("e81645 08 3fb999999999999a")[..]);
}

#[test]
fn tlv_encode_nesting_and_errors() {
    let e = |p: &str, n| entry(p, Value::Integer(n));
    // Object base: instance wrapper; resource instances in a multiple resource TLV.
    let mut out = Vec::new();
    encode_tlv(
        &[e("/3/0/9", 100), e("/3/0/7/1", 5000)],
        &path("/3"),
        &mut out,
    )
    .expect("encodes");
    assert_eq!(out, hex("080009 8407 42011388 c10964"));
    // Resource instance base: the bare resource instance.
    let mut out = Vec::new();
    encode_tlv(&[e("/3/0/7/1", 5000)], &path("/3/0/7/1"), &mut out).expect("encodes");
    assert_eq!(out, hex("42011388"));
    for (entries, base, why) in [
        (vec![e("/3/0/9", 1)], "/", "root base"),
        (vec![e("/3/0/9", 1)], "/3/1", "outside the base"),
        (vec![e("/3/0", 1)], "/3", "not a resource"),
        (vec![e("/3/0/9", 1), e("/3/0/9", 2)], "/3/0", "twice"),
        (
            vec![e("/3/0/7", 1), e("/3/0/7/0", 2)],
            "/3/0",
            "value and instances",
        ),
    ] {
        let mut out = Vec::new();
        assert!(
            matches!(
                encode_tlv(&entries, &path(base), &mut out),
                Err(ContentError::NotEncodable { .. })
            ),
            "{why}"
        );
    }
}

#[test]
fn text_is_typed_by_the_definition() {
    let reg = registry();
    let dec = |p: &str, t: &str| decode(format::TEXT, t.as_bytes(), &path(p), &reg);
    assert_eq!(
        entries(dec("/3/0/9", "95").expect("int")),
        vec![entry("/3/0/9", Value::Integer(95))]
    );
    assert_eq!(
        entries(dec("/3/0/0", "EMQ").expect("string")),
        vec![entry("/3/0/0", Value::String("EMQ".into()))]
    );
    assert_eq!(
        entries(dec("/3/0/13", "1700000000").expect("time")),
        vec![entry("/3/0/13", Value::Time(1_700_000_000))]
    );
    assert_eq!(
        entries(dec("/3303/0/5700", "21.5").expect("float")),
        vec![entry("/3303/0/5700", Value::Float(21.5))]
    );
    assert_eq!(
        entries(dec("/32000/0/1", "hello").expect("unknown")),
        vec![entry("/32000/0/1", Value::String("hello".into()))]
    );
    assert!(matches!(
        dec("/3/0/9", "lots"),
        Err(ContentError::TypeMismatch { .. })
    ));
    assert!(matches!(dec("/3/0", "x"), Ok(Content::Undecoded { .. })));
    // An Opaque resource in text is the text's bytes (EMQX: `abc` publishes as `YWJj`),
    // borrowed like every other text value, even when they are not UTF-8.
    assert_eq!(
        entries(dec("/5/0/0", "abc").expect("opaque")),
        vec![entry("/5/0/0", Value::Opaque(b"abc".to_vec()))]
    );
    let mut values = Vec::new();
    let r = decode_borrowed(format::TEXT, &[0xff, 0], &path("/5/0/0"), &reg, &mut values);
    assert_eq!(r, Ok(Borrowed::Values));
    assert_eq!(values[0].value, ValueRef::Opaque(&[0xff, 0]));
    let mut json = Vec::new();
    write_content_json(&mut json, &dec("/5/0/0", "abc").expect("opaque"));
    assert_eq!(json, br#"[{"path":"/5/0/0","value":"YWJj"}]"#);

    let mut out = Vec::new();
    for v in [
        Value::Integer(-5),
        Value::Boolean(true),
        Value::Objlnk(3, 0),
        Value::Opaque(vec![1, 2, 3]),
        Value::Float(21.5),
    ] {
        encode_text(&v, &mut out);
        out.push(b' ');
    }
    assert_eq!(out, b"-5 1 3:0 \x01\x02\x03 21.5 ");
}

#[test]
fn opaque_and_links() {
    let reg = registry();
    assert_eq!(
        decode(format::OPAQUE, &[1, 2], &path("/5/0/0"), &reg).expect("opaque"),
        Content::Entries(vec![entry("/5/0/0", Value::Opaque(vec![1, 2]))])
    );
    let links = b"</3/0>;ct=\"60 110\", </3/0/1>,</3/0/7>;dim=2;title=\"a,b\",,";
    let got = decode(format::LINK, links, &path("/3/0"), &reg).expect("links");
    assert_eq!(
        got,
        Content::Links(vec![
            "</3/0>;ct=\"60 110\"".into(),
            "</3/0/1>".into(),
            "</3/0/7>;dim=2;title=\"a,b\"".into(),
        ])
    );
    assert_eq!(
        json(&got),
        serde_json::json!([
            "</3/0>;ct=\"60 110\"",
            "</3/0/1>",
            "</3/0/7>;dim=2;title=\"a,b\""
        ])
    );
    assert!(decode(format::LINK, &[0xff], &path("/3/0"), &reg).is_err());
}

#[test]
fn cbor_single_values() {
    let reg = registry();
    let dec = |p: &str, h: &str| decode(format::CBOR, &hex(h), &path(p), &reg);
    let one = |c: Result<Content, ContentError>| entries(c.expect("decodes")).remove(0).value;
    assert_eq!(one(dec("/3/0/9", "1864")), Value::Integer(100));
    assert_eq!(
        one(dec("/3/0/13", "c11a6553f100")),
        Value::Time(1_700_000_000)
    );
    assert_eq!(one(dec("/3/0/0", "63454d51")), Value::String("EMQ".into()));
    assert_eq!(one(dec("/3303/0/5700", "f93e00")), Value::Float(1.5));
    assert_eq!(one(dec("/3303/0/5700", "fa41ac0000")), Value::Float(21.5));
    assert_eq!(one(dec("/3303/0/5700", "15")), Value::Float(21.0));
    assert_eq!(one(dec("/3/0/22/0", "63333a30")), Value::Objlnk(3, 0));
    assert_eq!(one(dec("/5/0/0", "420102")), Value::Opaque(vec![1, 2]));
    assert_eq!(one(dec("/1/0/6", "f5")), Value::Boolean(true));
    assert_eq!(
        one(dec("/3/0/9", "1bffffffffffffffff")),
        Value::Unsigned(u64::MAX)
    );
    assert!(matches!(
        dec("/3/0/9", "1864 00"),
        Err(ContentError::Invalid { .. })
    ));
    assert!(matches!(
        dec("/3/0/9", "19"),
        Err(ContentError::Truncated { .. })
    ));
    assert!(dec("/3/0/9", "80").is_err(), "arrays are not single values");
    assert!(dec("/3/0/9", "c1c1c1c1c1c101").is_err(), "too many tags");
}

/// The borrowed decoder gives what the owned one gives, for every format it takes.
#[test]
fn borrowed_decode_matches_owned_decode() {
    let reg = registry();
    let cases: &[(u16, &str, Vec<u8>)] = &[
        (format::TEXT, "/3303/0/5700", b"22.25".to_vec()),
        (format::TEXT, "/3/0/0", b"Open Mobile Alliance".to_vec()),
        (format::TEXT, "/3/0/9", b" 42 ".to_vec()),
        (format::TEXT, "/32000/0/1", b"no definition".to_vec()),
        (format::TEXT, "/3/0", b"above resource level".to_vec()),
        (format::OPAQUE, "/5/0/0", vec![0, 1, 0xff]),
        (format::OPAQUE, "/5/0", vec![1]),
        // /3303/0: 5700 22.25 (f32), 5701 "Cel".
        (format::TLV, "/3303/0", hex("e4164441b20000 e3164543656c")),
        (format::TLV, "/32000/0", hex("c10001")),
    ];
    let mut values = Vec::new();
    for (fmt, p, payload) in cases {
        let base = path(p);
        let owned = decode(*fmt, payload, &base, &reg).expect("owned decodes");
        values = reuse_entries(values);
        let borrowed = decode_borrowed(*fmt, payload, &base, &reg, &mut values).expect("decodes");
        let as_content = match borrowed {
            Borrowed::Values => Content::Entries(values.iter().map(|e| e.to_entry()).collect()),
            Borrowed::Undecoded => Content::Undecoded {
                path: base,
                payload: payload.clone(),
            },
            Borrowed::Owned => panic!("{p}: text, opaque and TLV decode borrowed"),
        };
        assert_eq!(as_content, owned, "{p}");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_content_json(&mut a, &owned);
        let view = match borrowed {
            Borrowed::Values => ContentRef::Values(&values),
            _ => ContentRef::Undecoded {
                path: base,
                payload,
            },
        };
        write_content_json(&mut b, view);
        assert_eq!(a, b, "{p}: same JSON");
    }
}

#[test]
fn borrowed_decode_defers_what_it_cannot_borrow() {
    let reg = registry();
    let mut values = Vec::new();
    let r = decode_borrowed(format::SENML_JSON, b"[]", &path("/3/0"), &reg, &mut values);
    assert_eq!(r, Ok(Borrowed::Owned));
    assert!(values.is_empty());
    // Errors are the owned decoder's.
    let bad = decode_borrowed(format::TLV, &[0xc8], &path("/3/0"), &reg, &mut values);
    assert_eq!(
        bad,
        Err(decode(format::TLV, &[0xc8], &path("/3/0"), &reg).expect_err("truncated"))
    );
}

#[test]
fn reused_entries_keep_their_allocation() {
    let reg = registry();
    let payload = b"21.5".to_vec();
    let mut values = Vec::with_capacity(8);
    let ptr = values.as_ptr() as usize;
    for _ in 0..3 {
        let mut v = reuse_entries(values);
        decode_borrowed(format::TEXT, &payload, &path("/3303/0/5700"), &reg, &mut v)
            .expect("decodes");
        assert_eq!(v.len(), 1);
        values = reuse_entries(v);
        assert!(values.is_empty());
        assert_eq!((values.as_ptr() as usize, values.capacity()), (ptr, 8));
    }
}
