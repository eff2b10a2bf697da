//! `/metrics`: Prometheus text exposition, built at each scrape from every shard's
//! snapshot (taken over the control channel), so the data path keeps plain counters.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{ApiError, AppState};
use crate::runtime::control::ShardSnapshot;
use crate::session::{
    command_type_label, CommandResult, CommandResults, LatencyBuckets, LATENCY_BOUNDS,
};

/// Labels of one sample.
type Labels = Vec<(&'static str, String)>;

/// Every shard's snapshot, encoded as one collector.
#[derive(Debug)]
struct Snapshots(Vec<ShardSnapshot>);

fn shard(s: &ShardSnapshot) -> Labels {
    vec![("shard", s.shard.to_string())]
}

fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> std::fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, value) in rows {
        let mut sample = metric.encode_family(&labels)?;
        match ty {
            MetricType::Counter => sample.encode_counter::<(), u64, u64>(&value, None)?,
            _ => sample.encode_gauge(&i64::try_from(value).unwrap_or(i64::MAX))?,
        }
    }
    Ok(())
}

/// A counter family of seconds (fractional).
fn seconds_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, f64)>,
) -> std::fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        let mut sample = metric.encode_family(&labels)?;
        sample.encode_counter::<(), f64, u64>(&value, None)?;
    }
    Ok(())
}

fn histogram<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, &'a LatencyBuckets)>,
) -> std::fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(h.counts.iter().copied())
            .collect();
        let sum = h.sum_ns as f64 / 1e9;
        metric
            .encode_family(&labels)?
            .encode_histogram::<()>(sum, h.count(), &buckets, None)?;
    }
    Ok(())
}

impl Collector for Snapshots {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let s = &self.0;
        let per_shard = |f: fn(&ShardSnapshot) -> u64| s.iter().map(move |x| (shard(x), f(x)));
        family(
            &mut enc,
            "lwm2m_registered_endpoints",
            "Endpoints registered on each shard.",
            Gauge,
            per_shard(|x| x.registered as u64),
        )?;
        family(
            &mut enc,
            "lwm2m_registrations",
            "Successful registrations.",
            Counter,
            per_shard(|x| x.stats.registered),
        )?;
        family(
            &mut enc,
            "lwm2m_updates",
            "Successful registration updates.",
            Counter,
            per_shard(|x| x.stats.updated),
        )?;
        family(
            &mut enc,
            "lwm2m_deregistrations",
            "Deregistrations (by the device or the API).",
            Counter,
            per_shard(|x| x.stats.deregistered),
        )?;
        family(
            &mut enc,
            "lwm2m_expiries",
            "Registrations removed at lifetime expiry.",
            Counter,
            per_shard(|x| x.stats.expired),
        )?;
        family(
            &mut enc,
            "lwm2m_replaced",
            "Registrations replaced by a newer one of the same name.",
            Counter,
            per_shard(|x| x.stats.replaced),
        )?;
        family(
            &mut enc,
            "lwm2m_rebindings",
            "Endpoint address changes (NAT rebinding).",
            Counter,
            per_shard(|x| x.stats.rebound),
        )?;
        family(
            &mut enc,
            "lwm2m_datagrams_in",
            "Datagrams handled by each shard, forwarded ones included.",
            Counter,
            per_shard(|x| x.stats.datagrams),
        )?;
        family(
            &mut enc,
            "lwm2m_datagrams_out",
            "Datagrams handed to the sockets (replies, requests, retransmissions).",
            Counter,
            per_shard(|x| x.datagrams_out),
        )?;
        let drops = s.iter().flat_map(|x| {
            [
                ("malformed", x.stats.malformed),
                ("truncated", x.stats.truncated),
                ("overloaded", x.stats.overloaded),
                ("forbidden", x.stats.forbidden),
                ("send_overflow", x.send_dropped),
                ("uplink_overflow", x.uplink.dropped_overflow),
            ]
            .map(|(reason, n)| {
                let mut l = shard(x);
                l.push(("reason", reason.into()));
                (l, n)
            })
        });
        family(
            &mut enc,
            "lwm2m_drops",
            "Datagrams and messages dropped, by reason.",
            Counter,
            drops,
        )?;
        let commands = s.iter().flat_map(|x| {
            CommandResults::types().flat_map(move |ty| {
                CommandResult::ALL.iter().filter_map(move |r| {
                    let n = x.stats.command_results.get(ty, *r);
                    (n > 0).then(|| {
                        let mut l = shard(x);
                        l.push(("msg_type", command_type_label(ty).into()));
                        l.push(("result", r.as_str().into()));
                        (l, n)
                    })
                })
            })
        });
        family(
            &mut enc,
            "lwm2m_commands",
            "Commands by msgType and outcome (ok, 4xx, 5xx, timeout, reset).",
            Counter,
            commands,
        )?;
        family(
            &mut enc,
            "lwm2m_notifications",
            "Observe notifications published.",
            Counter,
            per_shard(|x| x.stats.notifications),
        )?;
        let events = s.iter().flat_map(|x| {
            [
                ("duplicate", x.stats.duplicates),
                ("stale_notification", x.stats.stale_notifications),
                ("undecodable", x.stats.undecodable),
                (
                    "notify_body_abandoned",
                    x.stats.notification_bodies_abandoned,
                ),
                ("send", x.stats.sends),
                ("command_queued", x.stats.commands_queued),
                ("command_expired", x.stats.commands_expired),
            ]
            .map(|(kind, n)| {
                let mut l = shard(x);
                l.push(("kind", kind.into()));
                (l, n)
            })
        });
        family(
            &mut enc,
            "lwm2m_device_events",
            "Device-side events: duplicate CONs answered from the cache, stale notifications dropped, payloads published undecoded, Block2 notification bodies abandoned, LwM2M 1.1 Sends published, commands queued for and expired before a sleeping device.",
            Counter,
            events,
        )?;
        family(
            &mut enc,
            "lwm2m_forwards",
            "Datagrams forwarded to the shard holding their endpoint.",
            Counter,
            per_shard(|x| x.stats.forwarded),
        )?;
        family(
            &mut enc,
            "lwm2m_handoffs",
            "Work handed to other shards: forwarded datagrams, moving endpoints, directory updates.",
            Counter,
            per_shard(|x| x.handoffs_out),
        )?;
        family(
            &mut enc,
            "lwm2m_retransmissions",
            "CON retransmissions sent to devices.",
            Counter,
            per_shard(|x| x.stats.retransmissions),
        )?;
        let queues = s.iter().flat_map(|x| {
            [
                ("transmit", x.pending_transmits),
                ("publish", x.pending_publishes),
                ("handoff", x.handoff_backlog),
                ("journal_bytes", x.pending_journal),
                ("api_waiters", x.waiting_commands),
            ]
            .map(|(queue, n)| {
                let mut l = shard(x);
                l.push(("queue", queue.into()));
                (l, n as u64)
            })
        });
        family(
            &mut enc,
            "lwm2m_queue_depth",
            "Items waiting in each shard's queues.",
            Gauge,
            queues,
        )?;
        family(
            &mut enc,
            "lwm2m_uplink_buffered",
            "MQTT messages buffered for the broker.",
            Gauge,
            per_shard(|x| x.uplink.buffered),
        )?;
        family(
            &mut enc,
            "lwm2m_uplink_in_flight",
            "QoS 1 messages sent and not yet acknowledged.",
            Gauge,
            per_shard(|x| x.uplink.in_flight),
        )?;
        family(
            &mut enc,
            "lwm2m_uplink_reconnects",
            "Broker reconnections after the first connection.",
            Counter,
            per_shard(|x| x.uplink.reconnects),
        )?;
        family(
            &mut enc,
            "lwm2m_uplink_connected",
            "1 while the shard's broker connection is up.",
            Gauge,
            per_shard(|x| u64::from(x.connected)),
        )?;
        family(
            &mut enc,
            "lwm2m_uplink_published",
            "MQTT PUBLISH packets written.",
            Counter,
            per_shard(|x| x.uplink.published),
        )?;
        family(
            &mut enc,
            "lwm2m_receive_pauses",
            "Times a shard stopped reading devices because the broker fell behind.",
            Counter,
            per_shard(|x| x.receive_pauses),
        )?;
        seconds_family(
            &mut enc,
            "lwm2m_receive_paused_seconds",
            "Time shards spent not reading devices because the broker fell behind.",
            s.iter().map(|x| (shard(x), x.receive_paused.as_secs_f64())),
        )?;
        let dtls: Vec<_> = s
            .iter()
            .filter_map(|x| x.dtls.as_ref().map(|d| (x, d)))
            .collect();
        if !dtls.is_empty() {
            let rows = dtls.iter().flat_map(|(x, d)| {
                [
                    ("completed", d.handshakes),
                    ("resumed", d.resumed),
                    ("failed", d.handshakes_failed),
                    ("timed_out", d.handshakes_timed_out),
                    ("refused", d.handshakes_refused),
                ]
                .map(|(result, n)| {
                    let mut l = shard(x);
                    l.push(("result", result.into()));
                    (l, n)
                })
            });
            family(
                &mut enc,
                "lwm2m_dtls_handshakes",
                "DTLS handshakes by outcome.",
                Counter,
                rows,
            )?;
            family(
                &mut enc,
                "lwm2m_dtls_sessions",
                "Established DTLS sessions.",
                Gauge,
                dtls.iter().map(|(x, _)| (shard(x), x.dtls_sessions as u64)),
            )?;
        }
        let cluster: Vec<_> = s
            .iter()
            .filter_map(|x| x.cluster.as_ref().map(|c| (x, c)))
            .collect();
        if !cluster.is_empty() {
            let rows = cluster.iter().flat_map(|(x, c)| {
                [
                    ("presence_published", c.presence_published),
                    ("taken_over", c.taken_over),
                    ("repaired", c.repaired),
                    ("ignored", c.ignored),
                ]
                .map(|(event, n)| {
                    let mut l = shard(x);
                    l.push(("event", event.into()));
                    (l, n)
                })
            });
            family(
                &mut enc,
                "lwm2m_cluster_events",
                "Cluster mode: presence records written or cleared, registrations taken over by another node, own records repaired, records ignored.",
                Counter,
                rows,
            )?;
            family(
                &mut enc,
                "lwm2m_cluster_remote_endpoints",
                "Names held by other nodes that this shard knows.",
                Gauge,
                cluster.iter().map(|(x, c)| (shard(x), c.remote_endpoints)),
            )?;
        }
        histogram(&mut enc, "lwm2m_pipeline_seconds",
            "Time a batch of datagrams spends in a shard, receive to replies sent and publishes handed on (one observation per datagram).",
            s.iter().map(|x| (shard(x), &x.pipeline)))?;
        histogram(
            &mut enc,
            "lwm2m_command_rtt_seconds",
            "Command round trip: entering the shard to its response being published.",
            s.iter().map(|x| (shard(x), &x.stats.command_rtt)),
        )?;
        Ok(())
    }
}

/// `GET /metrics`.
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let snapshots = state.shards.snapshots().await?;
    let text =
        encode(snapshots).map_err(|_| ApiError::Unavailable("cannot encode the metrics".into()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// The exposition text of `snapshots`.
fn encode(snapshots: Vec<ShardSnapshot>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshots(snapshots)));
    let mut text = String::with_capacity(16 << 10);
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_parse::{Scrape, Value};

    use super::*;
    use crate::dtls::server::DtlsStats;
    use crate::session::ClusterStats;

    fn sample<'s>(scrape: &'s Scrape, name: &str, labels: &[(&str, &str)]) -> Option<&'s Value> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| &s.value)
    }

    /// A plain sample's value. The parser reads OpenMetrics counters (`x_total` under
    /// `# TYPE x counter`) as untyped samples.
    fn number(v: Option<&Value>) -> Option<f64> {
        match v? {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            _ => None,
        }
    }

    #[test]
    fn snapshots_encode_as_prometheus_text_with_dtls_and_histograms() {
        let mut a = ShardSnapshot {
            shard: 0,
            registered: 5,
            dtls: Some(DtlsStats {
                handshakes: 4,
                handshakes_failed: 1,
                ..DtlsStats::default()
            }),
            ..ShardSnapshot::default()
        };
        a.stats.malformed = 2;
        a.stats.command_results.count(
            Some(crate::translate::Operation::Write),
            CommandResult::Timeout,
        );
        a.stats.notification_bodies_abandoned = 3;
        a.cluster = Some(ClusterStats {
            taken_over: 2,
            remote_endpoints: 9,
            ..ClusterStats::default()
        });
        a.receive_pauses = 2;
        a.receive_paused = Duration::from_millis(1500);
        a.pipeline.record_n(Duration::from_micros(30), 3);
        a.pipeline.record_n(Duration::from_secs(100), 1);
        let b = ShardSnapshot {
            shard: 1,
            registered: 7,
            ..ShardSnapshot::default()
        };
        let text = encode(vec![a, b]).expect("encodes");
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = Scrape::parse(lines).expect("parses");

        let gauge = sample(&scrape, "lwm2m_registered_endpoints", &[("shard", "1")]);
        assert!(
            matches!(gauge, Some(Value::Gauge(v)) if *v == 7.0),
            "{text}"
        );
        let drops = [("shard", "0"), ("reason", "malformed")];
        let drops = number(sample(&scrape, "lwm2m_drops_total", &drops));
        assert_eq!(drops, Some(2.0), "{text}");
        let cmd = [("msg_type", "write"), ("result", "timeout")];
        let cmd = number(sample(&scrape, "lwm2m_commands_total", &cmd));
        assert_eq!(cmd, Some(1.0), "{text}");
        let hs = [("shard", "0"), ("result", "failed")];
        let hs = number(sample(&scrape, "lwm2m_dtls_handshakes_total", &hs));
        assert_eq!(hs, Some(1.0), "{text}");
        assert!(sample(&scrape, "lwm2m_dtls_sessions", &[("shard", "1")]).is_none());
        let abandoned = [("shard", "0"), ("kind", "notify_body_abandoned")];
        let abandoned = number(sample(&scrape, "lwm2m_device_events_total", &abandoned));
        assert_eq!(abandoned, Some(3.0), "{text}");
        let pauses = number(sample(
            &scrape,
            "lwm2m_receive_pauses_total",
            &[("shard", "0")],
        ));
        assert_eq!(pauses, Some(2.0), "{text}");
        let paused = sample(
            &scrape,
            "lwm2m_receive_paused_seconds_total",
            &[("shard", "0")],
        );
        assert_eq!(number(paused), Some(1.5), "{text}");
        let taken = [("shard", "0"), ("event", "taken_over")];
        let taken = number(sample(&scrape, "lwm2m_cluster_events_total", &taken));
        assert_eq!(taken, Some(2.0), "{text}");
        let remote = sample(&scrape, "lwm2m_cluster_remote_endpoints", &[("shard", "0")]);
        assert!(
            matches!(remote, Some(Value::Gauge(v)) if *v == 9.0),
            "{text}"
        );
        assert!(sample(&scrape, "lwm2m_cluster_remote_endpoints", &[("shard", "1")]).is_none());
        let Some(Value::Histogram(buckets)) =
            sample(&scrape, "lwm2m_pipeline_seconds", &[("shard", "0")])
        else {
            panic!("no pipeline histogram in {text}");
        };
        let at = |le: f64| buckets.iter().find(|b| b.less_than == le).map(|b| b.count);
        assert_eq!(at(0.000_025), Some(0.0));
        assert_eq!(at(0.000_05), Some(3.0), "cumulative");
        assert_eq!(at(60.0), Some(3.0));
        assert_eq!(at(f64::INFINITY), Some(4.0), "the 100 s one only in +Inf");
    }
}
