//! AES-128-CBC with HMAC-SHA256 records: MAC-then-encrypt (RFC 5246 §6.2.3.2) and
//! encrypt-then-MAC (RFC 7366).
//!
//! ```text
//! MAC-then-encrypt: IV(16) ‖ CBC(content ‖ MAC(aad ‖ content) ‖ padding)
//! encrypt-then-MAC: IV(16) ‖ CBC(content ‖ padding) ‖ MAC(aad' ‖ IV ‖ ciphertext)
//! aad = epoch‖seq ‖ type ‖ version ‖ len(content); aad' has len(IV ‖ ciphertext)
//! ```
//!
//! The explicit IV must be unpredictable (RFC 5246 §6.2.3.2). Rather than drawing random
//! bytes (this layer does no I/O and owns no RNG), it is the encryption of a unique block
//! under the record key, `IV = AES_K(0xff.. ‖ epoch‖seq)`: NIST SP 800-38A, Appendix C's
//! first method, unpredictable to anyone without the key and never repeated in a session.
//!
//! Opening MAC-then-encrypt records is where padding oracles and Lucky Thirteen live. The
//! padding check looks at the last 256 bytes whatever the padding length, a bad padding
//! is treated as none (RFC 5246 §6.2.3.2), the received MAC is compared by a scan of
//! fixed length, and dummy SHA-256 compressions bring the hash work to what a record of
//! that length with no padding costs. What remains is data-dependent timing inside the
//! AES and SHA-256 implementations (constant-time with AES-NI and SHA-NI) and the
//! iteration count of the dummy loop. Encrypt-then-MAC, OpenSSL's default, has none of
//! this: the MAC is checked before anything is decrypted.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{
    BlockDecryptMut, BlockEncrypt, BlockEncryptMut, InnerIvInit, KeyInit, KeyIvInit,
};
use aes::{Aes128Dec, Aes128Enc};
use hmac::Mac;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::{hmac, AadPrefix, ProtectError, KEY_LEN, MAC_LEN};

/// Bytes of the explicit IV, one AES block.
pub(super) const IV_LEN: usize = 16;

/// AES block size.
const BLOCK: usize = 16;

/// Most padding bytes a record may carry, the length byte included (RFC 5246 §6.2.3.2).
const MAX_PADDING: usize = 256;

/// Bytes of a SHA-256 block, for counting compressions.
const SHA256_BLOCK: usize = 64;

/// First bytes of the block whose encryption is a record's IV: distinct from anything
/// else encrypted under the key at a chosen position.
const IV_DOMAIN: [u8; 8] = [0xff; 8];

/// Length of `len` bytes plus at least one byte of padding, in whole blocks.
pub(super) fn padded_len(len: usize) -> usize {
    (len / BLOCK + 1) * BLOCK
}

/// Appends TLS padding to `out` so that `len` bytes become [`padded_len`] bytes.
fn pad(out: &mut Vec<u8>, len: usize) {
    let n = padded_len(len) - len;
    // n is 1..=16: the padding_length byte is n - 1, and so is every padding byte.
    out.extend(std::iter::repeat_n((n - 1) as u8, n));
}

/// The cipher for `key` and the IV for the record `aad` names.
fn iv_for(key: &[u8; KEY_LEN], aad: &AadPrefix) -> (Aes128Enc, [u8; IV_LEN]) {
    let cipher = Aes128Enc::new(key.into());
    let mut block = [0u8; IV_LEN];
    block[..8].copy_from_slice(&IV_DOMAIN);
    block[8..].copy_from_slice(&aad.sequence());
    cipher.encrypt_block((&mut block).into());
    (cipher, block)
}

/// CBC-encrypts `out[start..]` in place, whole blocks.
fn encrypt(cipher: Aes128Enc, iv: &[u8; IV_LEN], buf: &mut [u8]) {
    let len = buf.len();
    let enc = cbc::Encryptor::<Aes128Enc>::inner_iv_init(cipher, iv.into());
    if enc.encrypt_padded_mut::<NoPadding>(buf, len).is_err() {
        unreachable!("callers pad to whole blocks");
    }
}

/// CBC-decrypts `buf` in place; `buf` is whole blocks.
fn decrypt(key: &[u8; KEY_LEN], iv: &[u8], buf: &mut [u8]) -> Result<(), ProtectError> {
    cbc::Decryptor::<Aes128Dec>::new(key.into(), iv.into())
        .decrypt_padded_mut::<NoPadding>(buf)
        .map(|_| ())
        .map_err(|_| ProtectError::BadLength(buf.len()))
}

pub(super) fn seal_mac_then_encrypt(
    mac_key: &[u8; MAC_LEN],
    key: &[u8; KEY_LEN],
    aad: &AadPrefix,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let (cipher, iv) = iv_for(key, aad);
    out.extend_from_slice(&iv);
    let start = out.len();
    out.extend_from_slice(payload);
    let tag = hmac(mac_key)
        .chain_update(aad.with_len(payload.len()))
        .chain_update(payload)
        .finalize()
        .into_bytes();
    out.extend_from_slice(&tag);
    pad(out, payload.len() + MAC_LEN);
    encrypt(cipher, &iv, &mut out[start..]);
}

pub(super) fn seal_encrypt_then_mac(
    mac_key: &[u8; MAC_LEN],
    key: &[u8; KEY_LEN],
    aad: &AadPrefix,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let (cipher, iv) = iv_for(key, aad);
    let iv_start = out.len();
    out.extend_from_slice(&iv);
    let start = out.len();
    out.extend_from_slice(payload);
    pad(out, payload.len());
    encrypt(cipher, &iv, &mut out[start..]);
    let protected = &out[iv_start..];
    let tag = hmac(mac_key)
        .chain_update(aad.with_len(protected.len()))
        .chain_update(protected)
        .finalize()
        .into_bytes();
    out.extend_from_slice(&tag);
}

pub(super) fn open_encrypt_then_mac(
    mac_key: &[u8; MAC_LEN],
    key: &[u8; KEY_LEN],
    aad: &AadPrefix,
    fragment: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ProtectError> {
    let n = fragment.len();
    if n < IV_LEN + BLOCK + MAC_LEN || (n - IV_LEN - MAC_LEN) % BLOCK != 0 {
        return Err(ProtectError::BadLength(n));
    }
    let (protected, tag) = fragment.split_at(n - MAC_LEN);
    let expected = hmac(mac_key)
        .chain_update(aad.with_len(protected.len()))
        .chain_update(protected)
        .finalize()
        .into_bytes();
    if !bool::from(expected.ct_eq(tag)) {
        return Err(ProtectError::Authentication);
    }
    let (iv, ciphertext) = protected.split_at(IV_LEN);
    let start = out.len();
    out.extend_from_slice(ciphertext);
    let buf = &mut out[start..];
    decrypt(key, iv, buf)?;
    // Authenticated already: the padding is the sender's, checked for form only.
    let pad = usize::from(buf[buf.len() - 1]);
    let content = buf
        .len()
        .checked_sub(pad + 1)
        .ok_or(ProtectError::Authentication)?;
    if buf[content..].iter().any(|&b| usize::from(b) != pad) {
        return Err(ProtectError::Authentication);
    }
    out.truncate(start + content);
    Ok(())
}

pub(super) fn open_mac_then_encrypt(
    mac_key: &[u8; MAC_LEN],
    key: &[u8; KEY_LEN],
    aad: &AadPrefix,
    fragment: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ProtectError> {
    let n = fragment.len();
    if n < IV_LEN + padded_len(MAC_LEN) || (n - IV_LEN) % BLOCK != 0 {
        return Err(ProtectError::BadLength(n));
    }
    let (iv, ciphertext) = fragment.split_at(IV_LEN);
    let start = out.len();
    out.extend_from_slice(ciphertext);
    let buf = &mut out[start..];
    decrypt(key, iv, buf)?;
    let len = buf.len();

    // Padding: valid if it fits beside the MAC and every byte of it equals its length.
    // Look at the last MAX_PADDING bytes whatever the claimed length.
    let claimed = buf[len - 1];
    let mut bad = !lt_mask(usize::from(claimed) + MAC_LEN, len);
    for (i, &b) in buf.iter().rev().take(MAX_PADDING).enumerate() {
        bad |= lt_mask(i, usize::from(claimed) + 1) & (b ^ claimed);
    }
    let mut good = bad.ct_eq(&0);
    // A bad padding is MAC'd as if there were none (RFC 5246 §6.2.3.2).
    let pad = usize::from(u8::conditional_select(&0, &claimed, good));
    let content = len - pad - 1 - MAC_LEN;

    let expected = hmac(mac_key)
        .chain_update(aad.with_len(content))
        .chain_update(&buf[..content])
        .finalize()
        .into_bytes();
    equalize_hash_work(aad_len_blocks(len - 1 - MAC_LEN) - aad_len_blocks(content));

    // Compare the MAC at buf[content..content + MAC_LEN] by scanning every position it
    // could be at; the index into `expected` stays within one 32-byte line.
    let scan_from = len.saturating_sub(MAC_LEN + MAX_PADDING);
    let mut diff = 0u8;
    for (i, &b) in buf.iter().enumerate().skip(scan_from) {
        let in_mac = lt_mask(i, content + MAC_LEN) & !lt_mask(i, content);
        // MAC_LEN divides 2^64: the wrapped offset of a byte before the MAC still
        // indexes in bounds, and its mask is zero.
        diff |= in_mac & (b ^ expected[i.wrapping_sub(content) % MAC_LEN]);
    }
    good &= diff.ct_eq(&0);
    if !bool::from(good) {
        return Err(ProtectError::Authentication);
    }
    out.truncate(start + content);
    Ok(())
}

/// `0xff` if `a < b`, else 0, by arithmetic rather than a branch; both are lengths within
/// a record, far below 2^63, so the borrow of `a - b` is the answer.
fn lt_mask(a: usize, b: usize) -> u8 {
    (((a as u64).wrapping_sub(b as u64) >> 63) as u8).wrapping_neg()
}

/// SHA-256 compressions of the inner HMAC hash over the 13 bytes of additional data and
/// `content` bytes: the ipad block, the message, and the 9 bytes of length padding.
fn aad_len_blocks(content: usize) -> usize {
    (SHA256_BLOCK + 13 + content + 9).div_ceil(SHA256_BLOCK)
}

/// Runs `blocks` SHA-256 compressions on scratch state, so that the MAC of a record with
/// long padding costs what one with none does.
fn equalize_hash_work(blocks: usize) {
    // SHA-256's buffer is eager: each whole block is compressed as it arrives.
    let mut scratch = Sha256::new();
    for _ in 0..blocks {
        scratch.update([0u8; SHA256_BLOCK]);
    }
    std::hint::black_box(scratch);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_KEY: [u8; MAC_LEN] = [1; MAC_LEN];
    const KEY: [u8; KEY_LEN] = [2; KEY_LEN];
    const AAD: AadPrefix = AadPrefix([0, 1, 0, 0, 0, 0, 0, 9, 23, 0xfe, 0xfd]);

    /// A MAC-then-encrypt fragment of `content` with `pad` padding bytes (plus the length
    /// byte), after `tamper` edits the plaintext `content ‖ MAC ‖ padding`.
    fn mte_fragment(content: &[u8], pad: u8, tamper: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut plain = content.to_vec();
        let tag = hmac(&MAC_KEY)
            .chain_update(AAD.with_len(content.len()))
            .chain_update(content)
            .finalize()
            .into_bytes();
        plain.extend_from_slice(&tag);
        plain.extend(std::iter::repeat_n(pad, usize::from(pad) + 1));
        assert_eq!(plain.len() % BLOCK, 0, "choose pad to fill whole blocks");
        tamper(&mut plain);
        let (cipher, iv) = iv_for(&KEY, &AAD);
        encrypt(cipher, &iv, &mut plain);
        let mut fragment = iv.to_vec();
        fragment.extend_from_slice(&plain);
        fragment
    }

    fn open_mte(fragment: &[u8]) -> Result<Vec<u8>, ProtectError> {
        let mut out = Vec::new();
        open_mac_then_encrypt(&MAC_KEY, &KEY, &AAD, fragment, &mut out).map(|()| out)
    }

    #[test]
    fn test_mte_long_padding_accepted_and_checked() {
        // 17 content + 32 MAC + 255 padding = 304 bytes, 19 whole blocks.
        let content = [0x42u8; 17];
        let good = mte_fragment(&content, 254, |_| {});
        assert_eq!(
            open_mte(&good).expect("255 bytes of padding are legal"),
            content
        );
        let minimal = mte_fragment(&content, 14, |_| {});
        assert_eq!(open_mte(&minimal).expect("minimal padding"), content);
        // A wrong byte anywhere in the padding, the MAC, or the content is refused.
        let n = content.len() + MAC_LEN + 255;
        for at in [0, 16, 17, 17 + 31, 17 + 32, 17 + 33, 100, n - 2] {
            let bad = mte_fragment(&content, 254, |p| p[at] ^= 1);
            assert_eq!(
                open_mte(&bad),
                Err(ProtectError::Authentication),
                "byte {at}"
            );
        }
        // A padding length that leaves no room for the MAC.
        let bad = mte_fragment(&content, 254, |p| *p.last_mut().expect("padding") = 255);
        assert_eq!(open_mte(&bad), Err(ProtectError::Authentication));
    }

    #[test]
    fn test_mte_mac_bytes_each_checked() {
        let content = *b"coap";
        for at in 4..4 + MAC_LEN {
            let bad = mte_fragment(&content, 11, |p| p[at] ^= 0x80);
            assert_eq!(
                open_mte(&bad),
                Err(ProtectError::Authentication),
                "MAC byte {at}"
            );
        }
        assert_eq!(
            open_mte(&mte_fragment(&content, 11, |_| {})),
            Ok(content.to_vec())
        );
    }

    #[test]
    fn test_padded_len_and_pad() {
        assert_eq!(padded_len(0), 16);
        assert_eq!(padded_len(15), 16);
        assert_eq!(padded_len(16), 32);
        assert_eq!(padded_len(32 + 100), 144);
        let mut v = vec![0u8; 5];
        pad(&mut v, 5);
        assert_eq!(v.len(), 16);
        assert!(v[5..].iter().all(|&b| b == 10));
        let mut v = vec![0u8; 16];
        pad(&mut v, 16);
        assert_eq!(&v[16..], &[15u8; 16]);
    }

    #[test]
    fn test_lt_mask() {
        assert_eq!(lt_mask(0, 1), 0xff);
        assert_eq!(lt_mask(1, 1), 0);
        assert_eq!(lt_mask(2, 1), 0);
        assert_eq!(lt_mask(255, 256), 0xff);
        assert_eq!(lt_mask(1 << 20, 3), 0);
    }

    #[test]
    fn test_hash_work_counts() {
        // 64 + 13 + 0 + 9 = 86 bytes: two blocks; 64 + 13 + 42 + 9 = 128: still two.
        assert_eq!(aad_len_blocks(0), 2);
        assert_eq!(aad_len_blocks(42), 2);
        assert_eq!(aad_len_blocks(43), 3);
    }
}
