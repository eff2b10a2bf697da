//! Queue mode (LwM2M §6.4, SPEC §4): a device whose binding has `Q` (1.0: `UQ`, `SQ`,
//! `UQS`; 1.1: the `Q` parameter) or whose `apn` is one of `gateway.psm_apns` sleeps and
//! is reachable only for `qmode_time_window` after it sent anything. Commands for it wait
//! in its queue, each acknowledged at once with `{"msgType":"queued",...}`, and go out in
//! order, one exchange at a time, as soon as it sends again; one that waited longer than
//! its time to live is answered 5.04 `expired` instead of being sent.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::{Location, Shard};
use crate::coap::Code;
use crate::translate;

/// Longest time to live a command may ask for (`mheaders.ttl`): a week. A queue entry
/// lives in memory; a device not heard from for that long is not coming back for it.
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A queued command's time to live: `"mheaders":{"ttl":<seconds>}` in the command's echoed
/// members `echo` when given and there (at least one `qmode_time_window`, at most [`MAX_TTL`]), else the device's
/// registration lifetime: a device in queue mode must Update within it, so a command
/// waits at most until the device's next scheduled wake-up.
pub(super) fn queued_ttl(echo: Option<&str>, window: Duration, lifetime: u32) -> Duration {
    let asked = echo
        .filter(|e| e.contains("\"mheaders\""))
        .and_then(|e| serde_json::from_str::<serde_json::Value>(&format!("{{{e}}}")).ok())
        .and_then(|v| v.get("mheaders")?.get("ttl")?.as_u64());
    match asked {
        Some(secs) => Duration::from_secs(secs).clamp(window, MAX_TTL),
        None => Duration::from_secs(u64::from(lifetime)).max(window),
    }
}

impl Shard {
    /// The device of `location` sent something: a queue-mode device is now reachable for
    /// `qmode_time_window`, and what waited for it goes out.
    pub(super) fn wake(&mut self, now: Instant, location: Location) {
        let window = self.cfg.qmode_time_window;
        let Some(ep) = self.endpoints.get_mut(&location) else {
            return;
        };
        if !ep.registration.queue_mode {
            return;
        }
        let dl = ep.downlink.get_or_insert_with(Box::default);
        dl.awake_until = Some(now + window);
        self.send_next(now, location);
    }

    /// Whether a request may be sent to the device of `location` now: always, unless it
    /// is in queue mode and asleep.
    pub(super) fn reachable(&self, now: Instant, location: Location) -> bool {
        self.endpoints.get(&location).is_some_and(|ep| {
            !ep.registration.queue_mode
                || ep
                    .downlink
                    .as_ref()
                    .and_then(|d| d.awake_until)
                    .is_some_and(|t| t > now)
        })
    }

    /// Answers 5.04 `expired` for every command of `location` whose time to live ran out
    /// before it could be sent.
    pub(super) fn expire_queued(&mut self, now: Instant, location: Location) {
        loop {
            let Some(dl) = self
                .endpoints
                .get_mut(&location)
                .and_then(|ep| ep.downlink.as_mut())
            else {
                return;
            };
            let Some(pos) = dl.queue.iter().position(|q| q.expires <= now) else {
                return;
            };
            let Some(q) = dl.queue.remove(pos) else {
                return;
            };
            self.stats.commands_expired += 1;
            self.json.clear();
            translate::write_error(
                &mut self.json,
                &q.echo,
                Some(&q.msg_type),
                Some(q.request.req_path.as_str()),
                Code::GATEWAY_TIMEOUT,
                "expired",
            );
            self.publish_for(super::TopicKind::Response, location);
            self.stats.command_results.count(
                crate::translate::Operation::parse(&q.msg_type),
                super::stats::CommandResult::ServerError,
            );
            self.answer(q.tag);
            self.journal_endpoint(location);
        }
    }

    /// Expires queued commands whose deadline passed.
    pub(super) fn handle_queue_expiry(&mut self, now: Instant) {
        while let Some(&Reverse((at, location))) = self.queue_expiry.peek() {
            if at > now {
                break;
            }
            self.queue_expiry.pop();
            self.expire_queued(now, location);
        }
    }
}
