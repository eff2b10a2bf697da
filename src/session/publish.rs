//! The shard's outgoing MQTT messages: an arena of topic and payload bytes drained after
//! every batch, so a steady stream of publishes reuses the same memory.

use std::net::SocketAddr;
use std::ops::Range;

use crate::config::{Qos, Translator, Translators};
use crate::translate::Mountpoint;

/// Bytes reserved up front for the topics of one batch of publishes.
const TOPIC_ARENA: usize = 16 * 1024;
/// Bytes reserved up front for the payloads of one batch of publishes.
const PAYLOAD_ARENA: usize = 64 * 1024;
/// Publishes per batch the index is sized for up front.
const QUEUED_PUBLISHES: usize = 256;

/// An MQTT message the shard wants published, borrowed from the shard's publish arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRef<'a> {
    /// Full topic (mountpoint applied).
    pub topic: &'a str,
    /// JSON payload.
    pub payload: &'a [u8],
    /// QoS of the translator it was published for.
    pub qos: Qos,
}

/// An owned copy of a [`PublishRef`], from [`super::Shard::poll_publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Full topic (mountpoint applied).
    pub topic: String,
    /// JSON payload.
    pub payload: Vec<u8>,
    /// QoS of the translator it was published for.
    pub qos: Qos,
}

/// Where one queued publish sits in the arenas.
#[derive(Debug, Clone)]
struct Queued {
    topic: Range<usize>,
    payload: Range<usize>,
    qos: Qos,
}

/// Publishes not yet drained: topics in one string, payloads in one buffer, an index of
/// both; `head` of them were already taken one by one.
#[derive(Debug)]
pub(super) struct PublishQueue {
    topics: String,
    payloads: Vec<u8>,
    list: Vec<Queued>,
    head: usize,
}

impl PublishQueue {
    pub(super) fn new() -> PublishQueue {
        PublishQueue {
            topics: String::with_capacity(TOPIC_ARENA),
            payloads: Vec::with_capacity(PAYLOAD_ARENA),
            list: Vec::with_capacity(QUEUED_PUBLISHES),
            head: 0,
        }
    }

    /// Queues `payload` on the topic of `translator` for `ep` at `peerhost`.
    pub(super) fn push(
        &mut self,
        mountpoint: &Mountpoint,
        translator: &Translator,
        ep: &str,
        peerhost: &str,
        payload: &[u8],
    ) {
        let topic = self.topics.len();
        mountpoint.append_topic(&mut self.topics, ep, peerhost, &translator.topic);
        let start = self.payloads.len();
        self.payloads.extend_from_slice(payload);
        self.list.push(Queued {
            topic: topic..self.topics.len(),
            payload: start..self.payloads.len(),
            qos: translator.qos,
        });
    }

    /// Publishes queued and not yet taken.
    pub(super) fn len(&self) -> usize {
        self.list.len() - self.head
    }

    /// Hands every queued publish to `publish`, oldest first, and empties the queue.
    pub(super) fn drain(&mut self, mut publish: impl FnMut(PublishRef<'_>)) {
        for q in self.list.get(self.head..).unwrap_or_default() {
            publish(self.view(q));
        }
        self.clear();
    }

    /// Takes the oldest publish as an owned copy.
    pub(super) fn pop(&mut self) -> Option<Publish> {
        let p = self.view(self.list.get(self.head)?);
        let owned = Publish {
            topic: p.topic.to_owned(),
            payload: p.payload.to_vec(),
            qos: p.qos,
        };
        self.head += 1;
        if self.head == self.list.len() {
            self.clear();
        }
        Some(owned)
    }

    fn view(&self, q: &Queued) -> PublishRef<'_> {
        PublishRef {
            topic: self.topics.get(q.topic.clone()).unwrap_or_default(),
            payload: self.payloads.get(q.payload.clone()).unwrap_or_default(),
            qos: q.qos,
        }
    }

    fn clear(&mut self) {
        self.topics.clear();
        self.payloads.clear();
        self.list.clear();
        self.head = 0;
    }
}

/// Which translator a message goes out on.
#[derive(Debug, Clone, Copy)]
pub(super) enum TopicKind {
    Register,
    Update,
    Event,
    Response,
    Notify,
    /// A notification of the Firmware Update object: `dm_notify`, else `notify`.
    DmNotify,
}

impl TopicKind {
    pub(super) fn translator(self, t: &Translators) -> &Translator {
        match self {
            TopicKind::DmNotify => t.dm_notify.as_ref().unwrap_or(&t.notify),
            TopicKind::Register => &t.register,
            TopicKind::Update => &t.update,
            TopicKind::Event => &t.event,
            TopicKind::Response => &t.response,
            TopicKind::Notify => &t.notify,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translator(topic: &str, qos: Qos) -> Translator {
        Translator {
            topic: topic.into(),
            qos,
        }
    }

    #[test]
    fn drains_in_order_and_reuses_the_arena() {
        let mp = Mountpoint::parse("lwm2m/${endpoint_name}/");
        let mut q = PublishQueue::new();
        q.push(&mp, &translator("up/resp", Qos::AtMostOnce), "a", "", b"1");
        q.push(
            &mp,
            &translator("up/notify", Qos::AtLeastOnce),
            "bb",
            "",
            b"{}",
        );
        assert_eq!(q.len(), 2);
        let mut seen = Vec::new();
        q.drain(|p| seen.push((p.topic.to_owned(), p.payload.to_vec(), p.qos)));
        assert_eq!(
            seen,
            [
                ("lwm2m/a/up/resp".to_owned(), b"1".to_vec(), Qos::AtMostOnce),
                (
                    "lwm2m/bb/up/notify".to_owned(),
                    b"{}".to_vec(),
                    Qos::AtLeastOnce
                ),
            ]
        );
        assert_eq!(q.len(), 0);
        let cap = (q.topics.capacity(), q.payloads.capacity());
        q.push(&mp, &translator("up/resp", Qos::AtMostOnce), "c", "", b"2");
        assert_eq!((q.topics.capacity(), q.payloads.capacity()), cap);
    }

    #[test]
    fn pop_takes_one_at_a_time_then_drain_takes_the_rest() {
        let mp = Mountpoint::parse("${peerhost}/");
        let mut q = PublishQueue::new();
        for (i, p) in [b"x", b"y", b"z"].iter().enumerate() {
            q.push(
                &mp,
                &translator("t", Qos::AtMostOnce),
                "e",
                &i.to_string(),
                *p,
            );
        }
        let first = q.pop().expect("queued");
        assert_eq!(
            (first.topic.as_str(), first.payload.as_slice()),
            ("0/t", &b"x"[..])
        );
        let mut rest = Vec::new();
        q.drain(|p| rest.push(p.topic.to_owned()));
        assert_eq!(rest, ["1/t", "2/t"]);
        assert!(q.pop().is_none());
    }
}

/// The textual IP of `addr` written into `buf`, without allocating.
pub(super) fn ip_text<'b>(addr: &SocketAddr, buf: &'b mut [u8; 64]) -> &'b str {
    use std::io::Write;
    let n = match addr {
        // Dotted quad by hand: the formatter costs more than the rest of a notification's
        // topic.
        SocketAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                let digits = [octet / 100, octet / 10 % 10, octet % 10];
                let skip = if octet >= 100 {
                    0
                } else if octet >= 10 {
                    1
                } else {
                    2
                };
                for d in &digits[skip..] {
                    buf[n] = b'0' + d;
                    n += 1;
                }
            }
            n
        }
        SocketAddr::V6(v6) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{}", v6.ip());
            cursor.position() as usize
        }
    };
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

#[cfg(test)]
mod ip_text_tests {
    use super::*;

    #[test]
    fn matches_the_standard_formatting() {
        for a in [
            "0.0.0.0:1",
            "1.2.3.4:5",
            "10.99.100.255:5683",
            "127.0.0.1:5683",
            "[::1]:5683",
            "[2001:db8::ff00:42:8329]:1",
        ] {
            let addr: SocketAddr = a.parse().expect("address");
            let mut buf = [0u8; 64];
            assert_eq!(ip_text(&addr, &mut buf), addr.ip().to_string());
        }
    }
}
