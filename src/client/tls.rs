//! TLS for the client: which certificates an `https://` server may present.
//!
//! Rules:
//! - with a CA file, the server's chain must lead to one of its
//!   certificates and name the URL's host;
//! - with a pinned fingerprint, the server's certificate must be exactly
//!   that one (its SHA-256), whatever its names and dates, and the server
//!   must prove it holds its key: how a self-signed certificate is trusted;
//! - with neither, the system's trusted authorities, as a browser would;
//! - nothing is sent before the server passed.
//!
//! ureq's own TLS cannot pin a certificate, so the client plugs its own
//! connector into ureq's connector chain.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

use super::ClientError;

/// Which certificates to trust from an `https://` server; the default
/// trusts the system's authorities.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of the authorities (or the very certificate) to trust
    /// instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// The server certificate's SHA-256 fingerprint (64 hex digits, colons
    /// allowed), as `taskdeck serve` prints it.
    pub fingerprint: Option<String>,
}

impl TlsOptions {
    /// The TLS configuration these options make, checked now so a wrong
    /// file or fingerprint is told before any connection.
    pub(crate) fn config(&self) -> Result<Arc<ClientConfig>, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| ClientError::Tls(error.to_string()))?;
        let config = match (&self.ca_file, &self.fingerprint) {
            (Some(_), Some(_)) => {
                return Err(ClientError::Tls(
                    "give a CA file or a fingerprint, not both".into(),
                ));
            }
            (None, Some(fingerprint)) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                    sha256: parse_fingerprint(fingerprint)?,
                    provider,
                }))
                .with_no_client_auth(),
            (Some(file), None) => builder
                .with_root_certificates(roots_from(file)?)
                .with_no_client_auth(),
            (None, None) => builder
                .with_root_certificates(system_roots()?)
                .with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// The certificates in a PEM file, as trusted roots.
fn roots_from(file: &Path) -> Result<RootCertStore, ClientError> {
    let unreadable =
        |detail: String| ClientError::Tls(format!("CA file {}: {detail}", file.display()));
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|error| unreadable(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| unreadable(error.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(unreadable(
            "no certificate (PEM \"BEGIN CERTIFICATE\") in it".into(),
        ));
    }
    Ok(roots)
}

/// The system's trusted authorities.
fn system_roots() -> Result<RootCertStore, ClientError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(ClientError::Tls(format!(
            "cannot read the system's trusted certificates ({why}); give --ca-file or --tls-fingerprint"
        )));
    }
    Ok(roots)
}

/// 32 bytes from 64 hex digits, colons and spaces ignored.
fn parse_fingerprint(text: &str) -> Result<[u8; 32], ClientError> {
    let digits: Vec<u8> = text
        .trim()
        .trim_start_matches("sha256:")
        .trim_start_matches("SHA256:")
        .bytes()
        .filter(|b| *b != b':' && !b.is_ascii_whitespace())
        .collect();
    let wrong = || {
        ClientError::Tls(format!(
            "{text:?} is not a SHA-256 fingerprint: 64 hex digits, colons allowed (as `taskdeck serve` prints it)"
        ))
    };
    if digits.len() != 64 {
        return Err(wrong());
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| wrong())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| wrong())?;
    }
    Ok(bytes)
}

/// Why a TLS session failed, in words; certificate trouble says what to do.
pub(crate) fn describe(error: &rustls::Error) -> String {
    use rustls::CertificateError;
    let refused = match error {
        rustls::Error::General(why) => why.clone(),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "it is not signed by an authority trusted here".to_owned()
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "it is not made for the URL's host name".to_owned(),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "it has expired".to_owned(),
        rustls::Error::InvalidCertificate(other) => format!("{other:?}"),
        other => return other.to_string(),
    };
    format!(
        "the server's certificate is refused: {refused}; an https:// server is trusted through \
         the system's authorities, a CA file (--ca-file), or its certificate's pinned SHA-256 \
         fingerprint (--tls-fingerprint, as `taskdeck serve` prints it)"
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Trusts exactly one certificate, by its SHA-256.
#[derive(Debug)]
struct PinnedCertificate {
    sha256: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if digest.as_ref() == self.sha256 {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::General(format!(
            "its SHA-256 fingerprint is {}, not the pinned {}",
            hex(digest.as_ref()),
            hex(&self.sha256)
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The last link of the client's connector chain: TLS for `https://`, with
/// the client's configuration (or the reason it has none).
pub(crate) struct TlsConnector {
    config: Result<Arc<ClientConfig>, String>,
}

impl TlsConnector {
    pub(crate) fn new(config: Result<Arc<ClientConfig>, String>) -> Self {
        Self { config }
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

impl<In: Transport> Connector<In> for TlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let config = self
            .config
            .clone()
            .map_err(|why| ureq::Error::Io(std::io::Error::other(why)))?;
        let host = details.uri.host().unwrap_or_default();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            ureq::Error::Io(std::io::Error::other(format!(
                "{host:?} is not a host name TLS can check"
            )))
        })?;
        let mut conn = ClientConnection::new(config, name)
            .map_err(|error| ureq::Error::Io(std::io::Error::other(error)))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        Ok(Some(Either::B(TlsTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: StreamOwned::new(conn, sock),
        })))
    }
}

/// A TLS session over the chained transport.
pub(crate) struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = self.buffers.output().get(..amount).unwrap_or_default();
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_read_with_or_without_colons() {
        let colons = "A4:D1:6E:5B:2F:42:9F:FA:8D:67:BA:AF:A8:EB:58:EB:4A:54:13:B6:0B:5A:6C:4A:18:05:0D:F3:68:F2:33:97";
        let plain = colons.replace(':', "").to_lowercase();
        let bytes = parse_fingerprint(colons).expect("colons");
        assert_eq!(parse_fingerprint(&plain).expect("plain"), bytes);
        assert_eq!(hex(&bytes), colons);
        assert!(parse_fingerprint("A4:D1").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn options_that_cannot_work_are_refused_before_connecting() {
        let both = TlsOptions {
            ca_file: Some("ca.pem".into()),
            fingerprint: Some("00".repeat(32)),
        };
        assert!(both.config().is_err());
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here").expect("write");
        let error = TlsOptions {
            ca_file: Some(empty),
            fingerprint: None,
        }
        .config()
        .expect_err("no certificate");
        assert!(error.to_string().contains("empty.pem"), "{error}");
    }
}
