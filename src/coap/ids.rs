//! Message id and token generation for requests the gateway sends (RFC 7252 §4.4, §5.3.1).

/// Sequential message ids, wrapping at 65535. Seed it randomly so a restarted gateway does
/// not reuse the MIDs a device may still hold in its own deduplication cache.
#[derive(Debug, Clone)]
pub struct MidGen {
    next: u16,
}

impl MidGen {
    /// Starts at `seed`.
    pub fn new(seed: u16) -> Self {
        MidGen { next: seed }
    }

    /// The next MID.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u16 {
        let mid = self.next;
        self.next = self.next.wrapping_add(1);
        mid
    }
}

/// Rounds of the Feistel network; four make every output bit depend on every input bit
/// in both halves.
const FEISTEL_ROUNDS: usize = 4;

/// 8-byte request tokens that never repeat within 2^64 calls and cannot be predicted from
/// earlier ones without the seed.
///
/// Each token is a 64-bit counter passed through a keyed Feistel network: four rounds
/// over two 32-bit halves, the round function a SplitMix64-style multiply/xor-shift
/// finaliser of the half xored with a round key derived from the seed. A Feistel network
/// is a permutation of `u64` whatever its round function, so distinct counters give
/// distinct tokens; without the round keys consecutive tokens look unrelated. It is not a
/// cryptographic cipher: it guards against off-path spoofing of responses (the reason
/// RFC 7252 §5.3.1 asks for unpredictable tokens), not against a cryptanalyst.
#[derive(Debug, Clone)]
pub struct TokenGen {
    counter: u64,
    keys: [u64; FEISTEL_ROUNDS],
}

impl TokenGen {
    /// A generator keyed by `seed`; give it a random seed at start-up.
    pub fn new(seed: u64) -> Self {
        let mut state = seed;
        let mut keys = [0u64; FEISTEL_ROUNDS];
        for key in &mut keys {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            *key = mix64(state);
        }
        TokenGen { counter: 0, keys }
    }

    /// The next token.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> [u8; 8] {
        let counter = self.counter;
        self.counter = self.counter.wrapping_add(1);
        self.permute(counter).to_be_bytes()
    }

    fn permute(&self, block: u64) -> u64 {
        let mut left = (block >> 32) as u32;
        let mut right = block as u32;
        for key in self.keys {
            let f = (mix64(u64::from(right) ^ key) >> 32) as u32;
            (left, right) = (right, left ^ f);
        }
        (u64::from(left) << 32) | u64::from(right)
    }
}

/// SplitMix64 finaliser: a bijective avalanche mix of 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn mids_wrap() {
        let mut gen = MidGen::new(65534);
        assert_eq!([gen.next(), gen.next(), gen.next()], [65534, 65535, 0]);
    }

    #[test]
    fn tokens_are_distinct_and_seed_dependent() {
        let mut gen = TokenGen::new(42);
        let tokens: Vec<[u8; 8]> = (0..100_000).map(|_| gen.next()).collect();
        let unique: HashSet<_> = tokens.iter().collect();
        assert_eq!(unique.len(), tokens.len());
        let mut other = TokenGen::new(43);
        assert_ne!(other.next(), tokens[0]);
        let mut same = TokenGen::new(42);
        assert_eq!(same.next(), tokens[0]);
    }

    #[test]
    fn consecutive_tokens_look_unrelated() {
        let mut gen = TokenGen::new(7);
        let mut prev = u64::from_be_bytes(gen.next());
        for _ in 0..1000 {
            let token = u64::from_be_bytes(gen.next());
            let flipped = (token ^ prev).count_ones();
            assert!(
                (12..=52).contains(&flipped),
                "{token:016x} after {prev:016x}"
            );
            assert!(token.wrapping_sub(prev) > 1 << 20 || prev.wrapping_sub(token) > 1 << 20);
            prev = token;
        }
    }

    #[test]
    fn permutation_is_a_bijection_on_a_sample() {
        let gen = TokenGen::new(1);
        let outputs: HashSet<u64> = (0..50_000u64).map(|i| gen.permute(i << 40)).collect();
        assert_eq!(outputs.len(), 50_000);
    }
}
