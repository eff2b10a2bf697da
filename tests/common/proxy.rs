//! A TCP proxy between the gateway and the broker that the test can cut (every
//! connection reset, new ones closed at once) and restore, or stall (the gateway's bytes
//! are no longer read, as from a broker too busy to keep up) and resume.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The proxy's receive buffer for the gateway's side: small, so a stall makes the
/// gateway's own buffer fill after little data rather than megabytes.
const STALL_BUFFER: usize = 4096;

/// How often a stalled pump looks whether it may read again.
const STALL_POLL: Duration = Duration::from_millis(5);

pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `target` (`host:port`).
    pub fn start(target: String) -> Proxy {
        // The buffer is set before listen, so connections start with the small window
        // rather than shrink one they advertised (a sender then waits for its zero-window
        // probes, seconds apart, after the stall ends).
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("proxy socket");
        socket
            .set_recv_buffer_size(STALL_BUFFER)
            .expect("proxy buffer");
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
        socket.bind(&addr.into()).expect("proxy bind");
        socket.listen(64).expect("proxy listen");
        let listener = TcpListener::from(socket);
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let stalled = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, stalled2, live2) = (up.clone(), stalled.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut live = live2.lock().expect("lock");
                for s in [&client, &server] {
                    if let Ok(c) = s.try_clone() {
                        live.push(c);
                    }
                }
                pump(
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                    Some(stalled2.clone()),
                );
                pump(server, client, None);
            }
        });
        Proxy {
            port,
            up,
            stalled,
            live,
        }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.live.lock().expect("lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Stops reading what the gateway sends (the broker's answers still flow).
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` on a thread of its own until either side closes; while `stalled`
/// is set, reads nothing.
fn pump(mut from: TcpStream, mut to: TcpStream, stalled: Option<Arc<AtomicBool>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if stalled.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                std::thread::sleep(STALL_POLL);
                continue;
            }
            match from.read(&mut buf) {
                Ok(n) if n > 0 && to.write_all(&buf[..n]).is_ok() => {}
                _ => break,
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}
