//! LwM2M ⇄ MQTT JSON, compatible with EMQX's LwM2M gateway (SPEC §5), and topic
//! templating.
//!
//! - [`register`]: `register`, `update` and `event` messages.
//! - [`command`]: downlink command JSON → [`Command`], or a [`CommandError`] to answer with.
//! - [`request`]: [`Command`] → the CoAP request for the device.
//! - [`response`]: the uplink messages about a command: response, notify, ack, timeout,
//!   reset, error.
//!
//! Uplink messages are appended to a caller's reused `Vec<u8>` by a small JSON writer
//! ([`json`]) rather than built as values, so the hot path does not allocate.

pub mod command;
pub mod json;
pub mod register;
pub mod request;
pub mod response;
pub mod topic;

pub use command::{
    parse_command, Command, CommandError, CommandErrorKind, CommandKind, Operation, Target,
};
pub use register::{write_event, write_register, Event, RegMsgType};
pub use request::{
    build_request, build_request_as, notification_blocks_request, write_coap_request, CoapRequest,
    WriteFormat, MAX_BLOCK1_BODY, MAX_REQUEST_LEN,
};
pub use response::{
    write_ack, write_coap_reset, write_coap_timeout, write_command_error, write_error,
    write_notify, write_queued, write_response, write_send,
};
pub use topic::{Mountpoint, TopicMatch};
