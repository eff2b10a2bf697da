//! A response or notification that is complete: decoded (typed by the device's object
//! versions where it can be) and published, with the exchange's outcome counted.

use std::time::Instant;

use super::block1::Block1Step;
use super::block2::Block2Step;
use super::{Decoded, Observation, Observed, Outcome, Shard, FIRMWARE_OBJECT, MAX_OBSERVATIONS};
use crate::coap::Message;
use crate::content::{self, Borrowed, ContentRef, EntryRef};
use crate::lwm2m::{Definitions, Path, VersionPin};
use crate::session::stats::CommandResult;
use crate::session::{Location, TopicKind};
use crate::translate;

impl Shard {
    /// Publishes a response or notification with its decoded content; a response that
    /// comes in Block2 blocks is published once its last block arrived.
    pub(super) fn complete(
        &mut self,
        now: Instant,
        location: Location,
        msg: &Message<'_>,
        mut outcome: Outcome,
    ) {
        let code = msg.code();
        let mut assembled = None;
        if let Outcome::Response = outcome {
            match self.take_block1(now, location, msg) {
                Block1Step::Whole => {}
                Block1Step::Sent | Block1Step::Stale => return,
            }
            match self.take_block2(now, location, msg) {
                Block2Step::Whole => {}
                Block2Step::Asked => return,
                Block2Step::Assembled(body) => assembled = Some(body),
                Block2Step::Failed(failed) => {
                    self.stats.command_responses += 1;
                    let result = CommandResult::of(failed);
                    return self.finish(now, location, result, |out, ex| {
                        translate::write_response(
                            out,
                            &ex.echo,
                            &ex.msg_type,
                            &ex.req_path,
                            failed,
                            None,
                        )
                    });
                }
            }
        }
        if let Outcome::Notification { body, .. } = &mut outcome {
            assembled = body.take();
        }
        let payload = assembled.as_deref().unwrap_or(msg.payload());
        let Some(ep) = self.endpoints.get_mut(&location) else {
            return;
        };
        // Only a device that pinned object versions costs a reference count here.
        let pinned = ep
            .registration
            .object_list
            .as_ref()
            .filter(|l| !l.pins.is_empty())
            .cloned();
        let Some(dl) = ep.downlink.as_mut() else {
            return;
        };
        // `seq` is `None` for the in-flight exchange's response.
        let (echo, req_path, path, seq) = match outcome {
            Outcome::Response => match dl.in_flight.as_ref() {
                Some(ex) => (ex.echo.clone(), ex.req_path.clone(), ex.path, None),
                None => return,
            },
            Outcome::Notification {
                seq,
                echo,
                req_path,
                path,
                body: _,
            } => (echo, req_path, path, Some(seq)),
        };
        // A successful observe starts an observation; a cancel ends it.
        let mut observations_changed = false;
        if let (None, Some(ex)) = (seq, dl.in_flight.as_ref()) {
            observations_changed = ex.observe.is_some();
            match ex.observe {
                Some(true)
                    if code.class() == 2
                        && msg.observe().is_some()
                        && dl.observations.len() < MAX_OBSERVATIONS =>
                {
                    let observed = Observed::of(&ex.request);
                    dl.observations.retain(|o| o.observed != observed);
                    dl.observations.push(Observation {
                        token: ex.token,
                        echo: ex.echo.clone(),
                        req_path: ex.req_path.clone(),
                        observed,
                        path,
                        last_seq: msg.observe(),
                        last_at: now,
                    });
                }
                Some(false) => {
                    let observed = Observed::of(&ex.request);
                    let gone: Vec<[u8; 8]> = dl
                        .observations
                        .iter()
                        .filter(|o| o.observed == observed)
                        .map(|o| o.token)
                        .collect();
                    dl.observations.retain(|o| o.observed != observed);
                    for t in gone {
                        if t != ex.token {
                            self.token_owner.remove(&t);
                        }
                    }
                }
                _ => {}
            }
        }
        if observations_changed {
            self.journal_endpoint(location);
        }
        let mut values = content::reuse_entries(std::mem::take(&mut self.values));
        let format = msg.content_format();
        let pins = pinned.as_ref().map_or(&[][..], |l| &l.pins);
        let decoded = self.decode_content(pins, payload, format, &req_path, path, &mut values);
        let content = match &decoded {
            None => None,
            Some(Decoded::Values) => Some(ContentRef::Values(&values)),
            Some(Decoded::Content(c)) => Some(ContentRef::Content(c)),
            Some(Decoded::Undecoded(path)) => Some(ContentRef::Undecoded {
                path: *path,
                payload,
            }),
        };
        match seq {
            None => {
                self.stats.command_responses += 1;
                self.finish(now, location, CommandResult::of(code), |out, ex| {
                    translate::write_response(
                        out,
                        &ex.echo,
                        &ex.msg_type,
                        &ex.req_path,
                        code,
                        content,
                    )
                });
            }
            Some(seq) => {
                self.stats.notifications += 1;
                self.json.clear();
                translate::write_notify(&mut self.json, &echo, seq, &req_path, code, content);
                let kind = if path.object() == Some(FIRMWARE_OBJECT) {
                    TopicKind::DmNotify
                } else {
                    TopicKind::Notify
                };
                self.publish_for(kind, location);
            }
        }
        self.values = content::reuse_entries(values);
    }

    /// Decodes a response payload into `values` where it can borrow from it, else into
    /// owned content, typed by the registry with the device's `pins`; whatever cannot be
    /// decoded is kept undecoded.
    pub(super) fn decode_content<'m>(
        &mut self,
        pins: &[VersionPin],
        payload: &'m [u8],
        format: Option<u16>,
        req_path: &str,
        path: Path,
        values: &mut Vec<EntryRef<'m>>,
    ) -> Option<Decoded> {
        if payload.is_empty() {
            return None;
        }
        let format = format.unwrap_or(content::format::TEXT);
        let registry = Definitions::new(&self.cfg.registry, pins);
        let decoded = match content::decode_borrowed(format, payload, &path, registry, values) {
            Ok(Borrowed::Values) => Ok(Decoded::Values),
            Ok(Borrowed::Undecoded) => Ok(Decoded::Undecoded(path)),
            Ok(Borrowed::Owned) => {
                content::decode(format, payload, &path, registry).map(Decoded::Content)
            }
            Err(e) => Err(e),
        };
        match decoded {
            Ok(d) => Some(d),
            Err(e) => {
                self.stats.undecodable += 1;
                tracing::debug!(%req_path, format, "publishing undecoded content: {e}");
                Some(Decoded::Undecoded(path))
            }
        }
    }
}
