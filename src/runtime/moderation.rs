//! Receive interrupt moderation for one receive loop, sans-IO: told when a drain found
//! datagrams and how many, it says how long to let the next ones gather before draining
//! again — the `rx-frames` / `rx-usecs` pair of a NIC's interrupt coalescing, with the
//! frame count turned into time by the arrival rate it sees, between [`MIN_WINDOW`] and
//! `gateway.rx_moderation`.

use std::time::{Duration, Instant};

/// Datagrams a moderated wake-up aims to find. A wake-up costs a shard ~50–90 µs of CPU on
/// a 2 vCPU VM (glommio's sleep and its timers, a `recvmmsg`, a TCP write to the broker),
/// so ten share it at ~5–9 µs each, about what the machine spends to receive and answer one
/// datagram at all (`perf/run.sh cpu`). More would add latency for little CPU.
pub(super) const GATHER: u32 = 10;

/// The shortest moderated window (unless `rx_moderation` or the interactive bound is
/// shorter). At high rates ten datagrams arrive within tens of µs, and sleeping only that
/// long would wake the shard ~10 k times a second; with a floor of 1 ms it wakes at most
/// ~1,000 times a second and its drains come back full (measured at saturation on 2 vCPU:
/// 4.1–5.2 µs of gateway CPU per notification without the floor, 2.3–3.2 µs with a fixed
/// 2 ms window).
pub(super) const MIN_WINDOW: Duration = Duration::from_millis(1);

/// Weight of the newest gap in the running average of the time between datagrams (1/4):
/// a rate that changes is followed within a few drains, a single burst does not swing it.
const GAP_WEIGHT: u64 = 4;

/// One receive loop's moderation state.
#[derive(Debug)]
pub(super) struct Moderation {
    /// The longest window (`gateway.rx_moderation`); zero turns moderation off.
    max: Duration,
    /// Set when datagrams come closer together than the window; cleared by an empty drain.
    engaged: bool,
    last_drain: Option<Instant>,
    /// Running average of the time between two datagrams, in nanoseconds.
    gap_ns: u64,
}

impl Moderation {
    pub(super) fn new(max: Duration) -> Moderation {
        Moderation {
            max,
            engaged: false,
            last_drain: None,
            gap_ns: 0,
        }
    }

    /// A drain at `now` found `n` (≥ 1) datagrams. Returns how long to let datagrams gather
    /// before the next drain, or `None` to drain again when the socket is readable. `limit`
    /// bounds the window further (while the shard is interactive).
    pub(super) fn drained(&mut self, now: Instant, n: usize, limit: Duration) -> Option<Duration> {
        let longest = self.max.min(limit);
        if longest.is_zero() {
            return None;
        }
        if let Some(last) = self.last_drain {
            let since = now.saturating_duration_since(last);
            self.engaged |= since < longest;
            let gap = since.as_nanos() as u64 / n.max(1) as u64;
            self.gap_ns = match self.gap_ns {
                0 => gap,
                avg => (avg * (GAP_WEIGHT - 1) + gap) / GAP_WEIGHT,
            };
        }
        self.last_drain = Some(now);
        if !self.engaged {
            return None;
        }
        let gather = Duration::from_nanos(self.gap_ns.saturating_mul(u64::from(GATHER)));
        Some(gather.clamp(MIN_WINDOW.min(longest), longest))
    }

    /// A drain found nothing: the traffic is sparser than the window, so wake per datagram
    /// again.
    pub(super) fn idle(&mut self) {
        self.engaged = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_millis(4);
    const NO_LIMIT: Duration = Duration::MAX;

    /// Drains every `gap × per_drain` with `per_drain` datagrams, `drains` times; returns
    /// the last answer.
    fn steady(
        m: &mut Moderation,
        t: &mut Instant,
        gap: Duration,
        per_drain: u32,
        drains: u32,
    ) -> Option<Duration> {
        let mut last = None;
        for _ in 0..drains {
            *t += gap * per_drain;
            last = m.drained(*t, per_drain as usize, NO_LIMIT);
        }
        last
    }

    #[test]
    fn sparse_traffic_is_handled_as_it_arrives() {
        let mut m = Moderation::new(MAX);
        let mut t = Instant::now();
        // One datagram every 10 ms, longer than the longest window.
        assert_eq!(
            steady(&mut m, &mut t, Duration::from_millis(10), 1, 20),
            None
        );
    }

    #[test]
    fn the_window_gathers_about_ten_datagrams_up_to_the_longest() {
        let mut m = Moderation::new(MAX);
        let mut t = Instant::now();
        // 10 k/s: a datagram every 100 µs, so ten gather in ~1 ms.
        let w = steady(&mut m, &mut t, Duration::from_micros(100), 1, 3).expect("engaged");
        assert_eq!(w, Duration::from_millis(1));
        // Drains of ten at that rate keep it there.
        let w = steady(&mut m, &mut t, Duration::from_micros(100), 10, 20).expect("engaged");
        assert_eq!(w, Duration::from_millis(1));
        // 100 k/s: ten would come in 100 µs, but the shard sleeps at least 1 ms.
        let w = steady(&mut m, &mut t, Duration::from_micros(10), 100, 20).expect("engaged");
        assert_eq!(w, MIN_WINDOW);
        // 2.5 k/s: ten would take 4 ms, the longest window.
        let w = steady(&mut m, &mut t, Duration::from_micros(400), 10, 20).expect("engaged");
        assert!(w > Duration::from_micros(3900) && w <= MAX, "{w:?}");
        // 1 k/s: the window stays at the longest, gathering what comes.
        let w = steady(&mut m, &mut t, Duration::from_millis(1), 4, 20).expect("engaged");
        assert_eq!(w, MAX);
    }

    #[test]
    fn an_interactive_limit_and_zero_bound_the_window() {
        let mut m = Moderation::new(MAX);
        let mut t = Instant::now();
        assert!(steady(&mut m, &mut t, Duration::from_micros(300), 10, 5).is_some());
        t += Duration::from_millis(3);
        let limit = Duration::from_micros(250);
        assert_eq!(m.drained(t, 10, limit), Some(limit));
        let mut off = Moderation::new(Duration::ZERO);
        assert_eq!(
            steady(&mut off, &mut t, Duration::from_micros(10), 1, 10),
            None
        );
    }

    #[test]
    fn an_empty_drain_ends_moderation_until_datagrams_come_close_again() {
        let mut m = Moderation::new(MAX);
        let mut t = Instant::now();
        assert!(steady(&mut m, &mut t, Duration::from_micros(100), 1, 3).is_some());
        m.idle();
        // The next datagram after a pause is drained as it arrives ...
        t += Duration::from_millis(50);
        assert_eq!(m.drained(t, 1, NO_LIMIT), None);
        // ... and the one after it, close behind, engages moderation again.
        t += Duration::from_micros(100);
        assert!(m.drained(t, 1, NO_LIMIT).is_some());
    }
}
