//! Deterministic shard selection: which shard owns a device's source address.
//!
//! Every shard owns one UDP socket of a `SO_REUSEPORT` group bound to the listener address.
//! A classic BPF program attached to the group with `SO_ATTACH_REUSEPORT_CBPF` (works
//! unprivileged) hashes each datagram's source IP and port to a socket index, and
//! [`shard_for`] computes the very same 32-bit hash in userspace, so any shard can tell which
//! shard owns an address (e.g. to hand an endpoint over after a NAT rebinding).
//!
//! # The hash
//!
//! All arithmetic is on `u32`, wrapping, exactly as classic BPF's accumulator does it:
//!
//! ```text
//! mix(h, w)   = (h ^ w) * HASH_MUL
//! IPv4:  h = mix(HASH_SEED, ip);                              h = mix(h, port)
//! IPv6:  h = mix(HASH_SEED, w0); .. h = mix(h, w3) (4 big-endian words); h = mix(h, port)
//! final: h ^= h >> 16; h *= FMIX_MUL; h ^= h >> 13; shard = h % shards
//! ```
//!
//! Addresses and ports enter as the big-endian numbers a BPF `ld`/`ldh` yields. An
//! IPv4-mapped IPv6 source (`::ffff:a.b.c.d`, seen on a dual-stack `[::]` socket) is hashed
//! as the IPv4 address, because the kernel hands the program the packet's real IPv4 header.
//!
//! # Socket order
//!
//! The index the program returns is the position of a socket in the reuseport group, which
//! is the order in which the sockets were bound. [`bind_reuseport_group`] binds them in shard
//! order `0..N`, so socket `i` belongs to shard `i`. Closing a socket moves the group's last
//! socket into its slot, so the group must be created and dropped as a whole.
//!
//! # Limits of the program
//!
//! For IPv6 the UDP header is read right after the fixed 40-byte header: a datagram carrying
//! IPv6 extension headers hashes a wrong "port" and may land on a shard other than
//! [`shard_for`]'s, which costs a cross-shard handoff, never a lost datagram. If the program
//! returns an index outside the group (it cannot by construction) the kernel falls back to
//! its own hash.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Starting value of the hash; any constant works, this one keeps address 0 from hashing to 0.
const HASH_SEED: u32 = 0x2545_F491;
/// Odd multiplier (2^32 / golden ratio) that spreads every input bit into the high bits.
const HASH_MUL: u32 = 0x9E37_79B1;
/// Finalizer multiplier from MurmurHash3's `fmix32`, so `% shards` also sees the high bits.
const FMIX_MUL: u32 = 0x85EB_CA6B;

/// Receive and send buffer per shard socket: 8 MiB holds about 35 ms of a 230 k datagram/s
/// burst at ~1 KiB kernel truesize per small datagram, enough to ride out a scheduling hiccup
/// of the shard's core. The kernel caps it at `net.core.rmem_max` / `wmem_max` (raise those
/// sysctls on a production host).
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// `SO_ATTACH_REUSEPORT_CBPF` from `<asm-generic/socket.h>` (not exported by `libc` for glibc).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// How datagrams are spread over the sockets of a reuseport group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steering {
    /// The BPF program is attached: a datagram from `addr` arrives on shard
    /// `shard_for(addr, shards)`.
    Bpf,
    /// Attaching failed; the kernel's own hash picks the socket, so a datagram may arrive on
    /// a shard that does not own its endpoint and must be handed over.
    KernelHash,
}

/// The shard that owns datagrams from `addr` in a group of `shards` sockets.
///
/// Mirrors the BPF program bit for bit (see the module docs). `shards` of 0 or 1 gives 0.
pub fn shard_for(addr: &SocketAddr, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let shards = u32::try_from(shards).unwrap_or(u32::MAX);
    let port = u32::from(addr.port());
    let ip = match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    let h = match ip {
        IpAddr::V4(v4) => mix(HASH_SEED, u32::from(v4)),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut h = HASH_SEED;
            for w in o.chunks_exact(4) {
                h = mix(h, u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
            }
            h
        }
    };
    finish(mix(h, port)) as usize % shards as usize
}

fn mix(h: u32, w: u32) -> u32 {
    (h ^ w).wrapping_mul(HASH_MUL)
}

fn finish(h: u32) -> u32 {
    let h = (h ^ (h >> 16)).wrapping_mul(FMIX_MUL);
    h ^ (h >> 13)
}

/// One classic BPF instruction.
fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// `k` relative to the network header (`SKF_NET_OFF + off`), as BPF's unsigned `k` field.
fn net(off: i32) -> u32 {
    (libc::SKF_NET_OFF + off) as u32
}

/// Appends `A = mix(X, A)` where X holds the running hash: `A ^= X; A *= HASH_MUL`.
fn emit_mix_x(p: &mut Vec<libc::sock_filter>) {
    p.push(stmt(libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X, 0));
    p.push(stmt(libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K, HASH_MUL));
}

/// Appends the finalizer on A, the modulo and the return.
fn emit_finish(p: &mut Vec<libc::sock_filter>, shards: u32) {
    use libc::{BPF_A, BPF_ALU, BPF_K, BPF_MISC, BPF_MOD, BPF_MUL, BPF_RET, BPF_RSH, BPF_TAX};
    use libc::{BPF_X, BPF_XOR};
    for (shift, mul) in [(16, Some(FMIX_MUL)), (13, None)] {
        p.push(stmt(BPF_MISC | BPF_TAX, 0));
        p.push(stmt(BPF_ALU | BPF_RSH | BPF_K, shift));
        p.push(stmt(BPF_ALU | BPF_XOR | BPF_X, 0));
        if let Some(m) = mul {
            p.push(stmt(BPF_ALU | BPF_MUL | BPF_K, m));
        }
    }
    p.push(stmt(BPF_ALU | BPF_MOD | BPF_K, shards));
    p.push(stmt(BPF_RET | BPF_A, 0));
}

/// The steering program for a group of `shards` sockets (IPv4 and IPv6 packets).
///
/// The program runs with the packet data starting at the UDP payload, so header fields are
/// loaded relative to the network header through `SKF_NET_OFF`. The IPv4 source port is at
/// `net + IHL*4`: `ldxb 4*([net]&0xf)` puts IHL*4 in X and `ldh [x + SKF_NET_OFF]` reads it
/// (an indirect load addresses `X + k`, which the kernel resolves like an absolute one).
fn steering_program(shards: u32) -> Vec<libc::sock_filter> {
    use libc::BPF_W;
    use libc::{BPF_ABS, BPF_ALU, BPF_B, BPF_H, BPF_IND, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD};
    use libc::{BPF_LDX, BPF_MEM, BPF_MISC, BPF_MSH, BPF_MUL, BPF_RET, BPF_RSH, BPF_ST, BPF_TAX};
    use libc::{BPF_X, BPF_XOR};
    let mut p = Vec::with_capacity(48);
    if shards <= 1 {
        p.push(stmt(BPF_RET | BPF_K, 0));
        return p;
    }
    // A = IP version nibble.
    p.push(stmt(BPF_LD | BPF_B | BPF_ABS, net(0)));
    p.push(stmt(BPF_ALU | BPF_RSH | BPF_K, 4));
    let version_check = p.len();
    p.push(libc::sock_filter {
        code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 6,
    });

    // IPv6: source address words at net+8..24, UDP source port at net+40.
    let v6_start = p.len();
    p.push(stmt(BPF_LD | BPF_W | BPF_ABS, net(8)));
    p.push(stmt(BPF_ALU | BPF_XOR | BPF_K, HASH_SEED));
    p.push(stmt(BPF_ALU | BPF_MUL | BPF_K, HASH_MUL));
    for off in [12, 16, 20] {
        p.push(stmt(BPF_MISC | BPF_TAX, 0));
        p.push(stmt(BPF_LD | BPF_W | BPF_ABS, net(off)));
        emit_mix_x(&mut p);
    }
    p.push(stmt(BPF_MISC | BPF_TAX, 0));
    p.push(stmt(BPF_LD | BPF_H | BPF_ABS, net(40)));
    emit_mix_x(&mut p);
    emit_finish(&mut p, shards);
    let v6_len = p.len() - v6_start;
    p[version_check].jf = u8::try_from(v6_len).unwrap_or(u8::MAX);

    // IPv4 (and anything else): source address at net+12, UDP source port at net+IHL*4.
    p.push(stmt(BPF_LD | BPF_W | BPF_ABS, net(12)));
    p.push(stmt(BPF_ALU | BPF_XOR | BPF_K, HASH_SEED));
    p.push(stmt(BPF_ALU | BPF_MUL | BPF_K, HASH_MUL));
    p.push(stmt(BPF_ST, 0));
    p.push(stmt(BPF_LDX | BPF_B | BPF_MSH, net(0)));
    p.push(stmt(BPF_LD | BPF_H | BPF_IND, net(0)));
    p.push(stmt(BPF_MISC | BPF_TAX, 0));
    p.push(stmt(BPF_LD | BPF_MEM, 0));
    p.push(stmt(BPF_ALU | BPF_XOR | BPF_X, 0));
    p.push(stmt(BPF_ALU | BPF_MUL | BPF_K, HASH_MUL));
    emit_finish(&mut p, shards);
    p
}

/// Attaches the steering program to the reuseport group `socket` belongs to.
///
/// `socket` must have `SO_REUSEPORT` set; attaching to any member (bound or not) sets the
/// program of the whole group. Fails on kernels before 4.5 (no `SO_ATTACH_REUSEPORT_CBPF`).
pub fn attach_reuseport_cbpf(socket: &Socket, shards: usize) -> io::Result<()> {
    let shards = u32::try_from(shards).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut program = steering_program(shards);
    setsockopt_cbpf(socket.as_raw_fd(), &mut program)
}

fn setsockopt_cbpf(fd: libc::c_int, program: &mut [libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `len` initialized instructions that outlive the call; the
    // kernel copies the program and keeps no pointer into our memory. `fd` is a live socket
    // borrowed for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::from_ref(&fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates the reuseport group for `addr`: `shards` nonblocking UDP sockets bound in shard
/// order (socket `i` is shard `i`), with [`SOCKET_BUFFER_BYTES`] buffers and the steering
/// program attached.
///
/// If `addr` has port 0 the first socket picks the port and the others bind to it. If the
/// program cannot be attached the group still works with [`Steering::KernelHash`] and a
/// warning is logged.
pub fn bind_reuseport_group(
    addr: SocketAddr,
    shards: usize,
) -> Result<(Vec<UdpSocket>, Steering), io::Error> {
    if shards == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a reuseport group needs at least one socket",
        ));
    }
    let mut sockets: Vec<Socket> = Vec::with_capacity(shards);
    let mut bind_addr = addr;
    for _ in 0..shards {
        let socket = new_shard_socket(&bind_addr)?;
        if bind_addr.port() == 0 {
            bind_addr = socket
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("bound socket has no inet address"))?;
        }
        sockets.push(socket);
    }
    let steering = match sockets.first().map(|s| attach_reuseport_cbpf(s, shards)) {
        Some(Ok(())) => Steering::Bpf,
        Some(Err(e)) => {
            tracing::warn!(
                error = %e,
                %addr,
                "cannot attach the reuseport BPF program; steering falls back to the kernel \
                 hash and datagrams reaching the wrong shard are handed over across shards"
            );
            Steering::KernelHash
        }
        None => Steering::KernelHash,
    };
    Ok((sockets.into_iter().map(UdpSocket::from).collect(), steering))
}

fn new_shard_socket(addr: &SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(*addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    socket.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    // The kernel reports twice the usable size it granted.
    let granted = socket.recv_buffer_size()? / 2;
    if granted < SOCKET_BUFFER_BYTES {
        tracing::debug!(
            granted,
            wanted = SOCKET_BUFFER_BYTES,
            "receive buffer capped by net.core.rmem_max"
        );
    }
    socket.bind(&SockAddr::from(*addr))?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
    use std::time::{Duration, Instant};

    /// Sends one datagram from every client to `server` and asserts that each arrives on the
    /// socket `shard_for` names.
    fn assert_steered(group: &[UdpSocket], clients: &[UdpSocket], server: SocketAddr) {
        let n = group.len();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(&(i as u32).to_be_bytes(), server).expect("send");
        }
        let mut seen = vec![false; clients.len()];
        let mut received = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 16];
        while received < clients.len() && Instant::now() < deadline {
            for (shard, s) in group.iter().enumerate() {
                match s.recv_from(&mut buf) {
                    Ok((4, src)) => {
                        let i = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                        assert_eq!(
                            shard,
                            shard_for(&src, n),
                            "datagram from {src} on shard {shard}"
                        );
                        assert!(!seen[i], "duplicate from client {i}");
                        seen[i] = true;
                        received += 1;
                    }
                    Ok((len, src)) => panic!("unexpected {len}-byte datagram from {src}"),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("recv: {e}"),
                }
            }
        }
        assert_eq!(received, clients.len(), "lost datagrams");
    }

    fn v4_clients(hosts: u8, per_host: usize) -> Vec<UdpSocket> {
        let mut clients = Vec::new();
        for x in 1..=hosts {
            for _ in 0..per_host {
                let c = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, x), 0)).expect("client bind");
                clients.push(c);
            }
        }
        clients
    }

    #[test]
    fn kernel_steers_ipv4_like_shard_for() {
        for n in [2, 3] {
            let (group, steering) =
                bind_reuseport_group("127.0.0.1:0".parse().expect("addr"), n).expect("group");
            assert_eq!(steering, Steering::Bpf);
            assert_eq!(group.len(), n);
            let server = group[0].local_addr().expect("addr");
            for s in &group[1..] {
                assert_eq!(s.local_addr().expect("addr"), server);
            }
            let clients = v4_clients(40, 8);
            // Both shards must actually be exercised for the test to mean anything.
            let mut used = vec![0; n];
            for c in &clients {
                used[shard_for(&c.local_addr().expect("addr"), n)] += 1;
            }
            assert!(used.iter().all(|&u| u > 0), "{used:?}");
            assert_steered(&group, &clients, server);
        }
    }

    #[test]
    fn kernel_steers_ipv6_like_shard_for() {
        let Ok((group, steering)) = bind_reuseport_group("[::1]:0".parse().expect("addr"), 3)
        else {
            return; // no IPv6 loopback on this host
        };
        assert_eq!(steering, Steering::Bpf);
        let server = group[0].local_addr().expect("addr");
        let clients: Vec<_> = (0..200)
            .map(|_| UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).expect("client bind"))
            .collect();
        assert_steered(&group, &clients, server);
    }

    #[test]
    fn dual_stack_socket_steers_mapped_ipv4_like_shard_for() {
        let Ok((group, _)) = bind_reuseport_group("[::]:0".parse().expect("addr"), 3) else {
            return;
        };
        let port = group[0].local_addr().expect("addr").port();
        let clients = v4_clients(20, 8);
        // The group sees these sources as ::ffff:127.0.0.x; shard_for hashes them as IPv4.
        assert_steered(
            &group,
            &clients,
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        );
    }

    #[test]
    fn mapped_ipv6_hashes_like_ipv4() {
        for n in 2..9 {
            for port in [1, 5683, 40000] {
                let v4 = SocketAddr::from((Ipv4Addr::new(10, 1, 2, 3), port));
                let mapped = SocketAddr::V6(SocketAddrV6::new(
                    Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped(),
                    port,
                    0,
                    0,
                ));
                assert_eq!(shard_for(&v4, n), shard_for(&mapped, n));
            }
        }
    }

    #[test]
    fn degenerate_shard_counts_give_zero() {
        let a: SocketAddr = "192.0.2.7:5683".parse().expect("addr");
        assert_eq!(shard_for(&a, 0), 0);
        assert_eq!(shard_for(&a, 1), 0);
        assert_eq!(steering_program(1).len(), 1);
    }

    #[test]
    fn hash_matches_reference_values() {
        // Pinned so that a change to the hash (which would desync old kernels' programs
        // from new binaries during a rolling restart) is a visible decision.
        let h = finish(mix(mix(HASH_SEED, 0x7f00_0001), 5683));
        let a: SocketAddr = "127.0.0.1:5683".parse().expect("addr");
        for n in 2..9 {
            assert_eq!(shard_for(&a, n), (h % n as u32) as usize);
        }
    }

    fn assert_balanced(addrs: &[SocketAddr]) {
        for n in 2..=8 {
            let mut counts = vec![0usize; n];
            for a in addrs {
                counts[shard_for(a, n)] += 1;
            }
            let expected = addrs.len() / n;
            for &c in &counts {
                assert!(
                    c.abs_diff(expected) * 100 <= expected * 12,
                    "{n} shards unbalanced: {counts:?}"
                );
            }
        }
    }

    #[test]
    fn hash_balances_loopback_addresses_and_ports() {
        // 10 k sources the way loadgen makes them: consecutive 127.x.y.z, one port each.
        let consecutive: Vec<SocketAddr> = (0..10_000u32)
            .map(|i| SocketAddr::from((Ipv4Addr::from(0x7f00_0001 + i), 56830)))
            .collect();
        assert_balanced(&consecutive);
        // One address, 10 k consecutive ephemeral ports.
        let ports: Vec<SocketAddr> = (0..10_000u16)
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, 32768 + p)))
            .collect();
        assert_balanced(&ports);
        // 100 addresses × 100 ports, and IPv6 with consecutive interface ids.
        let grid: Vec<SocketAddr> = (0..10_000u32)
            .map(|i| {
                SocketAddr::from((
                    Ipv4Addr::from(0x7f00_0001 + i / 100),
                    (40000 + i % 100) as u16,
                ))
            })
            .collect();
        assert_balanced(&grid);
        let v6: Vec<SocketAddr> = (0..10_000u128)
            .map(|i| SocketAddr::from((Ipv6Addr::from(0x2001_0db8_u128 << 96 | i), 5683)))
            .collect();
        assert_balanced(&v6);
    }
}
