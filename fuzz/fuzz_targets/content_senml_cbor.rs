//! SenML CBOR decoder: any bytes decode or fail without panicking, the result writes valid
//! JSON, and decoded entries re-encoded as SenML JSON decode to the same values.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::content::{decode, encode_senml_json, format, Content};
use lwm2m_gateway::lwm2m::Path;

fuzz_target!(|data: &[u8]| {
    let Some((base, payload)) = common::split(data) else {
        return;
    };
    let registry = common::registry();
    let Ok(content) = decode(format::SENML_CBOR, payload, &base, registry) else {
        return;
    };
    common::check_json(&content);
    let Content::Entries(entries) = content else {
        panic!("SenML CBOR decodes to entries");
    };
    let mut out = Vec::new();
    if encode_senml_json(&entries, &Path::ROOT, &mut out).is_err() {
        return;
    }
    let again = decode(format::SENML_JSON, &out, &Path::ROOT, registry)
        .expect("re-encoded SenML JSON decodes");
    if common::comparable(&entries) {
        assert_eq!(again, Content::Entries(entries), "SenML JSON round trip");
    }
});
