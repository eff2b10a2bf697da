//! One way to queue a datagram: [`Transmits`], quinn's `Transmit` for a whole batch.
//!
//! The sans-IO cores (the shard, the DTLS server) write datagrams into one growing buffer,
//! in place where an encoder writes them, and the runtime drains them by reference into
//! its `sendmmsg` batch: nothing is allocated per datagram in steady state.

use std::net::SocketAddr;

/// Datagrams waiting to be sent: their bytes back to back, and where each one goes.
#[derive(Debug, Default)]
pub struct Transmits {
    bytes: Vec<u8>,
    /// `(dest, start, len)` of each datagram in `bytes`.
    list: Vec<(SocketAddr, usize, usize)>,
}

impl Transmits {
    /// A queue with room for `bytes` of datagrams, `datagrams` of them, before it grows.
    pub fn with_capacity(bytes: usize, datagrams: usize) -> Transmits {
        Transmits {
            bytes: Vec::with_capacity(bytes),
            list: Vec::with_capacity(datagrams),
        }
    }

    /// Queues a copy of `datagram` for `dest`.
    pub fn push(&mut self, dest: SocketAddr, datagram: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(datagram);
        self.list.push((dest, start, datagram.len()));
    }

    /// Where the next datagram written in place (through [`Transmits::buffer`]) starts.
    pub fn start(&self) -> usize {
        self.bytes.len()
    }

    /// The buffer to append the next datagram to, after [`Transmits::start`].
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// The bytes appended since `start`.
    pub fn written(&self, start: usize) -> &[u8] {
        &self.bytes[start.min(self.bytes.len())..]
    }

    /// Queues the bytes appended since `start` as one datagram for `dest`.
    pub fn commit(&mut self, dest: SocketAddr, start: usize) {
        let start = start.min(self.bytes.len());
        self.list.push((dest, start, self.bytes.len() - start));
    }

    /// Forgets the bytes appended since `start` (not committed).
    pub fn discard(&mut self, start: usize) {
        self.bytes.truncate(start);
    }

    /// Hands every queued datagram to `send`, oldest first, and forgets them.
    pub fn drain(&mut self, mut send: impl FnMut(SocketAddr, &[u8])) {
        for &(dest, start, len) in &self.list {
            send(dest, &self.bytes[start..start + len]);
        }
        self.list.clear();
        self.bytes.clear();
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushed_and_written_in_place_datagrams_drain_in_order() {
        let a: SocketAddr = "10.0.0.1:1".parse().expect("addr");
        let b: SocketAddr = "10.0.0.2:2".parse().expect("addr");
        let mut t = Transmits::with_capacity(64, 4);
        t.push(a, b"one");
        let start = t.start();
        t.buffer().extend_from_slice(b"two");
        assert_eq!(t.written(start), b"two");
        t.commit(b, start);
        let start = t.start();
        t.buffer().extend_from_slice(b"dropped");
        t.discard(start);
        assert_eq!(t.len(), 2);
        let mut out = Vec::new();
        t.drain(|d, bytes| out.push((d, bytes.to_vec())));
        assert_eq!(out, vec![(a, b"one".to_vec()), (b, b"two".to_vec())]);
        assert!(t.is_empty());
        assert_eq!(t.start(), 0);
    }
}
