//! The local secret: what the account that runs a server proves itself
//! with, on a machine other accounts share.
//!
//! - The server keeps it in `DATA_DIR/secret` (32 random bytes as hex,
//!   created at the first start, `0600` like every file there), so it stays
//!   the same across restarts and scripts may read it.
//! - While a server runs it also leaves the secret under the account's own
//!   default data directory, in `servers/PORT` (the port it listens on), so
//!   the command line and the Python client find it by the URL alone,
//!   whatever `--data-dir` the server was given; the file goes when the
//!   server stops.
//! - Other accounts can read neither: both folders are the owner's, `0700`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The secret's file in the data directory.
pub const SECRET_FILE: &str = "secret";

/// The folder of the default data directory where running servers leave
/// their secret, one file per port.
pub const SERVERS_FOLDER: &str = "servers";

/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;

/// The secret in `data_dir`, created when there is none (or the file holds
/// none).
pub fn local_secret(data_dir: &Path) -> io::Result<String> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= SECRET_BYTES => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|error| io::Error::other(error.to_string()))?;
    let secret: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    write_private(&path, &secret)?;
    Ok(secret)
}

/// A running server's secret left for its account's clients; removed when
/// dropped.
#[derive(Debug)]
pub struct Advertised {
    path: PathBuf,
}

impl Advertised {
    /// Leaves `secret` for clients of the server listening on `port`, in the
    /// account's default data directory.
    pub fn publish(port: u16, secret: &str) -> io::Result<Self> {
        let dir = super::data_dir(None)
            .map_err(io::Error::other)?
            .join(SERVERS_FOLDER);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(port.to_string());
        write_private(&path, secret)?;
        Ok(Self { path })
    }
}

impl Drop for Advertised {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `text` to `path` (replacing it), readable by its owner only.
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = local_secret(dir.path()).expect("made");
        assert_eq!(first.len(), 2 * SECRET_BYTES);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(local_secret(dir.path()).expect("read"), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = tempfile::tempdir().expect("temp dir");
        assert_ne!(local_secret(other.path()).expect("made"), first);
    }
}
