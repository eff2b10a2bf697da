//! MQTT uplink of a shard: a sans-IO MQTT 3.1.1 client session ([`session`]) that queues
//! publishes as PUBLISH bytes ([`publish`]) in reused packet queues, the glommio driver that
//! moves its bytes over one TCP connection per shard ([`driver`]), and the embedded broker
//! started when `mqtt.broker = "embedded"` ([`broker`]).
//!
//! A shard calls [`spawn_uplink`] once on its executor and then
//! [`UplinkHandle::publish`] per message; [`UplinkHandle::flush`] on shutdown.

pub mod broker;
pub mod driver;
mod fifo;
pub mod publish;
pub mod session;

pub use broker::{start_embedded, BrokerError, EmbeddedBroker};
pub use driver::{client_id, spawn_uplink, UplinkHandle};
pub use session::{LinkState, Outgoing, SessionOptions, UplinkError, UplinkSession, UplinkStats};
