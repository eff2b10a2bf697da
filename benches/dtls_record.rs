//! DTLS record protection: seal and open of a ~100-byte CoAP payload per suite, and the
//! measurements behind storing raw keys (expanding them per record) instead of expanded
//! ciphers in each session's state.

use std::hint::black_box;
use std::mem::size_of;

use aes::cipher::KeyInit;
use aes::Aes128Enc;
use aes_gcm::aead::consts::{U12, U8};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::AesGcm;
use ccm::Ccm;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use hmac::{Hmac, Mac};
use lwm2m_gateway::dtls::protect::{EstablishedSession, RecordProtection, Suite};
use lwm2m_gateway::dtls::record::{ContentType, Record};
use sha2::Sha256;

type Ccm8 = Ccm<Aes128Enc, U8, U12>;
type Gcm = AesGcm<Aes128Enc, U12>;

/// A 100-byte CoAP notification, what an idle LwM2M device sends most.
const PAYLOAD: [u8; 100] = [0x5a; 100];

fn pair(suite: Suite, encrypt_then_mac: bool) -> (RecordProtection, RecordProtection) {
    let s = EstablishedSession {
        suite,
        encrypt_then_mac,
        master_secret: &[7; 48],
        client_random: &[1; 32],
        server_random: &[2; 32],
        epoch: 1,
        next_write_sequence: 1,
        last_read_sequence: Some(0),
    };
    (RecordProtection::server(&s), RecordProtection::client(&s))
}

fn record_layer(c: &mut Criterion) {
    let mut group = c.benchmark_group("dtls_record");
    group.throughput(Throughput::Elements(1));
    let configs = [
        ("psk_ccm8", Suite::PskAes128Ccm8, true),
        ("psk_cbc_sha256_etm", Suite::PskAes128CbcSha256, true),
        ("psk_cbc_sha256_mte", Suite::PskAes128CbcSha256, false),
        ("ecdhe_ccm8", Suite::EcdheEcdsaAes128Ccm8, true),
        ("ecdhe_gcm", Suite::EcdheEcdsaAes128GcmSha256, true),
    ];
    for (name, suite, etm) in configs {
        let (mut server, mut client) = pair(suite, etm);
        let mut out = Vec::with_capacity(256);
        group.bench_function(format!("seal/{name}"), |b| {
            b.iter(|| {
                out.clear();
                server
                    .seal(ContentType::APPLICATION_DATA, black_box(&PAYLOAD), &mut out)
                    .expect("seal");
            })
        });
        let mut wire = Vec::new();
        client
            .seal(ContentType::APPLICATION_DATA, &PAYLOAD, &mut wire)
            .expect("seal");
        let (record, _) = Record::parse(&wire).expect("record");
        // A fresh window per iteration (setup, not timed): the same record opens each time.
        group.bench_function(format!("open/{name}"), |b| {
            b.iter_batched_ref(
                || (server.clone(), Vec::with_capacity(256)),
                |(s, out)| s.open(black_box(&record), out).expect("open"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// What expanding a key costs per record, against what keeping it expanded costs per
/// session (printed once: the size of each expanded cipher).
fn key_expansion(c: &mut Criterion) {
    eprintln!(
        "size_of: RecordProtection {} B; expanded, per direction: Aes128Enc {} B, \
         Ccm<Aes128Enc,8,12> {} B, AesGcm<Aes128Enc,12> {} B, Hmac<Sha256> {} B",
        size_of::<RecordProtection>(),
        size_of::<Aes128Enc>(),
        size_of::<Ccm8>(),
        size_of::<Gcm>(),
        size_of::<Hmac<Sha256>>(),
    );
    let key = [3u8; 16];
    let nonce = [4u8; 12];
    let mut group = c.benchmark_group("dtls_key");
    group.throughput(Throughput::Elements(1));
    group.bench_function("expand/aes128_enc", |b| {
        b.iter(|| Aes128Enc::new(black_box(&key).into()))
    });
    group.bench_function("expand/ccm8", |b| {
        b.iter(|| Ccm8::new(black_box(&key).into()))
    });
    group.bench_function("expand/gcm", |b| {
        b.iter(|| Gcm::new(black_box(&key).into()))
    });
    group.bench_function("expand/hmac_sha256", |b| {
        b.iter(|| <Hmac<Sha256> as Mac>::new_from_slice(black_box(&[5u8; 32])).expect("any length"))
    });
    let mut buf = PAYLOAD;
    let ccm = Ccm8::new((&key).into());
    group.bench_function("encrypt_100/ccm8_expanded", |b| {
        b.iter(|| ccm.encrypt_in_place_detached((&nonce).into(), b"aad", black_box(&mut buf)))
    });
    group.bench_function("encrypt_100/ccm8_from_raw_key", |b| {
        b.iter(|| {
            Ccm8::new(black_box(&key).into()).encrypt_in_place_detached(
                (&nonce).into(),
                b"aad",
                black_box(&mut buf),
            )
        })
    });
    let gcm = Gcm::new((&key).into());
    group.bench_function("encrypt_100/gcm_expanded", |b| {
        b.iter(|| gcm.encrypt_in_place_detached((&nonce).into(), b"aad", black_box(&mut buf)))
    });
    group.bench_function("encrypt_100/gcm_from_raw_key", |b| {
        b.iter(|| {
            Gcm::new(black_box(&key).into()).encrypt_in_place_detached(
                (&nonce).into(),
                b"aad",
                black_box(&mut buf),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, record_layer, key_expansion);
criterion_main!(benches);
