//! The worker's two side schedules: sleeping (queue-mode) devices waking, and pings to the
//! echo sink of `udp-baseline` and `steady-notify --echo-baseline`.
//!
//! A queue-mode device sleeps with its radio off: it drops whatever arrives more than
//! `--awake` after its own last message. Every `--wake-period` it wakes and sends one
//! message, a notification (when observed) or an Update, alternately, which tells the
//! gateway it listens again, so the commands queued for it go out.

use std::io::ErrorKind;

use anyhow::Context;
use lwm2m_gateway::coap::{option, Code, Message, MessageType, MessageWriter};

use super::{every, offset, Worker};
use crate::device::{Life, Pending};
use crate::metrics::{Counter, Metric};
use crate::net::device_ip;

impl Worker<'_> {
    /// Wakes the sleepers whose turn is due by `now` (cycles from `start`); `next` is the
    /// worker's position in its wake schedule, `idle_until` and `budget` those of the loop.
    pub(super) fn wakes(
        &mut self,
        start: u64,
        now: u64,
        next: &mut u64,
        idle_until: &mut u64,
        budget: &mut usize,
    ) -> anyhow::Result<()> {
        let q = self.sleepers.len() as u64;
        let period = self.plan.wake_period_ns;
        if q == 0 || period == 0 {
            return Ok(());
        }
        let (k, s) = (u64::from(self.plan.sockets), u64::from(self.shard));
        // Device i of q wakes at i/q of the period, shifted by the worker's share, so the
        // wakes of all workers spread evenly over each period.
        let slot = period as f64 / (q * k) as f64;
        while *budget > 0 {
            let (round, i) = (*next / q, *next % q);
            let due = start + round * period + ((i * k + s) as f64 * slot) as u64;
            if due > now {
                *idle_until = (*idle_until).min(due);
                break;
            }
            *budget -= 1;
            let j = self.sleepers[i as usize];
            self.wake(j, round, *next, due, now)?;
            *next += 1;
        }
        Ok(())
    }

    /// Sleeping device `j` wakes (`round` of its cycle, `n` in the worker's schedule):
    /// a notification on even rounds when it is observed, else an Update.
    fn wake(&mut self, j: u32, round: u64, n: u64, due: u64, now: u64) -> anyhow::Result<()> {
        let d = &self.devices[j as usize];
        if d.life != Life::Registered {
            return Ok(());
        }
        self.counters.add(Counter::Wakes, 1);
        if round % 2 == 0 && d.observed {
            return self.notify(j, every(n, self.plan.con_ratio), due, now);
        }
        if matches!(d.pending, Pending::Register | Pending::Update) {
            return Ok(());
        }
        self.send_request(j, Pending::Update, due, now)
    }

    /// Ping `g` of the current schedule: a CON GET whose token is `g`, sent in plain UDP
    /// to the echo sink from a device's address.
    pub(super) fn ping(&mut self, g: u64) -> anyhow::Result<()> {
        let Some(echo) = self.plan.echo else {
            return Ok(());
        };
        let j = ((g / u64::from(self.plan.sockets)) % self.devices.len().max(1) as u64) as u32;
        self.out.clear();
        let mut w = MessageWriter::new(
            &mut self.out,
            MessageType::Con,
            Code::GET,
            g as u16,
            &g.to_be_bytes(),
        );
        w.option(option::URI_PATH, b"ping");
        w.finish();
        self.counters.add(Counter::PingsSent, 1);
        match self
            .socket
            .send_from(device_ip(self.global(j)), echo, &self.out)
        {
            // A full send buffer loses the datagram as a network would.
            Err(e) if e.kind() != ErrorKind::WouldBlock => Err(e).context("sending a ping"),
            _ => Ok(()),
        }
    }

    /// An echo from the sink: timed from the due time of the ping its token names.
    pub(super) fn ping_reply(&mut self, datagram: &[u8]) {
        let now = self.clock.now_ns();
        let Ok(msg) = Message::parse(datagram) else {
            self.counters.add(Counter::Malformed, 1);
            return;
        };
        let (Some((start, rate, _)), MessageType::Ack, Ok(token)) =
            (self.ctl.pings(), msg.ty(), <[u8; 8]>::try_from(msg.token()))
        else {
            return;
        };
        let due = start + offset(u64::from_be_bytes(token), rate);
        self.rec
            .record(Metric::UdpRtt, now, now.saturating_sub(due));
        self.counters.add(Counter::PingsOk, 1);
    }
}
