//! What the pipeline bench and the examples share: wakaama-style Register datagrams, device
//! addresses and a counting global allocator.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use lwm2m_gateway::coap::{option, Code, MessageType, MessageWriter};

/// The object list a wakaama 1.1 client registers with.
pub const OBJECTS: &[u8] = b"</>;rt=\"oma.lwm2m\";ct=110,</1>;ver=1.1,</1/0>,</2/0>,</3/0>,</4/0>,</5/0>,</6/0>,</7/0>,</31024>;ver=1.0,</31024/10>,</31024/11>,</31024/12>";

/// Device `i`'s Register (`ep=bench-<i>`, lifetime `lt`) into `buf`.
pub fn register(i: u32, lt: u32, buf: &mut Vec<u8>) {
    buf.clear();
    let ep = format!("ep=bench-{i}");
    let lt = format!("lt={lt}");
    let mut w = MessageWriter::new(
        buf,
        MessageType::Con,
        Code::POST,
        i as u16,
        &i.to_be_bytes(),
    );
    w.option(option::URI_PATH, b"rd")
        .uint_option(option::CONTENT_FORMAT, 40)
        .option(option::URI_QUERY, b"lwm2m=1.1")
        .option(option::URI_QUERY, ep.as_bytes())
        .option(option::URI_QUERY, b"b=U")
        .option(option::URI_QUERY, lt.as_bytes())
        .payload(OBJECTS);
    w.finish();
}

/// Device `i`'s source address: 16,384 ports per loopback address from 127.0.0.1 on.
pub fn addr(i: u32) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from(0x7f00_0001 + (i >> 14))),
        10_000 + (i & 0x3fff) as u16,
    )
}

/// Live heap bytes and allocations now (with [`CountingAlloc`] as the global allocator).
pub fn live() -> (i64, i64) {
    (LIVE.load(Ordering::Relaxed), CHUNKS.load(Ordering::Relaxed))
}

/// Allocation calls (`alloc` and `realloc`) so far.
pub static CALLS: AtomicU64 = AtomicU64::new(0);
/// Live heap bytes, allocator chunk overhead included.
pub static LIVE: AtomicI64 = AtomicI64::new(0);
/// Live heap allocations.
pub static CHUNKS: AtomicI64 = AtomicI64::new(0);

/// Size of the malloc chunk that serves a request of `size` bytes (glibc: 8 bytes of
/// overhead, 16-byte granularity, 32 bytes at least).
fn chunk(size: usize) -> i64 {
    ((size + 8).max(32).div_ceil(16) * 16) as i64
}

/// The system allocator, counting what goes through it.
pub struct CountingAlloc;

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(chunk(layout.size()), Ordering::Relaxed);
        CHUNKS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        CHUNKS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(chunk(new_size) - chunk(layout.size()), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
