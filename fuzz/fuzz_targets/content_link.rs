//! Link-format decoder: any bytes split or fail without panicking; links are non-empty
//! and trimmed, write valid JSON, and joined with commas split into the same links.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::content::{decode, format, Content};
use lwm2m_gateway::lwm2m::Path;

fuzz_target!(|data: &[u8]| {
    let registry = common::registry();
    let Ok(content) = decode(format::LINK, data, &Path::ROOT, registry) else {
        return;
    };
    common::check_json(&content);
    let Content::Links(links) = content else {
        panic!("link-format decodes to links");
    };
    for link in &links {
        assert!(!link.is_empty() && link.trim() == link, "{link:?}");
    }
    let joined = links.join(",");
    let again = decode(format::LINK, joined.as_bytes(), &Path::ROOT, registry)
        .expect("joined links decode");
    assert_eq!(again, Content::Links(links), "link round trip");
});
