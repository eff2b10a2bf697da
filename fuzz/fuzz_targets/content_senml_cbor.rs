//! SenML CBOR decoder: any bytes decode or fail without panicking, the result writes valid
//! JSON, and decoded entries re-encoded as SenML JSON decode to the same values.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::content::format;

fuzz_target!(|data: &[u8]| common::check_self_describing(format::SENML_CBOR, data));
