//! Shared by the content fuzz targets: the object definitions of `lwm2m_xml/`, the request
//! paths a payload is decoded for, and the checks every decoded content must pass.

// Each target uses a subset of these helpers.
#![allow(dead_code)]

use std::sync::OnceLock;

use lwm2m_gateway::content::{write_content_json, Content, Entry, Value};
use lwm2m_gateway::lwm2m::{Path, Registry};

/// The registry the gateway ships with.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lwm2m_xml");
        Registry::load_dir(&dir).expect("lwm2m_xml loads")
    })
}

/// Request paths, chosen by the first input byte: object, instance, multiple resource,
/// resource instance, single resources, and an object without a definition.
const BASES: &[&str] = &[
    "/3", "/3/0", "/3/0/7", "/3/0/7/1", "/3/0/0", "/3/0/9", "/1/0", "/0/1", "/5/0", "/3303/0",
    "/32000/0", "/",
];

/// Splits the input into a request path and a payload.
pub fn split(data: &[u8]) -> Option<(Path, &[u8])> {
    let (&first, payload) = data.split_first()?;
    let base = BASES[usize::from(first) % BASES.len()];
    Some((Path::parse(base).expect("valid base"), payload))
}

/// The `content` JSON of anything decoded must be valid JSON.
pub fn check_json(content: &Content) {
    let mut out = Vec::new();
    write_content_json(&mut out, content);
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&out) {
        panic!(
            "invalid content JSON ({e}): {}",
            String::from_utf8_lossy(&out)
        );
    }
}

/// True when no value is a NaN (which is never equal to itself).
pub fn comparable(entries: &[Entry]) -> bool {
    !entries
        .iter()
        .any(|e| matches!(e.value, Value::Float(f) if f.is_nan()))
}

/// The checks of a self-describing format (SenML JSON/CBOR, OMA JSON): `data` (a request
/// path, then the payload) decodes or fails without panicking, the result writes valid
/// JSON, and its entries re-encoded as SenML JSON decode to the same values.
pub fn check_self_describing(format: u16, data: &[u8]) {
    use lwm2m_gateway::content::{decode, encode_senml_json, format::SENML_JSON};
    let Some((base, payload)) = split(data) else {
        return;
    };
    let registry = registry();
    let Ok(content) = decode(format, payload, &base, registry) else {
        return;
    };
    check_json(&content);
    let Content::Entries(entries) = content else {
        panic!("format {format} decodes to entries");
    };
    let mut out = Vec::new();
    if encode_senml_json(&entries, &Path::ROOT, &mut out).is_err() {
        return;
    }
    let again =
        decode(SENML_JSON, &out, &Path::ROOT, registry).expect("re-encoded SenML JSON decodes");
    if comparable(&entries) {
        assert_eq!(again, Content::Entries(entries), "SenML JSON round trip");
    }
}
