//! SenML JSON and CBOR, OMA JSON, the §5 `content` JSON and typed MQTT values.

use serde_json::json;

use super::test_vectors::*;
use super::tests::{entries, entry, hex, json, path, registry};
use super::*;
use crate::coap::Message;

fn payload_of(datagram: &str) -> (Option<u16>, Vec<u8>) {
    let bytes = hex(datagram);
    let msg = Message::parse(&bytes).expect("capture parses");
    (msg.content_format(), msg.payload().to_vec())
}

#[test]
fn senml_json_wakaama_device_read() {
    let (cf, payload) = payload_of(WAKAAMA_READ_DEVICE_SENML);
    assert_eq!(cf, Some(format::SENML_JSON));
    let got =
        entries(decode(format::SENML_JSON, &payload, &path("/3/0"), &registry()).expect("decodes"));
    let s = |t: &str| Value::String(t.into());
    assert_eq!(
        got,
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
            entry("/3/0/9", Value::Integer(42)),
            entry("/3/0/10", Value::Integer(15)),
            entry("/3/0/11/0", Value::Integer(0)),
            entry("/3/0/13", Value::Time(3_162_805_375)),
            entry("/3/0/14", s("+01:00")),
            entry("/3/0/15", s("Europe/Berlin")),
            entry("/3/0/16", s("U")),
        ]
    );
}

#[test]
fn senml_json_wakaama_send_and_bootstrap_writes() {
    let reg = registry();
    let (cf, payload) = payload_of(WAKAAMA_SEND);
    assert_eq!(cf, Some(format::SENML_JSON));
    let got = entries(decode(format::SENML_JSON, &payload, &Path::ROOT, &reg).expect("decodes"));
    assert_eq!(
        got,
        vec![
            entry("/3/0/9", Value::Integer(100)),
            entry("/31024/10/1", Value::Integer(20)),
        ]
    );

    let (_, security) = payload_of(BOOTSTRAP_SENML_WRITES[0]);
    let got = entries(decode(format::SENML_JSON, &security, &path("/0/1"), &reg).expect("decodes"));
    assert_eq!(
        got,
        vec![
            entry("/0/1/0", Value::String("coap://127.0.0.1:5683".into())),
            entry("/0/1/1", Value::Boolean(false)),
            entry("/0/1/10", Value::Integer(1)),
            entry("/0/1/2", Value::Integer(3)),
        ]
    );
    let (_, server) = payload_of(BOOTSTRAP_SENML_WRITES[1]);
    let got = entries(decode(format::SENML_JSON, &server, &path("/1/1"), &reg).expect("decodes"));
    assert_eq!(got[1], entry("/1/1/1", Value::Integer(300)));
    assert_eq!(got.len(), 4);
}

#[test]
fn senml_json_values_and_coercion() {
    let reg = registry();
    let dec = |s: &str| decode(format::SENML_JSON, s.as_bytes(), &Path::ROOT, &reg);
    let got = entries(
        dec(
            r#"[{"bn":"/3/0/","n":"9","v":95.0,"bt":1700000000,"t":-5,"u":"%EL"},
                {"n":"13","v":1700000000},
                {"n":"22/0","vlo":"3:0"},
                {"bn":"/5/0/","n":"0","vd":"AQID_w"},
                {"n":"1","vs":"coap://x"},
                {"bn":"/3303/0/5700","v":21},
                {"n":"/no-value"}]"#,
        )
        .expect("decodes"),
    );
    assert_eq!(
        got,
        vec![
            entry("/3/0/9", Value::Integer(95)),
            entry("/3/0/13", Value::Time(1_700_000_000)),
            entry("/3/0/22/0", Value::Objlnk(3, 0)),
            entry("/5/0/0", Value::Opaque(vec![1, 2, 3, 0xff])),
            entry("/5/0/1", Value::String("coap://x".into())),
            entry("/3303/0/5700", Value::Float(21.0)),
        ]
    );
    for (bad, why) in [
        (r#"[{"n":"3/0/9","v":1}]"#, "relative name without a base"),
        (r#"[{"bn":"/3/0/","n":"x","v":1}]"#, "not a number"),
        (
            r#"[{"bn":"/3/","n":"0","v":1}]"#,
            "object instance, not a resource",
        ),
        (r#"[{"bn":"/3/0/1/2/","n":"3","v":1}]"#, "too deep"),
    ] {
        assert!(
            matches!(dec(bad), Err(ContentError::BadPath { .. })),
            "{why}"
        );
    }
    for (bad, why) in [
        (r#"[{"bn":"/3/0/","n":"9","v":1,"vs":"x"}]"#, "two values"),
        (r#"[{"bn":"/3/0/","n":"9","vd":"!!"}]"#, "bad base64"),
        (
            r#"[{"bn":"/3/0/","n":"22/0","vlo":"3"}]"#,
            "bad object link",
        ),
        (r#"{"bn":"/3/0/"}"#, "not an array"),
        (
            r#"[{"bn":"/3/0/","n":"9","n":"10","v":1}]"#,
            "duplicate field",
        ),
        ("[", "truncated"),
    ] {
        assert!(
            matches!(dec(bad), Err(ContentError::Invalid { .. })),
            "{why}"
        );
    }
    let many = format!(
        "[{}]",
        vec![r#"{"n":"/3/0/9","v":1}"#; MAX_ENTRIES + 1].join(",")
    );
    assert!(matches!(
        dec(&many),
        Err(ContentError::TooManyEntries { .. })
    ));
}

#[test]
fn senml_json_encoding() {
    let mut out = Vec::new();
    let values = [
        entry("/3/0/14", Value::String("+02\"".into())),
        entry("/3/0/9", Value::Integer(-5)),
        entry("/3/0/13", Value::Time(7)),
        entry("/3/0/22/1", Value::Objlnk(3, 0)),
        entry("/3/0/30", Value::Opaque(vec![1, 2, 3, 0xff])),
        entry("/3/0/31", Value::Boolean(true)),
        entry("/3/0/32", Value::Float(0.5)),
        entry("/3/0/33", Value::Unsigned(u64::MAX)),
    ];
    encode_senml_json(&values, &path("/3/0"), &mut out).expect("encodes");
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        r#"[{"bn":"/3/0/","n":"14","vs":"+02\""},{"n":"9","v":-5},{"n":"13","v":7},{"n":"22/1","vlo":"3:0"},{"n":"30","vd":"AQID_w"},{"n":"31","vb":true},{"n":"32","v":0.5},{"n":"33","v":18446744073709551615}]"#
    );
    // A single-resource write names the resource relative to its instance.
    let mut out = Vec::new();
    encode_senml_json(
        &[entry("/3/0/14", Value::String("+02".into()))],
        &path("/3/0/14"),
        &mut out,
    )
    .expect("encodes");
    assert_eq!(out, br#"[{"bn":"/3/0/","n":"14","vs":"+02"}]"#);
    let mut out = Vec::new();
    assert!(encode_senml_json(
        &[entry("/3/0/9", Value::Float(f64::NAN))],
        &path("/3/0"),
        &mut out
    )
    .is_err());
    assert!(encode_senml_json(
        &[entry("/3/0/9", Value::Integer(1))],
        &path("/3/1"),
        &mut out
    )
    .is_err());
}

#[test]
fn senml_cbor_records() {
    let reg = registry();
    // [{-2: "/3/0/", 0: "0", 3: "OMA"}, {0: "9", 2: 95}, {0: "22/0", "vlo": "3:0"},
    //  {0: "13", 2: 1.7e9 (f64), 6: 1}, {0: "30", 8: h'0102', 4: false... }]
    let payload = hex("85
         a3 21 652f332f302f 00 6130 03 634f4d41
         a2 00 6139 02 185f
         a2 00 6432322f30 63766c6f 63333a30
         a3 00 623133 02 fb41d954fc4000000 0 06 01
         bf 00 623330 08 420102 ff");
    let got = entries(decode(format::SENML_CBOR, &payload, &Path::ROOT, &reg).expect("decodes"));
    assert_eq!(
        got,
        vec![
            entry("/3/0/0", Value::String("OMA".into())),
            entry("/3/0/9", Value::Integer(95)),
            entry("/3/0/22/0", Value::Objlnk(3, 0)),
            entry("/3/0/13", Value::Time(1_700_000_000)),
            entry("/3/0/30", Value::Opaque(vec![1, 2])),
        ]
    );
    for (bad, why) in [
        ("81 a2 00 6139 02 01", "record without base name"),
        ("81 a2 21 622f33 02 01", "name too short"),
    ] {
        assert!(
            matches!(
                decode(format::SENML_CBOR, &hex(bad), &Path::ROOT, &reg),
                Err(ContentError::BadPath { .. })
            ),
            "{why}"
        );
    }
    for (bad, why) in [
        ("81 a2 21 652f332f302f 02", "truncated"),
        ("81 a3 21 652f332f302f 02 01 03 6178", "two values"),
        ("81 a1 02 6178", "v is text"),
        ("81 a1 f5 01", "key is a boolean"),
        ("80 00", "trailing bytes"),
        ("9a00010000", "array longer than the limit"),
    ] {
        assert!(
            decode(format::SENML_CBOR, &hex(bad), &Path::ROOT, &reg).is_err(),
            "{why}"
        );
    }
}

#[test]
fn oma_json_device_read() {
    let reg = registry();
    let payload = br#"{"bn":"/3/0/","e":[
        {"n":"0","sv":"Open Mobile Alliance"},{"n":"9","v":95},{"n":"6/0","v":1.0},
        {"n":"13","v":1367491215},{"n":"22/0","ov":"3:0"},{"n":"99","bv":true}]}"#;
    let got = entries(decode(format::OMA_JSON, payload, &path("/3/0"), &reg).expect("decodes"));
    assert_eq!(
        got,
        vec![
            entry("/3/0/0", Value::String("Open Mobile Alliance".into())),
            entry("/3/0/9", Value::Integer(95)),
            entry("/3/0/6/0", Value::Integer(1)),
            entry("/3/0/13", Value::Time(1_367_491_215)),
            entry("/3/0/22/0", Value::Objlnk(3, 0)),
            entry("/3/0/99", Value::Boolean(true)),
        ]
    );
    // A base name without the trailing slash (EMQX's case11): joined with one `/`, as is
    // a name that starts with one.
    let payload = br#"{"bn":"/3/0","e":[{"n":"0","sv":"Open Mobile Alliance"},
        {"n":"13","v":1700000000},{"n":"6","bv":true},{"n":"/22","ov":"1:2"}]}"#;
    let got = entries(decode(format::OMA_JSON, payload, &path("/3/0"), &reg).expect("decodes"));
    assert_eq!(
        got,
        vec![
            entry("/3/0/0", Value::String("Open Mobile Alliance".into())),
            entry("/3/0/13", Value::Time(1_700_000_000)),
            entry("/3/0/6", Value::Boolean(true)),
            entry("/3/0/22", Value::Objlnk(1, 2)),
        ]
    );
    // A record without `n` is the base name's own value.
    let got = entries(
        decode(
            format::OMA_JSON,
            br#"{"bn":"/3/0/9","e":[{"v":80}]}"#,
            &path("/3/0/9"),
            &reg,
        )
        .expect("decodes"),
    );
    assert_eq!(got, vec![entry("/3/0/9", Value::Integer(80))]);
    // No bn: names are relative to the request path; Opaque travels as base64 in sv.
    let got = entries(
        decode(
            format::OMA_JSON,
            br#"{"e":[{"n":"0","sv":"AQI="}]}"#,
            &path("/5/0"),
            &reg,
        )
        .expect("decodes"),
    );
    assert_eq!(got, vec![entry("/5/0/0", Value::Opaque(vec![1, 2]))]);
    assert!(decode(format::OMA_JSON, br#"{"bn":"/3/0/"}"#, &path("/3/0"), &reg).is_err());
    assert!(matches!(
        decode(
            format::OMA_JSON,
            br#"{"bn":"/3/","e":[{"n":"0","v":1}]}"#,
            &path("/3"),
            &reg
        ),
        Err(ContentError::BadPath { .. })
    ));
}

#[test]
fn content_json_shapes() {
    let mut out = Vec::new();
    let content = Content::Entries(vec![
        entry("/3/0/0", Value::String("EMQ".into())),
        entry("/3/0/9", Value::Integer(-1)),
        entry("/3/0/10", Value::Unsigned(u64::MAX)),
        entry("/3/0/13", Value::Time(1_700_000_000)),
        entry("/3303/0/5700", Value::Float(21.5)),
        entry("/3303/0/5701", Value::Float(f64::INFINITY)),
        entry("/1/0/6", Value::Boolean(false)),
        entry("/5/0/0", Value::Opaque(vec![1, 2, 3, 0xff])),
        entry("/3/0/22/0", Value::Objlnk(3, 1)),
        entry("/3/0/23", Value::CoreLink("</3/0>".into())),
    ]);
    write_content_json(&mut out, &content);
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        r#"[{"path":"/3/0/0","value":"EMQ"},{"path":"/3/0/9","value":-1},{"path":"/3/0/10","value":18446744073709551615},{"path":"/3/0/13","value":1700000000},{"path":"/3303/0/5700","value":21.5},{"path":"/3303/0/5701","value":"inf"},{"path":"/1/0/6","value":false},{"path":"/5/0/0","value":"AQID/w=="},{"path":"/3/0/22/0","value":"3:1"},{"path":"/3/0/23","value":"</3/0>"}]"#
    );
    let undecoded = Content::Undecoded {
        path: path("/32000/0"),
        payload: vec![0xc1, 0x00, 0x64],
    };
    assert_eq!(
        json(&undecoded),
        json!([{"path":"/32000/0","value":"wQBk"}])
    );
    assert_eq!(json(&Content::Links(vec![])), json!([]));
    assert_eq!(json(&Content::Entries(vec![])), json!([]));
}

#[test]
fn typed_values_from_mqtt_json() {
    let ok = |t: &str, v: serde_json::Value, hex: bool| parse_typed_value(t, &v, hex).expect(t);
    assert_eq!(
        ok("Integer", json!("1700000000"), false),
        Value::Integer(1_700_000_000)
    );
    assert_eq!(ok("integer", json!(-3), false), Value::Integer(-3));
    assert_eq!(ok("Integer", json!(3.0), false), Value::Integer(3));
    assert_eq!(
        ok("Unsigned", json!("18446744073709551615"), false),
        Value::Unsigned(u64::MAX)
    );
    assert_eq!(ok("Float", json!("21.5"), false), Value::Float(21.5));
    assert_eq!(ok("FLOAT", json!(2), false), Value::Float(2.0));
    assert_eq!(ok("Boolean", json!(true), false), Value::Boolean(true));
    assert_eq!(ok("Boolean", json!("0"), false), Value::Boolean(false));
    assert_eq!(ok("Boolean", json!("True"), false), Value::Boolean(true));
    assert_eq!(
        ok("String", json!("+02"), false),
        Value::String("+02".into())
    );
    assert_eq!(
        ok("String", json!("2b3032"), true),
        Value::String("+02".into())
    );
    assert_eq!(ok("String", json!(5), false), Value::String("5".into()));
    assert_eq!(
        ok("Opaque", json!("AQID/w=="), false),
        Value::Opaque(vec![1, 2, 3, 0xff])
    );
    assert_eq!(
        ok("Opaque", json!("AQID_w"), false),
        Value::Opaque(vec![1, 2, 3, 0xff])
    );
    assert_eq!(
        ok("Opaque", json!("010203FF"), true),
        Value::Opaque(vec![1, 2, 3, 0xff])
    );
    assert_eq!(
        ok("Time", json!(1_700_000_000), false),
        Value::Time(1_700_000_000)
    );
    assert_eq!(ok("Objlnk", json!("3:0"), false), Value::Objlnk(3, 0));
    assert_eq!(
        ok("Corelnk", json!("</3/0>"), false),
        Value::CoreLink("</3/0>".into())
    );

    let err =
        |t: &str, v: serde_json::Value, hex: bool| parse_typed_value(t, &v, hex).expect_err(t);
    assert!(matches!(
        err("Integer", json!("1.5"), false),
        ContentError::BadValue { .. }
    ));
    assert!(matches!(
        err("Integer", json!(1.5), false),
        ContentError::BadValue { .. }
    ));
    assert!(matches!(
        err("Integer", json!("99999999999999999999"), false),
        ContentError::BadValue { .. }
    ));
    assert!(matches!(
        err("Unsigned", json!(-1), false),
        ContentError::BadValue { .. }
    ));
    assert!(matches!(
        err("Float", json!("NaN"), false),
        ContentError::BadValue { .. }
    ));
    assert!(matches!(
        err("Boolean", json!(2), false),
        ContentError::BadValue { .. }
    ));
    assert!(matches!(
        err("Opaque", json!("!!"), false),
        ContentError::BadValue { .. }
    ));
    assert!(matches!(
        err("Opaque", json!("abc"), true),
        ContentError::BadValue { .. }
    ));
    assert!(matches!(
        err("String", json!("ff"), true),
        ContentError::BadValue { .. }
    ));
    assert!(matches!(
        err("Objlnk", json!("3:70000"), false),
        ContentError::BadValue { .. }
    ));
    assert!(matches!(
        err("Integer", json!(null), false),
        ContentError::BadValue { .. }
    ));
    assert!(matches!(
        err("Number", json!(1), false),
        ContentError::UnknownType(_)
    ));
}

#[test]
fn unknown_format_is_an_error() {
    assert_eq!(
        decode(50, b"{}", &path("/3/0"), &registry()),
        Err(ContentError::UnknownFormat(50))
    );
}
