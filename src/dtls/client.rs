//! A DTLS 1.2 client with no socket: OpenSSL handshaking over a [`DatagramPipe`].
//!
//! For the load generator and the test suite, not for the gateway's hot path. The owner
//! feeds received datagrams in with [`DtlsClient::handle_datagram`], drains what to send
//! with [`DtlsClient::poll_transmit`], and drives retransmission with
//! [`DtlsClient::poll_timeout`] / [`DtlsClient::handle_timeout`] (RFC 6347 §4.2.4).
//!
//! One deviation from the house's sans-IO rule: OpenSSL keeps the DTLS retransmission
//! timer on its own clock, so the timeout methods take no `now`; `handle_timeout` before the
//! timer is due does nothing, and a datagram handled after it expired may retransmit too
//! (OpenSSL checks the timer when it reads). Tests that lose a flight shorten the first
//! timeout with [`ClientOptions::initial_timeout`] instead of faking time.
//!
//! A [`ClientConfig`] (one OpenSSL context) is built once and shared by many clients:
//! building one costs far more than a client does. Each PSK client carries its own
//! identity and key. A finished handshake yields a [`Session`] another client of the same
//! config can resume with an abbreviated handshake (a NAT rebinding, in LwM2M terms).

use std::ffi::c_uint;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use super::ffi::{DTLS_set_timer_cb, DTLS_CTRL_GET_TIMEOUT, DTLS_CTRL_HANDLE_TIMEOUT};
use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::pkey::PKey;
use openssl::ssl::{
    ErrorCode, ShutdownState, Ssl, SslContext, SslMethod, SslOptions, SslRef, SslSession,
    SslStream, SslVerifyMode,
};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;

use super::credentials::{CERT_SUITES, MAX_PSK_IDENTITY_LEN, MAX_PSK_KEY_LEN, PSK_SUITES};
use super::pipe::DatagramPipe;

/// Suites a PSK client offers: the gateway's own, LwM2M's CCM_8 suite first (§9).
pub const PSK_CIPHERS: &str = PSK_SUITES;
/// Suites a certificate client offers (§9). OpenSSL 3.0 accepts the 64-bit-tag CCM_8
/// suites at its default security level 1, so no `set_security_level(0)` is needed.
pub const X509_CIPHERS: &str = CERT_SUITES;

/// Default path MTU: IPv6's minimum, which every LwM2M network carries unfragmented.
pub const DEFAULT_MTU: u32 = 1280;
/// RFC 6347 §4.2.4.1: the first retransmission comes after 1 s ...
pub const DEFAULT_INITIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// ... doubling each time up to 60 s.
const MAX_TIMEOUT_US: u64 = 60_000_000;
/// Retransmissions of one flight before the handshake is given up: 1+2+4+8+16+32 s with
/// the defaults, about CoAP's MAX_TRANSMIT_WAIT.
pub const DEFAULT_MAX_RETRANSMITS: u32 = 6;
/// Largest DTLS record plaintext (2^14), the most one `recv` returns.
pub const MAX_PLAINTEXT: usize = 16_384;

/// Knobs of a [`ClientConfig`]; `Default` is what a device would use.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// OpenSSL cipher list offered instead of [`PSK_CIPHERS`] / [`X509_CIPHERS`].
    pub ciphers: Option<String>,
    /// Largest datagram the client sends (OpenSSL fragments handshake messages to fit).
    pub mtu: u32,
    /// First retransmission timeout; doubles per retransmission up to 60 s.
    pub initial_timeout: Duration,
    /// Retransmissions of one flight before the handshake fails with [`Failure::TimedOut`].
    pub max_retransmits: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            ciphers: None,
            mtu: DEFAULT_MTU,
            initial_timeout: DEFAULT_INITIAL_TIMEOUT,
            max_retransmits: DEFAULT_MAX_RETRANSMITS,
        }
    }
}

/// What went wrong setting a client up or using it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// OpenSSL refused the configuration (bad PEM, unknown cipher list, ...).
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] ErrorStack),
    /// A PSK identity longer than [`MAX_PSK_IDENTITY_LEN`] or containing a NUL byte.
    #[error("PSK identity must be 1..={MAX_PSK_IDENTITY_LEN} bytes without NUL")]
    BadIdentity,
    /// A PSK longer than [`MAX_PSK_KEY_LEN`] or empty.
    #[error("PSK must be 1..={MAX_PSK_KEY_LEN} bytes")]
    BadKey,
    /// A PSK client from a certificate config or the other way round.
    #[error("the config is for {0} clients")]
    WrongMode(&'static str),
    /// A session from another [`ClientConfig`]: OpenSSL cannot resume it here.
    #[error("the session to resume comes from another client config")]
    ForeignSession,
    /// `send` before the handshake finished or after it failed.
    #[error("the DTLS connection is not established")]
    NotEstablished,
    /// OpenSSL could not write the record (the outbound queue is full: drain it).
    #[error("sending: {0}")]
    Send(String),
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A flight was retransmitted [`ClientOptions::max_retransmits`] times unanswered. A
    /// wrong PSK ends here: the server silently drops the records it cannot decrypt.
    TimedOut,
    /// OpenSSL's reason: an alert received (`"tlsv1 alert unknown psk identity"`), the
    /// server's certificate failing verification, a protocol error.
    Tls(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::TimedOut => f.write_str("handshake timed out"),
            Failure::Tls(reason) => f.write_str(reason),
        }
    }
}

/// Where a client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Handshake flights in progress.
    Handshaking,
    /// Application data flows both ways.
    Established,
    /// The server closed the connection (close_notify).
    Closed,
    /// The handshake or the connection failed; nothing more will be decrypted.
    Failed(Failure),
}

/// Per-`SSL` data the context's callbacks read.
#[derive(Debug)]
struct PerClient {
    /// PSK identity, NUL-terminated, and key; `None` for certificate clients.
    psk: Option<(Vec<u8>, Vec<u8>)>,
    /// First retransmission timeout (µs).
    initial_timeout_us: u32,
}

/// The ex-data slot every client `SSL` keeps its [`PerClient`] in; one per process.
fn per_client_index() -> Result<Index<Ssl, PerClient>, ErrorStack> {
    static INDEX: OnceLock<Index<Ssl, PerClient>> = OnceLock::new();
    if let Some(i) = INDEX.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index()?;
    // A racing thread may have set one first; either index works, use the stored one.
    Ok(*INDEX.get_or_init(|| i))
}

/// RFC 6347's schedule with this client's first timeout.
unsafe extern "C" fn timer_cb(ssl: *mut openssl_sys::SSL, current_us: c_uint) -> c_uint {
    let next = if current_us == 0 {
        // SAFETY: OpenSSL passes the live SSL whose timer fires; nothing else borrows it
        // mutably during the callback.
        let ssl = unsafe { SslRef::from_ptr(ssl) };
        per_client_index()
            .ok()
            .and_then(|i| ssl.ex_data(i))
            .map_or(1_000_000, |p| p.initial_timeout_us)
    } else {
        (u64::from(current_us) * 2).min(MAX_TIMEOUT_US) as c_uint
    };
    next.max(1)
}

/// Configs handed out so far, so a session is only resumed under the config it came from.
static CONFIG_IDS: AtomicU64 = AtomicU64::new(0);

/// One OpenSSL client context: suites, credentials mode, CA, timing. Shared by clients.
pub struct ClientConfig {
    ctx: SslContext,
    psk: bool,
    options: ClientOptions,
    id: u64,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("psk", &self.psk)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// PSK clients (each with its own identity and key) offering [`PSK_CIPHERS`].
    pub fn psk(options: &ClientOptions) -> Result<ClientConfig, ClientError> {
        let index = per_client_index()?;
        let mut b = SslContext::builder(SslMethod::dtls_client())?;
        b.set_cipher_list(options.ciphers.as_deref().unwrap_or(PSK_CIPHERS))?;
        b.set_psk_client_callback(move |ssl, _hint, identity_out, key_out| {
            let Some((identity, key)) = ssl.ex_data(index).and_then(|p| p.psk.as_ref()) else {
                return Ok(0);
            };
            if identity.len() > identity_out.len() || key.len() > key_out.len() {
                return Ok(0);
            }
            identity_out[..identity.len()].copy_from_slice(identity);
            key_out[..key.len()].copy_from_slice(key);
            Ok(key.len())
        });
        Self::finish(b, true, options)
    }

    /// Certificate clients presenting `cert_pem` (with `key_pem`) and accepting a server
    /// whose chain ends at a certificate of `ca_pem`; the host name is not checked (LwM2M
    /// servers are addressed by IP). Offers [`X509_CIPHERS`].
    pub fn x509(
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
        options: &ClientOptions,
    ) -> Result<ClientConfig, ClientError> {
        let mut b = SslContext::builder(SslMethod::dtls_client())?;
        b.set_cipher_list(options.ciphers.as_deref().unwrap_or(X509_CIPHERS))?;
        let cert = X509::from_pem(cert_pem)?;
        let key = PKey::private_key_from_pem(key_pem)?;
        b.set_certificate(&cert)?;
        b.set_private_key(&key)?;
        b.check_private_key()?;
        let mut store = X509StoreBuilder::new()?;
        for ca in X509::stack_from_pem(ca_pem)? {
            store.add_cert(ca)?;
        }
        b.set_verify_cert_store(store.build())?;
        b.set_verify(SslVerifyMode::PEER);
        Self::finish(b, false, options)
    }

    fn finish(
        mut b: openssl::ssl::SslContextBuilder,
        psk: bool,
        options: &ClientOptions,
    ) -> Result<ClientConfig, ClientError> {
        // The pipe has no path MTU to ask; the MTU is set per SSL instead. Tickets are
        // asked for: the gateway resumes by ticket only (it keeps no session cache).
        b.set_options(SslOptions::NO_QUERY_MTU);
        b.clear_options(SslOptions::NO_TICKET);
        Ok(ClientConfig {
            ctx: b.build(),
            psk,
            options: options.clone(),
            id: CONFIG_IDS.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The options it was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }
}

/// A finished handshake's session, for resuming under the same [`ClientConfig`].
#[derive(Clone)]
pub struct Session {
    session: SslSession,
    config: u64,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.session.id())
            .field("config", &self.config)
            .finish()
    }
}

impl Session {
    /// The OpenSSL session.
    pub fn ssl_session(&self) -> &SslSession {
        &self.session
    }
}

/// One DTLS client connection; see the module doc for how to drive it.
#[derive(Debug)]
pub struct DtlsClient {
    stream: SslStream<DatagramPipe>,
    state: State,
    config: u64,
    max_retransmits: u32,
    retransmits: u32,
}

impl DtlsClient {
    /// A PSK client with its own config and the default options.
    pub fn psk(identity: &str, key: &[u8]) -> Result<DtlsClient, ClientError> {
        let config = ClientConfig::psk(&ClientOptions::default())?;
        Self::connect_psk(&config, identity, key, None)
    }

    /// A certificate client with its own config and the default options.
    pub fn x509(cert_pem: &[u8], key_pem: &[u8], ca_pem: &[u8]) -> Result<DtlsClient, ClientError> {
        let config = ClientConfig::x509(cert_pem, key_pem, ca_pem, &ClientOptions::default())?;
        Self::connect_x509(&config, None)
    }

    /// A PSK client of `config` whose ClientHello is ready in [`Self::poll_transmit`];
    /// with `resume`, it offers that session for an abbreviated handshake.
    pub fn connect_psk(
        config: &ClientConfig,
        identity: &str,
        key: &[u8],
        resume: Option<&Session>,
    ) -> Result<DtlsClient, ClientError> {
        if !config.psk {
            return Err(ClientError::WrongMode("certificate"));
        }
        if identity.is_empty() || identity.len() > MAX_PSK_IDENTITY_LEN || identity.contains('\0') {
            return Err(ClientError::BadIdentity);
        }
        if key.is_empty() || key.len() > MAX_PSK_KEY_LEN {
            return Err(ClientError::BadKey);
        }
        let mut id = Vec::with_capacity(identity.len() + 1);
        id.extend_from_slice(identity.as_bytes());
        id.push(0);
        Self::connect(config, Some((id, key.to_vec())), resume)
    }

    /// A certificate client of `config`; with `resume`, it offers that session.
    pub fn connect_x509(
        config: &ClientConfig,
        resume: Option<&Session>,
    ) -> Result<DtlsClient, ClientError> {
        if config.psk {
            return Err(ClientError::WrongMode("PSK"));
        }
        Self::connect(config, None, resume)
    }

    fn connect(
        config: &ClientConfig,
        psk: Option<(Vec<u8>, Vec<u8>)>,
        resume: Option<&Session>,
    ) -> Result<DtlsClient, ClientError> {
        let mut ssl = Ssl::new(&config.ctx)?;
        let initial_timeout_us = config
            .options
            .initial_timeout
            .as_micros()
            .clamp(1, 60_000_000);
        ssl.set_ex_data(
            per_client_index()?,
            PerClient {
                psk,
                initial_timeout_us: initial_timeout_us as u32,
            },
        );
        ssl.set_mtu(config.options.mtu)?;
        // SAFETY: a live SSL and a callback with DTLS_timer_cb's signature.
        unsafe { DTLS_set_timer_cb(ssl.as_ptr(), timer_cb) };
        if let Some(s) = resume {
            if s.config != config.id {
                return Err(ClientError::ForeignSession);
            }
            // SAFETY: the session came from an SSL of this very context (checked above).
            unsafe { ssl.set_session(&s.session)? };
        }
        ssl.set_connect_state();
        let mut client = DtlsClient {
            stream: SslStream::new(ssl, DatagramPipe::default())?,
            state: State::Handshaking,
            config: config.id,
            max_retransmits: config.options.max_retransmits,
            retransmits: 0,
        };
        client.drive_handshake();
        Ok(client)
    }

    /// Where the connection is.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether the handshake finished and the connection is usable.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Whether the handshake or the connection failed (see [`Self::state`] for why).
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed(_))
    }

    /// Feeds one datagram received from the server. Handshake flights advance the
    /// handshake; application data waits for [`Self::recv`].
    pub fn handle_datagram(&mut self, datagram: &[u8]) {
        if matches!(self.state, State::Failed(_) | State::Closed) {
            return;
        }
        self.stream.get_mut().push_inbound(datagram);
        if self.state == State::Handshaking {
            self.drive_handshake();
        }
    }

    /// The next datagram to send to the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.stream.get_mut().pop_outbound()
    }

    /// How long until [`Self::handle_timeout`] retransmits, while a flight awaits its answer.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.state != State::Handshaking {
            return None;
        }
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // SAFETY: DTLSv1_get_timeout writes one timeval through the pointer.
        let running = unsafe {
            openssl_sys::SSL_ctrl(
                self.stream.ssl().as_ptr(),
                DTLS_CTRL_GET_TIMEOUT,
                0,
                (&mut tv as *mut libc::timeval).cast(),
            )
        };
        (running == 1).then(|| {
            Duration::from_secs(tv.tv_sec.max(0) as u64)
                + Duration::from_micros(tv.tv_usec.max(0) as u64)
        })
    }

    /// Retransmits the last flight if its timer expired (by OpenSSL's clock); gives the
    /// handshake up after [`ClientOptions::max_retransmits`].
    pub fn handle_timeout(&mut self) {
        if self.state != State::Handshaking {
            return;
        }
        if self.poll_timeout() != Some(Duration::ZERO) {
            return;
        }
        if self.retransmits >= self.max_retransmits {
            self.state = State::Failed(Failure::TimedOut);
            return;
        }
        // SAFETY: a live SSL; DTLSv1_handle_timeout takes no argument.
        let rc = unsafe {
            openssl_sys::SSL_ctrl(
                self.stream.ssl().as_ptr(),
                DTLS_CTRL_HANDLE_TIMEOUT,
                0,
                std::ptr::null_mut(),
            )
        };
        match rc {
            1 => self.retransmits += 1,
            0 => {}
            _ => self.state = State::Failed(failure(openssl::error::ErrorStack::get())),
        }
    }

    /// Encrypts `app_data` into one record, queued for [`Self::poll_transmit`].
    pub fn send(&mut self, app_data: &[u8]) -> Result<(), ClientError> {
        if self.state != State::Established {
            return Err(ClientError::NotEstablished);
        }
        match self.stream.ssl_write(app_data) {
            Ok(_) => Ok(()),
            Err(e) => Err(ClientError::Send(e.to_string())),
        }
    }

    /// Decrypts the next application datagram into `buf` (truncated to its length, as
    /// `recv(2)` does); `None` when nothing is waiting. An alert received here ends the
    /// connection ([`Self::state`]).
    pub fn recv_into(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.state != State::Established {
            return None;
        }
        loop {
            match self.stream.ssl_read(buf) {
                Ok(0) => continue,
                Ok(n) => return Some(n),
                Err(e) => {
                    match e.code() {
                        ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => {}
                        ErrorCode::ZERO_RETURN => self.state = State::Closed,
                        _ => self.state = State::Failed(failure_of(&e)),
                    }
                    return None;
                }
            }
        }
    }

    /// [`Self::recv_into`] a fresh `Vec`.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        let mut buf = [0u8; MAX_PLAINTEXT];
        self.recv_into(&mut buf).map(|n| buf[..n].to_vec())
    }

    /// The session to resume with, once established.
    pub fn session(&self) -> Option<Session> {
        if self.state != State::Established {
            return None;
        }
        self.stream.ssl().session().map(|s| Session {
            session: s.to_owned(),
            config: self.config,
        })
    }

    /// Whether the handshake was an abbreviated one, resuming the offered session.
    pub fn session_reused(&self) -> bool {
        self.stream.ssl().session_reused()
    }

    /// The negotiated cipher suite (OpenSSL name), once the server chose one.
    pub fn cipher(&self) -> Option<&'static str> {
        self.stream.ssl().current_cipher().map(|c| c.name())
    }

    /// Sends close_notify (queued for [`Self::poll_transmit`]); the client is closed after.
    pub fn close(&mut self) {
        if self.state == State::Established {
            let _ = self.stream.shutdown();
        }
        if !self.is_failed() {
            self.state = State::Closed;
        }
    }

    fn drive_handshake(&mut self) {
        let before = self.stream.ssl().state_string();
        match self.stream.do_handshake() {
            Ok(()) => self.state = State::Established,
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                // A new flight from the server restarts the count, as OpenSSL's own does.
                if self.stream.ssl().state_string() != before {
                    self.retransmits = 0;
                }
            }
            Err(e) => self.state = State::Failed(failure_of(&e)),
        }
    }
}

impl Drop for DtlsClient {
    /// A device that drops a connection without close_notify (it moved, or slept) keeps
    /// its session: OpenSSL would otherwise mark it unresumable when the `SSL` is freed.
    fn drop(&mut self) {
        if matches!(self.state, State::Established | State::Closed) {
            self.stream.set_shutdown(ShutdownState::SENT);
        }
    }
}

/// The reason OpenSSL gives for `e`.
fn failure_of(e: &openssl::ssl::Error) -> Failure {
    match e.ssl_error() {
        Some(stack) => failure(stack.clone()),
        None => Failure::Tls(e.to_string()),
    }
}

/// The TLS layer's own reason ("certificate verify failed"), pushed after the library
/// errors that led to it (an "EVP lib" from the signature check).
fn failure(stack: ErrorStack) -> Failure {
    let errors = stack.errors();
    let reason = errors
        .iter()
        .rev()
        .find(|e| e.library() == Some("SSL routines"))
        .or(errors.last())
        .and_then(|e| e.reason())
        .map_or_else(|| stack.to_string(), str::to_string);
    Failure::Tls(reason)
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
