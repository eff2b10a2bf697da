//! Registration location ids (`/rd/<id>`): unguessable, never reused, and naming their
//! home shard.
//!
//! An id is what a device presents to update, deregister or rebind its registration, and
//! on plain CoAP knowing it is the only proof that a datagram from a new address comes from
//! the same device (see the README's "NAT rebinding" paragraph). So it carries 64 bits
//! from a cryptographic generator: guessing one registered id among a million takes ~2^44
//! tries on average, and two boots, with or without persistence, never hand out the same
//! id by more than chance (~2^-64 per pair).

use std::fmt;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// Digits naming the home shard (`0`–`9`, `a`–`z`).
const SHARD_DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// URL-safe base64 alphabet (RFC 4648 §5) for the random key: Uri-Path safe, no escaping.
const KEY_DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Characters of the key: 64 bits in base 64 need 11 (the first carries 4 bits).
const KEY_LEN: usize = 11;

/// Length of every id: the shard digit and the key.
pub const ID_LEN: usize = 1 + KEY_LEN;

/// The location id the gateway hands out in a 2.01 Created (`Location-Path: rd/<id>`).
///
/// The first character is the home shard, the one that registered the endpoint and always
/// knows which shard holds it now, so any shard routes an Update it cannot serve in one
/// hop. The other eleven are a random 64-bit key in URL-safe base64; endpoint tables are
/// indexed by the key alone, so an id costs no more memory than the sequence number it
/// replaced. Ids are 12 characters, e.g. `0Ks3vV1q9yZA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Shard that handed the id out and keeps track of where the endpoint lives.
    pub home: u8,
    /// The random key, unique on the node.
    pub key: u64,
}

impl Location {
    /// Parses the id from a Uri-Path segment; `None` for anything that is not one of ours.
    pub fn parse(segment: &[u8]) -> Option<Location> {
        if segment.len() != ID_LEN {
            return None;
        }
        let home = shard_digit(segment[0])?;
        let mut key: u64 = 0;
        for (i, &c) in segment[1..].iter().enumerate() {
            let d = u64::from(key_digit(c)?);
            // The first key character carries the top 4 bits only.
            if i == 0 && d >= 16 {
                return None;
            }
            key = (key << 6) | d;
        }
        Some(Location { home, key })
    }

    /// Writes the id into `out` and returns it as a string.
    pub fn encode<'b>(&self, out: &'b mut [u8; ID_LEN]) -> &'b str {
        out[0] = SHARD_DIGITS[usize::from(self.home) % SHARD_DIGITS.len()];
        for i in 0..KEY_LEN {
            let shift = 6 * (KEY_LEN - 1 - i);
            out[1 + i] = KEY_DIGITS[((self.key >> shift) & 63) as usize];
        }
        // Only ASCII from the two alphabets above is ever written.
        std::str::from_utf8(out).unwrap_or_default()
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ID_LEN];
        f.write_str(self.encode(&mut buf))
    }
}

fn shard_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'z' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn key_digit(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Draws location keys from ChaCha12 seeded from the operating system's generator.
///
/// Keys must be unpredictable (an id is the proof of identity on plain CoAP), so a
/// cryptographic generator rather than the shard's token permutation; ChaCha12 costs
/// ~10 ns a key, nothing beside a registration's ~4 µs.
pub struct KeyGen {
    rng: ChaCha12Rng,
}

impl KeyGen {
    /// A generator seeded with `seed`; the runtime passes 32 bytes from the OS.
    pub fn new(seed: [u8; 32]) -> KeyGen {
        KeyGen {
            rng: ChaCha12Rng::from_seed(seed),
        }
    }

    /// The next key.
    pub fn next_key(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

impl fmt::Debug for KeyGen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyGen")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_url_safe() {
        for (home, key) in [(0, 0), (1, 1), (35, u64::MAX), (7, 0x0123_4567_89ab_cdef)] {
            let loc = Location { home, key };
            let text = loc.to_string();
            assert_eq!(text.len(), ID_LEN);
            assert!(text
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
            assert_eq!(Location::parse(text.as_bytes()), Some(loc), "{text}");
        }
        assert_eq!(Location { home: 0, key: 0 }.to_string(), "0AAAAAAAAAAA");
        assert_eq!(
            Location {
                home: 35,
                key: u64::MAX
            }
            .to_string(),
            "zP__________"
        );
    }

    #[test]
    fn foreign_ids_are_rejected() {
        for bad in [
            "",
            "0",
            "00",
            "0zz",
            "0AAAAAAAAAA",   // one short
            "0AAAAAAAAAAAA", // one long
            "0QAAAAAAAAAA",  // 65 bits
            "AAAAAAAAAAAA",  // upper-case shard digit
            "0AAAAAAAAAA=",
            "0AAAAAA AAAA",
        ] {
            assert_eq!(Location::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn keys_differ_between_generators_and_calls() {
        let mut a = KeyGen::new([1; 32]);
        let mut b = KeyGen::new([2; 32]);
        let ka: Vec<u64> = (0..1000).map(|_| a.next_key()).collect();
        let kb: Vec<u64> = (0..1000).map(|_| b.next_key()).collect();
        let all: std::collections::HashSet<u64> = ka.iter().chain(&kb).copied().collect();
        assert_eq!(all.len(), 2000);
    }
}
