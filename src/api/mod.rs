//! The HTTP API: a tiny_http listener in the scheduler's process that lets
//! external programs (above all the Python client) submit and watch tasks.
//!
//! Threads (all bounded, all named):
//! - `taskdeck-http-N` (default 4): take requests, parse, authorise and
//!   answer those whose body is already in memory (tiny_http reads bodies of
//!   up to 1 KiB with the headers);
//! - `taskdeck-upload-N` (default 8): read larger bodies, so a slow upload
//!   never holds up the others;
//! - `taskdeck-longpoll`: holds waiting `/wait` requests (up to 10,000) and
//!   answers each the moment its task finishes or its time is up, without a
//!   thread per request.
//!
//! Only this module uses tiny_http. It depends on [`crate::model`] and
//! [`crate::scheduler`].

mod auth;
mod error;
mod events;
mod handlers;
mod legacy;
mod logs;
mod longpoll;
mod prometheus;
mod routes;
mod server;
mod streams;
pub mod tls;
pub(crate) mod views;
mod web;

use std::net::{SocketAddr, ToSocketAddrs};

pub use error::ApiError;
pub use events::EventsConfig;
pub use handlers::{ExampleSource, HistorySource, ResourceSource};
pub use server::ApiServer;

/// How the HTTP listener runs.
#[derive(Clone)]
pub struct ApiConfig {
    /// Address to listen on, e.g. `127.0.0.1:5000`.
    pub listen: String,
    /// Bearer token every route but `/healthz` requires; mandatory when
    /// listening beyond loopback.
    pub token: Option<String>,
    /// The secret a server keeps in its data directory for its own
    /// account's clients: accepted like the token, and required, from
    /// loopback too, by every route but `/healthz`, `/metrics` and the older
    /// scripts' routes (see the `auth` module). None for a library that
    /// embeds the listener and opens it to loopback.
    pub local_secret: Option<String>,
    /// Answer the routes the user's older scripts call (`/submit_task`...).
    pub legacy_routes: bool,
    /// Request threads.
    pub threads: usize,
    /// Threads that read large request bodies.
    pub upload_threads: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most tasks in one batch request.
    pub max_batch: usize,
    /// Most tasks awaited by held long polls at once: a `/tasks/{id}/wait`
    /// or `/tasks/run` counts one, a `/tasks/wait` one per task it names.
    pub max_long_polls: usize,
    /// Accept tasks that run programs or code named in their arguments
    /// (`command`, `python`); even then only from loopback clients or with
    /// the token.
    pub allow_code_tasks: bool,
    /// The event stream's buffer and most followers (also the most log
    /// follows at once).
    pub events: EventsConfig,
    /// Where the task output logs are, for `/api/v1/tasks/{id}/log`.
    pub log_dir: Option<std::path::PathBuf>,
    /// Speak HTTPS with this certificate; required beyond loopback unless
    /// `plain_beyond_loopback`.
    pub tls: Option<tls::ServerTls>,
    /// Allow plain HTTP beyond loopback (behind a proxy that adds TLS):
    /// tokens then cross the network in clear text up to that proxy.
    pub plain_beyond_loopback: bool,
    /// Makes the task `POST /api/v1/tasks/example` submits (the
    /// dashboard's one-click button); none answers that route 404.
    pub example_task: Option<ExampleSource>,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            listen,
            token,
            local_secret,
            legacy_routes,
            threads,
            upload_threads,
            max_body_bytes,
            max_batch,
            max_long_polls,
            allow_code_tasks,
            events,
            log_dir,
            tls,
            plain_beyond_loopback,
            example_task,
        } = self;
        f.debug_struct("ApiConfig")
            .field("listen", listen)
            .field("token", &token.as_ref().map(|_| "<redacted>"))
            .field("local_secret", &local_secret.as_ref().map(|_| "<redacted>"))
            .field("legacy_routes", legacy_routes)
            .field("threads", threads)
            .field("upload_threads", upload_threads)
            .field("max_body_bytes", max_body_bytes)
            .field("max_batch", max_batch)
            .field("max_long_polls", max_long_polls)
            .field("allow_code_tasks", allow_code_tasks)
            .field("events", events)
            .field("log_dir", log_dir)
            .field("tls", tls)
            .field("plain_beyond_loopback", plain_beyond_loopback)
            .field("example_task", &example_task.is_some())
            .finish()
    }
}

/// Default listen address; the user's scripts call http://localhost:5000.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            token: None,
            local_secret: None,
            legacy_routes: true,
            threads: 4,
            upload_threads: 8,
            max_body_bytes: 8 * 1024 * 1024,
            max_batch: 10_000,
            max_long_polls: 100_000,
            allow_code_tasks: false,
            events: EventsConfig::default(),
            log_dir: None,
            tls: None,
            plain_beyond_loopback: false,
            example_task: None,
        }
    }
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiStartError {
    /// The address does not parse or resolve.
    #[error("cannot use listen address {addr:?}: {detail}")]
    Address {
        /// The address given.
        addr: String,
        /// Why.
        detail: String,
    },
    /// Listening beyond loopback without a token.
    #[error(
        "refusing to listen on {addr} without a token: anyone who can reach it could run tasks; \
         pass --token TOKEN (or set TASKDECK_TOKEN), or listen on 127.0.0.1"
    )]
    InsecureListen {
        /// The address.
        addr: SocketAddr,
    },
    /// Listening beyond loopback without TLS.
    #[error(
        "refusing to listen on {addr} without TLS: the token would cross the network in clear text; \
         give --tls-cert and --tls-key, or leave them out for a generated certificate, or pass \
         --no-tls when a proxy in front adds TLS"
    )]
    PlainListen {
        /// The address.
        addr: SocketAddr,
    },
    /// Binding failed (port in use, permission).
    #[error("cannot listen on {addr}: {detail}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        detail: String,
    },
    /// A thread could not be started.
    #[error("cannot start an HTTP thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Whether `listen` resolves to any address beyond loopback (false when it
/// does not resolve: starting the listener says why).
pub fn beyond_loopback(listen: &str) -> bool {
    listen
        .to_socket_addrs()
        .is_ok_and(|mut addrs| addrs.any(|a| !a.ip().is_loopback()))
}

/// Resolves the listen address and applies the loopback-or-token rule.
pub(crate) fn resolve(config: &ApiConfig) -> Result<SocketAddr, ApiStartError> {
    let addr_error = |detail: String| ApiStartError::Address {
        addr: config.listen.clone(),
        detail,
    };
    let addrs: Vec<SocketAddr> = config
        .listen
        .to_socket_addrs()
        .map_err(|e| addr_error(e.to_string()))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| addr_error("it resolves to no address".into()))?;
    let token_missing = config.token.as_deref().is_none_or(str::is_empty);
    if let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback())
        && token_missing
    {
        return Err(ApiStartError::InsecureListen { addr: *open });
    }
    if let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback())
        && config.tls.is_none()
        && !config.plain_beyond_loopback
    {
        return Err(ApiStartError::PlainListen { addr: *open });
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_needs_a_token_and_tls() {
        let mut config = ApiConfig {
            listen: "0.0.0.0:0".into(),
            ..ApiConfig::default()
        };
        assert!(matches!(
            resolve(&config),
            Err(ApiStartError::InsecureListen { .. })
        ));
        config.token = Some(String::new());
        assert!(matches!(
            resolve(&config),
            Err(ApiStartError::InsecureListen { .. })
        ));
        config.token = Some("secret".into());
        assert!(matches!(
            resolve(&config),
            Err(ApiStartError::PlainListen { .. })
        ));
        config.plain_beyond_loopback = true;
        assert!(resolve(&config).is_ok());
        config.plain_beyond_loopback = false;
        config.listen = "localhost:0".into();
        config.token = None;
        assert!(resolve(&config).is_ok());
        config.listen = "not an address".into();
        assert!(matches!(
            resolve(&config),
            Err(ApiStartError::Address { .. })
        ));
        let debug = format!(
            "{:?}",
            ApiConfig {
                token: Some("hunter2".into()),
                ..ApiConfig::default()
            }
        );
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
