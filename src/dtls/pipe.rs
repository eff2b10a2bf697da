//! The memory "socket" an OpenSSL `SSL` object reads and writes while it is handshaking.
//!
//! OpenSSL drives its state machine through a BIO; the `openssl` crate adapts any
//! `Read + Write` into one. [`DatagramPipe`] is that adapter for a datagram transport with
//! no socket behind it: the owner pushes each received datagram in, OpenSSL reads it as one
//! whole datagram (DTLS needs datagram boundaries), and every `write` OpenSSL makes is one
//! datagram to send, collected until the owner drains them.

use std::collections::VecDeque;
use std::io;

/// Datagrams an `SSL` object may queue for sending before it is drained. A DTLS flight is
/// at most a handful of datagrams; more means the owner stopped draining.
const MAX_OUTBOUND: usize = 16;

/// Received datagrams waiting for OpenSSL to read them. One handshake flight from a
/// client fits in a few; beyond, the oldest are dropped as a lossy network would.
const MAX_INBOUND: usize = 8;

/// An in-memory datagram pair: datagrams in for OpenSSL to read, datagrams out it wrote.
#[derive(Debug, Default)]
pub struct DatagramPipe {
    inbound: VecDeque<Vec<u8>>,
    outbound: VecDeque<Vec<u8>>,
}

impl DatagramPipe {
    /// Queues a received datagram for OpenSSL to read.
    pub fn push_inbound(&mut self, datagram: &[u8]) {
        if self.inbound.len() == MAX_INBOUND {
            self.inbound.pop_front();
        }
        self.inbound.push_back(datagram.to_vec());
    }

    /// The next datagram OpenSSL wrote, oldest first.
    pub fn pop_outbound(&mut self) -> Option<Vec<u8>> {
        self.outbound.pop_front()
    }

    /// Whether OpenSSL has written datagrams not yet drained.
    pub fn has_outbound(&self) -> bool {
        !self.outbound.is_empty()
    }

    /// Drops every datagram still waiting to be read.
    pub fn clear_inbound(&mut self) {
        self.inbound.clear();
    }
}

impl io::Read for DatagramPipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inbound.pop_front() {
            Some(d) => {
                // A datagram longer than the reader's buffer is truncated, as recv(2) does.
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl io::Write for DatagramPipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.outbound.len() == MAX_OUTBOUND {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.outbound.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn reads_keep_datagram_boundaries() {
        let mut p = DatagramPipe::default();
        p.push_inbound(b"one");
        p.push_inbound(b"second");
        let mut buf = [0u8; 16];
        assert_eq!(p.read(&mut buf).expect("pipe"), 3);
        assert_eq!(&buf[..3], b"one");
        assert_eq!(p.read(&mut buf).expect("pipe"), 6);
        assert_eq!(
            p.read(&mut buf).expect_err("empty").kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn writes_are_datagrams_and_bounded() {
        let mut p = DatagramPipe::default();
        for i in 0..MAX_OUTBOUND {
            assert_eq!(p.write(&[i as u8; 3]).expect("pipe"), 3);
        }
        assert!(p.write(b"x").is_err());
        assert_eq!(p.pop_outbound().expect("pipe"), vec![0u8; 3]);
        assert!(p.has_outbound());
    }
}
