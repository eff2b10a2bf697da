//! The shard's clock in whole seconds from its epoch: what endpoint records and the
//! journal store instead of `Instant`s (4 bytes, and meaningful across a restart).

use std::time::{Duration, Instant};

use super::Shard;

impl Shard {
    /// Whole seconds from the epoch to `now`, rounded down.
    pub(super) fn secs(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    /// The deadline `lifetime` seconds after `now`, rounded up to whole seconds after the
    /// epoch, so an endpoint never expires early.
    pub(super) fn deadline(&self, now: Instant, lifetime: u32) -> u32 {
        let since = now.saturating_duration_since(self.epoch);
        let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
        u32::try_from(secs)
            .unwrap_or(u32::MAX)
            .saturating_add(lifetime)
    }

    /// The instant `secs` seconds after the epoch.
    pub(super) fn instant(&self, secs: u32) -> Instant {
        self.epoch + Duration::from_secs(u64::from(secs))
    }

    /// Whole seconds from the epoch to `at`, negative when `at` is before it.
    pub(super) fn secs_signed(&self, at: Instant) -> i32 {
        match at.checked_duration_since(self.epoch) {
            Some(d) => i32::try_from(d.as_secs()).unwrap_or(i32::MAX),
            None => i32::try_from(self.epoch.duration_since(at).as_secs())
                .map_or(i32::MIN, |s| -s.max(1)),
        }
    }

    /// The instant `secs` seconds from the epoch, either side of it.
    pub(super) fn instant_signed(&self, secs: i32) -> Instant {
        let d = Duration::from_secs(u64::from(secs.unsigned_abs()));
        if secs >= 0 {
            self.epoch + d
        } else {
            self.epoch.checked_sub(d).unwrap_or(self.epoch)
        }
    }
}
