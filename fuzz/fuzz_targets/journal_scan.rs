//! Journal reader: any bytes scan without panicking, intact records merge, and every
//! record that decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::persist::{scan, Merge};

fuzz_target!(|data: &[u8]| {
    let mut merge = Merge::new();
    let mut records = Vec::new();
    if scan(data, |r| records.push(r)).is_err() {
        return;
    }
    for r in records {
        let mut once = Vec::new();
        r.encode(&mut once);
        let mut again = Vec::new();
        scan(&once, |back| again.push(back)).expect("our own format");
        assert_eq!(again.len(), 1, "one record back");
        assert_eq!(again[0], r, "round trip");
        merge.apply(r);
    }
    std::hint::black_box(merge.len());
});
