//! The LwM2M registration interface on a shard: Register, Update, Deregister, expiry,
//! re-register, NAT rebinding, and the cross-shard bookkeeping they need.

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{
    directory_shard, home_shard, Endpoint, Handoff, Link, Location, Migrating, Response, Shard,
    TopicKind, MAX_HOPS,
};
use crate::coap::{Block, BlockProgress, Code, Message, MessageType, EXCHANGE_LIFETIME};
use crate::config::UpdatePublishCondition;
use crate::dtls::Security;
use crate::lwm2m::{parse_query, Registration, RegistrationError};
use crate::translate::{Event, RegMsgType};

/// CoRE link format (RFC 6690), what a Register or Update payload should be labelled.
const CONTENT_FORMAT_LINK: u16 = 40;

/// The object list a Register or Update carries, `None` without a payload. The
/// Content-Format is not checked here: devices label object lists text/plain or not at
/// all (EMQX accepts them), so any payload that parses as links is taken.
fn object_list_payload(body: &[u8]) -> Option<&[u8]> {
    (!body.is_empty()).then_some(body)
}

/// The code a refused Register or Update gets: an object list that does not parse and was
/// labelled with a Content-Format other than link-format gets 4.15 (the format is what is
/// wrong), every other refusal the error's own code.
fn error_code(msg: &Message<'_>, e: &RegistrationError) -> Code {
    let list_error = matches!(
        e,
        RegistrationError::MalformedLink { .. } | RegistrationError::ObjectListNotUtf8
    );
    if list_error
        && msg
            .content_format()
            .is_some_and(|cf| cf != CONTENT_FORMAT_LINK)
    {
        return Code::UNSUPPORTED_CONTENT_FORMAT;
    }
    let (class, detail) = e.response_class();
    Code::new(class, detail)
}

impl Shard {
    /// Routes a request by Uri-Path: `/rd` and `/rd/<id>` are the registration interface,
    /// everything else is 4.04.
    pub(super) fn handle_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        arrived_on: usize,
        hops: u8,
        msg: &Message<'_>,
        data: &[u8],
    ) {
        let mut path = msg.uri_path();
        let (first, second, more) = (path.next(), path.next(), path.next().is_some());
        if first == Some(b"rd") {
            self.last_interactive = Some(now);
        }
        match (first, second, more) {
            (Some(b"rd"), None, false) => {
                if self.check_duplicate(now, from, msg) {
                    return;
                }
                if msg.code() != Code::POST {
                    return self.respond(from, msg, Response::code(Code::METHOD_NOT_ALLOWED));
                }
                if let Some((body, block1)) = self.take_body(now, from, msg) {
                    self.register(now, from, msg, &body, block1);
                }
            }
            (Some(b"dp"), None, false) => self.send_request(now, from, msg),
            (Some(b"rd"), Some(id), false) => {
                if let Some(location) = Location::parse(id) {
                    if self.endpoints.contains_key(&location) {
                        if self.check_duplicate(now, from, msg) {
                            return;
                        }
                        if !self.may_act_for(location) {
                            // Only the identity that registered may update, deregister
                            // or rebind a registration made over DTLS.
                            self.stats.forbidden += 1;
                            return self.respond(from, msg, Response::code(Code::FORBIDDEN));
                        }
                        return self.registration_request(now, from, arrived_on, msg, location);
                    }
                    if hops < MAX_HOPS {
                        let home = home_shard(location, self.cfg.shards);
                        let next = if home != self.cfg.shard {
                            Some(home)
                        } else {
                            self.moved.get(&location.key).copied()
                        };
                        if let Some(next) = next {
                            return self.forward(next, from, arrived_on, hops, now, data);
                        }
                    }
                }
                if !self.check_duplicate(now, from, msg) {
                    self.respond(from, msg, Response::code(Code::NOT_FOUND));
                }
            }
            _ => {
                if !self.check_duplicate(now, from, msg) {
                    // A DELETE without a path cannot name a registration: 4.00, as EMQX.
                    let code = if first.is_none() && msg.code() == Code::DELETE {
                        Code::BAD_REQUEST
                    } else {
                        Code::NOT_FOUND
                    };
                    self.respond(from, msg, Response::code(code));
                }
            }
        }
    }

    fn registration_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        arrived_on: usize,
        msg: &Message<'_>,
        location: Location,
    ) {
        match msg.code() {
            Code::POST => {
                if let Some((body, block1)) = self.take_body(now, from, msg) {
                    self.update(now, from, arrived_on, msg, location, &body, block1);
                }
            }
            Code::DELETE => {
                self.stats.deregistered += 1;
                self.remove_endpoint(now, location, Event::Deregister, true);
                self.respond(from, msg, Response::code(Code::DELETED));
            }
            _ => self.respond(from, msg, Response::code(Code::METHOD_NOT_ALLOWED)),
        }
    }

    /// The request body: the payload itself, or a reassembled Block1 transfer once its last
    /// block arrived. `None` when a response (2.31 Continue or an error) was already queued.
    pub(super) fn take_body<'m>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &Message<'m>,
    ) -> Option<(Cow<'m, [u8]>, Option<Block>)> {
        let Some(block) = msg.block1() else {
            return Some((Cow::Borrowed(msg.payload()), None));
        };
        let mut h = ahash::RandomState::with_seeds(5, 6, 7, 8).build_hasher();
        h.write_u8(msg.code().0);
        for seg in msg.uri_path() {
            h.write(seg);
            h.write_u8(0);
        }
        for q in msg.uri_query() {
            h.write(q);
            h.write_u8(1);
        }
        match self
            .blocks
            .push(now, from, h.finish(), block, msg.payload())
        {
            Ok(BlockProgress::Continue) => {
                let echo = Block {
                    more: true,
                    ..block
                };
                self.respond(
                    from,
                    msg,
                    Response {
                        code: Code::CONTINUE,
                        location: None,
                        block1: Some(echo),
                    },
                );
                None
            }
            Ok(BlockProgress::Complete(body)) => Some((Cow::Owned(body), Some(block))),
            Err(e) => {
                self.log_peer_error(now, from, &e);
                self.respond(from, msg, Response::code(e.code()));
                None
            }
        }
    }

    fn register(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &Message<'_>,
        body: &[u8],
        block1: Option<Block>,
    ) {
        let payload = object_list_payload(body);
        let registration = match parse_query(msg.uri_query()).and_then(|q| {
            Registration::from_register_shared(
                q,
                payload,
                &self.cfg.limits,
                &self.cfg.psm_apns,
                &mut self.object_lists,
            )
        }) {
            Ok(r) => r,
            Err(e) => {
                self.log_peer_error(now, from, &e);
                return self.respond(from, msg, Response::code(error_code(msg, &e)));
            }
        };
        if !self.may_register(&registration.ep) {
            self.stats.forbidden += 1;
            self.log_peer_error(
                now,
                from,
                &format_args!(
                    "Register of {:?} refused: not its identity",
                    &*registration.ep
                ),
            );
            return self.respond(from, msg, Response::code(Code::FORBIDDEN));
        }
        let replacing = self.endpoints.by_name(&registration.ep);
        if let Some(old) = replacing.filter(|&old| self.is_retransmission(now, from, msg, old)) {
            // The exchange cache already forgot this Register: answer it again rather
            // than replace the registration it created.
            self.stats.duplicates += 1;
            return self.respond(
                from,
                msg,
                Response {
                    code: Code::CREATED,
                    location: Some(old),
                    block1,
                },
            );
        }
        if replacing.is_none() && self.endpoints.len() >= self.cfg.max_endpoints
            || !self.rate.allow(now)
        {
            self.stats.overloaded += 1;
            return self.respond(from, msg, Response::code(Code::SERVICE_UNAVAILABLE));
        }
        if let Some(old) = replacing {
            self.stats.replaced += 1;
            self.remove_endpoint(now, old, Event::Replaced, false);
        }
        let location = self.new_location();
        let expires = self.deadline(now, registration.lifetime);
        let name = registration.ep.clone();

        self.json.clear();
        let security = self.link.security();
        crate::translate::write_register(
            &mut self.json,
            RegMsgType::Register,
            &registration,
            security,
        );
        self.publish(TopicKind::Register, &name, from);

        self.endpoints.insert(
            location,
            Endpoint {
                home: location.home,
                generation: 0,
                registration,
                addr: from,
                expires,
                registered: self.secs_signed(now),
                register_mid: msg.mid(),
                security,
                downlink: None,
            },
        );
        self.expiry.push(std::cmp::Reverse((expires, location.key)));
        self.journal_endpoint(location);
        self.stats.registered += 1;
        self.respond(
            from,
            msg,
            Response {
                code: Code::CREATED,
                location: Some(location),
                block1,
            },
        );

        let dir = directory_shard(&name, self.cfg.shards);
        let owner = self.cfg.shard;
        self.route(
            now,
            dir,
            Handoff::Claim {
                ep: name,
                location,
                owner,
                fresh: true,
                secure: security != Security::None,
            },
        );
        self.wake(now, location);
        self.auto_observe(now, location);
    }

    /// Whether a confirmable Register is a retransmission of the one that created `old`:
    /// same address and message id within the exchange lifetime (RFC 7252 §4.5).
    fn is_retransmission(
        &self,
        now: Instant,
        from: SocketAddr,
        msg: &Message<'_>,
        old: Location,
    ) -> bool {
        msg.ty() == MessageType::Con
            && self.endpoints.get(&old).is_some_and(|ep| {
                ep.addr == from
                    && ep.register_mid == msg.mid()
                    && ep.registered >= 0
                    && i64::from(self.secs_signed(now)) - i64::from(ep.registered)
                        <= EXCHANGE_LIFETIME.as_secs() as i64
            })
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        now: Instant,
        from: SocketAddr,
        arrived_on: usize,
        msg: &Message<'_>,
        location: Location,
        body: &[u8],
        block1: Option<Block>,
    ) {
        let payload = object_list_payload(body);
        let Some(ep) = self.endpoints.get_mut(&location) else {
            return self.respond(from, msg, Response::code(Code::NOT_FOUND));
        };
        let outcome = match parse_query(msg.uri_query()).and_then(|q| {
            ep.registration.apply_update_shared(
                q,
                payload,
                &self.cfg.limits,
                &self.cfg.psm_apns,
                &mut self.object_lists,
            )
        }) {
            Ok(o) => o,
            Err(e) => {
                self.log_peer_error(now, from, &e);
                return self.respond(from, msg, Response::code(error_code(msg, &e)));
            }
        };
        let lifetime = ep.registration.lifetime;
        let old_addr = ep.addr;
        let publish_update = match self.cfg.update_condition {
            UpdatePublishCondition::Always => true,
            UpdatePublishCondition::ContainsObjectList => outcome.object_list_updated,
        };
        if publish_update {
            self.json.clear();
            crate::translate::write_register(
                &mut self.json,
                RegMsgType::Update,
                &ep.registration,
                ep.security,
            );
        }
        let name = ep.registration.ep.clone();
        let expires = self.deadline(now, lifetime);
        if let Some(ep) = self.endpoints.get_mut(&location) {
            ep.expires = expires;
        }
        self.stats.updated += 1;
        self.respond(
            from,
            msg,
            Response {
                code: Code::CHANGED,
                location: None,
                block1,
            },
        );
        if publish_update {
            self.publish(TopicKind::Update, &name, from);
        }
        if old_addr != from {
            self.stats.rebound += 1;
            self.endpoints.set_addr(location, from);
            self.publish_event(&name, from, Event::Rebound);
        }
        if arrived_on == self.cfg.shard {
            self.journal_endpoint(location);
            self.wake(now, location);
        } else {
            self.migrate(now, location, arrived_on);
        }
    }

    /// Whether the datagram being handled may act for the endpoint of `location`.
    pub(super) fn may_act_for(&self, location: Location) -> bool {
        self.endpoints
            .get(&location)
            .is_some_and(|ep| self.link_may_act_for(ep.security, &ep.registration.ep))
    }

    /// Whether the datagram being handled may register `ep`: over DTLS only as the name its
    /// identity is bound to; over plain UDP not while a DTLS registration holds the name
    /// on this shard.
    fn may_register(&self, ep: &str) -> bool {
        match self.link {
            Link::Udp => self
                .endpoints
                .by_name(ep)
                .and_then(|l| self.endpoints.get(&l))
                .is_none_or(|held| held.security == Security::None),
            Link::Dtls { origin, .. } => origin.identity == self.identity_hasher.hash_one(ep),
        }
    }

    /// Moves an endpoint to the shard its datagrams now arrive on.
    fn migrate(&mut self, now: Instant, location: Location, to: usize) {
        let Some(ep) = self.endpoints.remove(location) else {
            return;
        };
        let name = ep.registration.ep.clone();
        let security = ep.security;
        if let Some(dl) = &ep.downlink {
            for t in dl.tokens() {
                self.token_owner.remove(&t);
            }
        }
        let m = Migrating {
            location,
            generation: ep.generation,
            expires: self.instant(ep.expires),
            registered: self.instant_signed(ep.registered),
            register_mid: ep.register_mid,
            registration: ep.registration,
            addr: ep.addr,
            security: ep.security,
            downlink: ep.downlink,
        };
        self.handoffs.push_back((to, Handoff::Adopt(Box::new(m))));
        let home = home_shard(location, self.cfg.shards);
        if home == self.cfg.shard {
            self.moved.insert(location.key, to);
        } else {
            self.route(
                now,
                home,
                Handoff::Moved {
                    location,
                    owner: to,
                },
            );
        }
        let dir = directory_shard(&name, self.cfg.shards);
        self.route(
            now,
            dir,
            Handoff::Claim {
                ep: name,
                location,
                owner: to,
                fresh: false,
                secure: security != Security::None,
            },
        );
    }

    pub(super) fn adopt(&mut self, now: Instant, m: Migrating) {
        if home_shard(m.location, self.cfg.shards) == self.cfg.shard {
            self.moved.remove(&m.location.key);
        }
        let expires = self.deadline(m.expires, 0);
        self.expiry
            .push(std::cmp::Reverse((expires, m.location.key)));
        if let Some(dl) = &m.downlink {
            for t in dl.tokens() {
                self.token_owner.insert(t, m.location);
            }
            for (at, mid) in dl.deadlines() {
                self.retransmit
                    .push(std::cmp::Reverse((at, m.location, mid)));
            }
        }
        self.endpoints.insert(
            m.location,
            Endpoint {
                home: m.location.home,
                generation: m.generation,
                registration: m.registration,
                addr: m.addr,
                expires,
                registered: self.secs_signed(m.registered),
                register_mid: m.register_mid,
                security: m.security,
                downlink: m.downlink,
            },
        );
        // The state moved with a new owner: journal it here with a higher generation, so
        // the record the previous owner wrote is superseded wherever it lies.
        let location = m.location;
        self.journal_endpoint(location);
        // It moved because it just sent an Update from here.
        self.wake(now, location);
    }

    /// Directory update: `location` on `owner` holds `ep`. A fresh registration evicts the
    /// one it replaces; a moved registration only updates its owner (or, if a newer
    /// registration of the name got there first, is itself evicted).
    pub(super) fn claim(
        &mut self,
        now: Instant,
        ep: Arc<str>,
        location: Location,
        owner: usize,
        fresh: bool,
        secure: bool,
    ) {
        let current = self.directory.get(&ep);
        match current {
            // A plain registration never takes a name from a DTLS one (the Register was
            // refused on the holder's own shard; here it lost the race to another shard).
            Some(held) if held.location != location && held.secure && !secure => {
                self.stats.forbidden += 1;
                self.route(now, owner, Handoff::Evict { location });
            }
            Some(held) if held.location != location => {
                if fresh {
                    let stamp = self.fresh_stamp(now, &ep, Some(held.stamp));
                    self.directory
                        .insert(ep.clone(), location, owner, secure, stamp);
                    self.announce(&ep, stamp, secure);
                    self.route(
                        now,
                        held.owner,
                        Handoff::Evict {
                            location: held.location,
                        },
                    );
                } else {
                    self.route(now, owner, Handoff::Evict { location });
                }
            }
            // The same registration, moved to another shard: its stamp stays.
            Some(held) => self
                .directory
                .insert(ep, location, owner, secure, held.stamp),
            // Another node holds the name over DTLS: a plain registration does not take it.
            None if fresh && !secure && self.held_securely_elsewhere(&ep) => {
                self.stats.forbidden += 1;
                self.route(now, owner, Handoff::Evict { location });
            }
            None => {
                let stamp = self.fresh_stamp(now, &ep, None);
                self.directory
                    .insert(ep.clone(), location, owner, secure, stamp);
                if fresh {
                    self.announce(&ep, stamp, secure);
                }
            }
        }
    }

    pub(super) fn evict(&mut self, now: Instant, location: Location) {
        if self.endpoints.contains_key(&location) {
            self.stats.replaced += 1;
            self.remove_endpoint(now, location, Event::Replaced, false);
        } else if home_shard(location, self.cfg.shards) == self.cfg.shard {
            if let Some(&owner) = self.moved.get(&location.key) {
                self.handoffs
                    .push_back((owner, Handoff::Evict { location }));
            }
        }
    }

    /// Removes a registration, tells the home and (when `release`) the directory, and
    /// publishes `event`.
    pub(super) fn remove_endpoint(
        &mut self,
        now: Instant,
        location: Location,
        event: Event,
        release: bool,
    ) {
        let reason = match event {
            Event::Deregister => "endpoint deregistered",
            Event::Expired => "registration expired",
            _ => "registration replaced",
        };
        self.fail_pending(location, reason);
        let Some(ep) = self.endpoints.remove(location) else {
            return;
        };
        let name = ep.registration.ep.clone();
        self.journal_removed(now, location.key, ep.generation);
        let home = home_shard(location, self.cfg.shards);
        if home != self.cfg.shard {
            self.route(now, home, Handoff::Gone { location });
        }
        self.publish_event(&name, ep.addr, event);
        if release {
            let dir = directory_shard(&name, self.cfg.shards);
            self.route(now, dir, Handoff::Release { ep: name, location });
        }
    }
}
