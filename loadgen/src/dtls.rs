//! DTLS for the simulated devices: the PSK every device derives from its endpoint name
//! (and the `psk-file` the gateway is started with), and [`Peers`], one worker's table of
//! the gateway crate's sans-IO [`DtlsClient`]s with their retransmission timers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use lwm2m_gateway::dtls::client::{
    ClientConfig, ClientOptions, DtlsClient, Failure, Session, State,
};
use sha2::Sha256;

/// The HMAC key every device PSK is derived under; changing it changes every key.
const PSK_LABEL: &[u8] = b"lwm2m-gateway loadgen PSK v1";
/// Bytes of a device PSK: 128 bits, as the AES-128 suites use.
pub const PSK_LEN: usize = 16;

/// The PSK of the device registering as `endpoint`: the first 16 bytes of
/// HMAC-SHA256(`PSK_LABEL`, endpoint). Deterministic, so `psk-file` and every run agree.
pub fn psk_key(endpoint: &str) -> [u8; PSK_LEN] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(PSK_LABEL).expect("HMAC takes keys of any length");
    mac.update(endpoint.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut key = [0u8; PSK_LEN];
    key.copy_from_slice(&digest[..PSK_LEN]);
    key
}

/// The endpoint name (and PSK identity) of device `g`.
pub fn endpoint(prefix: &str, g: u64) -> String {
    format!("{prefix}-{g}")
}

/// Writes `identity:hexkey:endpoint` for devices `0..devices`; the identity is the
/// endpoint name, since the gateway requires a DTLS registration's `ep` to match it.
pub fn write_psk_file(out: &mut impl Write, prefix: &str, devices: u64) -> io::Result<()> {
    let mut line = String::with_capacity(96);
    for g in 0..devices {
        use std::fmt::Write as _;
        let ep = endpoint(prefix, g);
        line.clear();
        line.push_str(&ep);
        line.push(':');
        for b in psk_key(&ep) {
            let _ = write!(line, "{b:02x}");
        }
        line.push(':');
        line.push_str(&ep);
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    out.flush()
}

/// The client config every device of a run shares (one OpenSSL context).
pub fn psk_config() -> anyhow::Result<Arc<ClientConfig>> {
    Ok(Arc::new(ClientConfig::psk(&ClientOptions::default())?))
}

/// What a datagram or a timer did to a device's DTLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Nothing the caller has to act on.
    None,
    /// The handshake just finished, `latency_ns` after it was due.
    Established { latency_ns: u64, resumed: bool },
    /// The handshake or connection failed; the device's client is gone.
    Failed(Failure),
    /// The gateway closed the connection; the device's client is gone.
    Closed,
}

/// One device's connection.
#[derive(Debug)]
struct Slot {
    client: Option<DtlsClient>,
    /// When the handshake was due (ns since run start).
    due: u64,
    /// The retransmission deadline queued for it in the timer heap (0 = none).
    timer_at: u64,
}

/// One worker's DTLS connections, indexed like its devices, with one timer heap.
#[derive(Debug)]
pub struct Peers {
    config: Arc<ClientConfig>,
    prefix: String,
    slots: Vec<Slot>,
    timers: BinaryHeap<Reverse<(u64, u32)>>,
}

impl Peers {
    /// `devices` slots, none connected.
    pub fn new(config: Arc<ClientConfig>, prefix: &str, devices: usize) -> Peers {
        Peers {
            config,
            prefix: prefix.to_string(),
            slots: (0..devices)
                .map(|_| Slot {
                    client: None,
                    due: 0,
                    timer_at: 0,
                })
                .collect(),
            timers: BinaryHeap::new(),
        }
    }

    /// Starts device `j` (global index `g`) handshaking, due at `due`; its ClientHello
    /// waits in [`Self::drain`]. With `resume`, it offers that session.
    pub fn start(
        &mut self,
        j: u32,
        g: u64,
        due: u64,
        now: u64,
        resume: Option<&Session>,
    ) -> anyhow::Result<()> {
        let ep = endpoint(&self.prefix, g);
        let client = DtlsClient::connect_psk(&self.config, &ep, &psk_key(&ep), resume)?;
        let slot = &mut self.slots[j as usize];
        slot.client = Some(client);
        slot.due = due;
        slot.timer_at = 0;
        self.arm(j, now);
        Ok(())
    }

    /// Whether device `j` has a connection (handshaking or established).
    pub fn is_started(&self, j: u32) -> bool {
        self.slots[j as usize].client.is_some()
    }

    /// Device `j`'s client once its handshake finished.
    pub fn established(&mut self, j: u32) -> Option<&mut DtlsClient> {
        self.slots[j as usize]
            .client
            .as_mut()
            .filter(|c| c.is_established())
    }

    /// Drops device `j`'s connection, returning the session to resume it with.
    pub fn take_session(&mut self, j: u32) -> Option<Session> {
        let slot = &mut self.slots[j as usize];
        slot.timer_at = 0;
        slot.client.take().and_then(|c| c.session())
    }

    /// Feeds a datagram from the gateway to device `j`.
    pub fn handle(&mut self, j: u32, datagram: &[u8], now: u64) -> Event {
        let Some(client) = self.slots[j as usize].client.as_mut() else {
            return Event::None;
        };
        let was_established = client.is_established();
        client.handle_datagram(datagram);
        let event = self.event(j, was_established, now);
        self.arm(j, now);
        event
    }

    /// Device `j`'s next decrypted datagram, after [`Self::handle`].
    pub fn recv_into(&mut self, j: u32, buf: &mut [u8]) -> Option<usize> {
        self.slots[j as usize].client.as_mut()?.recv_into(buf)
    }

    /// Device `j`'s state after a `recv_into` returned `None`: a closed or failed
    /// connection is dropped and reported.
    pub fn after_recv(&mut self, j: u32, now: u64) -> Event {
        self.event(j, true, now)
    }

    /// The earliest retransmission deadline (ns since run start).
    pub fn next_timeout(&self) -> Option<u64> {
        self.timers.peek().map(|&Reverse((at, _))| at)
    }

    /// Fires every retransmission timer due by `now`; `each(j, event)` is called for every
    /// device that may have datagrams to [`Self::drain`].
    pub fn handle_timeouts(&mut self, now: u64, mut each: impl FnMut(&mut Peers, u32, Event)) {
        while let Some(&Reverse((at, j))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let slot = &mut self.slots[j as usize];
            if slot.timer_at != at {
                continue;
            }
            slot.timer_at = 0;
            let Some(client) = slot.client.as_mut() else {
                continue;
            };
            let was_established = client.is_established();
            client.handle_timeout();
            let event = self.event(j, was_established, now);
            self.arm(j, now);
            each(self, j, event);
        }
    }

    /// Hands every datagram device `j` has to send to `send`.
    pub fn drain(
        &mut self,
        j: u32,
        mut send: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        if let Some(client) = self.slots[j as usize].client.as_mut() {
            while let Some(d) = client.poll_transmit() {
                send(&d)?;
            }
        }
        Ok(())
    }

    /// Queues device `j`'s retransmission deadline, if it has one.
    fn arm(&mut self, j: u32, now: u64) {
        let slot = &mut self.slots[j as usize];
        let Some(wait) = slot.client.as_ref().and_then(DtlsClient::poll_timeout) else {
            // No flight awaits an answer: a deadline still queued is stale.
            slot.timer_at = 0;
            return;
        };
        let at = now + wait.as_nanos() as u64;
        if slot.timer_at != at {
            slot.timer_at = at;
            self.timers.push(Reverse((at, j)));
        }
    }

    /// What changed for device `j`; a closed or failed client is dropped (an alert of its
    /// own is not sent: the gateway forgets half-open handshakes by itself).
    fn event(&mut self, j: u32, was_established: bool, now: u64) -> Event {
        let slot = &mut self.slots[j as usize];
        let Some(client) = slot.client.as_ref() else {
            return Event::None;
        };
        match client.state() {
            State::Established if !was_established => Event::Established {
                latency_ns: now.saturating_sub(slot.due),
                resumed: client.session_reused(),
            },
            State::Handshaking | State::Established => Event::None,
            State::Closed => {
                slot.client = None;
                Event::Closed
            }
            State::Failed(why) => {
                let why = why.clone();
                slot.client = None;
                Event::Failed(why)
            }
        }
    }
}

#[cfg(test)]
#[path = "dtls_tests.rs"]
mod tests;
