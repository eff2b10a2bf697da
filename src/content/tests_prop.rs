//! Properties: encoders and decoders round-trip every type, decoders are total, and the
//! `content` JSON is always valid JSON.

use proptest::prelude::*;

use super::tests::{path, resource};
use super::*;
use crate::lwm2m::{ObjectDef, Registry};

/// Test object: resource `k` has the `k`-th type of [`KINDS`].
const OBJECT: u16 = 60000;
const KINDS: [ResourceType; 9] = [
    ResourceType::Integer,
    ResourceType::UnsignedInteger,
    ResourceType::Float,
    ResourceType::Boolean,
    ResourceType::String,
    ResourceType::Opaque,
    ResourceType::Time,
    ResourceType::Objlnk,
    ResourceType::CoreLink,
];

fn typed_registry() -> Registry {
    Registry::from_defs([ObjectDef {
        id: OBJECT,
        name: "typed".into(),
        version: "1.0".into(),
        multiple: true,
        resources: (0..KINDS.len() as u16)
            .map(|id| resource(id, KINDS[usize::from(id)], true))
            .collect(),
    }])
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        any::<f32>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(f64::from),
        (-1000i32..1000).prop_map(f64::from),
    ]
}

fn value_of(kind: ResourceType) -> BoxedStrategy<Value> {
    match kind {
        ResourceType::Integer => any::<i64>().prop_map(Value::Integer).boxed(),
        ResourceType::UnsignedInteger => any::<u64>().prop_map(Value::Unsigned).boxed(),
        ResourceType::Float => finite_f64().prop_map(Value::Float).boxed(),
        ResourceType::Boolean => any::<bool>().prop_map(Value::Boolean).boxed(),
        ResourceType::String => any::<String>().prop_map(Value::String).boxed(),
        ResourceType::Opaque => prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(Value::Opaque)
            .boxed(),
        ResourceType::Time => any::<i64>().prop_map(Value::Time).boxed(),
        ResourceType::Objlnk => (any::<u16>(), any::<u16>())
            .prop_map(|(o, i)| Value::Objlnk(o, i))
            .boxed(),
        _ => any::<String>().prop_map(Value::CoreLink).boxed(),
    }
}

/// Resource instance IDs, small and large (8- and 16-bit TLV identifiers).
fn id() -> impl Strategy<Value = u16> {
    prop_oneof![0u16..4, any::<u16>()]
}

/// Entries of the typed object: per instance, each resource holds either one value or a
/// set of instances. Sorted by path, no duplicates.
fn entries() -> impl Strategy<Value = Vec<Entry>> {
    let resource = (0..KINDS.len() as u16, any::<bool>()).prop_flat_map(|(res, multi)| {
        let value = value_of(KINDS[usize::from(res)]);
        let instances = if multi {
            prop::collection::btree_map(id(), value, 1..4)
                .prop_map(|m| m.into_iter().map(|(i, v)| (Some(i), v)).collect::<Vec<_>>())
                .boxed()
        } else {
            value.prop_map(|v| vec![(None, v)]).boxed()
        };
        (Just(res), instances)
    });
    prop::collection::btree_map(
        prop_oneof![0u16..3, any::<u16>()],
        prop::collection::vec(resource, 0..5),
        1..3,
    )
    .prop_map(|instances| {
        let mut entries = Vec::new();
        for (inst, resources) in instances {
            let mut seen = std::collections::BTreeMap::new();
            for (res, values) in resources {
                seen.entry(res).or_insert(values);
            }
            for (res, values) in seen {
                for (ri, value) in values {
                    let mut ids = vec![OBJECT, inst, res];
                    ids.extend(ri);
                    let path = Path::from_ids(&ids).expect("at most 4 levels");
                    entries.push(Entry { path, value });
                }
            }
        }
        entries
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tlv_round_trips(entries in entries()) {
        let reg = typed_registry();
        let base = path("/60000");
        let mut out = Vec::new();
        encode_tlv(&entries, &base, &mut out).expect("encodes");
        let decoded = decode(format::TLV, &out, &base, &reg).expect("decodes");
        prop_assert_eq!(decoded, Content::Entries(entries.clone()));
        // Each instance alone, encoded under its own path, round-trips too.
        if let Some(first) = entries.first() {
            let inst = Path::from_ids(&first.path.ids()[..2]).expect("path");
            let one: Vec<Entry> = entries.iter().filter(|e| inst.contains(&e.path)).cloned().collect();
            let mut out = Vec::new();
            encode_tlv(&one, &inst, &mut out).expect("encodes");
            prop_assert_eq!(decode(format::TLV, &out, &inst, &reg).expect("decodes"), Content::Entries(one));
        }
    }

    #[test]
    fn senml_json_round_trips(entries in entries()) {
        let reg = typed_registry();
        let base = path("/60000");
        let mut out = Vec::new();
        encode_senml_json(&entries, &base, &mut out).expect("encodes");
        let decoded = decode(format::SENML_JSON, &out, &base, &reg).expect("decodes");
        prop_assert_eq!(decoded, Content::Entries(entries));
    }

    #[test]
    fn single_resource_writes_round_trip(entries in entries()) {
        let reg = typed_registry();
        let Some(e) = entries.into_iter().find(|e| e.path.depth() == 3) else {
            return Ok(());
        };
        let one = std::slice::from_ref(&e);
        let mut out = Vec::new();
        encode_tlv(one, &e.path, &mut out).expect("encodes");
        prop_assert_eq!(decode(format::TLV, &out, &e.path, &reg).expect("decodes"), Content::Entries(one.to_vec()));
        let mut out = Vec::new();
        encode_senml_json(one, &e.path, &mut out).expect("encodes");
        prop_assert_eq!(decode(format::SENML_JSON, &out, &e.path, &reg).expect("decodes"), Content::Entries(one.to_vec()));
    }

    #[test]
    fn text_round_trips(entries in entries()) {
        let reg = typed_registry();
        for e in entries.iter().filter(|e| e.path.depth() == 3) {
            let mut out = Vec::new();
            encode_text(&e.value, &mut out);
            let got = decode(format::TEXT, &out, &e.path, &reg).expect("decodes");
            prop_assert_eq!(got, Content::Entries(vec![e.clone()]));
        }
    }

    #[test]
    fn content_json_is_valid(entries in entries(), links in prop::collection::vec(any::<String>(), 0..4),
                             payload in prop::collection::vec(any::<u8>(), 0..40)) {
        let content = Content::Entries(entries.clone());
        let mut out = Vec::new();
        write_content_json(&mut out, &content);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        let items = v.as_array().expect("array");
        prop_assert_eq!(items.len(), entries.len());
        for (item, e) in items.iter().zip(&entries) {
            let shown = e.path.to_string();
            prop_assert_eq!(item["path"].as_str(), Some(shown.as_str()));
            match &e.value {
                Value::Integer(n) | Value::Time(n) => prop_assert_eq!(item["value"].as_i64(), Some(*n)),
                Value::Unsigned(n) => prop_assert_eq!(item["value"].as_u64(), Some(*n)),
                Value::Float(f) => prop_assert_eq!(item["value"].as_f64(), Some(*f)),
                Value::Boolean(b) => prop_assert_eq!(item["value"].as_bool(), Some(*b)),
                Value::String(s) | Value::CoreLink(s) => prop_assert_eq!(item["value"].as_str(), Some(s.as_str())),
                Value::Opaque(_) | Value::Objlnk(..) => prop_assert!(item["value"].is_string()),
            }
        }
        for content in [Content::Links(links), Content::Undecoded { path: path("/32000/0"), payload }] {
            let mut out = Vec::new();
            write_content_json(&mut out, &content);
            prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
        }
    }

    #[test]
    fn decoders_are_total(bytes in prop::collection::vec(any::<u8>(), 0..64), depth in 0usize..5) {
        let reg = typed_registry();
        let base = Path::from_ids(&[OBJECT, 0, 4, 1][..depth]).expect("path");
        for f in [format::TEXT, format::LINK, format::OPAQUE, format::CBOR, format::SENML_JSON,
                  format::SENML_CBOR, format::TLV, format::OMA_JSON, 7] {
            if let Ok(content) = decode(f, &bytes, &base, &reg) {
                let mut out = Vec::new();
                write_content_json(&mut out, &content);
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
            }
        }
    }
}
