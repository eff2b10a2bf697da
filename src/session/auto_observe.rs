//! `gateway.auto_observe`, with EMQX's semantics: after every Register the gateway observes,
//! on the application's behalf, `true`: each path of the registration's object list whose
//! object is defined and is not a management object EMQX skips; a list: exactly the
//! listed paths the device registered. The observe responses are published as `observe`
//! responses without a `requestID`, and notifications like any other.

use std::time::Instant;

use super::{Location, Shard};
use crate::config::AutoObserve;

/// Objects EMQX never auto-observes: Security, Server, Access Control, Connectivity
/// Monitoring, Firmware Update, Location, Connectivity Statistics, Software Management and
/// BinaryAppDataContainer (0, 1, 2, 4, 5, 6, 7, 9, 15).
const SKIPPED_OBJECTS: [u16; 9] = [0, 1, 2, 4, 5, 6, 7, 9, 15];

/// Observations started per Register at most: one CoAP exchange each, in turn.
const MAX_AUTO_OBSERVES: usize = 64;

impl Shard {
    /// Queues the auto-observations of the endpoint that just registered at `location`.
    pub(super) fn auto_observe(&mut self, now: Instant, location: Location) {
        if self.cfg.auto_observe == AutoObserve::Off {
            return;
        }
        let Some(list) = self
            .endpoints
            .get(&location)
            .and_then(|ep| ep.registration.object_list.clone())
        else {
            return;
        };
        let registry = &self.cfg.registry;
        let paths: Vec<String> = match &self.cfg.auto_observe {
            AutoObserve::Off => return,
            AutoObserve::All => list
                .links
                .iter()
                .map(|l| l.path.to_string())
                .filter(|p| {
                    object_id(p).is_some_and(|id| {
                        !SKIPPED_OBJECTS.contains(&id) && registry.get(id).is_some()
                    })
                })
                .collect(),
            AutoObserve::Paths(wanted) => wanted
                .iter()
                .filter(|w| list.links.iter().any(|l| l.path == **w))
                .cloned()
                .collect(),
        };
        let mut command = Vec::with_capacity(64);
        for path in paths.into_iter().take(MAX_AUTO_OBSERVES) {
            command.clear();
            command.extend_from_slice(br#"{"msgType":"observe","data":{"path":"#);
            crate::translate::json::write_str(&mut command, &path);
            command.extend_from_slice(b"}}");
            self.enqueue_command(now, location, &command);
        }
    }
}

/// The object id a path of an object list starts with (`/3303/0` → 3303).
fn object_id(path: &str) -> Option<u16> {
    path.trim_start_matches('/').split('/').next()?.parse().ok()
}
