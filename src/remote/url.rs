//! The broker's address. Credentials live only in the URL (given on the
//! command line or in the environment) and never appear in logs, errors or
//! `Debug` output: everything that shows a [`BrokerUrl`] shows its redacted
//! form.

use std::fmt;
use std::str::FromStr;

/// An `amqp://` or `amqps://` URL, checked when parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    full: String,
    shown: String,
}

/// Why a broker URL was refused. The message never repeats the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not an AMQP URL at all.
    #[error("the broker URL must start with amqp:// or amqps:// (got {0})")]
    Scheme(String),
    /// The URL does not parse.
    #[error("the broker URL {shown} is not valid: {reason}")]
    Invalid {
        /// The URL, redacted.
        shown: String,
        /// What the parser said.
        reason: String,
    },
}

impl BrokerUrl {
    /// The full URL, credentials included: only for connecting.
    pub(super) fn secret(&self) -> &str {
        &self.full
    }

    /// The full URL for a child process's environment (not its command
    /// line, which other users can read); never for display.
    pub fn secret_for_child_env(&self) -> &str {
        &self.full
    }

    /// Whether the connection uses TLS.
    pub fn is_tls(&self) -> bool {
        self.full.starts_with("amqps://")
    }
}

impl FromStr for BrokerUrl {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let shown = redact(text);
        if !(text.starts_with("amqp://") || text.starts_with("amqps://")) {
            let scheme = text.split("://").next().unwrap_or_default();
            return Err(UrlError::Scheme(if text.contains("://") {
                format!("{scheme}://…")
            } else {
                "no scheme".to_owned()
            }));
        }
        text.parse::<lapin::uri::AMQPUri>()
            .map_err(|reason| UrlError::Invalid {
                shown: shown.clone(),
                reason: redact_in(&reason, text),
            })?;
        Ok(Self {
            full: text.to_owned(),
            shown,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({})", self.shown)
    }
}

/// The URL with its password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split(':').next().unwrap_or_default();
    if userinfo.contains(':') {
        format!("{scheme}://{user}:***@{host}{path}")
    } else {
        format!("{scheme}://{user}@{host}{path}")
    }
}

/// `text` with the URL's password (if any) replaced, for parser messages
/// that may quote it.
fn redact_in(text: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|password| !password.is_empty());
    match password {
        Some(password) => text.replace(password, "***"),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let url: BrokerUrl = "amqp://bob:s3cret@broker.lan:5672/%2f?heartbeat=10"
            .parse()
            .expect("a valid URL");
        assert_eq!(
            url.to_string(),
            "amqp://bob:***@broker.lan:5672/%2f?heartbeat=10"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(
            url.secret(),
            "amqp://bob:s3cret@broker.lan:5672/%2f?heartbeat=10"
        );
        assert!(!url.is_tls());
    }

    #[test]
    fn urls_without_credentials_stay_as_they_are() {
        let url: BrokerUrl = "amqps://broker.lan/prod".parse().expect("a valid URL");
        assert_eq!(url.to_string(), "amqps://broker.lan/prod");
        assert!(url.is_tls());
        let user_only: BrokerUrl = "amqp://bob@h".parse().expect("a valid URL");
        assert_eq!(user_only.to_string(), "amqp://bob@h");
    }

    #[test]
    fn other_schemes_and_bad_ports_are_refused_without_the_password() {
        let error = "http://u:pw@h"
            .parse::<BrokerUrl>()
            .expect_err("wrong scheme");
        assert!(matches!(error, UrlError::Scheme(_)));
        assert!(!error.to_string().contains("pw"));
        let error = "localhost:5672"
            .parse::<BrokerUrl>()
            .expect_err("no scheme");
        assert!(error.to_string().contains("amqp://"));
        let error = "amqp://u:topsecret@h:notaport/"
            .parse::<BrokerUrl>()
            .expect_err("bad port");
        assert!(!error.to_string().contains("topsecret"), "{error}");
    }
}
