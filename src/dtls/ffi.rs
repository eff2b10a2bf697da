//! The OpenSSL entry points DTLS needs that `openssl-sys` does not declare.

use libc::{c_int, c_uint};

/// `DTLS_CTRL_GET_TIMEOUT`: `DTLSv1_get_timeout(ssl, tv)` is `SSL_ctrl` with this command.
pub(crate) const DTLS_CTRL_GET_TIMEOUT: c_int = 73;
/// `DTLS_CTRL_HANDLE_TIMEOUT`: `DTLSv1_handle_timeout(ssl)` is `SSL_ctrl` with this command.
pub(crate) const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;

/// OpenSSL's opaque `BIO_ADDR`.
#[repr(C)]
pub(crate) struct BioAddr {
    _opaque: [u8; 0],
}

/// A DTLS retransmission timer callback: the next timeout in µs from the previous one
/// (0 at the start of a flight).
pub(crate) type DtlsTimerCb = unsafe extern "C" fn(*mut openssl_sys::SSL, c_uint) -> c_uint;

extern "C" {
    /// Answers a ClientHello without a valid cookie with a HelloVerifyRequest; 1 once one
    /// carries a valid cookie (OpenSSL ≥ 1.1.0).
    pub(crate) fn DTLSv1_listen(s: *mut openssl_sys::SSL, client: *mut BioAddr) -> c_int;
    pub(crate) fn BIO_ADDR_new() -> *mut BioAddr;
    pub(crate) fn BIO_ADDR_free(addr: *mut BioAddr);
    /// Replaces the 1 s-then-double retransmission schedule of one `SSL` (OpenSSL ≥ 1.1.1).
    pub(crate) fn DTLS_set_timer_cb(s: *mut openssl_sys::SSL, cb: DtlsTimerCb);
}
