//! DTLS 1.2 (RFC 6347) in front of the CoAP decode: LwM2M's PSK and certificate modes.
//!
//! # Layout
//!
//! * [`credentials`]: PSK table, server certificate and client CA from `[listeners.dtls]`;
//!   the OpenSSL server context; who a finished handshake says the peer is.
//! * [`pki`]: a throwaway in-memory PKI for tests and the load generator.
//! * [`pipe`]: the in-memory datagram BIO an OpenSSL `SSL` handshakes over.
//! * [`cookie`]: stateless HelloVerifyRequest cookies.
//! * [`server`]: one shard's peer table: cookies, handshakes, sessions and their identity.
//! * [`client`]: a sans-IO DTLS client over that pipe, for loadgen and the tests.
//! * [`record`]: checked view of DTLS 1.2 records, several to a datagram.
//! * [`hello`]: the plaintext ServerHello: suite, encrypt-then-MAC, extended master secret, CID.
//! * [`protect`]: an established session's record layer without OpenSSL: keys, replay window, AEAD and CBC records.

pub mod client;
pub mod cookie;
pub mod credentials;
mod ffi;
mod handshake;
pub mod hello;
pub mod pipe;
pub mod pki;
pub mod protect;
pub mod record;
pub mod server;
pub use handshake::client_hello_cookie_len;
#[cfg(test)]
mod server_tests;
#[cfg(test)]
pub(crate) mod test_support;

/// How a peer authenticated; the `security` field of the register message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Security {
    /// Plain CoAP.
    #[default]
    None = 0,
    /// DTLS with a pre-shared key.
    Psk = 1,
    /// DTLS with an X.509 client certificate.
    X509 = 2,
}

impl Security {
    /// The JSON spelling: `"none"`, `"psk"` or `"x509"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Security::None => "none",
            Security::Psk => "psk",
            Security::X509 => "x509",
        }
    }
}
