//! Cluster mode in the runtime (`[cluster] enabled`): what a shard's executor does beyond a
//! single node's work. The decisions are the sans-IO shard's (`session::cluster`); here the
//! uplink gets its Last Will and subscriptions, the shard learns when the broker connection
//! comes up, and its retained records go out.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, Qos};
use crate::session::{node_topic, Shard};
use crate::uplink::{Outgoing, UplinkHandle};

/// Sets the Last Will of shard `index`'s connection: its live-node record, cleared by the
/// broker when the connection dies. Call right after spawning the uplink, before it first
/// connects.
pub(super) fn set_will(config: &Config, node: &str, index: usize, uplink: &UplinkHandle) {
    if config.cluster.enabled {
        let topic = node_topic(&config.cluster.topic_prefix, node, index);
        uplink.set_will(Some(topic));
    }
}

/// Turns on the shard's cluster state and subscribes to the records it reads. `started` is
/// the `now` the shard was created with.
///
/// The subscriptions are QoS 0: on TCP a message is lost only with the connection, and a
/// new connection resets the shard's view and replays every retained record anyway. QoS 1
/// would cap that replay: Mosquitto's default queue (`max_queued_messages` 1000) delivered
/// 1020 of 3000 retained messages to a QoS 1 subscription and all of them at QoS 0, and
/// rumqttd shares its 1024-message in-flight window across all filters of a connection.
pub(super) fn enable(
    config: &Config,
    node: &str,
    started: Instant,
    shard: &mut Shard,
    uplink: &UplinkHandle,
) {
    if !config.cluster.enabled {
        return;
    }
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(0);
    shard.enable_cluster(
        node,
        &config.cluster.topic_prefix,
        unix_ms.saturating_sub(elapsed),
    );
    let filters = shard
        .cluster_subscriptions()
        .into_iter()
        .map(|f| (f, Qos::AtMostOnce))
        .collect();
    uplink.subscribe(filters);
}

/// Tells the shard which broker connection is up (see
/// [`Shard::observe_broker_connection`]): before every message from the broker, and
/// whenever the shard hands on what it produced.
pub(super) fn watch(now: Instant, uplink: &UplinkHandle, shard: &mut Shard) {
    shard.observe_broker_connection(now, uplink.connection());
}

/// Moves the shard's retained records to the uplink, at QoS 0: a record is lost only
/// with its connection (or to the offline buffer's bound), and every new connection makes
/// the shard write its records again and clear, on the replay, those naming this node
/// that it no longer holds. QoS 1 would add a PUBACK per Register and share the uplink's
/// in-flight window (which holds back every later publish when full) with the events.
pub(super) fn drain(now: Instant, shard: &mut Shard, uplink: &UplinkHandle) {
    shard.drain_retained(|topic, payload| {
        let msg = Outgoing {
            topic,
            payload,
            qos: Qos::AtMostOnce,
        };
        uplink.publish_retained(now, msg);
    });
}

/// Warns when cluster mode runs on the embedded broker, which forwards at most its
/// in-flight window of retained records per filter at subscribe (README "Several nodes").
pub(super) fn warn_if_embedded(config: &Config) {
    if config.cluster.enabled && matches!(config.mqtt.broker, crate::config::Broker::Embedded) {
        tracing::warn!(
            "cluster mode on the embedded broker: at subscribe it forwards at most {} retained \
             presence records per bucket and drops the rest; use an external broker \
             (mqtt.broker = \"mqtt://host:port\") for more than about {} endpoints",
            crate::uplink::broker::MAX_OUTGOING_PACKET_COUNT,
            crate::uplink::broker::MAX_OUTGOING_PACKET_COUNT as usize
                * crate::session::PRESENCE_BUCKETS
                / 2,
        );
    }
}
