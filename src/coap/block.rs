//! Block-wise transfer (RFC 7959): the Block1/Block2 option value and the reassembly of
//! request bodies a device sends in Block1 blocks.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ahash::AHashMap;

use super::code::Code;

/// Largest block number the 20-bit NUM field holds.
pub const MAX_BLOCK_NUM: u32 = (1 << 20) - 1;

/// Largest reassembled request body. LwM2M request bodies are object lists and writes
/// from constrained devices, a few KiB at most; 64 KiB also bounds what a peer can make
/// the gateway buffer per assembly.
pub const MAX_BODY: usize = 64 * 1024;

/// Most assemblies in progress at once per [`Block1Assembler`]. Block-wise registers are
/// rare and short-lived; the bound caps memory at `MAX_ASSEMBLIES * MAX_BODY` even
/// under a flood of block 0s.
pub const MAX_ASSEMBLIES: usize = 1024;

/// A decoded Block1/Block2 option value (RFC 7959 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Block number, 0..=[`MAX_BLOCK_NUM`].
    pub num: u32,
    /// More blocks follow.
    pub more: bool,
    /// Size exponent: the block holds `16 << szx` bytes; 0..=6.
    pub szx: u8,
}

impl Block {
    /// Block size in bytes, 16..=1024.
    pub fn size(&self) -> usize {
        16 << self.szx
    }

    /// Byte offset of this block in the body.
    pub fn offset(&self) -> usize {
        self.num as usize * self.size()
    }

    /// Decodes an option value; `None` if it is longer than 3 bytes or has the reserved
    /// SZX 7.
    pub fn decode(v: &[u8]) -> Option<Block> {
        if v.len() > 3 {
            return None;
        }
        let raw = super::message::uint(v);
        let szx = (raw & 0x07) as u8;
        (szx != 7).then_some(Block {
            num: raw >> 4,
            more: raw & 0x08 != 0,
            szx,
        })
    }

    /// Encodes into `out` with the minimal length (0..=3) and returns that length. `num`
    /// above [`MAX_BLOCK_NUM`] and `szx` above 6 are masked to their field widths.
    pub fn encode(&self, out: &mut [u8; 3]) -> usize {
        let raw = ((self.num & MAX_BLOCK_NUM) << 4)
            | (u32::from(self.more) << 3)
            | u32::from(self.szx.min(6));
        let len = match raw {
            0 => 0,
            1..=0xff => 1,
            0x100..=0xffff => 2,
            _ => 3,
        };
        let bytes = raw.to_be_bytes();
        out[..len].copy_from_slice(&bytes[4 - len..]);
        len
    }
}

/// Result of pushing one block into a [`Block1Assembler`].
#[derive(Debug, PartialEq, Eq)]
pub enum BlockProgress {
    /// Block stored; answer 2.31 Continue echoing the Block1 option.
    Continue,
    /// The last block arrived: the whole body.
    Complete(Vec<u8>),
}

/// Why a block was refused; the assembly it belonged to is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// A block that does not continue an assembly in progress (none started, or its
    /// offset is not where the body ends): 4.08 Request Entity Incomplete.
    #[error("block {num} does not continue the body received so far")]
    Incomplete {
        /// Block number received.
        num: u32,
    },
    /// The body would exceed [`MAX_BODY`]: 4.13 Request Entity Too Large.
    #[error("request body exceeds {MAX_BODY} bytes")]
    TooLarge,
    /// A non-final block whose payload is not exactly the block size, or a final block
    /// larger than it: 4.00 Bad Request.
    #[error("block payload of {len} bytes does not match the block size {size}")]
    SizeMismatch {
        /// Payload length received.
        len: usize,
        /// Block size announced by SZX.
        size: usize,
    },
    /// [`MAX_ASSEMBLIES`] are in progress: 5.03 Service Unavailable.
    #[error("too many block-wise transfers in progress")]
    Busy,
}

impl BlockError {
    /// The response code to answer the block with.
    pub fn code(&self) -> Code {
        match self {
            BlockError::Incomplete { .. } => Code::REQUEST_ENTITY_INCOMPLETE,
            BlockError::TooLarge => Code::REQUEST_ENTITY_TOO_LARGE,
            BlockError::SizeMismatch { .. } => Code::BAD_REQUEST,
            BlockError::Busy => Code::SERVICE_UNAVAILABLE,
        }
    }
}

#[derive(Debug)]
struct Assembly {
    body: Vec<u8>,
    last: Instant,
}

/// Reassembles Block1 request bodies (RFC 7959 §2.5).
///
/// An assembly is keyed by the peer and a caller-supplied `key` identifying the request
/// (a hash of method, Uri-Path and Uri-Query), not by token: clients such as wakaama may
/// send each block with a fresh token. Block 0 (re)starts an assembly; each further block
/// must start exactly where the body received so far ends, which also allows a client to
/// switch to a smaller block size mid-transfer. An assembly that receives no block for
/// `idle` (`gateway.idle_timeout`) is forgotten: the next block of it is
/// [`BlockError::Incomplete`].
#[derive(Debug)]
pub struct Block1Assembler {
    assemblies: AHashMap<(SocketAddr, u64), Assembly>,
    idle: Duration,
}

impl Block1Assembler {
    /// An assembler with nothing in progress that forgets assemblies idle for `idle`.
    pub fn new(idle: Duration) -> Self {
        Block1Assembler {
            assemblies: AHashMap::default(),
            idle,
        }
    }

    /// Adds one block received at `now`.
    pub fn push(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        key: u64,
        block: Block,
        payload: &[u8],
    ) -> Result<BlockProgress, BlockError> {
        let id = (peer, key);
        let size = block.size();
        if payload.len() > size || (block.more && payload.len() != size) {
            self.assemblies.remove(&id);
            return Err(BlockError::SizeMismatch {
                len: payload.len(),
                size,
            });
        }
        if block.num == 0 {
            if !block.more {
                self.assemblies.remove(&id);
                return Ok(BlockProgress::Complete(payload.to_vec()));
            }
            if !self.assemblies.contains_key(&id) && self.assemblies.len() >= MAX_ASSEMBLIES {
                self.expire(now);
                if self.assemblies.len() >= MAX_ASSEMBLIES {
                    return Err(BlockError::Busy);
                }
            }
            let assembly = self.assemblies.entry(id).or_insert_with(|| Assembly {
                body: Vec::new(),
                last: now,
            });
            assembly.body.clear();
            assembly.body.extend_from_slice(payload);
            assembly.last = now;
            return Ok(BlockProgress::Continue);
        }

        let Some(assembly) = self.assemblies.get_mut(&id) else {
            return Err(BlockError::Incomplete { num: block.num });
        };
        if block.offset() != assembly.body.len()
            || now.saturating_duration_since(assembly.last) > self.idle
        {
            self.assemblies.remove(&id);
            return Err(BlockError::Incomplete { num: block.num });
        }
        if assembly.body.len() + payload.len() > MAX_BODY {
            self.assemblies.remove(&id);
            return Err(BlockError::TooLarge);
        }
        assembly.body.extend_from_slice(payload);
        assembly.last = now;
        if block.more {
            return Ok(BlockProgress::Continue);
        }
        let body = self
            .assemblies
            .remove(&id)
            .map(|a| a.body)
            .unwrap_or_default();
        Ok(BlockProgress::Complete(body))
    }

    /// Drops assemblies idle for longer than the `idle` given to [`Block1Assembler::new`];
    /// O(assemblies), at most [`MAX_ASSEMBLIES`].
    pub fn expire(&mut self, now: Instant) {
        let idle = self.idle;
        self.assemblies
            .retain(|_, a| now.saturating_duration_since(a.last) <= idle);
    }

    /// Assemblies in progress.
    pub fn len(&self) -> usize {
        self.assemblies.len()
    }

    /// Nothing in progress.
    pub fn is_empty(&self) -> bool {
        self.assemblies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `gateway.idle_timeout`'s default.
    const IDLE: Duration = Duration::from_secs(30);

    fn block(num: u32, more: bool, szx: u8) -> Block {
        Block { num, more, szx }
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], 56833))
    }

    #[test]
    fn block_decode_encode() {
        assert_eq!(Block::decode(&[]), Some(block(0, false, 0)));
        assert_eq!(Block::decode(&[0x0a]), Some(block(0, true, 2)));
        assert_eq!(Block::decode(&[0x22]), Some(block(2, false, 2)));
        assert_eq!(Block::decode(&[0x0f]), None);
        assert_eq!(Block::decode(&[1, 2, 3, 4]), None);
        assert_eq!(
            Block::decode(&[0xff, 0xff, 0xfe]),
            Some(block(MAX_BLOCK_NUM, true, 6))
        );
        let mut out = [0u8; 3];
        assert_eq!(block(0, false, 0).encode(&mut out), 0);
        assert_eq!(block(0, true, 2).encode(&mut out), 1);
        assert_eq!(out[0], 0x0a);
        assert_eq!(block(16, false, 6).encode(&mut out), 2);
        assert_eq!(out[..2], [0x01, 0x06]);
        assert_eq!(block(MAX_BLOCK_NUM, true, 6).encode(&mut out), 3);
        assert_eq!(out, [0xff, 0xff, 0xfe]);
        assert_eq!(block(3, true, 2).size(), 64);
        assert_eq!(block(3, true, 2).offset(), 192);
    }

    #[test]
    fn single_block_completes_at_once() {
        let mut asm = Block1Assembler::new(IDLE);
        let t = Instant::now();
        assert_eq!(
            asm.push(t, peer(), 1, block(0, false, 2), b"abc"),
            Ok(BlockProgress::Complete(b"abc".to_vec()))
        );
        assert!(asm.is_empty());
    }

    #[test]
    fn out_of_order_is_incomplete() {
        let mut asm = Block1Assembler::new(IDLE);
        let t = Instant::now();
        assert_eq!(
            asm.push(t, peer(), 1, block(1, true, 0), &[0; 16])
                .map_err(|e| e.code()),
            Err(Code::REQUEST_ENTITY_INCOMPLETE)
        );
        assert_eq!(
            asm.push(t, peer(), 1, block(0, true, 0), &[0; 16]),
            Ok(BlockProgress::Continue)
        );
        let err = asm
            .push(t, peer(), 1, block(2, false, 0), &[0; 3])
            .expect_err("refused");
        assert_eq!(err, BlockError::Incomplete { num: 2 });
        assert_eq!(err.code(), Code::REQUEST_ENTITY_INCOMPLETE);
        assert!(asm.is_empty(), "a broken assembly is dropped");
    }

    #[test]
    fn block_zero_restarts() {
        let mut asm = Block1Assembler::new(IDLE);
        let t = Instant::now();
        asm.push(t, peer(), 1, block(0, true, 0), &[1; 16])
            .expect("accepted");
        asm.push(t, peer(), 1, block(1, true, 0), &[2; 16])
            .expect("accepted");
        asm.push(t, peer(), 1, block(0, true, 0), &[3; 16])
            .expect("accepted");
        let done = asm
            .push(t, peer(), 1, block(1, false, 0), &[4; 2])
            .expect("accepted");
        let mut want = vec![3u8; 16];
        want.extend_from_slice(&[4, 4]);
        assert_eq!(done, BlockProgress::Complete(want));
    }

    #[test]
    fn assemblies_are_keyed_by_peer_and_key() {
        let mut asm = Block1Assembler::new(IDLE);
        let t = Instant::now();
        let other = SocketAddr::from(([10, 0, 0, 2], 56833));
        asm.push(t, peer(), 1, block(0, true, 0), &[1; 16])
            .expect("accepted");
        asm.push(t, peer(), 2, block(0, true, 0), &[2; 16])
            .expect("accepted");
        asm.push(t, other, 1, block(0, true, 0), &[3; 16])
            .expect("accepted");
        assert_eq!(asm.len(), 3);
        let done = asm
            .push(t, peer(), 2, block(1, false, 0), &[9])
            .expect("accepted");
        let mut want = vec![2u8; 16];
        want.push(9);
        assert_eq!(done, BlockProgress::Complete(want));
        assert_eq!(asm.len(), 2);
    }

    #[test]
    fn size_mismatch_is_bad_request() {
        let mut asm = Block1Assembler::new(IDLE);
        let t = Instant::now();
        let err = asm
            .push(t, peer(), 1, block(0, true, 2), &[0; 63])
            .expect_err("refused");
        assert_eq!(err.code(), Code::BAD_REQUEST);
        let err = asm
            .push(t, peer(), 1, block(0, false, 0), &[0; 17])
            .expect_err("refused");
        assert_eq!(err, BlockError::SizeMismatch { len: 17, size: 16 });
    }

    #[test]
    fn too_large_body() {
        let mut asm = Block1Assembler::new(IDLE);
        let t = Instant::now();
        let chunk = [0u8; 1024];
        for num in 0..(MAX_BODY / 1024) as u32 {
            assert_eq!(
                asm.push(t, peer(), 1, block(num, true, 6), &chunk),
                Ok(BlockProgress::Continue)
            );
        }
        let err = asm
            .push(t, peer(), 1, block(64, false, 6), &[0; 1])
            .expect_err("refused");
        assert_eq!(err, BlockError::TooLarge);
        assert_eq!(err.code(), Code::REQUEST_ENTITY_TOO_LARGE);
        assert!(asm.is_empty());
    }

    #[test]
    fn idle_assemblies_expire() {
        let mut asm = Block1Assembler::new(IDLE);
        let t = Instant::now();
        asm.push(t, peer(), 1, block(0, true, 0), &[0; 16])
            .expect("accepted");
        asm.push(
            t + Duration::from_secs(100),
            peer(),
            2,
            block(0, true, 0),
            &[0; 16],
        )
        .expect("accepted");
        asm.expire(t + IDLE);
        assert_eq!(asm.len(), 2);
        asm.expire(t + IDLE + Duration::from_secs(1));
        assert_eq!(asm.len(), 1);
        let err = asm
            .push(t + IDLE, peer(), 1, block(1, false, 0), &[0])
            .expect_err("refused");
        assert_eq!(err, BlockError::Incomplete { num: 1 });
    }

    #[test]
    fn a_block_after_the_idle_timeout_finds_nothing_to_continue() {
        let mut asm = Block1Assembler::new(IDLE);
        let t = Instant::now();
        asm.push(t, peer(), 1, block(0, true, 0), &[0; 16])
            .expect("accepted");
        assert_eq!(
            asm.push(t + IDLE, peer(), 1, block(1, true, 0), &[0; 16]),
            Ok(BlockProgress::Continue),
            "within the timeout"
        );
        let late = t + IDLE + IDLE + Duration::from_millis(1);
        assert_eq!(
            asm.push(late, peer(), 1, block(2, false, 0), &[0]),
            Err(BlockError::Incomplete { num: 2 }),
            "forgotten without waiting for expire()"
        );
        assert!(asm.is_empty());
    }

    #[test]
    fn bounded_number_of_assemblies() {
        let mut asm = Block1Assembler::new(IDLE);
        let t = Instant::now();
        for key in 0..MAX_ASSEMBLIES as u64 {
            asm.push(t, peer(), key, block(0, true, 0), &[0; 16])
                .expect("accepted");
        }
        let err = asm
            .push(t, peer(), u64::MAX, block(0, true, 0), &[0; 16])
            .expect_err("refused");
        assert_eq!(err.code(), Code::SERVICE_UNAVAILABLE);
        let later = t + IDLE + Duration::from_secs(1);
        assert_eq!(
            asm.push(later, peer(), u64::MAX, block(0, true, 0), &[0; 16]),
            Ok(BlockProgress::Continue)
        );
        assert_eq!(asm.len(), 1);
    }
}
