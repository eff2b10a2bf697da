//! MQTT uplink of a shard: a sans-IO MQTT 3.1.1 client session ([`session`]), the glommio
//! driver that moves its bytes over TCP ([`driver`]), and the embedded broker started when
//! `mqtt.broker = "embedded"` ([`broker`]).

pub mod session;

pub use session::{LinkState, Outgoing, SessionOptions, UplinkError, UplinkSession, UplinkStats};
