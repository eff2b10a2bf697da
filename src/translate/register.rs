//! Uplink JSON for the registration interface: `register`, `update` and `event` messages
//! (SPEC §5).

use super::json::ObjectWriter;
use crate::dtls::Security;
use crate::lwm2m::registration::{is_secret_param, Registration};

/// Which registration message is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegMsgType {
    /// A new registration (`"msgType":"register"`).
    Register,
    /// An Update of an existing one (`"msgType":"update"`).
    Update,
}

impl RegMsgType {
    /// The `msgType` value.
    pub fn as_str(self) -> &'static str {
        match self {
            RegMsgType::Register => "register",
            RegMsgType::Update => "update",
        }
    }
}

/// Lifecycle events published on the event topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The device deregistered.
    Deregister,
    /// The registration lifetime ran out.
    Expired,
    /// A new Register of the same endpoint name replaced the registration.
    Replaced,
    /// The device moved to a new source address (NAT rebinding).
    Rebound,
}

impl Event {
    /// The `event` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Deregister => "deregister",
            Event::Expired => "expired",
            Event::Replaced => "replaced",
            Event::Rebound => "rebound",
        }
    }
}

/// `data` keys written from dedicated fields; a device parameter of the same name is
/// skipped so that no key appears twice.
const RESERVED_KEYS: [&str; 7] = [
    "ep",
    "lt",
    "lwm2m",
    "b",
    "alternatePath",
    "objectList",
    "security",
];

/// Appends a `register` or `update` message for `reg` to `out`:
/// `{"msgType":"register","data":{"ep":"ep1","lt":300,"lwm2m":"1.1","b":"U",...}}`.
///
/// `data` holds every query parameter as a string except secrets, `lt` as a number, the
/// version and binding always, and `alternatePath`/`objectList` when the device sent an
/// object list. For an Update, `reg` is the registration after the Update was applied.
pub fn write_register(
    out: &mut Vec<u8>,
    msg_type: RegMsgType,
    reg: &Registration,
    security: Security,
) {
    let mut msg = ObjectWriter::begin(out);
    msg.str("msgType", msg_type.as_str());
    let mut data = ObjectWriter::begin(msg.key("data"));
    data.str("ep", &reg.ep)
        .u64("lt", u64::from(reg.lifetime))
        .str("lwm2m", reg.version.as_str())
        .str("b", reg.binding.as_str());
    for (name, value) in &reg.params {
        if !is_secret_param(name) && !RESERVED_KEYS.contains(&name.as_str()) {
            data.str(name, value);
        }
    }
    if let Some(list) = &reg.object_list {
        data.str("alternatePath", &list.alternate_path);
        data.str_array("objectList", list.links.iter().map(|l| l.path.as_str()));
    }
    data.str("security", security.as_str());
    data.end();
    msg.end();
}

/// Appends an event message to `out`: `{"msgType":"event","data":{"ep":"ep1","event":"deregister"}}`.
pub fn write_event(out: &mut Vec<u8>, ep: &str, event: Event) {
    let mut msg = ObjectWriter::begin(out);
    msg.str("msgType", "event");
    let mut data = ObjectWriter::begin(msg.key("data"));
    data.str("ep", ep).str("event", event.as_str());
    data.end();
    msg.end();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lwm2m::registration::{parse_query, Limits};
    use serde_json::{json, Value};

    fn register(params: &[&str], payload: Option<&[u8]>) -> Registration {
        let q = parse_query(params.iter().map(|s| s.as_bytes())).expect("query");
        Registration::from_register(q, payload, &Limits::default()).expect("register")
    }

    fn written(msg_type: RegMsgType, reg: &Registration) -> (String, Value) {
        let mut out = Vec::new();
        write_register(&mut out, msg_type, reg, Security::None);
        let text = String::from_utf8(out).expect("utf-8");
        let value = serde_json::from_str(&text).expect("valid JSON");
        (text, value)
    }

    /// Every `data` value is a string except `lt` (number) and `objectList` (array).
    fn assert_key_types(v: &Value) {
        for (k, v) in v["data"].as_object().expect("data object") {
            match k.as_str() {
                "lt" => assert!(v.is_u64(), "lt is a number"),
                "objectList" => {
                    assert!(v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
                }
                _ => assert!(v.is_string(), "{k} is a string"),
            }
        }
    }

    #[test]
    fn wakaama_register_exact() {
        let reg = register(
            &["lwm2m=1.1", "ep=peer-ep1", "b=U", "lt=300"],
            Some(b"</>;rt=\"oma.lwm2m\";ct=110,</1>;ver=1.1,</1/0>,</2/0>,</3/0>,</4/0>,</5/0>,</6/0>,</7/0>,</31024>;ver=1.0,</31024/10>,</31024/11>,</31024/12>"),
        );
        let (text, v) = written(RegMsgType::Register, &reg);
        assert_eq!(
            text,
            r#"{"msgType":"register","data":{"ep":"peer-ep1","lt":300,"lwm2m":"1.1","b":"U","alternatePath":"/","objectList":["/1","/1/0","/2/0","/3/0","/4/0","/5/0","/6/0","/7/0","/31024","/31024/10","/31024/11","/31024/12"],"security":"none"}}"#
        );
        assert_key_types(&v);
    }

    #[test]
    fn anjay_register_without_binding() {
        let reg = register(
            &["lwm2m=1.2", "ep=anjay-ep1", "lt=300"],
            Some(b"</1/1>,</2>,</3/0>,</10>;ver=1.1,</3303/0>"),
        );
        let (_, v) = written(RegMsgType::Register, &reg);
        assert_eq!(
            v,
            json!({"msgType":"register","data":{"ep":"anjay-ep1","lt":300,"lwm2m":"1.2","b":"U",
                "alternatePath":"/","objectList":["/1/1","/2","/3/0","/10","/3303/0"],"security":"none"}})
        );
        assert_key_types(&v);
    }

    #[test]
    fn params_pass_secrets_do_not() {
        let reg = register(
            &[
                "ep=e",
                "lt=60",
                "sms=+4912",
                "Password=p",
                "token=t",
                "KEY=k",
                "secret=s",
                "access_token=a",
                "private_key=x",
                "apn=iot.psm",
                "Q",
                "objectList=x",
                "security=psk",
            ],
            None,
        );
        let (text, v) = written(RegMsgType::Register, &reg);
        assert_eq!(
            text,
            r#"{"msgType":"register","data":{"ep":"e","lt":60,"lwm2m":"1.0","b":"U","sms":"+4912","apn":"iot.psm","Q":"","security":"none"}}"#
        );
        assert_key_types(&v);
    }

    #[test]
    fn update_is_the_merged_registration() {
        let limits = Limits::default();
        let mut reg = register(&["ep=e", "lwm2m=1.1", "lt=60", "sms=1"], Some(b"</3/0>"));
        let q = parse_query(["lt=120", "sms=2", "b=UQ"].iter().map(|s| s.as_bytes())).expect("q");
        reg.apply_update(q, None, &limits).expect("update");
        let (_, v) = written(RegMsgType::Update, &reg);
        assert_eq!(
            v,
            json!({"msgType":"update","data":{"ep":"e","lt":120,"lwm2m":"1.1","b":"UQ","sms":"2",
                "alternatePath":"/","objectList":["/3/0"],"security":"none"}})
        );
    }

    #[test]
    fn alternate_path_is_reported() {
        let reg = register(&["ep=e"], Some(b"</lwm2m>;rt=\"oma.lwm2m\",</lwm2m/3/0>"));
        let (_, v) = written(RegMsgType::Register, &reg);
        assert_eq!(v["data"]["alternatePath"], "/lwm2m");
        assert_eq!(v["data"]["objectList"], json!(["/3/0"]));
    }

    #[test]
    fn odd_parameter_text_stays_valid_json() {
        let reg = register(&["ep=ü\"q\\", "note=line\u{7f}\"\u{2028}"], None);
        let (_, v) = written(RegMsgType::Register, &reg);
        assert_eq!(v["data"]["ep"], "ü\"q\\");
        assert_eq!(v["data"]["note"], "line\u{7f}\"\u{2028}");
    }

    #[test]
    fn events() {
        for (event, name) in [
            (Event::Deregister, "deregister"),
            (Event::Expired, "expired"),
            (Event::Replaced, "replaced"),
            (Event::Rebound, "rebound"),
        ] {
            let mut out = Vec::new();
            write_event(&mut out, "ep1", event);
            assert_eq!(
                String::from_utf8(out).expect("utf-8"),
                format!(r#"{{"msgType":"event","data":{{"ep":"ep1","event":"{name}"}}}}"#)
            );
        }
        let mut out = Vec::new();
        write_event(&mut out, "a\"\n", Event::Expired);
        let v: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["data"]["ep"], "a\"\n");
    }

    mod json_validity {
        use super::*;
        use proptest::prelude::*;
        use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

        /// Member names of a JSON object in text order, duplicates kept.
        struct KeyList;

        impl<'de> Visitor<'de> for KeyList {
            type Value = Vec<String>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, _)) = map.next_entry::<String, IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(keys)
            }
        }

        proptest! {
            #[test]
            fn any_ep_and_params_give_valid_json_without_duplicate_keys(
                ep in any::<String>(),
                params in proptest::collection::vec((any::<String>(), any::<String>()), 0..6),
                reserved in proptest::sample::select(vec!["ep", "lt", "objectList", "Token", "x"]),
            ) {
                let mut reg = register(&["ep=e", "lwm2m=1.1"], Some(b"</3/0>"));
                reg.ep = ep.as_str().into();
                reg.params.push((reserved.to_owned(), "v".to_owned()));
                for (n, v) in params {
                    if !reg.params.iter().any(|(m, _)| *m == n) {
                        reg.params.push((n, v));
                    }
                }
                let mut out = Vec::new();
                write_register(&mut out, RegMsgType::Update, &reg, Security::None);
                let v: Value = serde_json::from_slice(&out).expect("valid JSON");
                prop_assert_eq!(v["data"]["ep"].as_str(), Some(ep.as_str()));
                let data = serde_json::to_string(&v["data"]).expect("data");
                let mut keys = serde_json::Deserializer::from_str(&data)
                    .deserialize_map(KeyList)
                    .expect("keys");
                let raw = String::from_utf8(out).expect("utf-8");
                let start = raw.find("\"data\":").expect("data") + 7;
                let mut raw_keys = serde_json::Deserializer::from_str(&raw[start..raw.len() - 1])
                    .deserialize_map(KeyList)
                    .expect("raw keys");
                prop_assert_eq!(raw_keys.len(), keys.len(), "duplicate keys in {}", raw);
                raw_keys.sort();
                keys.sort();
                prop_assert_eq!(raw_keys, keys);
                prop_assert!(!v["data"].as_object().expect("data").keys().any(|k| is_secret_param(k)));
            }
        }
    }
}
