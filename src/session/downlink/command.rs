//! Commands from the MQTT command topic: matched to an endpoint (or answered 4.04 by the
//! name's directory shard; with several nodes only by one node, see `session::cluster`),
//! built into a CoAP request and queued behind the one in flight (or, for a sleeping
//! queue-mode device, until it wakes).

use std::time::Instant;

use super::{BodyCharge, Queued, Shard, MAX_PENDING_BLOCK1_BYTES};
use crate::coap::Code;
use crate::session::queue_mode::queued_ttl;
use crate::session::stats::CommandResult;
use crate::session::{directory_shard, Location, TopicKind};
use crate::translate::{self, Command, CommandKind};

impl Shard {
    /// Handles one MQTT publish on the command topic.
    pub fn handle_command(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        if self.handle_cluster_message(now, topic, payload) {
            return;
        }
        let Some(m) = self.cfg.mountpoint.match_topic(topic) else {
            return;
        };
        let Some(ep) = m.endpoint else { return };
        let peerhost = m.peerhost.unwrap_or("");
        let Some(location) = self.endpoints.by_name(ep) else {
            // Every shard sees every command; the name's directory shard answers for
            // endpoints registered nowhere (in a cluster: on no live node, and only on the
            // lowest-named live node).
            if directory_shard(ep, self.cfg.shards) == self.cfg.shard
                && !self.directory.contains_key(ep)
                && self.answers_unknown(ep)
            {
                self.stats.commands_rejected += 1;
                let (echo, msg_type, req_path) = match translate::parse_command(payload) {
                    Ok(c) => (c.echo, Some(c.msg_type), Some(c.req_path)),
                    Err(e) => (e.echo, e.msg_type, e.req_path),
                };
                self.stats.command_results.count(
                    crate::translate::Operation::parse(msg_type.as_deref().unwrap_or("")),
                    CommandResult::ClientError,
                );
                self.json.clear();
                translate::write_error(
                    &mut self.json,
                    &echo,
                    msg_type.as_deref(),
                    req_path.as_deref(),
                    Code::NOT_FOUND,
                    "endpoint is not registered",
                );
                let ep = ep.to_owned();
                self.publish_to(TopicKind::Response, &ep, peerhost);
            }
            return;
        };
        self.stats.commands += 1;
        self.enqueue_command(now, location, payload);
    }

    /// Handles a command for `ep` from the HTTP API, exactly as if it had come on the
    /// command topic (its response is published as usual); its outcome is also handed
    /// back through [`Shard::poll_answer`] under `tag`. `false` when this shard does not
    /// hold `ep`.
    pub fn handle_api_command(&mut self, now: Instant, ep: &str, payload: &[u8], tag: u64) -> bool {
        let Some(location) = self.endpoints.by_name(ep) else {
            return false;
        };
        self.stats.commands += 1;
        self.enqueue_command_until(now, location, payload, None, Some(tag));
        true
    }

    /// Queues the command `payload` (MQTT command JSON) for the endpoint of `location` and
    /// sends it if nothing is in flight; a command that does not parse or build is answered
    /// with an error response.
    pub(in crate::session) fn enqueue_command(
        &mut self,
        now: Instant,
        location: Location,
        payload: &[u8],
    ) {
        self.enqueue_command_until(now, location, payload, None, None);
    }

    /// [`Shard::enqueue_command`], or with `restored` the expiry of a command queued before
    /// a restart: it was acknowledged then, so it is queued again silently. `tag` names the
    /// API request waiting for the command's outcome.
    pub(in crate::session) fn enqueue_command_until(
        &mut self,
        now: Instant,
        location: Location,
        payload: &[u8],
        restored: Option<Instant>,
        tag: Option<u64>,
    ) {
        let restoring = restored.is_some();
        let Some(ep) = self.endpoints.get(&location) else {
            return;
        };
        let reg = &ep.registration;
        let alternate = reg
            .object_list
            .as_ref()
            .map_or("/", |o| o.alternate_path.as_str())
            .to_owned();
        let version = reg.version;
        let (reg_lifetime, queue_mode) = (reg.lifetime, reg.queue_mode);
        let built = translate::parse_command(payload)
            .and_then(|c| translate::build_request(&c, &alternate, version).map(|r| (c, r)));
        let (command, request) = match built {
            Ok(built) => built,
            Err(e) => {
                self.stats.commands_rejected += 1;
                self.stats.command_results.count(
                    crate::translate::Operation::parse(e.msg_type.as_deref().unwrap_or("")),
                    CommandResult::of(e.code()),
                );
                self.json.clear();
                translate::write_command_error(&mut self.json, &e);
                self.publish_for(TopicKind::Response, location);
                return self.answer(tag);
            }
        };
        let observe = match command.kind {
            CommandKind::Observe { .. } | CommandKind::ObserveComposite { .. } => Some(true),
            CommandKind::CancelObserve { .. } | CommandKind::CancelObserveComposite { .. } => {
                Some(false)
            }
            _ => None,
        };
        let Command {
            echo,
            msg_type,
            req_path,
            ..
        } = command;
        let max = self.cfg.max_queued_commands;
        // Only a queue-mode device's commands may wait long enough for a TTL to matter.
        let asked = queue_mode.then_some(echo.as_str());
        let ttl = queued_ttl(asked, self.cfg.qmode_time_window, reg_lifetime);
        let Some(ep) = self.endpoints.get_mut(&location) else {
            return;
        };
        let asleep = ep.registration.queue_mode;
        let dl = ep.downlink.get_or_insert_with(Box::default);
        let asleep = asleep && dl.awake_until.is_none_or(|t| t <= now);
        if dl.queue.len() >= max {
            self.stats.commands_rejected += 1;
            return self.command_error(
                location,
                &echo,
                &msg_type,
                &req_path,
                Code::SERVICE_UNAVAILABLE,
                "command queue is full",
                tag,
            );
        }
        // A body sent in Block1 blocks counts against the shard's cap until it ends.
        let charge = match request.block1 {
            None => None,
            Some(_) => match BodyCharge::take(
                &self.pending_block1,
                request.payload.len(),
                MAX_PENDING_BLOCK1_BYTES,
            ) {
                Some(charge) => Some(charge),
                None => {
                    self.stats.commands_rejected += 1;
                    let reason = format!(
                        "block-wise writes pending on this shard would exceed {} MiB",
                        MAX_PENDING_BLOCK1_BYTES >> 20
                    );
                    return self.command_error(
                        location,
                        &echo,
                        &msg_type,
                        &req_path,
                        Code::SERVICE_UNAVAILABLE,
                        &reason,
                        tag,
                    );
                }
            },
        };
        let Some(dl) = self
            .endpoints
            .get_mut(&location)
            .and_then(|e| e.downlink.as_mut())
        else {
            return;
        };
        let expires = restored.unwrap_or(now + ttl);
        if asleep {
            self.json.clear();
            translate::write_queued(&mut self.json, &echo, &msg_type, &req_path, ttl.as_secs());
        }
        dl.queue.push_back(Queued {
            echo: echo.into(),
            msg_type,
            observe,
            request,
            expires,
            command: payload.into(),
            charge,
            // A sleeping device's API caller is answered now, with the queued notice.
            tag: tag.filter(|_| !asleep),
            entered: now,
        });
        if asleep {
            self.stats.commands_queued += 1;
            self.queue_expiry
                .push(std::cmp::Reverse((expires, location)));
            if !restoring {
                self.publish_for(TopicKind::Response, location);
                self.answer(tag);
            }
            self.journal_endpoint(location);
        }
        self.send_next(now, location);
    }
}
