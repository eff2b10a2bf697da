//! One UDP socket that speaks for many devices: each datagram leaves from the device's own
//! loopback address (`IP_PKTINFO` on send) and replies are told apart by the address they
//! were sent to (`IP_PKTINFO` on receive). No socket per device.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// First device address: 127.16.0.1 leaves 127.0.0.0/12 to everything else on the host.
const FIRST_DEVICE_IP: u32 = u32::from_be_bytes([127, 16, 0, 1]);

/// Socket buffers large enough to absorb a burst of replies at a million devices.
const SOCKET_BUFFER: usize = 16 << 20;

/// The loopback address of device `index`.
pub fn device_ip(index: u32) -> Ipv4Addr {
    Ipv4Addr::from(FIRST_DEVICE_IP.wrapping_add(index))
}

/// The device index of a loopback address handed out by [`device_ip`].
pub fn device_index(ip: Ipv4Addr) -> Option<u32> {
    u32::from(ip).checked_sub(FIRST_DEVICE_IP)
}

/// Sets both socket buffers to [`SOCKET_BUFFER`]: beyond `net.core.rmem_max` when the
/// process may (`SO_RCVBUFFORCE` needs CAP_NET_ADMIN), else as large as allowed.
fn grow_buffers(socket: &Socket) {
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    let size = SOCKET_BUFFER as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: valid fd, option value points at a live c_int of the given size. Failure
        // (no CAP_NET_ADMIN) leaves the size set above.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// A UDP socket bound to `0.0.0.0:port` that sends from any loopback address.
#[derive(Debug)]
pub struct MultiSource {
    socket: Socket,
}

impl MultiSource {
    /// Binds `0.0.0.0:port` (0 = any) with `IP_PKTINFO` enabled and a receive timeout.
    pub fn bind(port: u16, timeout: Duration) -> io::Result<MultiSource> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        grow_buffers(&socket);
        socket.set_read_timeout(Some(timeout))?;
        let on: libc::c_int = 1;
        // SAFETY: valid fd, option value points at a live c_int of the given size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_PKTINFO,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
        Ok(MultiSource { socket })
    }

    /// The local port every device uses.
    #[cfg(test)]
    pub fn port(&self) -> io::Result<u16> {
        let addr = self.socket.local_addr()?;
        addr.as_socket()
            .map(|a| a.port())
            .ok_or_else(|| io::Error::other("not an inet socket"))
    }

    /// Sends `data` to `dst` from `src`.
    pub fn send_from(&self, src: Ipv4Addr, dst: SocketAddrV4, data: &[u8]) -> io::Result<()> {
        // SAFETY: every pointer handed to sendmsg refers to a live local of the right size;
        // the control buffer is aligned by its u64 element type and sized for one cmsg.
        unsafe {
            let mut to: libc::sockaddr_in = zeroed();
            to.sin_family = libc::AF_INET as libc::sa_family_t;
            to.sin_port = dst.port().to_be();
            to.sin_addr.s_addr = u32::from(*dst.ip()).to_be();
            let mut iov = libc::iovec {
                iov_base: data.as_ptr() as *mut _,
                iov_len: data.len(),
            };
            let mut control = [0u64; 8];
            let mut msg: libc::msghdr = zeroed();
            msg.msg_name = (&mut to as *mut libc::sockaddr_in).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::IPPROTO_IP;
            (*cmsg).cmsg_type = libc::IP_PKTINFO;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize;
            let info = libc::CMSG_DATA(cmsg) as *mut libc::in_pktinfo;
            let mut pktinfo: libc::in_pktinfo = zeroed();
            pktinfo.ipi_spec_dst.s_addr = u32::from(src).to_be();
            std::ptr::write_unaligned(info, pktinfo);
            if libc::sendmsg(self.socket.as_raw_fd(), &msg, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Receives one datagram without waiting: `(length, the local address it was sent to,
    /// sender)`, or `WouldBlock`.
    pub fn try_recv_to(&self, buf: &mut [u8]) -> io::Result<(usize, Ipv4Addr, SocketAddr)> {
        self.recv_with(buf, libc::MSG_DONTWAIT)
    }

    /// Receives one datagram, waiting up to the socket's receive timeout.
    #[cfg(test)]
    pub fn recv_to(&self, buf: &mut [u8]) -> io::Result<(usize, Ipv4Addr, SocketAddr)> {
        self.recv_with(buf, 0)
    }

    /// Waits until a datagram is readable or `timeout` passed; `true` when readable.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        wait_readable(self.socket.as_raw_fd(), timeout)
    }

    fn recv_with(
        &self,
        buf: &mut [u8],
        flags: libc::c_int,
    ) -> io::Result<(usize, Ipv4Addr, SocketAddr)> {
        // SAFETY: as in `send_from`; the kernel writes at most the lengths we pass.
        unsafe {
            let mut from: libc::sockaddr_in = zeroed();
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut control = [0u64; 8];
            let mut msg: libc::msghdr = zeroed();
            msg.msg_name = (&mut from as *mut libc::sockaddr_in).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of::<[u64; 8]>();
            let n = libc::recvmsg(self.socket.as_raw_fd(), &mut msg, flags);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut local = Ipv4Addr::UNSPECIFIED;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::IPPROTO_IP && (*cmsg).cmsg_type == libc::IP_PKTINFO {
                    let info: libc::in_pktinfo =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in_pktinfo);
                    local = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            let sender = SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr)),
                u16::from_be(from.sin_port),
            ));
            Ok((n as usize, local, sender))
        }
    }
}

/// Waits until `fd` is readable or `timeout` passed (µs resolution); `true` when readable.
fn wait_readable(fd: libc::c_int, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: one live pollfd, a live timespec, no signal mask.
    let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    match rc {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Datagrams moved per `recvmmsg`/`sendmmsg` call by the echo sink.
const ECHO_BATCH: usize = 64;
/// Largest datagram the echo sink returns whole.
const ECHO_MTU: usize = 1536;

/// How the echo sink waits for datagrams (`--echo-sink`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SinkKind {
    /// A plain thread: `recvmmsg`/`sendmmsg`, blocking in `poll` when the socket is empty.
    #[default]
    Blocking,
    /// The gateway's own receive path without the gateway: a glommio executor draining with
    /// the shard's `RecvBatch`/`SendBatch` and awaiting readiness through io_uring when the
    /// socket is empty, a wake-up per datagram as a shard without receive moderation. Its
    /// CPU beside the blocking sink's is what the executor itself costs per datagram.
    Glommio,
}

/// The `udp-baseline` sink: a socket that returns every CoAP datagram to its sender as an
/// ACK (type bits rewritten, nothing else), batched with `recvmmsg`/`sendmmsg`.
#[derive(Debug)]
pub struct EchoSink {
    socket: Socket,
    kind: SinkKind,
}

impl EchoSink {
    /// Binds `addr` with large buffers.
    pub fn bind(addr: SocketAddrV4, kind: SinkKind) -> io::Result<EchoSink> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        grow_buffers(&socket);
        socket.bind(&addr.into())?;
        Ok(EchoSink { socket, kind })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        match self.socket.local_addr()?.as_socket() {
            Some(SocketAddr::V4(a)) => Ok(a),
            _ => Err(io::Error::other("not an IPv4 socket")),
        }
    }

    /// Echoes until `stop` returns true (checked at least every 50 ms); returns datagrams
    /// echoed and the CPU time the calling thread spent meanwhile.
    pub fn run(&self, stop: &dyn Fn() -> bool) -> io::Result<EchoStats> {
        match self.kind {
            SinkKind::Blocking => self.run_blocking(stop),
            SinkKind::Glommio => self.run_glommio(stop),
        }
    }

    /// [`SinkKind::Glommio`]: an executor on the calling thread over a duplicate of the
    /// socket.
    fn run_glommio(&self, stop: &dyn Fn() -> bool) -> io::Result<EchoStats> {
        use lwm2m_gateway::runtime::udp::{into_glommio, readable, RecvBatch, SendBatch};
        let dup: std::net::UdpSocket = self.socket.try_clone()?.into();
        let executor = glommio::LocalExecutorBuilder::default()
            .make()
            .map_err(|e| io::Error::other(format!("glommio executor: {e}")))?;
        executor.run(async move {
            let cpu_before = thread_cpu_ns()?;
            let socket = into_glommio(dup);
            let (mut recv, mut send) = (RecvBatch::new(), SendBatch::new());
            let mut ack = [0u8; ECHO_MTU];
            let mut echoed = 0u64;
            while !stop() {
                let n = recv.recv(&socket)?;
                if n == 0 {
                    futures_lite::future::or(
                        async {
                            let _ = readable(&socket).await;
                        },
                        glommio::timer::sleep(Duration::from_millis(50)),
                    )
                    .await;
                    continue;
                }
                for (from, data) in recv.iter() {
                    let len = data.len().min(ECHO_MTU);
                    ack[..len].copy_from_slice(&data[..len]);
                    if len > 0 {
                        // CoAP type bits 5..4 := ACK (2).
                        ack[0] = (ack[0] & 0xcf) | 0x20;
                    }
                    if send.push(from, &ack[..len]).is_ok() {
                        echoed += 1;
                    }
                }
                // A full send buffer drops the rest of the batch, as the network would.
                let _ = send.flush(&socket);
            }
            Ok(EchoStats {
                echoed,
                cpu_ns: thread_cpu_ns()?.saturating_sub(cpu_before),
            })
        })
    }

    /// [`SinkKind::Blocking`].
    fn run_blocking(&self, stop: &dyn Fn() -> bool) -> io::Result<EchoStats> {
        let cpu_before = thread_cpu_ns()?;
        let fd = self.socket.as_raw_fd();
        let mut bufs = vec![[0u8; ECHO_MTU]; ECHO_BATCH];
        // SAFETY: plain-old-data C structs; all-zero is a valid (empty) value for each.
        let mut addrs: Vec<libc::sockaddr_in> = vec![unsafe { zeroed() }; ECHO_BATCH];
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: as above.
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; ECHO_BATCH];
        let mut echoed = 0u64;
        while !stop() {
            for i in 0..ECHO_BATCH {
                iovs[i].iov_len = ECHO_MTU;
                let hdr = &mut msgs[i].msg_hdr;
                hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_in).cast();
                hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                hdr.msg_iov = &mut iovs[i];
                hdr.msg_iovlen = 1;
                msgs[i].msg_len = 0;
            }
            // SAFETY: every header points at live buffers of the lengths given.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    ECHO_BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {
                        wait_readable(fd, Duration::from_millis(50))?;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            let n = n as usize;
            for i in 0..n {
                let len = msgs[i].msg_len as usize;
                if len > 0 {
                    // CoAP type bits 5..4 := ACK (2).
                    bufs[i][0] = (bufs[i][0] & 0xcf) | 0x20;
                }
                iovs[i].iov_len = len;
            }
            let mut sent = 0;
            while sent < n {
                // SAFETY: the first n headers were filled by recvmmsg and still point at
                // live buffers; iov_len is the received length.
                let rc = unsafe {
                    libc::sendmmsg(
                        fd,
                        msgs.as_mut_ptr().add(sent),
                        (n - sent) as libc::c_uint,
                        0,
                    )
                };
                if rc < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // A full send buffer drops the rest of the batch, as the network would.
                    break;
                }
                sent += rc as usize;
            }
            echoed += sent as u64;
        }
        Ok(EchoStats {
            echoed,
            cpu_ns: thread_cpu_ns()?.saturating_sub(cpu_before),
        })
    }
}

/// What one [`EchoSink::run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoStats {
    /// Datagrams echoed.
    pub echoed: u64,
    /// User plus system CPU time of the sink's thread (ns), idle polling included.
    pub cpu_ns: u64,
}

impl EchoStats {
    /// CPU per datagram echoed (µs); `None` before the first.
    pub fn us_per_datagram(&self) -> Option<f64> {
        (self.echoed > 0).then(|| self.cpu_ns as f64 / 1e3 / self.echoed as f64)
    }
}

/// User plus system CPU time of the calling thread (`getrusage(RUSAGE_THREAD)`, µs
/// resolution), in ns.
pub fn thread_cpu_ns() -> io::Result<u64> {
    // SAFETY: all-zero is a valid rusage; getrusage writes into the live local.
    let mut usage: libc::rusage = unsafe { zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer has no other precondition.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    Ok(ns(usage.ru_utime) + ns(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_from_and_receives_for_many_loopback_addresses() {
        let devices = MultiSource::bind(0, Duration::from_secs(2)).expect("bind");
        let port = devices.port().expect("port");
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("server");
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let server_addr = match server.local_addr().expect("addr") {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("bound to IPv4"),
        };
        let mut buf = [0u8; 64];
        for i in [0u32, 1, 254, 255, 256, 70_000] {
            devices
                .send_from(device_ip(i), server_addr, &i.to_be_bytes())
                .expect("send");
            let (n, from) = server.recv_from(&mut buf).expect("server receives");
            assert_eq!(&buf[..n], i.to_be_bytes());
            assert_eq!(
                from,
                SocketAddr::new(device_ip(i).into(), port),
                "device {i}'s own address"
            );
            server.send_to(b"reply", from).expect("reply");
            let (n, local, sender) = devices.recv_to(&mut buf).expect("device receives");
            assert_eq!(&buf[..n], b"reply");
            assert_eq!(device_index(local), Some(i));
            assert_eq!(sender, SocketAddr::V4(server_addr));
        }
    }
}

#[cfg(test)]
mod echo_tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn echo_sinks_return_datagrams_as_acks() {
        for kind in [SinkKind::Blocking, SinkKind::Glommio] {
            let sink =
                EchoSink::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), kind).expect("bind");
            let addr = sink.local_addr().expect("addr");
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                let t = s.spawn(|| sink.run(&|| stop.load(Ordering::Relaxed)));
                let devices = MultiSource::bind(0, Duration::from_secs(2)).expect("bind");
                let mut buf = [0u8; 64];
                for i in 0..3u32 {
                    let con = [0x44, 0x01, 0, i as u8, 1, 2, 3, 4];
                    devices.send_from(device_ip(i), addr, &con).expect("send");
                    let (n, local, _) = devices.recv_to(&mut buf).expect("echo");
                    assert_eq!(&buf[..n], [0x64, 0x01, 0, i as u8, 1, 2, 3, 4], "{kind:?}");
                    assert_eq!(device_index(local), Some(i), "{kind:?}");
                }
                stop.store(true, Ordering::Relaxed);
                let stats = t.join().expect("sink thread").expect("sink");
                assert_eq!(stats.echoed, 3, "{kind:?}");
                assert!(stats.us_per_datagram().is_some(), "{kind:?}: {stats:?}");
            });
        }
    }
}
