//! TLV decoder: any bytes for any request path decode or fail without panicking, the
//! result writes valid JSON, and entries that encode back decode to the same values.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::content::{decode, encode_tlv, format, Content};

fuzz_target!(|data: &[u8]| {
    let Some((base, payload)) = common::split(data) else {
        return;
    };
    let registry = common::registry();
    let Ok(content) = decode(format::TLV, payload, &base, registry) else {
        return;
    };
    common::check_json(&content);
    let Content::Entries(entries) = content else {
        return;
    };
    let mut out = Vec::new();
    if encode_tlv(&entries, &base, &mut out).is_err() {
        return;
    }
    let again = decode(format::TLV, &out, &base, registry).expect("re-encoded TLV decodes");
    let mut sorted = entries;
    sorted.sort_by_key(|e| e.path);
    if common::comparable(&sorted) {
        assert_eq!(again, Content::Entries(sorted), "TLV round trip");
    }
});
