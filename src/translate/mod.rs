//! LwM2M ⇄ MQTT JSON, compatible with EMQX's LwM2M gateway (SPEC §5), and topic
//! templating.
//!
//! Uplink messages are appended to a caller's reused `Vec<u8>` by a small JSON writer
//! ([`json`]) rather than built as values, so the hot path does not allocate.

pub mod json;
pub mod register;
pub mod topic;

pub use register::{write_event, write_register, Event, RegMsgType};
pub use topic::{Mountpoint, TopicMatch};
