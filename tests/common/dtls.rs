//! A blocking DTLS client for the end-to-end tests: the gateway crate's sans-IO
//! [`DtlsClient`] driven over a std `UdpSocket` on 127.0.0.1:0, with its retransmission
//! timer, so a test reads like plain UDP: `connect_psk`, `send`, `recv`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use lwm2m_gateway::dtls::client::{ClientConfig, ClientOptions, DtlsClient, Session, State};

/// Largest datagram read from the socket.
const MAX_DATAGRAM: usize = 2048;
/// Longest single wait on the socket, so the retransmission timer is looked at often.
const MAX_WAIT: Duration = Duration::from_millis(50);

/// One DTLS connection to the gateway from its own source port.
pub struct DtlsConn {
    socket: UdpSocket,
    peer: SocketAddr,
    client: DtlsClient,
    buf: Vec<u8>,
}

impl DtlsConn {
    /// Handshakes with PSK `identity`/`key` (cookie exchange included) within `timeout`.
    pub fn connect_psk(
        gateway: SocketAddr,
        identity: &str,
        key: &[u8],
        timeout: Duration,
    ) -> io::Result<DtlsConn> {
        let config = ClientConfig::psk(&ClientOptions::default()).map_err(other)?;
        let client = DtlsClient::connect_psk(&config, identity, key, None).map_err(other)?;
        Self::handshake(gateway, client, timeout)
    }

    /// Handshakes with a client certificate, accepting a server certificate from `ca_pem`.
    pub fn connect_x509(
        gateway: SocketAddr,
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
        timeout: Duration,
    ) -> io::Result<DtlsConn> {
        let client = DtlsClient::x509(cert_pem, key_pem, ca_pem).map_err(other)?;
        Self::handshake(gateway, client, timeout)
    }

    /// Handshakes with a client of a shared `config` (PSK when `psk` is given), offering
    /// `resume` for an abbreviated handshake: a device coming back from a new port.
    pub fn connect_with(
        gateway: SocketAddr,
        config: &ClientConfig,
        psk: Option<(&str, &[u8])>,
        resume: Option<&Session>,
        timeout: Duration,
    ) -> io::Result<DtlsConn> {
        let client = match psk {
            Some((identity, key)) => DtlsClient::connect_psk(config, identity, key, resume),
            None => DtlsClient::connect_x509(config, resume),
        }
        .map_err(other)?;
        Self::handshake(gateway, client, timeout)
    }

    /// Drives an unstarted `client` to the end of its handshake with `gateway`.
    pub fn handshake(
        gateway: SocketAddr,
        client: DtlsClient,
        timeout: Duration,
    ) -> io::Result<DtlsConn> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let mut conn = DtlsConn {
            socket,
            peer: gateway,
            client,
            buf: vec![0; MAX_DATAGRAM],
        };
        let deadline = Instant::now() + timeout;
        while !conn.client.is_established() {
            conn.check()?;
            conn.flush()?;
            if !conn.wait_one(deadline)? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("DTLS handshake with {gateway} took longer than {timeout:?}"),
                ));
            }
        }
        conn.flush()?;
        Ok(conn)
    }

    /// Sends `app_data` as one encrypted record.
    pub fn send(&mut self, app_data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.client.send(app_data).map_err(other)?;
        self.flush()
    }

    /// The next decrypted datagram from the gateway, waiting up to `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(data) = self.client.recv() {
                self.flush()?;
                return Ok(data);
            }
            self.check()?;
            self.flush()?;
            if !self.wait_one(deadline)? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nothing from {} within {timeout:?}", self.peer),
                ));
            }
        }
    }

    /// Sends close_notify.
    pub fn close(&mut self) -> io::Result<()> {
        self.client.close();
        self.flush()
    }

    /// The session to resume with from another connection of the same config.
    pub fn session(&self) -> Option<Session> {
        self.client.session()
    }

    /// Whether the handshake resumed an offered session.
    pub fn session_reused(&self) -> bool {
        self.client.session_reused()
    }

    /// The negotiated cipher suite (OpenSSL name).
    pub fn cipher(&self) -> Option<&'static str> {
        self.client.cipher()
    }

    /// This connection's source address, as the gateway sees it.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The socket, e.g. to send raw datagrams from the same address.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// The client state machine itself.
    pub fn client(&mut self) -> &mut DtlsClient {
        &mut self.client
    }

    /// `Err` once the connection failed or was closed.
    fn check(&self) -> io::Result<()> {
        match self.client.state() {
            State::Handshaking | State::Established => Ok(()),
            State::Closed => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the gateway closed the DTLS connection",
            )),
            State::Failed(why) => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("DTLS: {why}"),
            )),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        while let Some(d) = self.client.poll_transmit() {
            self.socket.send_to(&d, self.peer)?;
        }
        Ok(())
    }

    /// Waits for one datagram from the gateway (fed to the client) or the retransmission
    /// timer (fired); `false` once `deadline` passed.
    fn wait_one(&mut self, deadline: Instant) -> io::Result<bool> {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let mut wait = (deadline - now).min(MAX_WAIT);
        if let Some(t) = self.client.poll_timeout() {
            wait = wait.min(t);
        }
        self.socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        match self.socket.recv_from(&mut self.buf) {
            Ok((n, from)) if from == self.peer => self.client.handle_datagram(&self.buf[..n]),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
        self.client.handle_timeout();
        Ok(true)
    }
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
}
