//! Finds the secret of a server on this machine that runs as this account,
//! so its owner passes nothing (see `runtime::secret` for where servers
//! leave it). Nothing is looked up for other hosts: a secret never leaves
//! the machine unasked.
//!
//! Looked at, in order, for `http://127.0.0.1:PORT` (or `https://`, or
//! `localhost`, `[::1]`):
//! - `DEFAULT_DATA_DIR/servers/PORT`, left by the server while it runs;
//! - `$TASKDECK_DATA_DIR/secret`, the data directory named by the
//!   environment;
//! - `DEFAULT_DATA_DIR/secret`.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;

/// What a client sends as `Authorization`: the token it was given, or the
/// local secret it found. A secret found is looked for again when the
/// server refuses it: the client may have been made before the server first
/// started (no secret yet), or the server restarted with another data
/// directory. Clones share it.
#[derive(Clone)]
pub(super) struct Auth {
    /// The server's URL, to look again; none when a token was given.
    found_for: Option<String>,
    /// `Bearer ...`, or none.
    header: Arc<RwLock<Option<String>>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sends = if self.header.read().is_some() {
            "a token"
        } else {
            "nothing"
        };
        f.debug_struct("Auth")
            .field("sends", &sends)
            .field("found", &self.found_for.is_some())
            .finish()
    }
}

impl Auth {
    /// `token` when given (not empty), else the secret of a server of this
    /// account at `url` on this machine, if any.
    pub(super) fn new(url: &str, token: Option<&str>) -> Self {
        let (found_for, token) = match token.filter(|t| !t.is_empty()) {
            Some(token) => (None, Some(token.to_owned())),
            None => (Some(url.to_owned()), discover(url)),
        };
        Self {
            found_for,
            header: Arc::new(RwLock::new(token.map(|t| format!("Bearer {t}")))),
        }
    }

    /// The `Authorization` value to send now.
    pub(super) fn header(&self) -> Option<String> {
        self.header.read().clone()
    }

    /// After a 401: looks for the secret again when it was found rather
    /// than given, and takes it when it differs from the one sent. True
    /// when the request should go again (a refused request ran nothing).
    pub(super) fn refused(&self) -> bool {
        let Some(url) = &self.found_for else {
            return false;
        };
        let Some(found) = discover(url).map(|t| format!("Bearer {t}")) else {
            return false;
        };
        let mut header = self.header.write();
        if header.as_deref() == Some(found.as_str()) {
            return false;
        }
        *header = Some(found);
        true
    }
}

/// The secret of the server at `url`, when it is on this machine and this
/// account can read it.
pub fn discover(url: &str) -> Option<String> {
    let port = loopback_port(url)?;
    let default_dir =
        directories::ProjectDirs::from("", "", "taskdeck").map(|dirs| dirs.data_dir().to_owned());
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = &default_dir {
        candidates.push(dir.join("servers").join(port.to_string()));
    }
    if let Some(dir) = std::env::var_os("TASKDECK_DATA_DIR").filter(|dir| !dir.is_empty()) {
        candidates.push(PathBuf::from(dir).join("secret"));
    }
    if let Some(dir) = &default_dir {
        candidates.push(dir.join("secret"));
    }
    candidates.iter().find_map(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        let secret = text.trim();
        (!secret.is_empty()).then(|| secret.to_owned())
    })
}

/// The port of a URL whose host is this machine's loopback.
fn loopback_port(url: &str) -> Option<u16> {
    let (rest, default_port) = match url.strip_prefix("http://") {
        Some(rest) => (rest, 80),
        None => (url.strip_prefix("https://")?, 443),
    };
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            (host, port.parse::<u16>().ok()?)
        }
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback.then_some(port)
}

#[cfg(test)]
mod tests {
    use super::{Auth, loopback_port};

    #[test]
    fn only_loopback_urls_have_a_local_secret() {
        assert_eq!(loopback_port("http://127.0.0.1:5000"), Some(5000));
        assert_eq!(loopback_port("http://localhost:8080/"), Some(8080));
        assert_eq!(loopback_port("http://[::1]:5001/api"), Some(5001));
        assert_eq!(loopback_port("http://127.0.0.1"), Some(80));
        assert_eq!(loopback_port("http://10.0.0.5:5000"), None);
        assert_eq!(loopback_port("http://gpu-box:5000"), None);
        assert_eq!(loopback_port("https://127.0.0.1:5000"), Some(5000));
        assert_eq!(loopback_port("https://localhost"), Some(443));
        assert_eq!(loopback_port("https://gpu-box:5000"), None);
        assert_eq!(loopback_port("ftp://127.0.0.1:5000"), None);
    }

    #[test]
    fn a_token_given_is_sent_and_never_replaced() {
        let auth = Auth::new("http://127.0.0.1:5000", Some("given"));
        assert_eq!(auth.header().as_deref(), Some("Bearer given"));
        assert!(!auth.refused(), "nothing is looked for");
        assert_eq!(auth.header().as_deref(), Some("Bearer given"));
        // Clones share what is sent.
        assert_eq!(auth.clone().header(), auth.header());
        assert!(!format!("{auth:?}").contains("given"), "{auth:?}");
    }

    #[test]
    fn nothing_is_looked_for_or_sent_for_another_host() {
        let auth = Auth::new("http://gpu-box:5000", None);
        assert_eq!(auth.header(), None);
        assert!(!auth.refused(), "no secret of another host is ever found");
        let auth = Auth::new("http://gpu-box:5000", Some(""));
        assert_eq!(auth.header(), None, "an empty token is none");
    }
}
