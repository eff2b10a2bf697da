//! Shared by the tests of the DTLS server and of the shard: a PSK server context and
//! OpenSSL clients.

use std::sync::Arc;
use std::time::Duration;

use openssl::ssl::{Ssl, SslContext, SslMethod, SslStream, SslVersion};

use super::credentials::Identity;
use super::pipe::DatagramPipe;
use super::server::{enable_cookies, DtlsLimits, Identify};

/// Short, because OpenSSL checks its retransmission timer against the real clock.
pub(crate) const RETRANSMIT: Duration = Duration::from_millis(20);
/// The key of every `dev-*` identity the test server knows.
pub(crate) const KEY: [u8; 16] = *b"0123456789abcdef";
pub(crate) const SUITES: &str = "PSK-AES128-CCM8:PSK-AES128-CBC-SHA256";

/// A PSK server context that knows the identities `dev-*`, with cookies.
pub(crate) fn server_context() -> SslContext {
    let mut b = SslContext::builder(SslMethod::dtls()).expect("context");
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))
        .expect("version");
    b.set_cipher_list(SUITES).expect("suites");
    b.set_security_level(0);
    b.set_psk_server_callback(|_ssl, identity, key| {
        if identity.is_some_and(|id| id.starts_with(b"dev-")) {
            key[..KEY.len()].copy_from_slice(&KEY);
            Ok(KEY.len())
        } else {
            Ok(0)
        }
    });
    enable_cookies(&mut b);
    b.build()
}

/// Identities are endpoint names.
pub(crate) fn identify() -> Identify {
    Arc::new(|ssl| {
        let id = ssl.psk_identity()?;
        let name = std::str::from_utf8(id).ok()?;
        Some(Identity::Psk {
            identity: name.into(),
            endpoint: Arc::from(name),
        })
    })
}

/// Limits with a short first retransmission (see [`RETRANSMIT`]).
pub(crate) fn limits() -> DtlsLimits {
    DtlsLimits {
        handshake_timeout: Duration::from_secs(30),
        session_idle: Duration::from_secs(600),
        retransmit_initial: RETRANSMIT,
    }
}

/// A DTLS client offering the PSK suites with `identity` and `key`.
pub(crate) fn client(identity: &'static str, key: [u8; 16]) -> SslStream<DatagramPipe> {
    let mut b = SslContext::builder(SslMethod::dtls()).expect("context");
    b.set_cipher_list(SUITES).expect("suites");
    b.set_security_level(0);
    b.set_psk_client_callback(move |_ssl, _hint, id, k| {
        id[..identity.len()].copy_from_slice(identity.as_bytes());
        id[identity.len()] = 0;
        k[..key.len()].copy_from_slice(&key);
        Ok(key.len())
    });
    let mut ssl = Ssl::new(&b.build()).expect("ssl");
    ssl.set_connect_state();
    ssl.set_mtu(1280).expect("mtu");
    SslStream::new(ssl, DatagramPipe::default()).expect("stream")
}
