//! LwM2M 1.1 Send (`POST /dp`): data a registered device reports unasked, in SenML JSON or
//! CBOR, acknowledged 2.04 and published on the notify topic as
//! `{"msgType":"send","data":{"reqPath":"/dp","content":[...]}}`.

use std::net::SocketAddr;
use std::time::Instant;

use super::{Response, Shard, TopicKind};
use crate::coap::{Code, Message};
use crate::content::{self, ContentRef};
use crate::lwm2m::Path;

impl Shard {
    /// A request to `/dp`: the sender must be a registered endpoint (found by its address,
    /// as a Send carries no location) speaking for itself over its own link.
    pub(super) fn send_request(&mut self, now: Instant, from: SocketAddr, msg: &Message<'_>) {
        if self.check_duplicate(now, from, msg) {
            return;
        }
        if msg.code() != Code::POST {
            return self.respond(from, msg, Response::code(Code::METHOD_NOT_ALLOWED));
        }
        let Some(location) = self.endpoints.by_addr(from) else {
            // Not registered from this address (or moved without an Update): the device
            // registers or updates, then sends again.
            return self.respond(from, msg, Response::code(Code::NOT_FOUND));
        };
        if !self.may_act_for(location) {
            self.stats.forbidden += 1;
            return self.respond(from, msg, Response::code(Code::FORBIDDEN));
        }
        self.wake(now, location);
        let format = msg.content_format();
        if !matches!(
            format,
            Some(content::format::SENML_JSON | content::format::SENML_CBOR)
        ) {
            return self.respond(from, msg, Response::code(Code::UNSUPPORTED_CONTENT_FORMAT));
        }
        let Some((body, block1)) = self.take_body(now, from, msg) else {
            return;
        };
        let format = format.unwrap_or(content::format::SENML_JSON);
        let registry =
            super::downlink::definitions(&self.cfg.registry, self.endpoints.get(&location));
        let decoded = content::decode(format, &body, &Path::ROOT, registry);
        let content = match decoded {
            Ok(c) => c,
            Err(e) => {
                self.log_peer_error(now, from, &e);
                return self.respond(from, msg, Response::code(Code::BAD_REQUEST));
            }
        };
        self.json.clear();
        crate::translate::write_send(&mut self.json, ContentRef::Content(&content));
        self.publish_for(TopicKind::Notify, location);
        self.stats.sends += 1;
        self.respond(
            from,
            msg,
            Response {
                code: Code::CHANGED,
                location: None,
                block1,
            },
        );
    }
}
