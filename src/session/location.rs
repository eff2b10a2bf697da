//! Registration location ids (`/rd/<id>`): short, unique per node, and naming their shard.

use std::fmt;

/// Digits of a location id: the first names the shard, the rest are a base-36 sequence.
const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Longest id accepted when parsing: one shard digit plus a u32 in base 36 (7 digits).
const MAX_ID_LEN: usize = 8;

/// The location id the gateway hands out in a 2.01 Created (`Location-Path: rd/<id>`).
///
/// The first character is the shard that registered the endpoint (`0`–`9`, `a`–`z`), so any
/// shard can route an Update or Deregister for an id it does not hold in one hop; the rest is
/// that shard's registration sequence number in base 36. Ids stay short: `0`, `1a`, `0zz`…
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Shard that handed the id out and keeps track of where the endpoint lives.
    pub home: u8,
    /// Sequence number within the home shard.
    pub seq: u32,
}

impl Location {
    /// Parses the id from a Uri-Path segment; `None` for anything that is not one of ours.
    pub fn parse(segment: &[u8]) -> Option<Location> {
        if segment.len() < 2 || segment.len() > MAX_ID_LEN {
            return None;
        }
        let home = digit(segment[0])?;
        let mut seq: u32 = 0;
        for &c in &segment[1..] {
            seq = seq.checked_mul(36)?.checked_add(u32::from(digit(c)?))?;
        }
        Some(Location { home, seq })
    }

    /// Writes the id into `out` (at most [`MAX_ID_LEN`] bytes) and returns its length.
    pub fn encode(&self, out: &mut [u8; MAX_ID_LEN]) -> usize {
        let mut tmp = [0u8; MAX_ID_LEN];
        let mut n = 0;
        let mut v = self.seq;
        loop {
            tmp[n] = DIGITS[(v % 36) as usize];
            n += 1;
            v /= 36;
            if v == 0 {
                break;
            }
        }
        out[0] = DIGITS[usize::from(self.home) % 36];
        for i in 0..n {
            out[1 + i] = tmp[n - 1 - i];
        }
        n + 1
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; MAX_ID_LEN];
        let n = self.encode(&mut buf);
        // Only ASCII digits and lowercase letters are ever written.
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'z' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_and_round_trip() {
        for (home, seq, text) in [
            (0, 0, "00"),
            (1, 35, "1z"),
            (0, 36, "010"),
            (35, u32::MAX, "z1z141z3"),
        ] {
            let loc = Location { home, seq };
            assert_eq!(loc.to_string(), text);
            assert_eq!(Location::parse(text.as_bytes()), Some(loc));
        }
    }

    #[test]
    fn foreign_ids_are_rejected() {
        for bad in ["", "0", "0A", "0-1", "z1z141z4", "000000000"] {
            assert_eq!(Location::parse(bad.as_bytes()), None, "{bad}");
        }
    }
}
