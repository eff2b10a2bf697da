//! The RFC 7252 §4.2 state of one CON request to a device: its datagram, message id and
//! retransmission schedule. A command's exchange and a Block2 notification's follow-up
//! request both keep one, so they back off and give up by the same rules.

use std::time::{Duration, Instant};

use super::{ACK_TIMEOUT, MAX_RETRANSMIT, SEPARATE_RESPONSE_WAIT};

/// A CON request sent to a device and not yet answered.
#[derive(Debug)]
pub(super) struct Con {
    /// Its message id.
    pub(super) mid: u16,
    /// The datagram as sent, for retransmission.
    pub(super) datagram: Vec<u8>,
    attempts: u8,
    timeout: Duration,
    deadline: Instant,
    /// An empty ACK came: the response follows separately.
    acked: bool,
}

/// What a passed deadline means for a [`Con`].
pub(super) enum Due {
    /// The deadline was moved since it was armed; nothing to do now.
    NotYet,
    /// Send the datagram again and arm this deadline.
    Resend(Instant),
    /// Out of retransmissions, or of time for a separate response.
    GiveUp,
}

impl Con {
    /// `datagram` (message id `mid`) sent at `now`: its first deadline is an RFC 7252 initial
    /// timeout, `ACK_TIMEOUT` stretched by `jitter` in [0, 0.5).
    pub(super) fn new(now: Instant, mid: u16, datagram: Vec<u8>, jitter: f64) -> Con {
        let timeout = ACK_TIMEOUT + ACK_TIMEOUT.mul_f64(jitter);
        Con {
            mid,
            datagram,
            attempts: 0,
            timeout,
            deadline: now + timeout,
            acked: false,
        }
    }

    /// Makes `datagram` the request, as a follow-up block is: retransmissions count afresh.
    pub(super) fn restart(&mut self, now: Instant, mid: u16, datagram: Vec<u8>, jitter: f64) {
        *self = Con::new(now, mid, datagram, jitter);
    }

    /// When the request is retransmitted or given up next.
    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// An empty ACK arrived: the deadline becomes the wait for the separate response,
    /// returned to be armed. `None` if the request was already acknowledged.
    pub(super) fn acked(&mut self, now: Instant) -> Option<Instant> {
        if self.acked {
            return None;
        }
        self.acked = true;
        self.deadline = now + SEPARATE_RESPONSE_WAIT;
        Some(self.deadline)
    }

    /// The deadline armed for this request passed at `now`: back off and resend, or give
    /// up.
    pub(super) fn due(&mut self, now: Instant) -> Due {
        if self.deadline > now {
            return Due::NotYet;
        }
        if self.acked || self.attempts >= MAX_RETRANSMIT {
            return Due::GiveUp;
        }
        self.attempts += 1;
        self.timeout *= 2;
        self.deadline = now + self.timeout;
        Due::Resend(self.deadline)
    }
}
