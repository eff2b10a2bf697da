//! The DTLS listener's runtime half: its own SO_REUSEPORT group beside the UDP one, with
//! the same steering, and one OpenSSL context for the node.
//!
//! One context serves every shard: the cookie callbacks read their secret from each
//! shard's listening `SSL` object, and the session-ticket keys must be the same on every
//! shard, because a device whose address changed lands on another shard and resumes there
//! with the ticket the first one issued. Handshakes touch the context (a reference count
//! per `SSL` object); records never do.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::ssl::SslContext;

use super::node::StartError;
use super::port;
use super::steer::{bind_reuseport_group, Steering};
use crate::config::Config;
use crate::dtls::credentials::{identity_of, Credentials};
use crate::dtls::server::{enable_cookies, DtlsLimits, DtlsServer, Identify};

/// RFC 6347 §4.2.4.1's first retransmission delay of a handshake flight.
const RETRANSMIT_INITIAL: Duration = Duration::from_secs(1);

/// The bound DTLS listener of a node.
pub(super) struct DtlsListener {
    /// One socket per shard, in steering order.
    pub(super) sockets: Vec<UdpSocket>,
    /// The bound address.
    pub(super) addr: SocketAddr,
    /// What the node authenticates with; reloaded on SIGHUP.
    pub(super) credentials: Arc<Credentials>,
    /// The server context every shard's handshakes use.
    pub(super) context: SslContext,
}

impl std::fmt::Debug for DtlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsListener")
            .field("addr", &self.addr)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// Loads the credentials and binds the DTLS group when `listeners.dtls.enabled`.
pub(super) fn open(config: &Config, shards: usize) -> Result<Option<DtlsListener>, StartError> {
    let dtls = &config.dtls;
    if !dtls.enabled {
        return Ok(None);
    }
    let bind = dtls.bind;
    if let Some(holder) = port::other_holder(bind, &[]) {
        return Err(StartError::DtlsPortHeld { addr: bind, holder });
    }
    let credentials = Credentials::load(dtls)?;
    let mut builder = credentials.server_context()?;
    enable_cookies(&mut builder);
    let context = builder.build();
    let (sockets, steering) = bind_reuseport_group(bind, shards)
        .map_err(|source| StartError::DtlsBind { addr: bind, source })?;
    if let Some(holder) = port::other_holder(bind, &port::inodes(&sockets)) {
        return Err(StartError::DtlsPortHeld { addr: bind, holder });
    }
    if steering != Steering::Bpf {
        tracing::warn!(
            "DTLS listener without BPF steering: a device's session lives on the shard the \
             kernel picks, and datagrams of one address always reach the same one"
        );
    }
    let addr = sockets[0]
        .local_addr()
        .map_err(|source| StartError::DtlsBind { addr: bind, source })?;
    tracing::info!(
        %addr,
        psk = credentials.has_psk(),
        psk_identities = credentials.psk_table().len(),
        certificates = credentials.has_server_cert(),
        "DTLS listener bound"
    );
    Ok(Some(DtlsListener {
        sockets,
        addr,
        credentials,
        context,
    }))
}

/// The DTLS server of one shard.
pub(super) fn shard_server(
    config: &Config,
    context: SslContext,
    credentials: Arc<Credentials>,
    hasher: ahash::RandomState,
    now: Instant,
) -> Result<DtlsServer, openssl::error::ErrorStack> {
    let identify: Identify = Arc::new(move |ssl| identity_of(ssl, &credentials));
    let limits = DtlsLimits {
        // A peer that has not finished its handshake in the time a plain peer has to
        // register is dropped the same way.
        handshake_timeout: config.gateway.idle_timeout,
        // No registration outlives the longest lifetime without an Update, which would
        // have refreshed the session.
        session_idle: config.gateway.lifetime_max,
        retransmit_initial: RETRANSMIT_INITIAL,
    };
    DtlsServer::new(context, identify, hasher, limits, now)
}

/// Re-reads the PSK file on SIGHUP; sessions already established are kept.
pub(super) fn reload(credentials: &Credentials) {
    match credentials.reload_psk() {
        Ok(r) => tracing::info!(
            entries = r.entries,
            bad_lines = r.bad_lines,
            duplicates = r.duplicates,
            "DTLS PSK file reloaded; established sessions are kept"
        ),
        Err(e) => tracing::error!("DTLS PSK file not reloaded, the previous keys stay: {e}"),
    }
}
