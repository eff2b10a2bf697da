//! A FIFO of encoded packets in one reused buffer: the uplink's queues and its QoS 1
//! in-flight window hold PUBLISH bytes here instead of one owned packet per message.

use std::collections::VecDeque;

/// One packet in a [`PacketFifo`]; packets are contiguous in queue order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame {
    /// Publish order across the uplink's queues.
    pub(super) seq: u64,
    /// Bytes of the packet.
    pub(super) len: usize,
    /// Offset of the packet id within the packet (QoS 1), else 0.
    pub(super) pkid_at: usize,
    /// The packet id it was sent with (in-flight window only).
    pub(super) pkid: u16,
    /// Still wanted; an acknowledged in-flight packet stays as a hole until it reaches
    /// the front.
    pub(super) live: bool,
}

/// Packets oldest first; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct PacketFifo {
    /// Packet bytes; those before `head` were already popped.
    bytes: Vec<u8>,
    head: usize,
    frames: VecDeque<Frame>,
    live: usize,
}

impl PacketFifo {
    /// Packets queued, holes included.
    pub(super) fn len(&self) -> usize {
        self.frames.len()
    }

    /// Packets still live.
    pub(super) fn live(&self) -> usize {
        self.live
    }

    pub(super) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The oldest packet.
    pub(super) fn front(&self) -> Option<&Frame> {
        self.frames.front()
    }

    /// Appends a packet that `write` appends to the buffer it is given, returning its
    /// frame (`len` is taken from what was written); nothing is queued when it returns
    /// `None`.
    pub(super) fn push(&mut self, write: impl FnOnce(&mut Vec<u8>) -> Option<Frame>) -> bool {
        if self.head == self.bytes.len() {
            self.bytes.clear();
            self.head = 0;
        } else if self.head > self.bytes.len() / 2 {
            // Mostly consumed: move the rest to the front rather than grow.
            self.bytes.drain(..self.head);
            self.head = 0;
        }
        let start = self.bytes.len();
        let Some(mut frame) = write(&mut self.bytes) else {
            self.bytes.truncate(start);
            return false;
        };
        frame.len = self.bytes.len() - start;
        self.live += usize::from(frame.live);
        self.frames.push_back(frame);
        true
    }

    /// Appends a copy of `bytes` as a packet described by `frame`.
    pub(super) fn push_bytes(&mut self, frame: Frame, bytes: &[u8]) {
        self.push(|out| {
            out.extend_from_slice(bytes);
            Some(frame)
        });
    }

    /// Removes the oldest packet and returns it with its bytes (valid until the next push).
    pub(super) fn pop(&mut self) -> Option<(Frame, &mut [u8])> {
        let frame = self.frames.pop_front()?;
        self.live -= usize::from(frame.live);
        let start = self.head;
        self.head += frame.len;
        Some((
            frame,
            self.bytes.get_mut(start..self.head).unwrap_or_default(),
        ))
    }

    /// Marks the live packet sent with `pkid` as a hole and drops holes from the front;
    /// false when no live packet has that id.
    pub(super) fn release(&mut self, pkid: u16) -> bool {
        let Some(frame) = self.frames.iter_mut().find(|f| f.live && f.pkid == pkid) else {
            return false;
        };
        frame.live = false;
        self.live -= 1;
        while self.frames.front().is_some_and(|f| !f.live) {
            self.pop();
        }
        true
    }

    /// Drops the holes (acknowledged out of order) once they outnumber the live packets by
    /// `slack`, so memory stays proportional to what is still wanted.
    pub(super) fn compact(&mut self, slack: usize) {
        if self.frames.len() <= 2 * self.live + slack {
            return;
        }
        let mut kept = PacketFifo::default();
        while let Some((frame, bytes)) = self.pop() {
            if frame.live {
                kept.push_bytes(frame, bytes);
            }
        }
        *self = kept;
    }

    /// Moves every live packet of `self` in front of `back`'s, passing each through `edit`.
    pub(super) fn prepend_to(
        &mut self,
        back: &mut PacketFifo,
        mut edit: impl FnMut(&mut Frame, &mut [u8]),
    ) {
        let mut merged = PacketFifo::default();
        while let Some((mut frame, bytes)) = self.pop() {
            if frame.live {
                edit(&mut frame, bytes);
                merged.push_bytes(frame, bytes);
            }
        }
        while let Some((frame, bytes)) = back.pop() {
            merged.push_bytes(frame, bytes);
        }
        *back = merged;
        *self = PacketFifo::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, pkid: u16) -> Frame {
        Frame {
            seq,
            len: 0,
            pkid_at: 0,
            pkid,
            live: true,
        }
    }

    fn drain(f: &mut PacketFifo) -> Vec<(u64, Vec<u8>)> {
        std::iter::from_fn(|| f.pop().map(|(fr, b)| (fr.seq, b.to_vec()))).collect()
    }

    #[test]
    fn keeps_order_and_reuses_the_buffer() {
        let mut f = PacketFifo::default();
        for i in 0..100u8 {
            f.push_bytes(frame(u64::from(i), 0), &[i; 3]);
            let (fr, bytes) = f.pop().expect("pushed");
            assert_eq!((fr.seq, &*bytes), (u64::from(i), &[i; 3][..]));
        }
        assert!(f.bytes.capacity() <= 64, "steady push/pop does not grow");
        f.push_bytes(frame(1, 0), b"ab");
        f.push_bytes(frame(2, 0), b"c");
        assert!(!f.push(|out| {
            out.push(9);
            None
        }));
        assert_eq!(drain(&mut f), [(1, b"ab".to_vec()), (2, b"c".to_vec())]);
    }

    #[test]
    fn release_out_of_order_leaves_holes_until_the_front_goes() {
        let mut f = PacketFifo::default();
        for i in 1..=3u16 {
            f.push_bytes(frame(u64::from(i), i), &[i as u8]);
        }
        assert!(f.release(2));
        assert!(!f.release(2), "already released");
        assert_eq!((f.len(), f.live()), (3, 2));
        assert!(f.release(1));
        assert_eq!((f.len(), f.live()), (1, 1), "front holes dropped");
        assert_eq!(drain(&mut f), [(3, vec![3])]);
    }

    #[test]
    fn compact_and_prepend_keep_only_live_packets_in_order() {
        let mut f = PacketFifo::default();
        for i in 1..=6u16 {
            f.push_bytes(frame(u64::from(i), i), &[i as u8]);
        }
        for i in [2, 3, 4, 5] {
            f.release(i);
        }
        f.compact(0);
        assert_eq!((f.len(), f.live()), (2, 2));
        let mut back = PacketFifo::default();
        back.push_bytes(frame(7, 0), &[7]);
        f.prepend_to(&mut back, |fr, b| {
            fr.pkid = 0;
            b[0] |= 0x80;
        });
        assert!(f.is_empty());
        assert_eq!(
            drain(&mut back),
            [(1, vec![0x81]), (6, vec![0x86]), (7, vec![7])]
        );
    }
}
