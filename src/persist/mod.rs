//! Registrations that survive restarts: a journal of checksummed records under
//! `[persistence] dir`, folded into a snapshot from time to time.
//!
//! * Shards encode changes into their own buffers (see `session::journal`); the runtime
//!   hands each buffer to the node's [`JournalWriter`] every `flush_interval`, which
//!   appends it to the current journal segment. Nothing on the datagram path touches a
//!   file or a lock.
//! * Every record is an endpoint's whole state or its tombstone, with a generation that
//!   grows with each change; [`Merge`] keeps the highest generation per location key, so
//!   the order in which shards' buffers reached the disk does not matter.
//! * Compaction rotates to a new segment and, on its own thread, merges the snapshot and the
//!   closed segments into a new snapshot (written aside, synced, renamed over the old one),
//!   then deletes those segments. A crash at any point leaves either the old or the new
//!   snapshot, plus segments whose replay is harmless.
//! * At start, [`load`] reads the snapshot and every segment, skipping damaged records
//!   (see [`FrameReader`]), and [`plan_restore`] hands each shard its endpoints.
//!
//! # Files
//!
//! | file | what |
//! |---|---|
//! | `snapshot` | every live endpoint (and recent tombstones) at the last compaction |
//! | `journal-<n>` | records appended since, `n` increasing across restarts |
//! | `snapshot.tmp` | a compaction in progress; removed at start |
//! | `LOCK` | held (`flock`) by the running gateway, so two never share a directory |

mod frame;
pub mod record;
mod restore;
mod store;

pub use frame::{scan, FrameReader, NewerFormat, RawFrame, ScanReport};
pub use record::{
    encode_endpoint, encode_removed, EndpointRef, ObservationRef, QueuedRef, Record, StoredCommand,
    StoredEndpoint, StoredObservation, FORMAT_VERSION,
};
pub use restore::{plan_restore, Merge, RestorePlan};
pub use store::{
    compact, load, release_freed_memory, unix_now, JournalSender, JournalWriter, Loaded,
    PersistError,
};
