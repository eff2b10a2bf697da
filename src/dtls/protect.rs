//! Record protection of an established DTLS 1.2 session, server side, without OpenSSL.
//!
//! OpenSSL runs the handshake; once it is done the gateway keeps only what protecting
//! records needs — the suite, raw keys, the epoch, the next write sequence number and the
//! replay window, [`size_of::<RecordProtection>()`](RecordProtection) bytes (128 on x86-64)
//! — and drops the `SSL` object, the way kernel TLS offload takes over a socket.
//!
//! * Keys: `key_block = PRF(master_secret, "key expansion", server_random + client_random)`
//!   with the TLS 1.2 PRF over SHA-256 (RFC 5246 §5, §6.3), split per suite below.
//! * AEAD suites (AES-128-CCM_8, RFC 6655; AES-128-GCM, RFC 5288): a 4-byte implicit salt
//!   and an 8-byte explicit nonce carried in the record (we send epoch‖seq, as OpenSSL does);
//!   additional data `epoch‖seq ‖ type ‖ version ‖ plaintext length` (RFC 6347 §4.1.2.1).
//! * AES-128-CBC-SHA256 (RFC 5487): MAC-then-encrypt (RFC 5246 §6.2.3.2) or
//!   encrypt-then-MAC (RFC 7366) as negotiated; see [`cbc`](self) for the explicit IV and the
//!   constant-time checks.
//!
//! Keys are stored raw and expanded per record: AES-128 key expansion with AES-NI costs
//! tens of nanoseconds, and the expanded ciphers would multiply the state several times
//! (measured in `benches/dtls_record.rs`). [`RecordProtection::open`] and
//! [`RecordProtection::seal`] append to a caller's `Vec` and do not allocate when it has
//! the capacity ([`RecordProtection::sealed_len`] says how much a record needs).

use aes::cipher::KeyInit;
use aes::Aes128Enc;
use aes_gcm::aead::consts::{U12, U16, U8};
use aes_gcm::aead::generic_array::typenum::Unsigned;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadCore, AeadInPlace, KeySizeUser};
use aes_gcm::AesGcm;
use ccm::Ccm;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::record::{ContentType, Record, RecordHeader, DTLS_1_2, HEADER_LEN, MAX_SEQUENCE};

#[path = "protect_cbc.rs"]
mod cbc;

/// Bytes of a TLS 1.2 master secret (RFC 5246 §8.1).
pub const MASTER_SECRET_LEN: usize = 48;

/// Bytes of `client_random` and `server_random`.
pub const RANDOM_LEN: usize = 32;

/// Largest plaintext a record may carry (RFC 5246 §6.2.1: 2^14).
pub const MAX_PLAINTEXT_LEN: usize = 1 << 14;

/// Records the anti-replay window remembers below the highest one received: the minimum
/// RFC 6347 §4.1.2.6 asks for, and one `u64` of bitmap.
pub const REPLAY_WINDOW: u64 = 64;

/// Bytes of an AES-128 key.
const KEY_LEN: usize = 16;
/// Implicit part of the AEAD nonce, from the key block (RFC 5288 §3, RFC 6655 §3).
const SALT_LEN: usize = 4;
/// Explicit part of the AEAD nonce, carried at the start of each record's fragment.
const EXPLICIT_NONCE_LEN: usize = 8;
/// Bytes of an HMAC-SHA256 key and tag.
const MAC_LEN: usize = 32;
/// Key block bytes the largest suite (CBC-SHA256: two MAC keys, two cipher keys) uses.
const MAX_KEY_BLOCK_LEN: usize = 2 * MAC_LEN + 2 * KEY_LEN;

type HmacSha256 = Hmac<Sha256>;
type Ccm8 = Ccm<Aes128Enc, U8, U12>;
type Gcm = AesGcm<Aes128Enc, U12>;

/// The cipher suites the gateway offers: LwM2M's mandatory PSK and certificate suites
/// (OMA LwM2M 1.1 §7.1.7, RFC 7925 §4.2, §4.4) and their common companions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// TLS_PSK_WITH_AES_128_CCM_8, 0xC0A8 (RFC 6655).
    PskAes128Ccm8,
    /// TLS_PSK_WITH_AES_128_CBC_SHA256, 0x00AE (RFC 5487).
    PskAes128CbcSha256,
    /// TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, 0xC0AE (RFC 7251).
    EcdheEcdsaAes128Ccm8,
    /// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, 0xC02B (RFC 5289).
    EcdheEcdsaAes128GcmSha256,
}

impl Suite {
    /// Every suite, for tests and benches.
    pub const ALL: [Suite; 4] = [
        Suite::PskAes128Ccm8,
        Suite::PskAes128CbcSha256,
        Suite::EcdheEcdsaAes128Ccm8,
        Suite::EcdheEcdsaAes128GcmSha256,
    ];

    /// The suite of a ServerHello's `cipher_suite`, if it is one of these.
    pub fn from_id(id: u16) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.id() == id)
    }

    /// The IANA id.
    pub fn id(self) -> u16 {
        match self {
            Suite::PskAes128Ccm8 => 0xc0a8,
            Suite::PskAes128CbcSha256 => 0x00ae,
            Suite::EcdheEcdsaAes128Ccm8 => 0xc0ae,
            Suite::EcdheEcdsaAes128GcmSha256 => 0xc02b,
        }
    }

    fn cipher(self) -> Cipher {
        match self {
            Suite::PskAes128Ccm8 | Suite::EcdheEcdsaAes128Ccm8 => Cipher::Ccm8,
            Suite::EcdheEcdsaAes128GcmSha256 => Cipher::Gcm,
            Suite::PskAes128CbcSha256 => Cipher::CbcSha256,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cipher {
    Ccm8,
    Gcm,
    CbcSha256,
}

/// Why a record was not opened or sealed, or the state not built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtectError {
    /// The record's version is not DTLS 1.2.
    #[error("record version {0:#06x} is not DTLS 1.2")]
    BadVersion(u16),
    /// The record is from another epoch (an old handshake, or a renegotiation this
    /// state does not follow); RFC 6347 §4.1 discards it.
    #[error("record of epoch {got}, session is in epoch {expected}")]
    WrongEpoch {
        /// The session's epoch.
        expected: u16,
        /// The record's.
        got: u16,
    },
    /// The sequence number was received already, or is older than the replay window.
    #[error("record {0} replayed or older than the replay window")]
    Replayed(u64),
    /// The fragment is too short, or not whole cipher blocks, for the suite.
    #[error("fragment of {0} bytes cannot be a protected record")]
    BadLength(usize),
    /// The tag, MAC or padding did not verify. One error for all of them, so that a
    /// caller cannot become a padding oracle.
    #[error("record failed authentication")]
    Authentication,
    /// Seal of more than [`MAX_PLAINTEXT_LEN`] bytes.
    #[error("payload of {0} bytes exceeds a record")]
    PayloadTooLong(usize),
    /// The write sequence number reached 2^48; the session must be closed.
    #[error("write sequence numbers exhausted")]
    SequenceExhausted,
}

/// What the handshake leaves behind, from the server's `SSL` and its ServerHello.
///
/// The sequence numbers are the server's view; for [`RecordProtection::client`] they are
/// the client's (its next write, the server's last record it received).
#[derive(Debug, Clone, Copy)]
pub struct EstablishedSession<'a> {
    /// The negotiated suite.
    pub suite: Suite,
    /// Whether `encrypt_then_mac` was negotiated; only CBC suites use it.
    pub encrypt_then_mac: bool,
    /// The master secret.
    pub master_secret: &'a [u8; MASTER_SECRET_LEN],
    /// `client_random` from the ClientHello.
    pub client_random: &'a [u8; RANDOM_LEN],
    /// `server_random` from the ServerHello.
    pub server_random: &'a [u8; RANDOM_LEN],
    /// The epoch both directions are in, 1 after the first handshake.
    pub epoch: u16,
    /// The sequence number of the next record the server writes in `epoch`: one past
    /// its Finished and any other record it already sent there.
    pub next_write_sequence: u64,
    /// The highest sequence number the server already received in `epoch` (the client's
    /// Finished); it and everything below count as received. `None` if nothing was.
    pub last_read_sequence: Option<u64>,
}

/// Which end of the session a [`RecordProtection`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// Raw per-direction keys of an AEAD suite.
#[derive(Clone)]
struct AeadKeys {
    read_key: [u8; KEY_LEN],
    read_salt: [u8; SALT_LEN],
    write_key: [u8; KEY_LEN],
    write_salt: [u8; SALT_LEN],
}

/// Raw per-direction keys of the CBC-SHA256 suite.
#[derive(Clone)]
struct CbcKeys {
    read_mac: [u8; MAC_LEN],
    write_mac: [u8; MAC_LEN],
    read_key: [u8; KEY_LEN],
    write_key: [u8; KEY_LEN],
}

#[derive(Clone)]
enum Keys {
    Ccm8(AeadKeys),
    Gcm(AeadKeys),
    Cbc {
        keys: CbcKeys,
        encrypt_then_mac: bool,
    },
}

/// The anti-replay window of RFC 6347 §4.1.2.6 (RFC 4303 §3.4.3): the highest sequence
/// number accepted and a bitmap of the [`REPLAY_WINDOW`] below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ReplayWindow {
    /// The highest sequence number accepted.
    top: u64,
    /// Bit `i` set: `top - i` was accepted. Zero until the first record.
    seen: u64,
}

impl ReplayWindow {
    /// Whether `seq` may be new.
    fn check(&self, seq: u64) -> Result<(), ProtectError> {
        if self.seen == 0 || seq > self.top {
            return Ok(());
        }
        let behind = self.top - seq;
        if behind >= REPLAY_WINDOW || self.seen & (1 << behind) != 0 {
            return Err(ProtectError::Replayed(seq));
        }
        Ok(())
    }

    /// Records `seq` as received; call only after the record authenticated.
    fn accept(&mut self, seq: u64) {
        if self.seen == 0 {
            *self = ReplayWindow { top: seq, seen: 1 };
        } else if seq > self.top {
            let ahead = seq - self.top;
            self.seen = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.seen << ahead
            } | 1;
            self.top = seq;
        } else {
            self.seen |= 1 << (self.top - seq);
        }
    }
}

/// The server's record layer for one established session: opens the client's records,
/// seals its own. See the [module](self) docs.
#[derive(Clone)]
pub struct RecordProtection {
    keys: Keys,
    suite: Suite,
    epoch: u16,
    write_seq: u64,
    window: ReplayWindow,
}

impl std::fmt::Debug for RecordProtection {
    /// Everything but the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordProtection")
            .field("suite", &self.suite)
            .field("epoch", &self.epoch)
            .field("write_seq", &self.write_seq)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl RecordProtection {
    /// Derives the server's keys for `session` (RFC 5246 §6.3): it opens with the
    /// client's write keys and seals with its own.
    pub fn server(session: &EstablishedSession<'_>) -> RecordProtection {
        RecordProtection::derive(session, Side::Server)
    }

    /// The same session seen from the client: opens what [`RecordProtection::server`]
    /// seals and the other way round. For load generators, tests and fuzzing.
    pub fn client(session: &EstablishedSession<'_>) -> RecordProtection {
        RecordProtection::derive(session, Side::Client)
    }

    fn derive(session: &EstablishedSession<'_>, side: Side) -> RecordProtection {
        let mut seed = [0u8; 2 * RANDOM_LEN];
        seed[..RANDOM_LEN].copy_from_slice(session.server_random);
        seed[RANDOM_LEN..].copy_from_slice(session.client_random);
        let mut block = [0u8; MAX_KEY_BLOCK_LEN];
        prf_sha256(session.master_secret, b"key expansion", &seed, &mut block);
        let mut kb = KeyBlock(&block);
        let keys = match session.suite.cipher() {
            cipher @ (Cipher::Ccm8 | Cipher::Gcm) => {
                // client_write_key, server_write_key, client_write_IV, server_write_IV.
                let (client_key, server_key) = (kb.take(), kb.take());
                let (client_salt, server_salt) = (kb.take(), kb.take());
                let keys = match side {
                    Side::Server => AeadKeys {
                        read_key: client_key,
                        read_salt: client_salt,
                        write_key: server_key,
                        write_salt: server_salt,
                    },
                    Side::Client => AeadKeys {
                        read_key: server_key,
                        read_salt: server_salt,
                        write_key: client_key,
                        write_salt: client_salt,
                    },
                };
                match cipher {
                    Cipher::Ccm8 => Keys::Ccm8(keys),
                    _ => Keys::Gcm(keys),
                }
            }
            Cipher::CbcSha256 => {
                // client_write_MAC_key, server_write_MAC_key, client_write_key,
                // server_write_key.
                let (client_mac, server_mac) = (kb.take(), kb.take());
                let (client_key, server_key) = (kb.take(), kb.take());
                let keys = match side {
                    Side::Server => CbcKeys {
                        read_mac: client_mac,
                        write_mac: server_mac,
                        read_key: client_key,
                        write_key: server_key,
                    },
                    Side::Client => CbcKeys {
                        read_mac: server_mac,
                        write_mac: client_mac,
                        read_key: server_key,
                        write_key: client_key,
                    },
                };
                Keys::Cbc {
                    keys,
                    encrypt_then_mac: session.encrypt_then_mac,
                }
            }
        };
        let window = match session.last_read_sequence {
            Some(top) => ReplayWindow { top, seen: !0 },
            None => ReplayWindow::default(),
        };
        RecordProtection {
            keys,
            suite: session.suite,
            epoch: session.epoch,
            write_seq: session.next_write_sequence,
            window,
        }
    }

    /// The negotiated suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The epoch of both directions.
    pub fn epoch(&self) -> u16 {
        self.epoch
    }

    /// The sequence number the next sealed record gets.
    pub fn next_write_sequence(&self) -> u64 {
        self.write_seq
    }

    /// Verifies and decrypts one of the client's records, appending its plaintext to `out`
    /// and returning its content type. On error `out` is as it was and the replay window
    /// unchanged: a forged record cannot close the window on a genuine one.
    pub fn open(
        &mut self,
        record: &Record<'_>,
        out: &mut Vec<u8>,
    ) -> Result<ContentType, ProtectError> {
        if record.version() != DTLS_1_2 {
            return Err(ProtectError::BadVersion(record.version()));
        }
        if record.epoch() != self.epoch {
            return Err(ProtectError::WrongEpoch {
                expected: self.epoch,
                got: record.epoch(),
            });
        }
        let seq = record.sequence();
        self.window.check(seq)?;
        let aad = AadPrefix::of(record);
        let start = out.len();
        let result = match &self.keys {
            Keys::Ccm8(k) => open_aead::<Ccm8>(k, &aad, record.fragment(), out),
            Keys::Gcm(k) => open_aead::<Gcm>(k, &aad, record.fragment(), out),
            Keys::Cbc {
                keys,
                encrypt_then_mac: true,
            } => cbc::open_encrypt_then_mac(
                &keys.read_mac,
                &keys.read_key,
                &aad,
                record.fragment(),
                out,
            ),
            Keys::Cbc {
                keys,
                encrypt_then_mac: false,
            } => cbc::open_mac_then_encrypt(
                &keys.read_mac,
                &keys.read_key,
                &aad,
                record.fragment(),
                out,
            ),
        };
        if let Err(e) = result {
            out.truncate(start);
            return Err(e);
        }
        self.window.accept(seq);
        Ok(record.content_type())
    }

    /// Bytes [`RecordProtection::seal`] appends for a payload of `len` bytes.
    pub fn sealed_len(&self, len: usize) -> usize {
        HEADER_LEN
            + match &self.keys {
                Keys::Ccm8(_) => EXPLICIT_NONCE_LEN + len + Ccm8::TAG_LEN,
                Keys::Gcm(_) => EXPLICIT_NONCE_LEN + len + Gcm::TAG_LEN,
                Keys::Cbc {
                    encrypt_then_mac: true,
                    ..
                } => cbc::IV_LEN + cbc::padded_len(len) + MAC_LEN,
                Keys::Cbc { .. } => cbc::IV_LEN + cbc::padded_len(len + MAC_LEN),
            }
    }

    /// Protects `payload` as one record of `content_type` in the session's epoch,
    /// appending header and fragment to `out` (records may be packed into one datagram).
    /// Uses the next write sequence number, and advances it only on success.
    pub fn seal(
        &mut self,
        content_type: ContentType,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ProtectError> {
        if payload.len() > MAX_PLAINTEXT_LEN {
            return Err(ProtectError::PayloadTooLong(payload.len()));
        }
        if self.write_seq > MAX_SEQUENCE {
            return Err(ProtectError::SequenceExhausted);
        }
        let header = RecordHeader {
            content_type,
            version: DTLS_1_2,
            epoch: self.epoch,
            sequence: self.write_seq,
            // At most 2^14 + 64 + 16 + 32: fits.
            length: (self.sealed_len(payload.len()) - HEADER_LEN) as u16,
        };
        let aad = AadPrefix::of_header(&header);
        let start = out.len();
        header.emit(out);
        let result = match &self.keys {
            Keys::Ccm8(k) => seal_aead::<Ccm8>(k, &aad, payload, out),
            Keys::Gcm(k) => seal_aead::<Gcm>(k, &aad, payload, out),
            Keys::Cbc {
                keys,
                encrypt_then_mac: true,
            } => {
                cbc::seal_encrypt_then_mac(&keys.write_mac, &keys.write_key, &aad, payload, out);
                Ok(())
            }
            Keys::Cbc {
                keys,
                encrypt_then_mac: false,
            } => {
                cbc::seal_mac_then_encrypt(&keys.write_mac, &keys.write_key, &aad, payload, out);
                Ok(())
            }
        };
        if let Err(e) = result {
            out.truncate(start);
            return Err(e);
        }
        debug_assert_eq!(out.len() - start, self.sealed_len(payload.len()));
        self.write_seq += 1;
        Ok(())
    }
}

/// The fields of the MAC and AEAD input that precede the length (RFC 5246 §6.2.3.1,
/// §6.2.3.3 with RFC 6347 §4.1.2.1's epoch‖seq): `epoch‖seq ‖ type ‖ version`.
#[derive(Debug, Clone, Copy)]
struct AadPrefix([u8; 11]);

impl AadPrefix {
    fn of(record: &Record<'_>) -> AadPrefix {
        let mut a = [0u8; 11];
        a[..8].copy_from_slice(&record.sequence_bytes());
        a[8] = record.content_type().0;
        a[9..].copy_from_slice(&record.version().to_be_bytes());
        AadPrefix(a)
    }

    fn of_header(h: &RecordHeader) -> AadPrefix {
        let mut a = [0u8; 11];
        a[..2].copy_from_slice(&h.epoch.to_be_bytes());
        a[2..8].copy_from_slice(&h.sequence.to_be_bytes()[2..]);
        a[8] = h.content_type.0;
        a[9..].copy_from_slice(&h.version.to_be_bytes());
        AadPrefix(a)
    }

    /// `epoch‖seq` alone: the explicit nonce this side sends.
    fn sequence(&self) -> [u8; 8] {
        let mut s = [0u8; 8];
        s.copy_from_slice(&self.0[..8]);
        s
    }

    /// The whole 13 bytes with `len` appended.
    fn with_len(&self, len: usize) -> [u8; 13] {
        let mut a = [0u8; 13];
        a[..11].copy_from_slice(&self.0);
        // Callers bound `len` by the record length, a u16.
        a[11..].copy_from_slice(&(len as u16).to_be_bytes());
        a
    }
}

/// An AEAD built per record from a raw AES-128 key, with the 12-byte TLS nonce.
trait RecordAead:
    AeadInPlace + AeadCore<NonceSize = U12> + KeyInit + KeySizeUser<KeySize = U16>
{
    /// Bytes of the tag.
    const TAG_LEN: usize = <Self as AeadCore>::TagSize::USIZE;
}

impl RecordAead for Ccm8 {}

impl RecordAead for Gcm {}

fn nonce(salt: &[u8; SALT_LEN], explicit: &[u8]) -> [u8; SALT_LEN + EXPLICIT_NONCE_LEN] {
    let mut n = [0u8; SALT_LEN + EXPLICIT_NONCE_LEN];
    n[..SALT_LEN].copy_from_slice(salt);
    n[SALT_LEN..].copy_from_slice(explicit);
    n
}

fn open_aead<A: RecordAead>(
    keys: &AeadKeys,
    aad: &AadPrefix,
    fragment: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ProtectError> {
    if fragment.len() < EXPLICIT_NONCE_LEN + A::TAG_LEN {
        return Err(ProtectError::BadLength(fragment.len()));
    }
    let (explicit, rest) = fragment.split_at(EXPLICIT_NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - A::TAG_LEN);
    let nonce = nonce(&keys.read_salt, explicit);
    let start = out.len();
    out.extend_from_slice(ciphertext);
    A::new((&keys.read_key).into())
        .decrypt_in_place_detached(
            (&nonce).into(),
            &aad.with_len(ciphertext.len()),
            &mut out[start..],
            GenericArray::from_slice(tag),
        )
        .map_err(|_| ProtectError::Authentication)
}

fn seal_aead<A: RecordAead>(
    keys: &AeadKeys,
    aad: &AadPrefix,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ProtectError> {
    let explicit = aad.sequence();
    out.extend_from_slice(&explicit);
    let start = out.len();
    out.extend_from_slice(payload);
    let nonce = nonce(&keys.write_salt, &explicit);
    let tag = A::new((&keys.write_key).into())
        .encrypt_in_place_detached(
            (&nonce).into(),
            &aad.with_len(payload.len()),
            &mut out[start..],
        )
        .map_err(|_| ProtectError::PayloadTooLong(payload.len()))?;
    out.extend_from_slice(&tag);
    Ok(())
}

/// Consecutive fixed-size slices of a key block.
struct KeyBlock<'a>(&'a [u8]);

impl KeyBlock<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut k = [0u8; N];
        let (head, tail) = self.0.split_at(N);
        k.copy_from_slice(head);
        self.0 = tail;
        k
    }
}

/// HMAC-SHA256 keyed with `key`.
fn hmac(key: &[u8]) -> HmacSha256 {
    match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// The TLS 1.2 PRF with SHA-256 (RFC 5246 §5): fills `out` with
/// `P_SHA256(secret, label + seed)`.
pub fn prf_sha256(secret: &[u8], label: &[u8], seed: &[u8], out: &mut [u8]) {
    let keyed = hmac(secret);
    // A(1) = HMAC(secret, label + seed); A(i) = HMAC(secret, A(i-1)).
    let mut a = keyed
        .clone()
        .chain_update(label)
        .chain_update(seed)
        .finalize()
        .into_bytes();
    for chunk in out.chunks_mut(MAC_LEN) {
        let block = keyed
            .clone()
            .chain_update(a)
            .chain_update(label)
            .chain_update(seed)
            .finalize()
            .into_bytes();
        chunk.copy_from_slice(&block[..chunk.len()]);
        a = keyed.clone().chain_update(a).finalize().into_bytes();
    }
}

#[cfg(test)]
#[path = "protect_tests.rs"]
mod tests;
