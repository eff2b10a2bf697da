//! What a simulated device is: compact per-device state, the payloads it serves (TLV,
//! SenML JSON, text) and its answers to the gateway's requests.

use lwm2m_gateway::coap::{option, Code, Message, MessageType, MessageWriter};

/// Content-Format text/plain.
pub const CF_TEXT: u16 = 0;
/// Content-Format application/vnd.oma.lwm2m+tlv.
pub const CF_TLV: u16 = 11542;
/// Content-Format application/senml+json.
pub const CF_SENML_JSON: u16 = 110;

/// The object list wakaama 1.1 registers with (`lwm2mclient` with its test object).
pub const WAKAAMA_OBJECTS: &str = "</>;rt=\"oma.lwm2m\";ct=110,</1>;ver=1.1,</1/0>,</2/0>,</3/0>,</4/0>,</5/0>,</6/0>,</7/0>,</31024>;ver=1.0,</31024/10>,</31024/11>,</31024/12>";

/// The CON request a device has in flight (CoAP NSTART = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Pending {
    /// Nothing in flight.
    None,
    /// Register.
    Register,
    /// Registration update.
    Update,
    /// Deregister.
    Deregister,
    /// A CON notification.
    Notify,
}

/// Lifecycle of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Life {
    /// Not registered (yet).
    New,
    /// Registered.
    Registered,
    /// Registration refused or timed out.
    Failed,
    /// Deregistered.
    Gone,
}

/// Per-device state; a million of them fit in well under 64 MiB.
#[derive(Debug, Clone, Copy)]
pub struct Device {
    /// When the in-flight request was due (ns since run start): latency is measured from it.
    pub pending_due: u64,
    /// Observe sequence number of the last notification (24 bits on the wire).
    pub obs_seq: u32,
    /// Last message ID used.
    pub mid: u16,
    /// Message ID of the in-flight request.
    pub pending_mid: u16,
    /// What is in flight.
    pub pending: Pending,
    /// Retransmissions of the in-flight request so far.
    pub attempts: u8,
    /// Lifecycle.
    pub life: Life,
    /// Whether the gateway observes the notify path.
    pub observed: bool,
    /// Registration location (`rd/<location>`).
    pub location: [u8; 16],
    /// Used bytes of `location`.
    pub location_len: u8,
    /// Token of the observe request.
    pub obs_token: [u8; 8],
    /// Used bytes of `obs_token`.
    pub obs_token_len: u8,
    /// Which of its two loopback addresses the device sends from; flipped by a rebinding.
    pub addr_gen: u8,
    /// Queue mode: the device listens until this time (ms since run start) after each of
    /// its own sends, and sleeps (drops requests) after it.
    pub awake_until_ms: u32,
}

impl Device {
    /// A device that has not registered; `seed` spreads message IDs.
    pub fn new(seed: u32) -> Device {
        Device {
            pending_due: 0,
            obs_seq: 0,
            mid: (seed as u16).wrapping_mul(7919),
            pending_mid: 0,
            pending: Pending::None,
            attempts: 0,
            life: Life::New,
            observed: false,
            location: [0; 16],
            location_len: 0,
            obs_token: [0; 8],
            obs_token_len: 0,
            addr_gen: 0,
            awake_until_ms: 0,
        }
    }

    /// A fresh message ID.
    pub fn next_mid(&mut self) -> u16 {
        self.mid = self.mid.wrapping_add(1);
        self.mid
    }

    /// The registration location.
    pub fn location(&self) -> &[u8] {
        &self.location[..usize::from(self.location_len)]
    }
}

/// A resource value a device serves.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// LwM2M Integer.
    Int(i64),
    /// LwM2M Float.
    Float(f64),
    /// LwM2M String.
    Str(String),
}

/// Payload format of notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Format {
    /// OMA TLV (11542).
    Tlv,
    /// SenML JSON (110).
    Senml,
}

/// A resource path `/obj/inst/res` (the notify path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourcePath {
    /// Object ID.
    pub object: u16,
    /// Instance ID.
    pub instance: u16,
    /// Resource ID.
    pub resource: u16,
}

impl std::str::FromStr for ResourcePath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ids: Vec<u16> = s
            .strip_prefix('/')
            .ok_or("a path starts with '/'")?
            .split('/')
            .map(|p| p.parse::<u16>().map_err(|_| format!("'{p}' is not an ID")))
            .collect::<Result<_, _>>()?;
        match ids[..] {
            [object, instance, resource] => Ok(ResourcePath {
                object,
                instance,
                resource,
            }),
            _ => Err("expected /object/instance/resource".into()),
        }
    }
}

impl std::fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}/{}/{}", self.object, self.instance, self.resource)
    }
}

/// Whether a resource is a Float (IPSO sensor values) rather than an Integer.
fn is_float(object: u16, resource: u16) -> bool {
    object >= 3300 && matches!(resource, 5601 | 5602 | 5700)
}

/// The value a notification carries: its due time (ns since run start), so the MQTT side
/// can compute end-to-end latency.
pub fn stamp_value(path: ResourcePath, due_ns: u64) -> Value {
    if is_float(path.object, path.resource) {
        Value::Float(due_ns as f64)
    } else {
        Value::Int(due_ns as i64)
    }
}

/// Resources of Device (/3) instance 0 that a read of `/3/0` returns.
const DEVICE_RESOURCES: [u16; 7] = [0, 1, 2, 3, 9, 13, 16];

/// The value of resource `res` of `/obj/inst` on device `index`.
fn resource_value(index: u32, object: u16, res: u16, now_ns: u64) -> Option<Value> {
    Some(match (object, res) {
        (3, 0) => Value::Str("loadgen".into()),
        (3, 1) => Value::Str("wakaama-sim".into()),
        (3, 2) => Value::Str(format!("SN{index:08}")),
        (3, 3) => Value::Str("1.0".into()),
        (3, 9) => Value::Int(100 - i64::from(index % 50)),
        (3, 13) => Value::Int((now_ns / 1_000_000_000) as i64 + 1_700_000_000),
        (3, 16) => Value::Str("U".into()),
        (o, r) if is_float(o, r) => Value::Float(20.0 + f64::from(index % 100) / 10.0),
        _ => return None,
    })
}

/// Appends one TLV "resource with value" record.
pub fn tlv_resource(out: &mut Vec<u8>, id: u16, value: &Value) {
    let mut num = [0u8; 8];
    let bytes: &[u8] = match value {
        Value::Int(v) => {
            let n = if i8::try_from(*v).is_ok() {
                1
            } else if i16::try_from(*v).is_ok() {
                2
            } else if i32::try_from(*v).is_ok() {
                4
            } else {
                8
            };
            num[..n].copy_from_slice(&v.to_be_bytes()[8 - n..]);
            &num[..n]
        }
        Value::Float(v) => {
            num.copy_from_slice(&v.to_be_bytes());
            &num
        }
        Value::Str(s) => s.as_bytes(),
    };
    let mut ty = 0b1100_0000u8;
    if id > 0xff {
        ty |= 0b0010_0000;
    }
    let len = bytes.len();
    if len < 8 {
        ty |= len as u8;
    } else if len <= 0xff {
        ty |= 0b0000_1000;
    } else {
        ty |= 0b0001_0000;
    }
    out.push(ty);
    if id > 0xff {
        out.extend_from_slice(&id.to_be_bytes());
    } else {
        out.push(id as u8);
    }
    if (8..=0xff).contains(&len) {
        out.push(len as u8);
    } else if len > 0xff {
        out.extend_from_slice(&(len.min(0xffff) as u16).to_be_bytes());
    }
    out.extend_from_slice(bytes);
}

/// Appends a SenML JSON array with one record for `path`.
pub fn senml_record(out: &mut Vec<u8>, path: ResourcePath, value: &Value) {
    let v = match value {
        Value::Int(v) => format!("\"v\":{v}"),
        Value::Float(v) => format!("\"v\":{v:?}"),
        Value::Str(s) => format!("\"vs\":\"{}\"", s.replace(['"', '\\'], "")),
    };
    out.extend_from_slice(
        format!(
            "[{{\"bn\":\"/{}/{}/\",\"n\":\"{}\",{v}}}]",
            path.object, path.instance, path.resource
        )
        .as_bytes(),
    );
}

/// Appends the text/plain form of `value`.
fn text(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Int(v) => out.extend_from_slice(v.to_string().as_bytes()),
        Value::Float(v) => out.extend_from_slice(format!("{v:?}").as_bytes()),
        Value::Str(s) => out.extend_from_slice(s.as_bytes()),
    }
}

/// Encodes `value` of `path` as `format`; returns the Content-Format.
pub fn encode_value(out: &mut Vec<u8>, format: Format, path: ResourcePath, value: &Value) -> u16 {
    match format {
        Format::Tlv => {
            tlv_resource(out, path.resource, value);
            CF_TLV
        }
        Format::Senml => {
            senml_record(out, path, value);
            CF_SENML_JSON
        }
    }
}

/// What a request from the gateway did to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Observation of the notify path started.
    Observed,
    /// Observation cancelled.
    Cancelled,
    /// Anything else answered.
    Answered,
}

/// Answers request `req` sent to device `index` into `out` (cleared first). The reply is a
/// piggybacked ACK for a CON, a NON otherwise.
pub fn answer(
    dev: &mut Device,
    index: u32,
    req: &Message<'_>,
    notify_path: ResourcePath,
    format: Format,
    now_ns: u64,
    out: &mut Vec<u8>,
) -> Served {
    out.clear();
    let (ty, mid) = match req.ty() {
        MessageType::Con => (MessageType::Ack, req.mid()),
        _ => (MessageType::Non, dev.next_mid()),
    };
    let mut ids = [0u16; 3];
    let mut depth = 0;
    let mut bad_path = false;
    for seg in req.uri_path() {
        let parsed = std::str::from_utf8(seg).ok().and_then(|s| s.parse().ok());
        match (parsed, ids.get_mut(depth)) {
            (Some(id), Some(slot)) => *slot = id,
            _ => bad_path = true,
        }
        depth += 1;
    }
    let code = req.code();
    if code != Code::GET {
        let reply = match code {
            Code::DELETE => Code::DELETED,
            _ => Code::CHANGED,
        };
        MessageWriter::new(out, ty, reply, mid, req.token()).finish();
        return Served::Answered;
    }
    let observe = req.observe();
    let target = (depth == 3 && !bad_path).then_some(ResourcePath {
        object: ids[0],
        instance: ids[1],
        resource: ids[2],
    });
    if observe == Some(1) && target == Some(notify_path) {
        dev.observed = false;
    }
    let mut payload = Vec::with_capacity(128);
    let accept = req.accept();
    let cf = match (target, depth, bad_path) {
        (Some(path), _, _) => match resource_value(index, path.object, path.resource, now_ns) {
            Some(v) if accept == Some(CF_TEXT) => {
                text(&mut payload, &v);
                Some(CF_TEXT)
            }
            Some(v) if accept == Some(CF_SENML_JSON) => {
                Some(encode_value(&mut payload, Format::Senml, path, &v))
            }
            Some(_) if observe == Some(0) && path == notify_path && accept.is_none() => {
                let v = stamp_value(path, now_ns);
                Some(encode_value(&mut payload, format, path, &v))
            }
            Some(v) => Some(encode_value(&mut payload, Format::Tlv, path, &v)),
            None => None,
        },
        (None, 2, false) if ids[0] == 3 && ids[1] == 0 => {
            for r in DEVICE_RESOURCES {
                if let Some(v) = resource_value(index, 3, r, now_ns) {
                    tlv_resource(&mut payload, r, &v);
                }
            }
            Some(CF_TLV)
        }
        _ => None,
    };
    let Some(cf) = cf else {
        MessageWriter::new(out, ty, Code::NOT_FOUND, mid, req.token()).finish();
        return Served::Answered;
    };
    let mut served = Served::Answered;
    let mut w = MessageWriter::new(out, ty, Code::CONTENT, mid, req.token());
    match observe {
        Some(0) if target == Some(notify_path) => {
            let len = req.token().len().min(8);
            dev.obs_token[..len].copy_from_slice(&req.token()[..len]);
            dev.obs_token_len = len as u8;
            dev.obs_seq = dev.obs_seq.wrapping_add(1) & 0x00ff_ffff;
            w.uint_option(option::OBSERVE, dev.obs_seq);
            served = if dev.observed {
                Served::Answered
            } else {
                Served::Observed
            };
            dev.observed = true;
        }
        Some(1) if target == Some(notify_path) => served = Served::Cancelled,
        _ => {}
    }
    w.uint_option(option::CONTENT_FORMAT, u32::from(cf))
        .payload(&payload);
    w.finish();
    served
}

/// Encodes the next notification of an observed device into `out` (cleared first).
pub fn notification(
    dev: &mut Device,
    con: bool,
    path: ResourcePath,
    format: Format,
    due_ns: u64,
    out: &mut Vec<u8>,
) -> u16 {
    out.clear();
    let mid = dev.next_mid();
    dev.obs_seq = dev.obs_seq.wrapping_add(1) & 0x00ff_ffff;
    let ty = if con {
        MessageType::Con
    } else {
        MessageType::Non
    };
    let mut payload = Vec::with_capacity(64);
    let cf = encode_value(&mut payload, format, path, &stamp_value(path, due_ns));
    let token = &dev.obs_token[..usize::from(dev.obs_token_len)];
    let mut w = MessageWriter::new(out, ty, Code::CONTENT, mid, token);
    w.uint_option(option::OBSERVE, dev.obs_seq)
        .uint_option(option::CONTENT_FORMAT, u32::from(cf))
        .payload(&payload);
    w.finish();
    mid
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATTERY: ResourcePath = ResourcePath {
        object: 3,
        instance: 0,
        resource: 9,
    };

    #[test]
    fn device_state_is_compact() {
        assert!(std::mem::size_of::<Device>() <= 64);
    }

    #[test]
    fn tlv_records_follow_oma_layout() {
        let mut out = Vec::new();
        tlv_resource(&mut out, 9, &Value::Int(100));
        assert_eq!(out, [0xc1, 9, 100]);
        out.clear();
        tlv_resource(&mut out, 5700, &Value::Float(1.5));
        assert_eq!(&out[..3], [0xe8, 0x16, 0x44]);
        assert_eq!(out[3], 8);
        assert_eq!(&out[4..], 1.5f64.to_be_bytes());
        out.clear();
        tlv_resource(&mut out, 0, &Value::Str("loadgen".into()));
        assert_eq!(out, b"\xc7\x00loadgen");
        out.clear();
        tlv_resource(&mut out, 13, &Value::Int(1_700_000_000));
        assert_eq!(out, [0xc4, 13, 0x65, 0x53, 0xf1, 0x00]);
    }

    #[test]
    fn senml_carries_the_stamp() {
        let mut out = Vec::new();
        senml_record(&mut out, BATTERY, &stamp_value(BATTERY, 123_456));
        assert_eq!(out, br#"[{"bn":"/3/0/","n":"9","v":123456}]"#);
    }

    #[test]
    fn observe_is_acknowledged_with_token_and_sequence_then_notifications_follow() {
        let mut req = Vec::new();
        let mut w = MessageWriter::new(&mut req, MessageType::Con, Code::GET, 77, b"tk12");
        w.uint_option(option::OBSERVE, 0)
            .option(option::URI_PATH, b"3")
            .option(option::URI_PATH, b"0")
            .option(option::URI_PATH, b"9");
        w.finish();
        let req = Message::parse(&req).expect("valid request");
        let mut dev = Device::new(1);
        let mut out = Vec::new();
        let served = answer(&mut dev, 1, &req, BATTERY, Format::Tlv, 42_000, &mut out);
        assert_eq!(served, Served::Observed);
        let ack = Message::parse(&out).expect("valid ack");
        assert_eq!(
            (ack.ty(), ack.code(), ack.mid(), ack.token()),
            (MessageType::Ack, Code::CONTENT, 77, &b"tk12"[..])
        );
        assert_eq!(ack.observe(), Some(1));
        assert_eq!(ack.payload(), [0xc4, 9, 0, 0, 0xa4, 0x10]);
        notification(&mut dev, false, BATTERY, Format::Senml, 9_000_000, &mut out);
        let n = Message::parse(&out).expect("valid notification");
        assert_eq!(
            (n.ty(), n.token(), n.observe()),
            (MessageType::Non, &b"tk12"[..], Some(2))
        );
        assert_eq!(n.content_format(), Some(CF_SENML_JSON));
        assert_eq!(n.payload(), br#"[{"bn":"/3/0/","n":"9","v":9000000}]"#);
    }

    #[test]
    fn read_of_device_object_is_tlv_and_unknown_paths_are_not_found() {
        let mut req = Vec::new();
        let mut w = MessageWriter::new(&mut req, MessageType::Con, Code::GET, 5, b"r");
        w.option(option::URI_PATH, b"3")
            .option(option::URI_PATH, b"0");
        w.finish();
        let req = Message::parse(&req).expect("valid request");
        let mut dev = Device::new(7);
        let mut out = Vec::new();
        answer(&mut dev, 7, &req, BATTERY, Format::Tlv, 0, &mut out);
        let ack = Message::parse(&out).expect("valid ack");
        assert_eq!(ack.code(), Code::CONTENT);
        assert_eq!(ack.content_format(), Some(CF_TLV));
        assert!(ack.payload().starts_with(b"\xc7\x00loadgen"));
        let mut req = Vec::new();
        let mut w = MessageWriter::new(&mut req, MessageType::Con, Code::GET, 6, b"r");
        w.option(option::URI_PATH, b"9999")
            .option(option::URI_PATH, b"x");
        w.finish();
        let req = Message::parse(&req).expect("valid request");
        answer(&mut dev, 7, &req, BATTERY, Format::Tlv, 0, &mut out);
        assert_eq!(Message::parse(&out).expect("valid").code(), Code::NOT_FOUND);
    }
}
