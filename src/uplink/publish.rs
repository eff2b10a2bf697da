//! MQTT 3.1.1 PUBLISH encoding (§3.3) from a borrowed topic and payload, so the uplink
//! queues messages as encoded bytes without an owned packet per message.
//!
//! ```text
//! byte 0      0011 DQQR  (D: DUP, QQ: QoS, R: RETAIN)
//! 1..=4       remaining length, 7 bits per byte, low group first, bit 7 = more
//!             topic length (16 bits) and topic
//!             packet id (16 bits), QoS 1 and 2 only
//!             payload
//! ```

/// PUBLISH packet type in the high nibble of byte 0.
const PUBLISH: u8 = 0x30;
/// DUP flag in byte 0: a QoS 1 message sent again.
pub(super) const DUP: u8 = 0x08;
/// QoS 1 in the QoS bits of byte 0.
const QOS1: u8 = 0x02;
/// RETAIN flag in byte 0: the broker keeps the message for later subscribers.
pub(super) const RETAIN: u8 = 0x01;

/// Largest topic MQTT can carry (its length is a 16-bit field).
pub const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// Largest remaining length MQTT can encode (four 7-bit length bytes).
pub const MAX_REMAINING_LEN: usize = 268_435_455;

/// The remaining length of a PUBLISH of `topic_len` and `payload_len` bytes, or `None`
/// when MQTT cannot encode it (empty or oversized topic, oversized packet).
pub fn remaining_len(topic_len: usize, payload_len: usize, qos1: bool) -> Option<usize> {
    if topic_len == 0 || topic_len > MAX_TOPIC_LEN {
        return None;
    }
    let len = 2 + topic_len + if qos1 { 2 } else { 0 } + payload_len;
    (len <= MAX_REMAINING_LEN).then_some(len)
}

/// Where a written packet's fields sit, relative to its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Bytes written.
    pub len: usize,
    /// Offset of the packet id (QoS 1 only; 0 for QoS 0).
    pub pkid_at: usize,
}

/// Appends a PUBLISH packet (RETAIN clear) to `out`; `pkid` is written only for QoS 1.
/// `None`, with nothing written, when MQTT cannot encode it (see [`remaining_len`]).
pub fn write_publish(
    out: &mut Vec<u8>,
    topic: &str,
    payload: &[u8],
    qos1: bool,
    pkid: u16,
    dup: bool,
) -> Option<Written> {
    let remaining = remaining_len(topic.len(), payload.len(), qos1)?;
    let start = out.len();
    let mut flags = PUBLISH;
    if qos1 {
        flags |= QOS1;
    }
    if dup {
        flags |= DUP;
    }
    out.push(flags);
    let mut n = remaining;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    let pkid_at = if qos1 {
        let at = out.len() - start;
        out.extend_from_slice(&pkid.to_be_bytes());
        at
    } else {
        0
    };
    out.extend_from_slice(payload);
    Some(Written {
        len: out.len() - start,
        pkid_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use rumqttc::mqttbytes::v4::Publish;
    use rumqttc::mqttbytes::QoS;

    fn ours(topic: &str, payload: &[u8], qos1: bool, pkid: u16, dup: bool) -> Vec<u8> {
        let mut out = vec![0xee];
        let w = write_publish(&mut out, topic, payload, qos1, pkid, dup).expect("encodable");
        assert_eq!(out.remove(0), 0xee, "appends");
        assert_eq!(w.len, out.len());
        if qos1 {
            assert_eq!(&out[w.pkid_at..w.pkid_at + 2], &pkid.to_be_bytes());
        }
        out
    }

    fn theirs(topic: &str, payload: &[u8], qos1: bool, pkid: u16, dup: bool) -> Vec<u8> {
        let qos = if qos1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        let mut p = Publish::from_bytes(topic, qos, Bytes::copy_from_slice(payload));
        p.pkid = pkid;
        p.dup = dup;
        let mut out = BytesMut::new();
        p.write(&mut out).expect("rumqttc encodes");
        out.to_vec()
    }

    #[test]
    fn qos0_bytes() {
        assert_eq!(
            ours("a/b", b"hi", false, 0, false),
            [0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i']
        );
    }

    #[test]
    fn qos1_dup_bytes() {
        assert_eq!(
            ours("t", b"x", true, 0x1234, true),
            [0x3a, 6, 0, 1, b't', 0x12, 0x34, b'x']
        );
    }

    #[test]
    fn matches_rumqttc_across_length_boundaries() {
        // Remaining lengths around the 1-, 2- and 3-byte varint limits.
        for payload_len in [
            0, 1, 120, 121, 122, 123, 124, 125, 16_375, 16_380, 16_400, 2_097_200,
        ] {
            let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
            for topic in ["t", "lwm2m/ep-1/up/notify", &"x".repeat(300)] {
                for (qos1, pkid, dup) in [(false, 0, false), (true, 1, false), (true, 65535, true)]
                {
                    assert_eq!(
                        ours(topic, &payload, qos1, pkid, dup),
                        theirs(topic, &payload, qos1, pkid, dup),
                        "topic {} payload {payload_len} qos1 {qos1}",
                        topic.len()
                    );
                }
            }
        }
    }

    #[test]
    fn unencodable_writes_nothing() {
        let mut out = Vec::new();
        assert!(write_publish(&mut out, "", b"x", false, 0, false).is_none());
        let long = "x".repeat(MAX_TOPIC_LEN + 1);
        assert!(write_publish(&mut out, &long, b"x", true, 1, false).is_none());
        assert!(out.is_empty());
        assert_eq!(
            remaining_len(1, MAX_REMAINING_LEN - 3, false),
            Some(MAX_REMAINING_LEN)
        );
        assert_eq!(remaining_len(1, MAX_REMAINING_LEN - 2, false), None);
    }
}
