//! TLS for the HTTP API: the server's certificate and key (from PEM files,
//! or a self-signed pair generated once and kept in the data directory),
//! their fingerprint, and the front that speaks TLS to clients ([`front`]).
//!
//! tiny_http speaks plain HTTP only (its own TLS support is built on an
//! unmaintained rustls), so a TLS listener is a front: it accepts on the
//! public address, completes the TLS handshake with rustls and passes the
//! plain bytes to the request threads over a Unix socket in a directory
//! only this account can open. Requests that came through it have no
//! loopback address, so every route but `/healthz` asks them for a secret.

mod front;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub(crate) use front::TlsFront;

/// File of a generated certificate, in the directory given to
/// [`ServerTls::generated_in`].
pub const GENERATED_CERT_FILE: &str = "cert.pem";
/// File of a generated certificate's private key (0600).
pub const GENERATED_KEY_FILE: &str = "key.pem";

/// Years a generated certificate is valid.
const GENERATED_YEARS: i16 = 20;

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or written.
    #[error("{path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The files hold no usable certificate or key, or they do not fit.
    #[error("{0}")]
    Invalid(String),
}

/// The listener's TLS identity: what it presents and the configuration of
/// its TLS sessions.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    fingerprint: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The certificate chain in `cert` (leaf first) and the private key in
    /// `key`, both PEM.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        fn file_error(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError + '_ {
            move |error| TlsError::File {
                path: path.to_owned(),
                detail: pem_error(&error),
            }
        }
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(file_error(cert))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(file_error(cert))?;
        if chain.is_empty() {
            return Err(TlsError::File {
                path: cert.to_owned(),
                detail: "no certificate (PEM \"BEGIN CERTIFICATE\") in it".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(file_error(key))?;
        Self::new(chain, key)
    }

    /// The self-signed pair kept in `dir`, made the first time (for the
    /// names in `names`, which may be DNS names or IP addresses), so its
    /// fingerprint stays the same across restarts. Also says whether it was
    /// made now.
    pub fn generated_in(dir: &Path, names: &[String]) -> Result<(Self, bool), TlsError> {
        let cert_path = dir.join(GENERATED_CERT_FILE);
        let key_path = dir.join(GENERATED_KEY_FILE);
        if cert_path.exists() || key_path.exists() {
            return Ok((Self::from_pem_files(&cert_path, &key_path)?, false));
        }
        let invalid =
            |error: rcgen::Error| TlsError::Invalid(format!("cannot make a certificate: {error}"));
        let key = rcgen::KeyPair::generate().map_err(invalid)?;
        let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(invalid)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Taskdeck (self-signed)");
        let year = jiff::Zoned::now().year();
        params.not_before = rcgen::date_time_ymd(i32::from(year) - 1, 1, 1);
        params.not_after = rcgen::date_time_ymd(i32::from(year + GENERATED_YEARS), 1, 1);
        let cert = params.self_signed(&key).map_err(invalid)?;
        let write = |path: &Path, text: &str| {
            write_private(path, text.as_bytes()).map_err(|error| TlsError::File {
                path: path.to_owned(),
                detail: error.to_string(),
            })
        };
        std::fs::create_dir_all(dir).map_err(|error| TlsError::File {
            path: dir.to_owned(),
            detail: error.to_string(),
        })?;
        // The key first: a certificate without its key is of no use.
        write(&key_path, &key.serialize_pem())?;
        write(&cert_path, &cert.pem())?;
        Ok((Self::from_pem_files(&cert_path, &key_path)?, true))
    }

    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let fingerprint = chain
            .first()
            .map(|leaf| fingerprint(leaf))
            .unwrap_or_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Invalid(error.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| {
                TlsError::Invalid(format!(
                    "the certificate and key cannot be used together: {error}"
                ))
            })?;
        Ok(Self {
            config: Arc::new(config),
            fingerprint,
        })
    }

    /// The SHA-256 fingerprint of the certificate presented, as clients pin
    /// it (`AB:CD:...`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }
}

/// The SHA-256 fingerprint of a DER certificate: 32 bytes in upper-case
/// hex, separated by colons (as `openssl x509 -fingerprint -sha256` writes it).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn pem_error(error: &rustls::pki_types::pem::Error) -> String {
    match error {
        rustls::pki_types::pem::Error::Io(error) => error.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no private key (PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\") in it".into()
        }
        other => format!("not a PEM file this server can read ({other:?})"),
    }
}

/// Writes a file only its owner may read, whatever the umask.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_is_private_and_kept_across_starts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls_dir = dir.path().join("tls");
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let (first, made) = ServerTls::generated_in(&tls_dir, &names).expect("generate");
        assert!(made);
        let (again, made) = ServerTls::generated_in(&tls_dir, &names).expect("load");
        assert!(!made);
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert_eq!(first.fingerprint().len(), 32 * 3 - 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tls_dir.join(GENERATED_KEY_FILE))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn files_that_are_not_a_matching_pair_are_refused_with_their_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let names = vec!["localhost".to_owned()];
        ServerTls::generated_in(&dir.path().join("a"), &names).expect("a");
        ServerTls::generated_in(&dir.path().join("b"), &names).expect("b");
        let cert = dir.path().join("a").join(GENERATED_CERT_FILE);
        let other_key = dir.path().join("b").join(GENERATED_KEY_FILE);
        let mismatch = ServerTls::from_pem_files(&cert, &other_key).expect_err("keys differ");
        assert!(
            mismatch.to_string().contains("cannot be used together"),
            "{mismatch}"
        );
        let missing = dir.path().join("missing.pem");
        let error = ServerTls::from_pem_files(&missing, &other_key).expect_err("no file");
        assert!(error.to_string().contains("missing.pem"), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").expect("write");
        let error = ServerTls::from_pem_files(&empty, &other_key).expect_err("no cert");
        assert!(error.to_string().contains("no certificate"), "{error}");
        let error = ServerTls::from_pem_files(&cert, &empty).expect_err("no key");
        assert!(error.to_string().contains("no private key"), "{error}");
    }

    #[test]
    fn fingerprints_are_colon_separated_sha256() {
        assert_eq!(
            fingerprint(b""),
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
    }
}
