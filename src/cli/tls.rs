//! TLS flags of `serve` and the window: HTTPS is on beyond loopback (with
//! the user's certificate, or one made once in `DATA_DIR/tls`), and on
//! loopback when asked for.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use taskdeck::api::tls::ServerTls;

/// Where a generated certificate and its key are kept, under the data
/// directory.
pub(crate) const GENERATED_DIR: &str = "tls";

/// How the HTTP API speaks TLS.
#[derive(Debug, Args)]
pub(crate) struct TlsArgs {
    /// PEM file with the certificate the HTTP API presents (leaf first,
    /// then intermediates); needs --tls-key. Turns HTTPS on.
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_key",
        env = "TASKDECK_TLS_CERT"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM file with the certificate's private key.
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_cert",
        env = "TASKDECK_TLS_KEY"
    )]
    tls_key: Option<PathBuf>,
    /// Speak HTTPS on loopback too (beyond loopback it is the default);
    /// without --tls-cert, with a self-signed certificate made once in
    /// DATA_DIR/tls whose fingerprint clients pin.
    #[arg(long, conflicts_with = "no_tls")]
    tls: bool,
    /// Plain HTTP beyond loopback, for a proxy in front that adds TLS (the
    /// token crosses the network in clear text up to it).
    #[arg(long, conflicts_with_all = ["tls", "tls_cert"])]
    no_tls: bool,
}

/// What the listener's TLS settings came to.
pub(crate) struct Chosen {
    /// The certificate, when the listener speaks HTTPS.
    pub(crate) tls: Option<ServerTls>,
    /// The user asked for plain HTTP beyond loopback.
    pub(crate) plain_beyond_loopback: bool,
    /// The certificate was made now.
    pub(crate) generated: bool,
}

impl TlsArgs {
    /// The TLS settings for a listener on `listen`, with a generated
    /// certificate kept in `data_dir` when needed.
    pub(crate) fn choose(self, listen: &str, data_dir: &Path) -> anyhow::Result<Chosen> {
        let Self {
            tls_cert,
            tls_key,
            tls,
            no_tls,
        } = self;
        if let (Some(cert), Some(key)) = (tls_cert, tls_key) {
            let tls = ServerTls::from_pem_files(&cert, &key)
                .context("cannot use --tls-cert and --tls-key")?;
            return Ok(Chosen {
                tls: Some(tls),
                plain_beyond_loopback: false,
                generated: false,
            });
        }
        if !tls && (no_tls || !taskdeck::api::beyond_loopback(listen)) {
            return Ok(Chosen {
                tls: None,
                plain_beyond_loopback: no_tls,
                generated: false,
            });
        }
        let dir = data_dir.join(GENERATED_DIR);
        let (tls, generated) = ServerTls::generated_in(&dir, &certificate_names(listen))
            .with_context(|| {
                format!(
                    "cannot make or read the HTTPS certificate in {} (give your own with --tls-cert and --tls-key)",
                    dir.display()
                )
            })?;
        Ok(Chosen {
            tls: Some(tls),
            plain_beyond_loopback: false,
            generated,
        })
    }
}

/// The names a generated certificate is made for: loopback, this host's
/// name, and the address listened on when it is a specific one. Clients
/// that pin its fingerprint need none of them.
fn certificate_names(listen: &str) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let host = taskdeck::telemetry::host_name();
    let dns_name = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if dns_name && host != "localhost" && host != "unknown" {
        names.push(host);
    }
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>()
        && !addr.ip().is_unspecified()
        && !addr.ip().is_loopback()
    {
        names.push(addr.ip().to_string());
    }
    names
}
