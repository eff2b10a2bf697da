//! DTLS record layer: any datagram walks into records and opens (or fails to) without
//! panicking, a failed open leaves the output as it was, and whatever the client end
//! seals the server end opens to the same bytes. The first input byte picks the suite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::dtls::hello::ServerHello;
use lwm2m_gateway::dtls::protect::{
    EstablishedSession, RecordProtection, Suite, MAX_PLAINTEXT_LEN,
};
use lwm2m_gateway::dtls::record::{records, ContentType};

/// Suite and encrypt-then-MAC, chosen by the first byte.
const CONFIGS: [(Suite, bool); 5] = [
    (Suite::PskAes128Ccm8, true),
    (Suite::PskAes128CbcSha256, true),
    (Suite::PskAes128CbcSha256, false),
    (Suite::EcdheEcdsaAes128Ccm8, true),
    (Suite::EcdheEcdsaAes128GcmSha256, true),
];

/// The fixed session; the seed corpus holds records sealed under it.
fn session(suite: Suite, encrypt_then_mac: bool) -> EstablishedSession<'static> {
    EstablishedSession {
        suite,
        encrypt_then_mac,
        master_secret: &[7; 48],
        client_random: &[1; 32],
        server_random: &[2; 32],
        epoch: 1,
        next_write_sequence: 1,
        last_read_sequence: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, datagram)) = data.split_first() else {
        return;
    };
    let (suite, etm) = CONFIGS[usize::from(first) % CONFIGS.len()];
    let _ = ServerHello::find(datagram);

    let mut server = RecordProtection::server(&session(suite, etm));
    let mut out = vec![0xa5];
    for record in records(datagram).flatten() {
        let _ = (record.header(), record.sequence_bytes());
        match server.open(&record, &mut out) {
            Ok(_) => assert!(
                out.len() <= 1 + record.len(),
                "plaintext within the fragment"
            ),
            Err(_) => assert_eq!(out.len(), 1, "a failed open appends nothing"),
        }
        assert_eq!(out[0], 0xa5, "open only appends");
        out.truncate(1);
    }

    let mut client = RecordProtection::client(&session(suite, etm));
    let mut server = RecordProtection::server(&session(suite, etm));
    let payload = &datagram[..datagram.len().min(MAX_PLAINTEXT_LEN)];
    let mut wire = Vec::new();
    client
        .seal(ContentType::APPLICATION_DATA, payload, &mut wire)
        .expect("a payload of at most 2^14 bytes seals");
    assert_eq!(wire.len(), client.sealed_len(payload.len()));
    let record = records(&wire)
        .next()
        .and_then(Result::ok)
        .expect("a sealed record parses");
    let mut plain = Vec::new();
    server
        .open(&record, &mut plain)
        .expect("a sealed record opens");
    assert_eq!(plain, payload);
});
