//! lwm2m-gateway: a thread-per-core LwM2M server that terminates CoAP devices and
//! translates everything they do into MQTT messages, and MQTT commands back into LwM2M
//! operations.
//!
//! # Layout
//!
//! | module | responsibility |
//! |---|---|
//! | [`config`] | TOML file → validated, typed [`config::Config`] |
//! | [`coap`] | borrowed CoAP message view and encoder, options, block-wise, dedup cache |
//! | [`lwm2m`] | registration parameters, object lists, paths, object definitions |
//! | [`content`] | LwM2M content formats: TLV, SenML JSON/CBOR, OMA JSON, CBOR, text, opaque, link-format; the §5 `content` JSON |
//! | [`dtls`] | DTLS 1.2 in front of the CoAP decode: cookies, PSK and certificate handshakes (OpenSSL), per-peer record layer, identity |
//! | [`translate`] | LwM2M ⇄ MQTT JSON (EMQX-compatible), topic templating |
//! | [`session`] | the sans-IO shard core: endpoints, exchanges, timers, the cluster's presence records; bytes and `now` in, datagrams and MQTT messages out |
//! | [`persist`] | the registration journal: checksummed records, compaction, restore at start |
//! | [`transmit`] | the queue of datagrams a sans-IO core hands the runtime |
//! | [`uplink`] | MQTT session per shard: batching, keepalive, reconnect, offline buffer; embedded broker |
//! | [`runtime`] | glommio executors, SO_REUSEPORT sockets (one owner per port), BPF steering, `shard_for`, cross-shard and control channels, signals, cluster mode's will and subscriptions |
//! | [`api`] | HTTP management API (`/api/v1`, EMQX 5's LwM2M paths), `/healthz`, `/readyz`, Prometheus `/metrics`, on its own thread; asks shards over their control channels |
//!
//! Everything above `runtime` and the socket half of `uplink` is sans-IO: it takes bytes
//! and the current time and returns what to send. Only the runtime touches sockets or
//! reads the clock.

pub mod api;
pub mod coap;
pub mod config;
pub mod content;
pub mod dtls;
pub mod lwm2m;
pub mod persist;
pub mod runtime;
pub mod session;
pub mod translate;
pub mod transmit;
pub mod uplink;
