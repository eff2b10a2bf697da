//! DTLS 1.2 (RFC 6347) in front of the CoAP decode: LwM2M's PSK and certificate modes.
//!
//! # Layout
//!
//! * [`pipe`]: the in-memory datagram BIO an OpenSSL `SSL` handshakes over.
//! * [`record`]: checked view of DTLS 1.2 records, several to a datagram.
//! * [`hello`]: the plaintext ServerHello: suite, encrypt-then-MAC, extended master secret, CID.
//! * [`protect`]: an established session's record layer without OpenSSL: keys, replay window, AEAD and CBC records.

pub mod hello;
pub mod pipe;
pub mod protect;
pub mod record;
