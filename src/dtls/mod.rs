//! DTLS 1.2 (RFC 6347) in front of the CoAP decode: LwM2M's PSK and certificate modes.
//!
//! # Layout
//!
//! * [`pipe`]: the in-memory datagram BIO an OpenSSL `SSL` handshakes over.

pub mod cookie;
pub mod pipe;
pub mod server;
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
