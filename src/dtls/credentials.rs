//! What the DTLS listener authenticates peers with, and who a finished handshake says the
//! peer is.
//!
//! [`Credentials`] is loaded once at start from `[listeners.dtls]` and shared by every
//! shard behind an `Arc`. It is read only when a handshake needs it (the PSK callback,
//! [`identity_of`] once a handshake completes), never per record, so the PSK table sits
//! behind a plain `RwLock` that a SIGHUP swaps ([`Credentials::reload_psk`]).
//!
//! [`Credentials::server_context`] turns it into an OpenSSL context configured for
//! LwM2M: DTLS 1.2, exactly the four suites of SPEC §9 (those the configuration can
//! serve), P-256, session tickets. The caller adds cookies and transport options.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private};
use openssl::ssl::{
    SslContextBuilder, SslMethod, SslRef, SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509Ref, X509VerifyResult, X509};

use super::Security;
use crate::config::DtlsListenerConfig;
use crate::lwm2m::registration::MAX_ENDPOINT_LEN;

#[path = "credentials_psk.rs"]
mod psk;

pub use psk::{
    PskEntry, PskLineError, PskProblem, PskTable, MAX_PSK_IDENTITY_LEN, MAX_PSK_KEY_LEN,
};

/// The PSK suites: TLS_PSK_WITH_AES_128_CCM_8 and TLS_PSK_WITH_AES_128_CBC_SHA256, in
/// OpenSSL's names. Offered only when `psk_file` is set.
pub const PSK_SUITES: &str = "PSK-AES128-CCM8:PSK-AES128-CBC-SHA256";

/// The certificate suites: TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 and
/// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, in OpenSSL's names. Offered only when
/// `certfile` is set.
pub const CERT_SUITES: &str = "ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-GCM-SHA256";

/// The only ECDHE group: LwM2M's mandatory curve, and the one device stacks implement.
const GROUPS: &str = "P-256";

/// Binds sessions (and tickets) to this service: OpenSSL refuses to resume a session
/// with client verification on unless the context names one.
const SESSION_ID_CONTEXT: &[u8] = b"lwm2m-gateway/dtls";

/// Size of OpenSSL's ticket key block: 16 bytes of key name, 32 of HMAC key, 32 of AES key.
const TICKET_KEYS_LEN: usize = 80;

/// OpenSSL's `SSL_CTRL_SET_TLSEXT_TICKET_KEYS` (the macro `SSL_CTX_set_tlsext_ticket_keys`
/// is not in openssl-sys).
const SSL_CTRL_SET_TLSEXT_TICKET_KEYS: libc::c_int = 59;

/// At most this many bad PSK lines are logged one by one per load; the rest are
/// counted. A file generated wrong could otherwise write a million warnings.
const MAX_LOGGED_PSK_PROBLEMS: usize = 100;

/// A credential file that cannot be used. Each names the `listeners.dtls` key and the file.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The file could not be read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    Read {
        /// `listeners.dtls.<key>`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The PSK file is not UTF-8 text.
    #[error("{key}: {}: line {line} is not UTF-8 text", path.display())]
    NotText {
        /// `listeners.dtls.psk_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// 1-based line of the first invalid byte.
        line: usize,
    },
    /// The file holds no usable PEM certificate or key.
    #[error("{key}: {}: {problem}", path.display())]
    Pem {
        /// `listeners.dtls.<key>`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What OpenSSL or the check found.
        problem: String,
    },
    /// The server key is not the key of the server certificate.
    #[error(
        "listeners.dtls.keyfile: {} is not the private key of the certificate in {}",
        keyfile.display(),
        certfile.display()
    )]
    KeyMismatch {
        /// The certificate.
        certfile: PathBuf,
        /// The key.
        keyfile: PathBuf,
    },
    /// The server certificate's key is not EC P-256, which the ECDHE-ECDSA suites need.
    #[error(
        "listeners.dtls.certfile: {}: the certificate's key is {found}; the certificate \
         suites are ECDHE-ECDSA and need an EC P-256 (prime256v1) key",
        path.display()
    )]
    NotP256 {
        /// The certificate.
        path: PathBuf,
        /// The key type found.
        found: String,
    },
    /// OpenSSL refused a setting while building the context.
    #[error("configuring OpenSSL for DTLS: {0}")]
    OpenSsl(#[from] ErrorStack),
}

/// What [`Credentials::reload_psk`] loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PskReload {
    /// Identities now in the table.
    pub entries: usize,
    /// Lines skipped as bad.
    pub bad_lines: usize,
    /// Lines that replaced an earlier line with the same identity.
    pub duplicates: usize,
}

/// The server's certificate, its key and any intermediates after it in `certfile`.
struct ServerCert {
    cert: X509,
    chain: Vec<X509>,
    key: PKey<Private>,
}

/// Everything the DTLS listener authenticates with; shared by all shards.
pub struct Credentials {
    psk_file: Option<PathBuf>,
    psk: RwLock<Arc<PskTable>>,
    server: Option<ServerCert>,
    /// CA certificates client certificates must chain to; `None` = no client certificates.
    client_ca: Option<Vec<X509>>,
    /// Shared by every context built here, so a ticket issued by one shard resumes on
    /// another after the device's address (and so its shard) changed.
    ticket_keys: [u8; TICKET_KEYS_LEN],
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("psk_file", &self.psk_file)
            .field("psk_entries", &self.psk_table().len())
            .field(
                "server",
                &self.server.as_ref().map(|s| s.cert.subject_name()),
            )
            .field("client_ca", &self.client_ca.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

/// Who the peer of a completed handshake is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Authenticated by a pre-shared key.
    Psk {
        /// The PSK identity the client sent.
        identity: Box<str>,
        /// The endpoint name the PSK file maps it to.
        endpoint: Arc<str>,
    },
    /// Authenticated by a client certificate that chains to `cacertfile`.
    X509 {
        /// The certificate's subject CN, else its first DNS or URI SAN.
        endpoint: Arc<str>,
    },
}

impl Identity {
    /// How it authenticated ([`Security::as_str`] is the register JSON's spelling).
    pub fn security(&self) -> Security {
        match self {
            Identity::Psk { .. } => Security::Psk,
            Identity::X509 { .. } => Security::X509,
        }
    }

    /// The endpoint name this identity may register as.
    pub fn endpoint(&self) -> &Arc<str> {
        match self {
            Identity::Psk { endpoint, .. } | Identity::X509 { endpoint } => endpoint,
        }
    }
}

impl Credentials {
    /// Reads and checks every file `config` names: the PSK file (bad lines are logged
    /// and skipped), the server certificate and key (PEM, matching, EC P-256) and the CA
    /// for client certificates.
    pub fn load(config: &DtlsListenerConfig) -> Result<Arc<Credentials>, CredentialError> {
        let psk = match &config.psk_file {
            Some(path) => read_psk_file(path)?.0,
            None => PskTable::default(),
        };
        let server = match (&config.certfile, &config.keyfile) {
            (Some(certfile), Some(keyfile)) => Some(load_server_cert(certfile, keyfile)?),
            // One without the other is refused by `Config` validation.
            _ => None,
        };
        let client_ca = match &config.cacertfile {
            Some(path) => Some(load_certs("listeners.dtls.cacertfile", path)?),
            None => None,
        };
        let mut ticket_keys = [0u8; TICKET_KEYS_LEN];
        openssl::rand::rand_bytes(&mut ticket_keys)?;
        Ok(Arc::new(Credentials {
            psk_file: config.psk_file.clone(),
            psk: RwLock::new(Arc::new(psk)),
            server,
            client_ca,
            ticket_keys,
        }))
    }

    /// Re-reads `psk_file` (on SIGHUP). On success the new table serves every handshake
    /// from now on; on error the old table stays. Without a `psk_file` there is nothing
    /// to read and the (empty) table stays.
    pub fn reload_psk(&self) -> Result<PskReload, CredentialError> {
        let Some(path) = &self.psk_file else {
            return Ok(PskReload {
                entries: 0,
                bad_lines: 0,
                duplicates: 0,
            });
        };
        let (table, errors) = read_psk_file(path)?;
        let reload = PskReload {
            entries: table.len(),
            bad_lines: errors.iter().filter(|e| e.skipped()).count(),
            duplicates: errors.iter().filter(|e| !e.skipped()).count(),
        };
        *self.psk.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        Ok(reload)
    }

    /// The PSK table in force now.
    pub fn psk_table(&self) -> Arc<PskTable> {
        Arc::clone(&self.psk.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether PSK suites are offered (`psk_file` is set).
    pub fn has_psk(&self) -> bool {
        self.psk_file.is_some()
    }

    /// Whether certificate suites are offered (`certfile` and `keyfile` are set).
    pub fn has_server_cert(&self) -> bool {
        self.server.is_some()
    }

    /// A DTLS server context for these credentials: DTLS 1.2 only; the PSK suites when
    /// `psk_file` is set, the ECDHE-ECDSA suites when `certfile` is; the PSK callback
    /// looking identities up in the current table; client certificates verified against
    /// `cacertfile` when it is set; group P-256; session tickets with keys shared by every
    /// context from these credentials. The caller adds cookies and transport options.
    pub fn server_context(self: &Arc<Self>) -> Result<SslContextBuilder, CredentialError> {
        let mut b = SslContextBuilder::new(SslMethod::dtls())?;
        b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
        b.set_max_proto_version(Some(SslVersion::DTLS1_2))?;

        let suites: Vec<&str> = [
            self.has_psk().then_some(PSK_SUITES),
            self.has_server_cert().then_some(CERT_SUITES),
        ]
        .into_iter()
        .flatten()
        .collect();
        b.set_cipher_list(&suites.join(":"))?;
        // Security level: OpenSSL 3.0 and 3.1 allow all four suites at the default level
        // 1 and at level 2 (Debian's system default); level 3 drops the PSK suites (no
        // forward secrecy), so the inherited level is kept there. OpenSSL 3.2 rates the
        // CCM_8 suites (64-bit tag) at level 0, which LwM2M mandates anyway, so there
        // the level is lowered to 0. With the suite list, the group and the protocol
        // version pinned above, what level 0 still lets through is weak keys in client
        // certificate chains, which the operator's CA decides.
        if openssl::version::number() >= 0x3020_0000 {
            b.set_security_level(0);
        }
        b.set_groups_list(GROUPS)?;

        // Resumption by ticket: the state travels with the client, so no server-side
        // cache (it would hold a session per device and not be shared across shards).
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
        b.set_session_id_context(SESSION_ID_CONTEXT)?;
        b.clear_options(openssl::ssl::SslOptions::NO_TICKET);
        self.set_ticket_keys(&mut b)?;

        if self.has_psk() {
            let creds = Arc::clone(self);
            b.set_psk_server_callback(move |_ssl, identity, out| {
                // Returning 0 makes OpenSSL fail the handshake with unknown_psk_identity.
                let table = creds.psk_table();
                Ok(match identity.and_then(|id| table.get(id)) {
                    Some(entry) if entry.key.len() <= out.len() => {
                        out[..entry.key.len()].copy_from_slice(&entry.key);
                        entry.key.len()
                    }
                    _ => 0,
                })
            });
        }
        if let Some(server) = &self.server {
            b.set_certificate(&server.cert)?;
            for c in &server.chain {
                b.add_extra_chain_cert(c.clone())?;
            }
            b.set_private_key(&server.key)?;
            b.check_private_key()?;
        }
        if let Some(cas) = &self.client_ca {
            let mut store = X509StoreBuilder::new()?;
            let mut names = Stack::new()?;
            for ca in cas {
                store.add_cert(ca.clone())?;
                names.push(ca.subject_name().to_owned()?)?;
            }
            b.set_verify_cert_store(store.build())?;
            b.set_client_ca_list(names);
            // PEER without FAIL_IF_NO_PEER_CERT: a certificate that does not verify fails
            // the handshake; PSK handshakes, where no certificate is requested, go on.
            b.set_verify(SslVerifyMode::PEER);
        }
        Ok(b)
    }

    fn set_ticket_keys(&self, b: &mut SslContextBuilder) -> Result<(), ErrorStack> {
        // SAFETY: `b` owns a live SSL_CTX; OpenSSL copies the TICKET_KEYS_LEN bytes it is
        // given (it checks the length) and keeps no pointer to them.
        let set = unsafe {
            openssl_sys::SSL_CTX_ctrl(
                b.as_ptr(),
                SSL_CTRL_SET_TLSEXT_TICKET_KEYS,
                TICKET_KEYS_LEN as libc::c_long,
                self.ticket_keys.as_ptr() as *mut libc::c_void,
            )
        };
        if set == 1 {
            Ok(())
        } else {
            Err(ErrorStack::get())
        }
    }
}

/// Who the peer of the completed handshake on `ssl` is: the PSK identity it used, mapped
/// to its endpoint through the table in force now (an identity removed by a reload is no
/// one, even on a resumed session), or its verified client certificate. `None` before
/// the handshake completes, for an identity no longer in the table, and for a
/// certificate handshake without a verified client certificate.
///
/// A certificate's endpoint name is its subject CN, as LwM2M servers (Leshan, EMQX)
/// take it; a certificate without a usable CN falls back to its first DNS or URI SAN,
/// whichever comes first (endpoint names like `urn:imei:…` are URIs, host-like names
/// are DNS names); other SAN kinds (IP, e-mail) do not name devices.
pub fn identity_of(ssl: &SslRef, creds: &Credentials) -> Option<Identity> {
    if !ssl.is_init_finished() {
        return None;
    }
    if let Some(identity) = ssl.psk_identity() {
        let entry_endpoint = Arc::clone(&creds.psk_table().get(identity)?.endpoint);
        return Some(Identity::Psk {
            identity: std::str::from_utf8(identity).ok()?.into(),
            endpoint: entry_endpoint,
        });
    }
    creds.client_ca.as_ref()?;
    if ssl.verify_result() != X509VerifyResult::OK {
        return None;
    }
    let cert = ssl.peer_certificate()?;
    Some(Identity::X509 {
        endpoint: certificate_endpoint(&cert)?,
    })
}

/// The endpoint name a client certificate stands for: see [`identity_of`].
pub fn certificate_endpoint(cert: &X509Ref) -> Option<Arc<str>> {
    // A NUL or other control character (a classic way to make "a\0.evil" print as "a"),
    // or U+FFFD from a string that was not valid text, makes a name unusable.
    let usable = |s: &str| {
        !s.is_empty()
            && s.len() <= MAX_ENDPOINT_LEN
            && !s
                .chars()
                .any(|c| c.is_control() || c == char::REPLACEMENT_CHARACTER)
    };
    let cn = cert
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok());
    if let Some(cn) = cn.filter(|cn| usable(cn)) {
        return Some(Arc::from(cn));
    }
    cert.subject_alt_names()?
        .iter()
        .find_map(|n| n.dnsname().or_else(|| n.uri()))
        .filter(|s| usable(s))
        .map(Arc::from)
}

/// Reads and parses a PSK file, logging its bad lines.
fn read_psk_file(path: &Path) -> Result<(PskTable, Vec<PskLineError>), CredentialError> {
    const KEY: &str = "listeners.dtls.psk_file";
    let bytes = std::fs::read(path).map_err(|source| CredentialError::Read {
        key: KEY,
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        CredentialError::NotText {
            key: KEY,
            path: path.to_owned(),
            line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
        }
    })?;
    let (table, errors) = PskTable::parse(&text);
    for e in errors.iter().take(MAX_LOGGED_PSK_PROBLEMS) {
        tracing::warn!(file = %path.display(), line = e.line, "psk_file: {}", e.problem);
    }
    if errors.len() > MAX_LOGGED_PSK_PROBLEMS {
        tracing::warn!(
            file = %path.display(),
            "psk_file: {} more problem lines not logged",
            errors.len() - MAX_LOGGED_PSK_PROBLEMS
        );
    }
    Ok((table, errors))
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, CredentialError> {
    std::fs::read(path).map_err(|source| CredentialError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file, at least one.
fn load_certs(key: &'static str, path: &Path) -> Result<Vec<X509>, CredentialError> {
    let pem_error = |problem: String| CredentialError::Pem {
        key,
        path: path.to_owned(),
        problem,
    };
    let certs = X509::stack_from_pem(&read_file(key, path)?)
        .map_err(|e| pem_error(format!("not a PEM certificate ({e})")))?;
    if certs.is_empty() {
        return Err(pem_error("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn load_server_cert(certfile: &Path, keyfile: &Path) -> Result<ServerCert, CredentialError> {
    let mut certs = load_certs("listeners.dtls.certfile", certfile)?.into_iter();
    let cert = certs.next().ok_or_else(|| CredentialError::Pem {
        key: "listeners.dtls.certfile",
        path: certfile.to_owned(),
        problem: "no PEM certificate in the file".into(),
    })?;
    let key = PKey::private_key_from_pem(&read_file("listeners.dtls.keyfile", keyfile)?).map_err(
        |e| CredentialError::Pem {
            key: "listeners.dtls.keyfile",
            path: keyfile.to_owned(),
            problem: format!("not a PEM private key ({e})"),
        },
    )?;
    let public = cert.public_key().map_err(|e| CredentialError::Pem {
        key: "listeners.dtls.certfile",
        path: certfile.to_owned(),
        problem: format!("unreadable public key ({e})"),
    })?;
    let curve = public.ec_key().ok().and_then(|ec| ec.group().curve_name());
    if curve != Some(Nid::X9_62_PRIME256V1) {
        let found = match (public.id(), curve) {
            (Id::EC, Some(nid)) => format!("EC {}", nid.short_name().unwrap_or("(unnamed)")),
            (Id::EC, None) => "EC with explicit parameters".to_owned(),
            (Id::RSA, _) => format!("RSA {} bits", public.bits()),
            (id, _) => format!("key type {}", id.as_raw()),
        };
        return Err(CredentialError::NotP256 {
            path: certfile.to_owned(),
            found,
        });
    }
    if !public.public_eq(&key) {
        return Err(CredentialError::KeyMismatch {
            certfile: certfile.to_owned(),
            keyfile: keyfile.to_owned(),
        });
    }
    Ok(ServerCert {
        cert,
        chain: certs.collect(),
        key,
    })
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;
