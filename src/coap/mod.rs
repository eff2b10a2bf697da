//! Sans-IO CoAP (RFC 7252, RFC 7641 Observe, RFC 7959 block-wise).
//!
//! - [`Message`]: borrowed, fully validated view of a datagram; parsing is O(n) and
//!   allocation-free, and a malformed datagram is a [`ParseError`], never a panic.
//! - [`MessageWriter`] / [`write_empty`]: encoder appending to a reused buffer.
//! - [`Code`], [`MessageType`], [`option`]: the vocabulary.
//! - [`Block`], [`Block1Assembler`]: block-wise option values and request reassembly.
//! - [`DedupCache`]: replay of responses to retransmitted CONs for [`EXCHANGE_LIFETIME`].
//! - [`MidGen`], [`TokenGen`]: ids for requests the gateway originates.
//!
//! Nothing here does I/O or reads the clock: time is passed in as `now`.

mod block;
mod code;
mod dedup;
mod ids;
mod message;
pub mod option;
mod writer;

#[cfg(test)]
mod test_vectors;
#[cfg(test)]
mod tests;

pub use block::{
    Block, Block1Assembler, BlockError, BlockProgress, MAX_ASSEMBLIES, MAX_BLOCK_NUM, MAX_BODY,
};
pub use code::{Code, MessageType};
pub use dedup::{Dedup, DedupCache, EXCHANGE_LIFETIME, EXPIRE_BATCH};
pub use ids::{MidGen, TokenGen};
pub use message::{
    peek_header, uint, Message, Options, ParseError, HEADER_LEN, MAX_TOKEN_LEN, PAYLOAD_MARKER,
    VERSION,
};
pub use writer::{write_empty, MessageWriter, MAX_OPTION_VALUE_LEN};
