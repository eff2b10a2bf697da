//! DTLS 1.2 (RFC 6347) in front of the CoAP decode: LwM2M's PSK and certificate modes.
//!
//! # Layout
//!
//! * [`credentials`]: PSK table, server certificate and client CA from `[listeners.dtls]`;
//!   the OpenSSL server context; who a finished handshake says the peer is.
//! * [`pki`]: a throwaway in-memory PKI for tests and the load generator.
//! * [`pipe`]: the in-memory datagram BIO an OpenSSL `SSL` handshakes over.

pub mod credentials;
pub mod pipe;
pub mod pki;
