//! A throwaway test PKI, generated in memory: an EC P-256 CA, a server certificate and
//! client certificates whose CN is the endpoint name.
//!
//! **For tests and the load generator only, never for production**: the CA key lives in
//! memory next to everything it signs, nothing is revoked, and certificates are valid
//! from the moment they are made (no allowance for a peer's clock running behind).
//! Real deployments bring their own CA and point `listeners.dtls.*file` at its output.
//!
//! Every key is EC P-256 and every signature ECDSA with SHA-256, the only certificate
//! kind the gateway's ECDHE-ECDSA suites accept. A client certificate costs one key
//! generation and one signature with the CA key already in hand: well under a
//! millisecond, so a load generator can mint one per simulated device.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, PKeyRef, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509Builder, X509Name, X509NameBuilder, X509Ref, X509};

/// The server certificate's CN.
pub const SERVER_CN: &str = "lwm2m-gateway";

/// How long every certificate is valid: long enough to outlive any test run or load test.
const VALIDITY_DAYS: u32 = 365;

/// A CA, its key and a server certificate it signed, all in memory.
pub struct TestPki {
    ca: CertAndKey,
    server: CertAndKey,
}

/// One certificate with its private key, as objects and as PEM.
pub struct CertAndKey {
    cert: X509,
    key: PKey<Private>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("ca", &self.ca)
            .field("server", &self.server)
            .finish()
    }
}

impl std::fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey")
            .field("subject", &self.cert.subject_name())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl CertAndKey {
    /// Pairs a certificate with its key.
    pub fn new(cert: X509, key: PKey<Private>) -> CertAndKey {
        CertAndKey { cert, key }
    }

    /// The certificate.
    pub fn cert(&self) -> &X509Ref {
        &self.cert
    }

    /// Its private key.
    pub fn key(&self) -> &PKeyRef<Private> {
        &self.key
    }

    /// The certificate as PEM.
    pub fn cert_pem(&self) -> Result<Vec<u8>, ErrorStack> {
        self.cert.to_pem()
    }

    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> Result<Vec<u8>, ErrorStack> {
        self.key.private_key_to_pem_pkcs8()
    }

    /// Writes `<stem>.pem` (certificate) and `<stem>.key` into `dir`; returns both paths.
    /// Characters other than ASCII letters, digits, `.`, `-` and `_` in `stem` become `_`.
    pub fn write_to(&self, dir: &Path, stem: &str) -> io::Result<(PathBuf, PathBuf)> {
        let stem: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        fs::write(&cert, self.cert_pem().map_err(io::Error::other)?)?;
        fs::write(&key, self.key_pem().map_err(io::Error::other)?)?;
        Ok((cert, key))
    }
}

/// Where [`TestPki::write_to`] put the files.
#[derive(Debug, Clone)]
pub struct PkiFiles {
    /// `ca.pem`: for `listeners.dtls.cacertfile` and for clients to verify the server.
    pub ca: PathBuf,
    /// `server.pem`: for `listeners.dtls.certfile`.
    pub server_cert: PathBuf,
    /// `server.key`: for `listeners.dtls.keyfile`.
    pub server_key: PathBuf,
}

impl TestPki {
    /// A new CA (CN "lwm2m-gateway test CA") and a server certificate it signed
    /// (CN [`SERVER_CN`], SAN `localhost` and `127.0.0.1`).
    pub fn generate() -> Result<TestPki, ErrorStack> {
        let ca_key = p256_key()?;
        let ca_name = name("lwm2m-gateway test CA")?;
        let mut b = builder(&ca_name, &ca_name, &ca_key)?;
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        b.sign(&ca_key, MessageDigest::sha256())?;
        let ca = CertAndKey {
            cert: b.build(),
            key: ca_key,
        };

        let server_key = p256_key()?;
        let mut b = builder(&name(SERVER_CN)?, ca.cert.subject_name(), &server_key)?;
        b.append_extension(BasicConstraints::new().build()?)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .build(&b.x509v3_context(Some(&ca.cert), None))?;
        b.append_extension(san)?;
        b.sign(&ca.key, MessageDigest::sha256())?;
        let server = CertAndKey {
            cert: b.build(),
            key: server_key,
        };
        Ok(TestPki { ca, server })
    }

    /// The CA certificate and key.
    pub fn ca(&self) -> &CertAndKey {
        &self.ca
    }

    /// The server certificate and key.
    pub fn server(&self) -> &CertAndKey {
        &self.server
    }

    /// A client certificate with CN = `endpoint`, signed by the CA, with a fresh key.
    pub fn client(&self, endpoint: &str) -> Result<CertAndKey, ErrorStack> {
        let key = p256_key()?;
        let mut b = builder(&name(endpoint)?, self.ca.cert.subject_name(), &key)?;
        b.append_extension(BasicConstraints::new().build()?)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
        b.sign(&self.ca.key, MessageDigest::sha256())?;
        Ok(CertAndKey {
            cert: b.build(),
            key,
        })
    }

    /// A client certificate with CN = `endpoint` signed by its own key, not by any CA:
    /// what an impostor presents.
    pub fn self_signed_client(endpoint: &str) -> Result<CertAndKey, ErrorStack> {
        let key = p256_key()?;
        let subject = name(endpoint)?;
        let mut b = builder(&subject, &subject, &key)?;
        b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(CertAndKey {
            cert: b.build(),
            key,
        })
    }

    /// Writes `ca.pem`, `server.pem` and `server.key` into `dir` (which must exist).
    /// Client certificates are written with [`CertAndKey::write_to`].
    pub fn write_to(&self, dir: &Path) -> io::Result<PkiFiles> {
        let ca = dir.join("ca.pem");
        fs::write(&ca, self.ca.cert_pem().map_err(io::Error::other)?)?;
        let (server_cert, server_key) = self.server.write_to(dir, "server")?;
        Ok(PkiFiles {
            ca,
            server_cert,
            server_key,
        })
    }
}

fn p256_key() -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

fn name(cn: &str) -> Result<X509Name, ErrorStack> {
    let mut n = X509NameBuilder::new()?;
    n.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    Ok(n.build())
}

/// A v3 certificate builder with subject, issuer, public key, a random serial and
/// [`VALIDITY_DAYS`] of validity; the caller adds extensions and signs.
fn builder(
    subject: &X509Name,
    issuer: &openssl::x509::X509NameRef,
    key: &PKeyRef<Private>,
) -> Result<X509Builder, ErrorStack> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(63, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer)?;
    b.set_pubkey(key)?;
    let not_before = Asn1Time::days_from_now(0)?;
    let not_after = Asn1Time::days_from_now(VALIDITY_DAYS)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::X509StoreContext;

    fn verifies(ca: &X509Ref, cert: &X509Ref) -> bool {
        let mut store = X509StoreBuilder::new().expect("store");
        store.add_cert(ca.to_owned()).expect("add ca");
        let store = store.build();
        let chain = Stack::new().expect("stack");
        let mut ctx = X509StoreContext::new().expect("ctx");
        ctx.init(&store, cert, &chain, |c| c.verify_cert())
            .expect("verify runs")
    }

    #[test]
    fn certificates_chain_to_the_ca_and_name_their_endpoint() {
        let pki = TestPki::generate().expect("pki");
        assert!(verifies(pki.ca().cert(), pki.server().cert()));
        let client = pki.client("urn:imei:123").expect("client");
        assert!(verifies(pki.ca().cert(), client.cert()));
        let cn = client
            .cert()
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .expect("cn");
        assert_eq!(cn.data().to_string().expect("text"), "urn:imei:123");
        let impostor = TestPki::self_signed_client("urn:imei:123").expect("impostor");
        assert!(!verifies(pki.ca().cert(), impostor.cert()));
    }

    #[test]
    fn write_to_produces_the_named_files() {
        let dir = std::env::temp_dir().join(format!("pki-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let pki = TestPki::generate().expect("pki");
        let files = pki.write_to(&dir).expect("write");
        assert!(files.ca.ends_with("ca.pem") && files.server_key.ends_with("server.key"));
        let pem = fs::read(&files.server_cert).expect("read");
        assert_eq!(
            X509::from_pem(&pem).expect("pem").to_der().expect("der"),
            pki.server().cert().to_der().expect("der")
        );
        let (cert, _) = pki
            .client("a/b:c")
            .expect("client")
            .write_to(&dir, "a/b:c")
            .expect("write");
        assert!(cert.ends_with("a_b_c.pem"));
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
