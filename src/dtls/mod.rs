//! DTLS 1.2 (RFC 6347) in front of the CoAP decode: LwM2M's PSK and certificate modes.
//!
//! # Layout
//!
//! * [`pipe`]: the in-memory datagram BIO an OpenSSL `SSL` handshakes over.
//! * [`client`]: a sans-IO DTLS client over that pipe, for loadgen and the tests.

pub mod client;
pub mod pipe;
