//! One owner per UDP port.
//!
//! Every shard binds `listeners.udp.bind` with `SO_REUSEPORT`, so a second gateway started
//! on the same port (by the same user) would bind too, silently join the group and receive
//! a share of the running gateway's devices. Before binding, and once more after (two
//! gateways starting at the same moment), the node looks in `/proc/net/udp` and
//! `/proc/net/udp6` for an unconnected UDP socket of this network namespace on the same
//! port at an overlapping address that is not one of its own, and refuses to start if it
//! finds one ([`Holder`]). The holder's PID comes from matching the socket's inode against
//! `/proc/<pid>/fd/*`, which is readable for processes of the same user (or as root).
//!
//! Port 0 is never checked: the kernel picks a port nobody holds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;

/// The socket tables of this network namespace, one line per socket after a header.
const SOCKET_TABLES: [&str; 2] = ["/proc/net/udp", "/proc/net/udp6"];

/// A UDP socket another process holds on the port the gateway wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Where that socket is bound.
    pub local: SocketAddr,
    /// Its process, when `/proc/<pid>/fd` could be read.
    pub pid: Option<u32>,
    /// That process's command name (`/proc/<pid>/comm`).
    pub command: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, &self.command) {
            (Some(pid), Some(cmd)) => write!(f, "PID {pid} ({cmd}), bound to {}", self.local),
            (Some(pid), None) => write!(f, "PID {pid}, bound to {}", self.local),
            _ => write!(
                f,
                "another process (bound to {}; its PID is only visible to its user or root)",
                self.local
            ),
        }
    }
}

/// The first unconnected UDP socket on `addr`'s port, at an address overlapping `addr`,
/// whose inode is not in `ours`. `None` for port 0, when there is none, or when the
/// socket tables cannot be read (logged: the check is a safeguard, not a requirement).
pub fn other_holder(addr: SocketAddr, ours: &[u64]) -> Option<Holder> {
    if addr.port() == 0 {
        return None;
    }
    for table in SOCKET_TABLES {
        let text = match std::fs::read_to_string(table) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(
                    "cannot read {table} to check who holds UDP port {}: {e}",
                    addr.port()
                );
                continue;
            }
        };
        let found = text
            .lines()
            .skip(1)
            .filter_map(parse_line)
            .find(|s| s.unconnected && !ours.contains(&s.inode) && overlaps(addr, s.local));
        if let Some(socket) = found {
            let pid = pid_of_socket(socket.inode);
            let command = pid.and_then(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .ok()
                    .map(|c| c.trim().to_owned())
            });
            return Some(Holder {
                local: socket.local,
                pid,
                command,
            });
        }
    }
    None
}

/// The inodes of `sockets`, as `/proc/net/udp` lists them.
pub fn inodes<'a>(sockets: impl IntoIterator<Item = &'a std::net::UdpSocket>) -> Vec<u64> {
    use std::os::fd::AsRawFd;
    sockets
        .into_iter()
        .filter_map(|s| std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd())).ok())
        .map(|m| m.ino())
        .collect()
}

/// One row of a `/proc/net/udp{,6}` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketRow {
    local: SocketAddr,
    /// No remote address: the socket receives from anyone.
    unconnected: bool,
    inode: u64,
}

/// Parses `sl local_address rem_address st ... uid timeout inode ...`; addresses are the
/// kernel's in-memory words in hex (`0100007F:1633` is 127.0.0.1:5683 on little-endian).
fn parse_line(line: &str) -> Option<SocketRow> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let local = parse_addr(fields.get(1)?)?;
    let remote = parse_addr(fields.get(2)?)?;
    let inode = fields.get(9)?.parse().ok()?;
    Some(SocketRow {
        local,
        unconnected: remote.port() == 0 && remote.ip().is_unspecified(),
        inode,
    })
}

fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether a datagram for one of the two addresses (same port) could reach the other's
/// socket: equal addresses, an IPv4 wildcard and any IPv4 address, or an IPv6 wildcard
/// (possibly dual-stack) and anything.
fn overlaps(want: SocketAddr, held: SocketAddr) -> bool {
    if want.port() != held.port() {
        return false;
    }
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let (a, b) = (canonical(want.ip()), canonical(held.ip()));
    let v6_wildcard = |ip: IpAddr| ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let v4_wildcard_over =
        |w: IpAddr, other: IpAddr| w == IpAddr::V4(Ipv4Addr::UNSPECIFIED) && other.is_ipv4();
    a == b || v6_wildcard(a) || v6_wildcard(b) || v4_wildcard_over(a, b) || v4_wildcard_over(b, a)
}

/// The process with `socket:[inode]` among its open files, other than this one.
fn pid_of_socket(inode: u64) -> Option<u32> {
    let target = format!("socket:[{inode}]");
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn parse_ipv4_and_ipv6_rows() {
        let v4 = "  811: 0100007F:1633 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 4242 2 0000000000000000 0";
        assert_eq!(
            parse_line(v4),
            Some(SocketRow {
                local: addr("127.0.0.1:5683"),
                unconnected: true,
                inode: 4242
            })
        );
        let connected = "  811: 0100007F:1633 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 77 2 0000000000000000 0";
        assert_eq!(parse_line(connected).map(|r| r.unconnected), Some(false));
        let v6 = "  100: 00000000000000000000000001000000:1633 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 99 2 0000000000000000 0";
        assert_eq!(parse_line(v6).map(|r| r.local), Some(addr("[::1]:5683")));
        let wildcard6 = "  100: 00000000000000000000000000000000:1633 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 98 2 0000000000000000 0";
        assert_eq!(
            parse_line(wildcard6).map(|r| r.local),
            Some(addr("[::]:5683"))
        );
        assert_eq!(parse_line("  sl  local_address rem_address   st"), None);
        assert_eq!(parse_line("garbage"), None);
    }

    #[test]
    fn which_addresses_overlap() {
        let yes = [
            ("127.0.0.1:5683", "127.0.0.1:5683"),
            ("0.0.0.0:5683", "127.0.0.1:5683"),
            ("127.0.0.1:5683", "0.0.0.0:5683"),
            ("[::]:5683", "127.0.0.1:5683"),
            ("127.0.0.1:5683", "[::]:5683"),
            ("[::ffff:127.0.0.1]:5683", "127.0.0.1:5683"),
        ];
        for (a, b) in yes {
            assert!(overlaps(addr(a), addr(b)), "{a} overlaps {b}");
        }
        let no = [
            ("127.0.0.1:5683", "127.0.0.1:5684"),
            ("127.0.0.1:5683", "127.0.0.2:5683"),
            ("0.0.0.0:5683", "[::1]:5683"),
            ("[::1]:5683", "0.0.0.0:5683"),
        ];
        for (a, b) in no {
            assert!(!overlaps(addr(a), addr(b)), "{a} does not overlap {b}");
        }
    }

    #[test]
    fn a_socket_of_this_process_is_found_unless_it_is_ours() {
        let held = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let local = held.local_addr().expect("addr");
        let found = other_holder(local, &[]).expect("the socket is listed");
        assert_eq!(found.local, local);
        assert_eq!(
            found.pid, None,
            "this process's own sockets are not another's"
        );
        assert_eq!(other_holder(local, &inodes([&held])), None);
        assert_eq!(other_holder(SocketAddr::new(local.ip(), 0), &[]), None);
    }
}
