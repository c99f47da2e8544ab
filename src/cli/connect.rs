//! `taskdeck --connect URL`: the window attached to a remote Taskdeck (a
//! `serve`, or another window's listener). It starts no scheduler, no
//! listener and no workers: the window shows and drives the server over
//! its HTTP API and event stream.

use std::path::PathBuf;

use clap::Args;

/// The flags of the attached window.
#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// Open the window on the Taskdeck at this URL instead of running a
    /// scheduler here (e.g. http://127.0.0.1:5000); a server of this
    /// account on this machine is sent its local secret without --token.
    #[arg(long, value_name = "URL")]
    connect: Option<String>,
    /// With --connect to an https:// server: PEM file of the authorities
    /// (or the very certificate) to trust instead of the system's.
    #[arg(
        long,
        value_name = "PEM",
        requires = "connect",
        conflicts_with = "tls_fingerprint"
    )]
    ca_file: Option<PathBuf>,
    /// With --connect to an https:// server: the SHA-256 fingerprint of its
    /// certificate, as `taskdeck serve` prints it.
    #[arg(long, value_name = "SHA256", requires = "connect")]
    tls_fingerprint: Option<String>,
}

impl ConnectArgs {
    /// The server to attach to, when one was named.
    pub(crate) fn url(&self) -> Option<&str> {
        self.connect.as_deref()
    }
}

/// Opens the window attached to the server; returns when it closes.
#[cfg(feature = "window")]
pub(crate) fn window(args: ConnectArgs, token: Option<&str>) -> anyhow::Result<()> {
    use anyhow::Context;
    use taskdeck::attach::{Attached, CALL_TIMEOUT};
    use taskdeck::client::{Client, TlsOptions};

    let ConnectArgs {
        connect,
        ca_file,
        tls_fingerprint,
    } = args;
    let url = connect.context("--connect names no server")?;
    let tls = TlsOptions {
        ca_file,
        fingerprint: tls_fingerprint,
    };
    let client = Client::with_tls(&url, token, CALL_TIMEOUT, &tls)?;
    let signals = taskdeck::runtime::stop_signals()?;
    let close = super::stack::close_on_first_signal(signals)?;
    let mut attached = Attached::start(client)?;
    tracing::info!(%url, "taskdeck window attached");
    let shown = taskdeck::app::run(attached.services(), close);
    attached.shutdown();
    shown.map_err(Into::into)
}

/// `--connect` in a build without the `window` feature.
#[cfg(not(feature = "window"))]
pub(crate) fn window(_args: ConnectArgs, _token: Option<&str>) -> anyhow::Result<()> {
    anyhow::bail!(
        "this build of taskdeck has no window (it was built without the `window` feature); \
         use the commands (`taskdeck list --url URL`, `taskdeck monitor`) or the web dashboard"
    )
}
