//! The I/O half of the gateway: executors pinned per core, the SO_REUSEPORT socket group
//! with its BPF steering program, and batched datagram I/O.
//!
//! - [`steer`]: which shard owns a source address ([`steer::shard_for`]), the classic BPF
//!   program that makes the kernel agree, and the socket group that carries it.
//! - [`udp`]: `recvmmsg`/`sendmmsg` batches over a shard's nonblocking socket and the
//!   readiness wait used when a drain comes back empty.
//! - `cluster`: cluster mode's Last Will, subscriptions and retained records per shard.
//! - `dtls`: the DTLS listener's socket group and the node's OpenSSL context.
//! - [`control`]: the per-shard control channel the HTTP API asks shards through.
//! - `driver`: a shard's I/O state, its receive loop and the task serving control requests.
//! - `moderation`: how long a receive loop lets datagrams gather between two drains.
//! - `shutdown`: the node's stop signal, which idle shard tasks await instead of polling.
//! - [`port`]: one owner per UDP port: a node refuses to start on a port another process's
//!   socket already receives on, instead of joining its SO_REUSEPORT group.

mod cluster;
pub mod control;
mod driver;
mod dtls;
mod histograms;
mod moderation;
mod node;
pub mod port;
mod shutdown;
pub mod steer;
pub mod udp;

pub use node::{run, Gateway, StartError};
pub use steer::{shard_for, Steering};
