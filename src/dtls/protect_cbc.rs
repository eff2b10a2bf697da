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
use subtle::{ConditionallySelectable, ConstantTimeEq, ConstantTimeLess};

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
    let claimed = u64::from(buf[len - 1]);
    let mut good = (claimed + 1 + MAC_LEN as u64).ct_lt(&(len as u64 + 1));
    for (i, &b) in buf.iter().rev().take(MAX_PADDING).enumerate() {
        let in_padding = (i as u64).ct_lt(&(claimed + 1));
        good &= !in_padding | u64::from(b).ct_eq(&claimed);
    }
    // A bad padding is MAC'd as if there were none (RFC 5246 §6.2.3.2).
    let pad = u64::conditional_select(&0, &claimed, good) as usize;
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
        let offset = i.wrapping_sub(content);
        let in_mac = (offset as u64).ct_lt(&(MAC_LEN as u64));
        let mask = u8::conditional_select(&0, &0xff, in_mac);
        diff |= mask & (b ^ expected[offset % MAC_LEN]);
    }
    good &= diff.ct_eq(&0);
    if !bool::from(good) {
        return Err(ProtectError::Authentication);
    }
    out.truncate(start + content);
    Ok(())
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
    fn test_hash_work_counts() {
        // 64 + 13 + 0 + 9 = 86 bytes: two blocks; 64 + 13 + 42 + 9 = 128: still two.
        assert_eq!(aad_len_blocks(0), 2);
        assert_eq!(aad_len_blocks(42), 2);
        assert_eq!(aad_len_blocks(43), 3);
    }
}
