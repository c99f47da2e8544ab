//! Who may use which route.
//!
//! Rules:
//! - `/healthz` is open to everyone.
//! - So are the web dashboard's embedded files (`/` and the few files under
//!   `/web/` that [`super::web::ASSETS`] names, nothing else there): they
//!   hold no data, and the page they make asks for the secret before it
//!   calls any other route.
//! - With secrets (the `--token`, and the local secret a server keeps in
//!   its data directory), every other route needs one of them as
//!   `Authorization: Bearer SECRET`, from loopback too: on a shared machine
//!   any account can open 127.0.0.1, so loopback is no identity.
//! - Except the routes the user's older scripts call (`/submit_task`,
//!   `/task_status/..`, `/get_tasks`, `/remove_task/..`,
//!   `/monitoring_data`): without a `--token` they stay open to loopback
//!   clients, unchanged, but a request let in that way is never trusted
//!   with tasks that run code; `legacy_routes: false` turns them off.
//! - `/metrics` follows the same exception (Prometheus on the same machine
//!   keeps scraping it) unless a `--token` is set.
//! - A caller that sent a secret is trusted with code tasks; without any
//!   secret configured (a library embedding the listener), loopback
//!   callers are.
//! - Requests through the TLS front have no peer address: none counts as
//!   loopback, and their failures share one count.
//! - Secrets are compared in constant time. Failures are logged (at most
//!   once a minute per address) and, from an address with
//!   [`SLOW_AFTER_FAILURES`] failures within a minute, answered only after
//!   [`FAILURE_DELAY`], so guessing is slow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tiny_http::Request;

use super::error::ApiError;
use super::handlers::Caller;
use super::routes::Route;

/// Failures from one address within [`FAILURE_WINDOW`] after which its
/// failed requests are slowed.
pub const SLOW_AFTER_FAILURES: u32 = 5;

/// How long a failed request from a guessing address waits for its answer.
pub const FAILURE_DELAY: Duration = Duration::from_millis(500);

/// The window failures are counted in.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Most addresses whose failures are remembered.
const REMEMBERED_ADDRESSES: usize = 4096;

/// The listener's secrets and its record of failed attempts.
pub struct Gate {
    token: Option<String>,
    local_secret: Option<String>,
    legacy_routes: bool,
    /// By peer address; `None` for requests through the TLS front, which
    /// have none and share one count.
    failures: Mutex<HashMap<Option<IpAddr>, Failures>>,
}

struct Failures {
    since: Instant,
    count: u32,
    logged: bool,
}

impl Gate {
    /// A gate for these secrets (empty ones count as none).
    pub fn new(token: Option<String>, local_secret: Option<String>, legacy_routes: bool) -> Self {
        Self {
            token: token.filter(|t| !t.is_empty()),
            local_secret: local_secret.filter(|t| !t.is_empty()),
            legacy_routes,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any secret is required.
    pub fn has_secrets(&self) -> bool {
        self.token.is_some() || self.local_secret.is_some()
    }

    /// Lets `request` for `route` in, as the caller it is, or says why not
    /// (after the delay a guessing address has earned).
    pub fn admit(&self, request: &Request, route: &Route) -> Result<Caller, ApiError> {
        if route.is_legacy() && !self.legacy_routes {
            return Err(ApiError::not_found(
                "the routes of the older scripts are turned off on this server (--no-legacy-routes); \
                 use /api/v1",
            ));
        }
        let loopback = request
            .remote_addr()
            .is_some_and(|addr| addr.ip().is_loopback());
        if route.is_public() || !self.has_secrets() {
            return Ok(Caller {
                trusted: loopback && !route.is_legacy(),
            });
        }
        if self.carries_secret(request) {
            return Ok(Caller {
                trusted: !route.is_legacy(),
            });
        }
        let open_to_loopback = (route.is_legacy() || matches!(route, Route::Metrics))
            && self.token.is_none()
            && loopback;
        if open_to_loopback {
            return Ok(Caller { trusted: false });
        }
        self.failed(request);
        Err(ApiError::unauthorized())
    }

    /// Whether the request names one of the secrets.
    fn carries_secret(&self, request: &Request) -> bool {
        request
            .headers()
            .iter()
            .filter(|h| h.field.equiv("Authorization"))
            .filter_map(|h| h.value.as_str().trim().strip_prefix("Bearer "))
            .any(|given| {
                let given = given.trim().as_bytes();
                [&self.token, &self.local_secret]
                    .into_iter()
                    .flatten()
                    .any(|secret| same_secret(given, secret.as_bytes()))
            })
    }

    /// Notes a failed attempt; logs it and waits when the address keeps
    /// failing.
    fn failed(&self, request: &Request) {
        let ip = request.remote_addr().map(|addr| addr.ip());
        let now = Instant::now();
        let (count, log) = {
            let mut failures = self.failures.lock();
            if failures.len() >= REMEMBERED_ADDRESSES && !failures.contains_key(&ip) {
                failures.retain(|_, seen| now.duration_since(seen.since) < FAILURE_WINDOW);
                if failures.len() >= REMEMBERED_ADDRESSES {
                    failures.clear();
                }
            }
            let seen = failures.entry(ip).or_insert(Failures {
                since: now,
                count: 0,
                logged: false,
            });
            if now.duration_since(seen.since) >= FAILURE_WINDOW {
                *seen = Failures {
                    since: now,
                    count: 0,
                    logged: false,
                };
            }
            seen.count += 1;
            let log = !seen.logged;
            seen.logged = true;
            (seen.count, log)
        };
        if log {
            let from = ip.map_or_else(|| "a TLS client".to_owned(), |ip| ip.to_string());
            tracing::warn!(
                %from,
                url = request.url(),
                "a request without the right token was refused (further ones from this address within a minute are not logged)"
            );
        }
        if count >= SLOW_AFTER_FAILURES {
            std::thread::sleep(FAILURE_DELAY);
        }
    }
}

/// Compares without an early exit, so the time taken does not tell how much
/// of a guessed secret was right.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::{Gate, same_secret};
    use crate::api::routes::{self, Method};
    use tiny_http::{Request, TestRequest};

    fn request(path: &str, n: u8, secret: Option<&str>) -> Request {
        let mut request = TestRequest::new()
            .with_path(path)
            .with_remote_addr(std::net::SocketAddr::from(([127, 0, 0, n], 4000)));
        if let Some(secret) = secret {
            request = request.with_header(
                tiny_http::Header::from_bytes("Authorization", format!("Bearer {secret}"))
                    .expect("a header"),
            );
        }
        request.into()
    }

    /// The dashboard's files are open; every other route still needs the
    /// secret, and a path under `/web/` that names no file opens nothing.
    #[test]
    fn only_the_dashboard_files_and_health_open_without_a_secret() {
        let gate = Gate::new(Some("token".into()), Some("local".into()), true);
        for (n, path) in ["/", "/web/app.js", "/web/style.css", "/healthz"]
            .into_iter()
            .enumerate()
        {
            let route = routes::parse(Method::Get, path).expect(path);
            let n = u8::try_from(n).expect("few paths");
            assert!(
                gate.admit(&request(path, n, None), &route).is_ok(),
                "{path}"
            );
        }
        for (n, path) in [
            "/api/v1/tasks",
            "/api/v1/events",
            "/api/v1/task-types",
            "/metrics",
            "/get_tasks",
        ]
        .into_iter()
        .enumerate()
        {
            let route = routes::parse(Method::Get, path).expect(path);
            let n = 100 + u8::try_from(n).expect("few paths");
            let refused = gate.admit(&request(path, n, None), &route);
            assert_eq!(refused.map_err(|e| e.status).err(), Some(401), "{path}");
            assert!(
                gate.admit(&request(path, n, Some("local")), &route).is_ok(),
                "{path} with the secret"
            );
        }
        assert!(routes::parse(Method::Get, "/web/unknown.js").is_err());
        assert!(routes::parse(Method::Get, "/web/").is_err());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"token", b"token"));
        assert!(!same_secret(b"tokeN", b"token"));
        assert!(!same_secret(b"tok", b"token"));
        assert!(!same_secret(b"", b"token"));
    }
}
