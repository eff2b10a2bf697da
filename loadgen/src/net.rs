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

/// A UDP socket bound to `0.0.0.0:port` that sends from any loopback address.
#[derive(Debug)]
pub struct MultiSource {
    socket: Socket,
}

impl MultiSource {
    /// Binds `0.0.0.0:port` (0 = any) with `IP_PKTINFO` enabled and a receive timeout.
    pub fn bind(port: u16, timeout: Duration) -> io::Result<MultiSource> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
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

    /// Receives one datagram: `(length, the local address it was sent to, sender)`.
    pub fn recv_to(&self, buf: &mut [u8]) -> io::Result<(usize, Ipv4Addr, SocketAddr)> {
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
            let n = libc::recvmsg(self.socket.as_raw_fd(), &mut msg, 0);
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
