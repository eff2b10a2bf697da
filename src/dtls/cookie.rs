//! Stateless HelloVerifyRequest cookies (RFC 6347 §4.2.1).
//!
//! A cookie is an HMAC over the client's address with a secret the shard rotates, so the
//! server can check that a ClientHello comes from an address that receives datagrams
//! without remembering anything about it. OpenSSL's `DTLSv1_listen` asks for cookies
//! through callbacks; they find the address of the datagram being judged and the secrets
//! in a [`CookieJar`] attached to the listening `SSL` object.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Bytes of HMAC in a cookie: 128 bits cannot be guessed, and the ClientHello carrying it
/// back stays small.
pub const COOKIE_LEN: usize = 16;

/// How often the secret changes. A cookie is accepted under the current and the previous
/// secret, so it stays valid between one and two periods: far longer than a client takes
/// to answer a HelloVerifyRequest, short enough that a captured cookie soon goes stale.
pub const ROTATION: Duration = Duration::from_secs(60);

/// The secrets cookies are made with, and the address of the datagram being judged.
#[derive(Clone)]
pub struct CookieJar {
    current: [u8; 32],
    previous: [u8; 32],
    rotated: Instant,
    /// The address the callbacks make and check cookies for.
    pub peer: Option<SocketAddr>,
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieJar")
            .field("rotated", &self.rotated)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl CookieJar {
    /// A jar with a fresh secret from the operating system.
    pub fn new(now: Instant) -> CookieJar {
        let current = random_secret();
        CookieJar {
            current,
            previous: current,
            rotated: now,
            peer: None,
        }
    }

    /// Rotates the secret once [`ROTATION`] has passed since the last rotation.
    pub fn rotate_if_due(&mut self, now: Instant) {
        if now.saturating_duration_since(self.rotated) >= ROTATION {
            self.previous = self.current;
            self.current = random_secret();
            self.rotated = now;
        }
    }

    /// Writes the cookie for the current peer into `out`; its length, or `None` without a
    /// peer or with too small a buffer.
    pub fn generate(&self, out: &mut [u8]) -> Option<usize> {
        let peer = self.peer?;
        let out = out.get_mut(..COOKIE_LEN)?;
        out.copy_from_slice(&mac(&self.current, peer)[..COOKIE_LEN]);
        Some(COOKIE_LEN)
    }

    /// Whether `cookie` was made for the current peer with the current or previous secret.
    pub fn verify(&self, cookie: &[u8]) -> bool {
        let Some(peer) = self.peer else {
            return false;
        };
        if cookie.len() != COOKIE_LEN {
            return false;
        }
        let now = mac(&self.current, peer);
        let before = mac(&self.previous, peer);
        bool::from(now[..COOKIE_LEN].ct_eq(cookie) | before[..COOKIE_LEN].ct_eq(cookie))
    }
}

fn mac(secret: &[u8; 32], peer: SocketAddr) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    match peer {
        SocketAddr::V4(a) => {
            m.update(&[4]);
            m.update(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            m.update(&[6]);
            m.update(&a.ip().octets());
        }
    }
    m.update(&peer.port().to_be_bytes());
    m.finalize().into_bytes().into()
}

fn random_secret() -> [u8; 32] {
    let mut s = [0u8; 32];
    if let Err(e) = openssl::rand::rand_bytes(&mut s) {
        // OpenSSL's generator failing means the process cannot do TLS at all; a secret
        // from the OS generator keeps cookies unguessable regardless.
        tracing::error!("OpenSSL's random generator failed ({e}); using the OS generator");
        let _ = getrandom::getrandom(&mut s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn cookie_is_bound_to_the_address() {
        let now = Instant::now();
        let mut jar = CookieJar::new(now);
        jar.peer = Some(addr("10.0.0.1:5000"));
        let mut c = [0u8; 32];
        let n = jar.generate(&mut c).expect("peer set");
        assert!(jar.verify(&c[..n]));
        jar.peer = Some(addr("10.0.0.1:5001"));
        assert!(!jar.verify(&c[..n]), "another port");
        jar.peer = Some(addr("[::ffff:10.0.0.1]:5000"));
        assert!(!jar.verify(&c[..n]), "another family");
        jar.peer = None;
        assert!(!jar.verify(&c[..n]));
        assert_eq!(jar.generate(&mut c), None);
    }

    #[test]
    fn cookie_survives_one_rotation_not_two() {
        let t0 = Instant::now();
        let mut jar = CookieJar::new(t0);
        jar.peer = Some(addr("192.0.2.7:1234"));
        let mut c = [0u8; COOKIE_LEN];
        jar.generate(&mut c).expect("peer set");
        jar.rotate_if_due(t0 + ROTATION / 2);
        assert!(jar.verify(&c), "not rotated yet");
        jar.rotate_if_due(t0 + ROTATION);
        assert!(jar.verify(&c), "previous secret still accepted");
        jar.rotate_if_due(t0 + ROTATION * 2);
        assert!(!jar.verify(&c), "two rotations later");
        assert!(!jar.verify(&c[..8]), "short cookie");
    }
}
