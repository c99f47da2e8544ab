//! The Rust HTTP client of the API, used by the `taskdeck` CLI commands and
//! the HTTP load generator. It keeps connections alive between calls.
//!
//! It speaks the JSON of docs/openapi.yaml; `commands` uses the task
//! registry's names for mock tasks and nothing else internal.

pub mod commands;
mod events;
mod logs;
pub mod secret;
mod tls;

pub use events::{EventStream, FrameParser, StreamEvent};
pub use logs::{LogPart, LogQuery, PAGE_BYTES};
pub use tls::TlsOptions;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

/// Errors of a call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the Taskdeck server at {url}: {detail}")]
    Connect {
        /// The server.
        url: String,
        /// Why.
        detail: String,
    },
    /// The server answered with an error.
    #[error("{message} (HTTP {status})")]
    Server {
        /// HTTP status.
        status: u16,
        /// The API's error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    /// The TLS options cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
}

/// What went wrong on the way to the server, in words: the innermost
/// reason of an I/O error, and what to do about a certificate not trusted.
fn connect_detail(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Io(io) => match io.get_ref() {
            Some(inner) => inner
                .downcast_ref::<rustls::Error>()
                .map_or_else(|| inner.to_string(), tls::describe),
            None => io.to_string(),
        },
        other => other.to_string(),
    }
}

fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// An agent with `config` whose `https://` connections use `tls` (for
/// plain `http://` ones it is never asked).
fn agent(
    config: ureq::config::Config,
    tls: Option<&Result<Arc<rustls::ClientConfig>, String>>,
) -> ureq::Agent {
    use ureq::unversioned::transport::{ConnectProxyConnector, Connector as _, TcpConnector};
    let tls = tls
        .cloned()
        .unwrap_or_else(|| Err("the client was made for an http:// URL".to_owned()));
    let connector =
        ().chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(tls::TlsConnector::new(tls));
    ureq::Agent::with_parts(
        config,
        connector,
        ureq::unversioned::resolver::DefaultResolver::default(),
    )
}

/// Largest answer read, in bytes.
const MAX_ANSWER_BYTES: u64 = 256 * 1024 * 1024;

/// A connection-reusing client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    auth: secret::Auth,
    /// For `https://` servers: the TLS configuration, or why there is none.
    tls: Option<Result<Arc<rustls::ClientConfig>, String>>,
}

impl Client {
    /// A client of `url` (e.g. `http://127.0.0.1:5000`); `timeout` bounds
    /// each phase of a call: connecting, sending, and waiting for the answer
    /// and its body (long polls add their own wait to it). Without a
    /// `token`, a server on this machine that runs as this account is sent
    /// its local secret ([`secret::discover`]). An `https://` server must
    /// present a certificate the system trusts; [`Client::with_tls`] says
    /// otherwise.
    pub fn new(url: &str, token: Option<&str>, timeout: Duration) -> Self {
        let tls = is_https(url).then(|| {
            TlsOptions::default()
                .config()
                .map_err(|error| error.to_string())
        });
        Self::build(url, token, timeout, tls)
    }

    /// Like [`Client::new`], trusting what `tls` says for `https://`
    /// servers; options that cannot work are an error now.
    pub fn with_tls(
        url: &str,
        token: Option<&str>,
        timeout: Duration,
        tls: &TlsOptions,
    ) -> Result<Self, ClientError> {
        let config = if is_https(url) {
            Some(Ok(tls.config()?))
        } else {
            None
        };
        Ok(Self::build(url, token, timeout, config))
    }

    fn build(
        url: &str,
        token: Option<&str>,
        timeout: Duration,
        tls: Option<Result<Arc<rustls::ClientConfig>, String>>,
    ) -> Self {
        // Limits per phase rather than one for the whole call: ureq resolves
        // the host on a thread of its own for every request whenever the
        // resolve phase has a deadline (about 3 ms a request here, even for
        // an IP address); with phase limits it resolves on the calling
        // thread, and every phase that waits on the server is still bounded.
        let limit = Some(timeout);
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(limit)
            .timeout_send_request(limit)
            .timeout_send_body(limit)
            .timeout_recv_response(limit)
            .timeout_recv_body(limit)
            .max_idle_connections_per_host(64)
            .build();
        Self {
            agent: agent(config, tls.as_ref()),
            tls,
            base: url.trim_end_matches('/').to_owned(),
            // Without a token, the secret of a server of this account on
            // this machine, when there is one.
            auth: secret::Auth::new(url, token),
        }
    }

    /// `request` with the `Authorization` header, when there is one to send.
    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match self.auth.header() {
            Some(auth) => request.header("Authorization", auth),
            None => request,
        }
    }

    /// The answer to what `send` sends (building its request with
    /// [`Client::authorize`]) and its status; sent once more when the
    /// server refused a secret this client found and another was found.
    fn authorized(
        &self,
        mut send: impl FnMut() -> Result<ureq::http::Response<ureq::Body>, ClientError>,
    ) -> Result<(ureq::http::Response<ureq::Body>, u16), ClientError> {
        let response = send()?;
        if response.status().as_u16() == 401 && self.auth.refused() {
            let response = send()?;
            let status = response.status().as_u16();
            return Ok((response, status));
        }
        let status = response.status().as_u16();
        Ok((response, status))
    }

    /// An agent with `config` that speaks TLS as this client does.
    fn agent(&self, config: ureq::config::Config) -> ureq::Agent {
        agent(config, self.tls.as_ref())
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// One call: `method` is GET, POST or DELETE; `path` starts with `/`.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let connect = |error: ureq::Error| ClientError::Connect {
            url: self.base.clone(),
            detail: connect_detail(&error),
        };
        let empty = json!({});
        let (mut response, status) = self.authorized(|| {
            match (method, body) {
                ("POST", body) => self
                    .authorize(self.agent.post(&url))
                    .send_json(body.unwrap_or(&empty)),
                ("PATCH", body) => self
                    .authorize(self.agent.patch(&url))
                    .send_json(body.unwrap_or(&empty)),
                ("DELETE", _) => self.authorize(self.agent.delete(&url)).call(),
                _ => self.authorize(self.agent.get(&url)).call(),
            }
            .map_err(connect)
        })?;
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(connect)?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            ClientError::Decode(format!(
                "{e} in {:?}",
                text.chars().take(200).collect::<String>()
            ))
        })?;
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let error = &value["error"];
        Err(ClientError::Server {
            status,
            code: error["code"].as_str().unwrap_or("unknown").to_owned(),
            message: error["message"]
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned),
        })
    }

    /// Submits one task (submission object as in the API); returns its id.
    pub fn submit(&self, submission: &Value) -> Result<u64, ClientError> {
        let answer = self.call("POST", "/api/v1/tasks", Some(submission))?;
        answer["id"]
            .as_u64()
            .ok_or_else(|| ClientError::Decode(format!("no id in {answer}")))
    }

    /// Submits several tasks in one request; returns their ids.
    pub fn submit_batch(&self, submissions: &[Value]) -> Result<Vec<u64>, ClientError> {
        let answer = self.call(
            "POST",
            "/api/v1/tasks/batch",
            Some(&json!({ "tasks": submissions })),
        )?;
        answer["ids"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
            .ok_or_else(|| ClientError::Decode(format!("no ids in {answer}")))
    }

    /// One task's record.
    pub fn task(&self, id: u64) -> Result<Value, ClientError> {
        self.call("GET", &format!("/api/v1/tasks/{id}"), None)
    }

    /// Tasks, newest first; `query` is the URL query without `?`.
    pub fn list(&self, query: &str) -> Result<Value, ClientError> {
        self.call("GET", &format!("/api/v1/tasks?{query}"), None)
    }

    /// Cancels or stops a task.
    pub fn cancel(&self, id: u64) -> Result<Value, ClientError> {
        self.call("DELETE", &format!("/api/v1/tasks/{id}"), None)
    }

    /// Queues a failed or cancelled task again (with `cascade`, also the
    /// dependents its failure cancelled); `ids` in the answer lists them.
    pub fn retry(&self, id: u64, cascade: bool) -> Result<Value, ClientError> {
        let query = if cascade { "?cascade=true" } else { "" };
        self.call("POST", &format!("/api/v1/tasks/{id}/retry{query}"), None)
    }

    /// Every queue with its settings and counts: `{"queues": [...]}`.
    pub fn queues(&self) -> Result<Value, ClientError> {
        self.call("GET", "/api/v1/queues", None)
    }

    /// Changes queue `name` (`limit`, `paused`, `stop_running`; see the
    /// API) and returns it.
    pub fn set_queue(&self, name: &str, change: &Value) -> Result<Value, ClientError> {
        self.call("PATCH", &format!("/api/v1/queues/{name}"), Some(change))
    }

    /// Pauses the scheduler (and, with `stop_running`, stops the running
    /// tasks and puts them back); `{"paused": true, "stopped": N}`.
    pub fn pause(&self, stop_running: bool) -> Result<Value, ClientError> {
        let path = if stop_running {
            "/api/v1/pause?stop_running=true"
        } else {
            "/api/v1/pause"
        };
        self.call("POST", path, None)
    }

    /// Resumes the scheduler; `{"paused": false}`.
    pub fn resume(&self) -> Result<Value, ClientError> {
        self.call("POST", "/api/v1/resume", None)
    }

    /// Holds a queued or retrying task; its record.
    pub fn hold(&self, id: u64) -> Result<Value, ClientError> {
        self.call("POST", &format!("/api/v1/tasks/{id}/hold"), None)
    }

    /// Releases a held task; its record.
    pub fn release(&self, id: u64) -> Result<Value, ClientError> {
        self.call("POST", &format!("/api/v1/tasks/{id}/release"), None)
    }

    /// Long-polls until the task finishes or `timeout_s` passes (at most 300
    /// per call); `{"finished", "task"}`.
    pub fn wait(&self, id: u64, timeout_s: f64) -> Result<Value, ClientError> {
        self.call(
            "GET",
            &format!("/api/v1/tasks/{id}/wait?timeout_s={timeout_s}"),
            None,
        )
    }

    /// Resources, workers, queue and latency.
    pub fn monitoring(&self) -> Result<Value, ClientError> {
        self.call("GET", "/api/v1/monitoring", None)
    }

    /// Registered task types.
    pub fn task_types(&self) -> Result<Value, ClientError> {
        self.call("GET", "/api/v1/task-types", None)
    }
}
