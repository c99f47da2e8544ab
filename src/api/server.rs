//! The listener's threads: accept, authorise, read bodies within limits,
//! dispatch to handlers and write answers.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tiny_http::{Header, Request, Response, Server};

use super::auth::Gate;
use super::error::ApiError;
use super::events::EventHub;
use super::handlers::{self, Caller, Context, Handled, HistorySource, Reply, ResourceSource};
use super::logs;
use super::longpoll::{self, Poll};
use super::routes::{self, Method, Route};
use super::streams::Streams;
use super::tls::TlsFront;
use super::{ApiConfig, ApiStartError};
use crate::scheduler::Scheduler;

/// Bodies up to this size arrive with the headers (tiny_http reads them
/// eagerly); larger ones are read on an upload thread.
const INLINE_BODY_BYTES: usize = 1024;

/// How long a stopping listener waits for its streams to end.
const STREAMS_STOP_WAIT: Duration = Duration::from_secs(1);

/// A write to a client that takes nothing for this long fails, so a client
/// that stopped reading can hold a thread only this long.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Most long polls on their way to the long-poll thread at once.
const MAX_QUEUED_POLLS: usize = 10_000;

/// A running HTTP listener. Stop it with [`ApiServer::shutdown`].
pub struct ApiServer {
    server: Arc<Server>,
    addr: SocketAddr,
    /// The TLS front when the listener speaks HTTPS; the request threads
    /// then serve its Unix socket.
    front: Option<TlsFront>,
    stopping: Arc<AtomicBool>,
    handlers: Vec<JoinHandle<()>>,
    uploads: Vec<JoinHandle<()>>,
    longpoll: Option<JoinHandle<()>>,
    upload_tx: Sender<Upload>,
    poll_tx: Sender<longpoll::Message>,
    nudger: Option<(Sender<()>, JoinHandle<()>)>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// What every request thread shares.
struct Shared {
    ctx: Context,
    /// The event stream.
    events: EventHub,
    /// Log follows.
    log_follows: Streams,
    /// Set when the listener stops; streams end at it.
    stopping: Arc<AtomicBool>,
    /// Who may use which route.
    gate: Gate,
    max_body_bytes: usize,
    uploads: Sender<Upload>,
    polls: Sender<longpoll::Message>,
}

/// Work for an upload thread.
enum Upload {
    /// Read this request's body and answer it.
    Request(Box<(Request, Route, Caller)>),
    /// Finish.
    Stop,
}

impl ApiServer {
    /// Binds the address and starts the threads.
    pub fn start(
        config: ApiConfig,
        scheduler: Scheduler,
        resources: ResourceSource,
    ) -> Result<Self, ApiStartError> {
        Self::start_with_history(config, scheduler, resources, None)
    }

    /// Like [`ApiServer::start`], serving the resource history from
    /// `history` at `/api/v1/monitoring/history`.
    pub fn start_with_history(
        config: ApiConfig,
        scheduler: Scheduler,
        resources: ResourceSource,
        history: Option<HistorySource>,
    ) -> Result<Self, ApiStartError> {
        let addr = super::resolve(&config)?;
        let bind_error = |detail: String| ApiStartError::Bind { addr, detail };
        let listener = listen(addr).map_err(|e| bind_error(e.to_string()))?;
        // The real port when 0 was asked for.
        let addr = listener
            .local_addr()
            .map_err(|e| bind_error(e.to_string()))?;
        let (server, front) = match &config.tls {
            None => (Server::from_listener(listener, None), None),
            Some(tls) => {
                let (front, plain) = TlsFront::start(listener, tls)
                    .map_err(|e| bind_error(format!("cannot start TLS: {e}")))?;
                (Server::from_listener(plain, None), Some(front))
            }
        };
        let server = Arc::new(server.map_err(|e| bind_error(e.to_string()))?);
        let (poll_tx, poll_rx) =
            crossbeam_channel::bounded(config.max_long_polls.clamp(1, MAX_QUEUED_POLLS));
        let (upload_tx, upload_rx) = crossbeam_channel::bounded(config.upload_threads.max(1) * 4);
        let events = EventHub::start(config.events, scheduler.clone(), Arc::clone(&resources))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            events,
            log_follows: Streams::new("log-follow", config.events.max_followers),
            stopping: Arc::clone(&stopping),
            ctx: Context {
                scheduler: scheduler.clone(),
                resources,
                history,
                max_batch: config.max_batch,
                allow_code_tasks: config.allow_code_tasks,
                log_dir: config.log_dir.clone(),
                example_task: config.example_task.clone(),
            },
            gate: Gate::new(
                config.token.clone(),
                config.local_secret.clone(),
                config.legacy_routes,
            ),
            max_body_bytes: config.max_body_bytes,
            uploads: upload_tx.clone(),
            polls: poll_tx.clone(),
        });
        let longpoll = {
            let scheduler = scheduler.clone();
            let max = config.max_long_polls;
            thread::Builder::new()
                .name("taskdeck-longpoll".into())
                .spawn(move || longpoll::run(&scheduler, &poll_rx, max))?
        };
        let uploads = (0..config.upload_threads.max(1))
            .map(|n| {
                let shared = Arc::clone(&shared);
                let rx: Receiver<Upload> = upload_rx.clone();
                thread::Builder::new()
                    .name(format!("taskdeck-upload-{n}"))
                    .spawn(move || {
                        while let Ok(Upload::Request(work)) = rx.recv() {
                            let (request, route, caller) = *work;
                            shared.with_body(request, route, caller);
                        }
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let spinning = Arc::new(AtomicBool::new(false));
        let handlers = (0..config.threads.max(1))
            .map(|n| {
                let shared = Arc::clone(&shared);
                let server = Arc::clone(&server);
                let stopping = Arc::clone(&stopping);
                let spinning = Arc::clone(&spinning);
                thread::Builder::new()
                    .name(format!("taskdeck-http-{n}"))
                    .spawn(move || accept_loop(&server, &shared, &stopping, &spinning))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (nudge_stop, nudge_rx) = crossbeam_channel::bounded::<()>(1);
        let target = match &front {
            Some(front) => Target::Unix(front.socket().to_owned()),
            None => Target::Tcp(addr),
        };
        let nudger = thread::Builder::new()
            .name("taskdeck-http-nudge".into())
            .spawn(move || nudge_loop(&target, &nudge_rx))?;
        tracing::info!(
            %addr,
            auth = shared.gate.has_secrets(),
            tls = front.is_some(),
            "HTTP API listening"
        );
        Ok(Self {
            server,
            addr,
            front,
            stopping,
            handlers,
            uploads,
            longpoll: Some(longpoll),
            upload_tx,
            poll_tx,
            nudger: Some((nudge_stop, nudger)),
            shared,
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients should use.
    pub fn url(&self) -> String {
        let scheme = if self.front.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting, answers waiting long polls, and joins every thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(front) = self.front.as_mut() {
            front.stop();
        }
        if let Some((stop, handle)) = self.nudger.take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
        for _ in &self.handlers {
            self.server.unblock();
        }
        for handle in self.handlers.drain(..) {
            if handle.join().is_err() {
                tracing::error!("an HTTP thread panicked");
            }
        }
        // Uploads already queued are answered before each thread reads its
        // stop; then the long-poll thread answers whatever still waits.
        for _ in &self.uploads {
            let _ = self.upload_tx.send(Upload::Stop);
        }
        for handle in self.uploads.drain(..) {
            if handle.join().is_err() {
                tracing::error!("an HTTP upload thread panicked");
            }
        }
        let _ = self.poll_tx.send(longpoll::Message::Stop);
        if let Some(handle) = self.longpoll.take()
            && handle.join().is_err()
        {
            tracing::error!("the HTTP long-poll thread panicked");
        }
        self.shared.events.stop();
        self.shared.log_follows.join(STREAMS_STOP_WAIT);
        tracing::info!(addr = %self.addr, "HTTP API stopped");
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds the listening socket with `TCP_NODELAY` and a send timeout, which
/// accepted connections inherit: tiny_http writes a large answer in several pieces,
/// and with Nagle's algorithm the last piece would wait for the client's
/// delayed acknowledgement (40 ms on Linux).
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    // Accepted sockets inherit the send timeout: an answer or a stream to
    // a client that stopped reading fails instead of blocking for ever.
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// How often the nudger connects; it bounds how long a connection can sit
/// unserved in tiny_http's queue.
const NUDGE_EVERY: Duration = Duration::from_millis(250);

/// tiny_http hands each connection to a pool thread, and when connections
/// arrive in a burst its pool can queue one behind threads that stay busy
/// with long-lived keep-alive connections, where it waits until one of those
/// closes. A queued connection is taken as soon as any pool thread finishes
/// its connection, so this thread opens and closes a connection to the
/// listener every [`NUDGE_EVERY`]: the thread that serves it then takes the
/// queue's oldest entry. The cost is a loopback connect four times a second.
fn nudge_loop(target: &Target, stop: &Receiver<()>) {
    let target = match target {
        Target::Tcp(addr) if addr.ip().is_unspecified() => {
            let loopback: std::net::IpAddr = if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            Target::Tcp(SocketAddr::new(loopback, addr.port()))
        }
        other => other.clone(),
    };
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(NUDGE_EVERY) {
        // Opened and dropped at once: tiny_http sees an empty connection.
        let opened = match &target {
            Target::Tcp(addr) => {
                std::net::TcpStream::connect_timeout(addr, Duration::from_secs(1)).map(drop)
            }
            Target::Unix(path) => std::os::unix::net::UnixStream::connect(path).map(drop),
        };
        if let Err(error) = opened {
            tracing::debug!(%error, "nudging the HTTP listener failed");
        }
    }
}

/// Where the request threads take their connections from.
#[derive(Clone)]
enum Target {
    Tcp(SocketAddr),
    /// The TLS front's socket.
    Unix(std::path::PathBuf),
}

/// How long a request thread that just answered watches for the next
/// request before it parks.
const SPIN_FOR: Duration = Duration::from_micros(100);

/// The next request: one idle request thread at a time spins for up to
/// [`SPIN_FOR`] (yielding its core to any runnable thread) before parking,
/// so a client that sends its next request right after an answer does not
/// pay for waking a parked thread; the others park at once.
///
/// tiny_http's `try_recv` swallows the wake-up that `unblock` sends at
/// shutdown, so the spinner checks `stopping` (set before those wake-ups)
/// after each empty look, and before it parks.
fn next_request(
    server: &Server,
    spinning: &AtomicBool,
    stopping: &AtomicBool,
) -> std::io::Result<Request> {
    let stopped = || std::io::Error::other("the listener is stopping");
    if !spinning.swap(true, Ordering::AcqRel) {
        let deadline = Instant::now() + SPIN_FOR;
        let found = loop {
            match server.try_recv() {
                Ok(Some(request)) => break Some(Ok(request)),
                Ok(None) if stopping.load(Ordering::Acquire) => break Some(Err(stopped())),
                Ok(None) if Instant::now() < deadline => thread::yield_now(),
                Ok(None) => break None,
                Err(error) => break Some(Err(error)),
            }
        };
        spinning.store(false, Ordering::Release);
        if let Some(found) = found {
            return found;
        }
    }
    if stopping.load(Ordering::Acquire) {
        return Err(stopped());
    }
    server.recv()
}

fn accept_loop(
    server: &Server,
    shared: &Arc<Shared>,
    stopping: &AtomicBool,
    spinning: &AtomicBool,
) {
    loop {
        match next_request(server, spinning, stopping) {
            Ok(request) => shared.dispatch(request),
            Err(error) => {
                if stopping.load(Ordering::Acquire) {
                    return;
                }
                tracing::warn!(%error, "accepting an HTTP request failed");
            }
        }
        if stopping.load(Ordering::Acquire) {
            return;
        }
    }
}

fn method(request: &Request) -> Method {
    match request.method() {
        tiny_http::Method::Get | tiny_http::Method::Head => Method::Get,
        tiny_http::Method::Post => Method::Post,
        tiny_http::Method::Put => Method::Put,
        tiny_http::Method::Delete => Method::Delete,
        tiny_http::Method::Patch => Method::Patch,
        _ => Method::Other,
    }
}

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

impl Shared {
    /// First stop of every request: route, authorise, and either answer or
    /// pass it on for its body.
    fn dispatch(&self, request: Request) {
        let route = match routes::parse(method(&request), request.url()) {
            Ok(route) => route,
            // What is not a route is told only to those who may use them.
            Err(error) => {
                let error = match self.gate.admit(&request, &Route::Workers) {
                    Ok(_) => error,
                    Err(refused) => refused,
                };
                return respond(request, Err(error));
            }
        };
        let caller = match self.gate.admit(&request, &route) {
            Ok(caller) => caller,
            Err(refused) => return respond(request, Err(refused)),
        };
        // Streams live on threads of their own, never on a request thread.
        let route = match route {
            Route::Events {
                filter,
                last_event_id,
            } => return self.events.follow(request, filter, last_event_id),
            Route::Log(params) if params.follow => {
                let scheduler = self.ctx.scheduler.clone();
                let log_dir = self.ctx.log_dir.clone();
                let stopping = Arc::clone(&self.stopping);
                return self.log_follows.spawn(request, move |request| {
                    logs::follow(&scheduler, log_dir.as_deref(), &params, request, &stopping);
                });
            }
            route => route,
        };
        // Bodies still on the wire (large, chunked, or after a 100-continue)
        // are read on an upload thread, so a slow sender holds up no one else.
        let streamed = request
            .headers()
            .iter()
            .any(|h| h.field.equiv("Transfer-Encoding") || h.field.equiv("Expect"));
        match request.body_length() {
            Some(n) if n > self.max_body_bytes => {
                respond(
                    request,
                    Err(ApiError::payload_too_large(self.max_body_bytes)),
                );
            }
            Some(n) if n <= INLINE_BODY_BYTES && !streamed => {
                self.with_body(request, route, caller);
            }
            None if !streamed => self.with_body(request, route, caller),
            _ => match self
                .uploads
                .try_send(Upload::Request(Box::new((request, route, caller))))
            {
                Ok(()) => {}
                Err(
                    TrySendError::Full(Upload::Request(work))
                    | TrySendError::Disconnected(Upload::Request(work)),
                ) => {
                    respond(
                        work.0,
                        Err(ApiError::unavailable(
                            "too many large uploads at once; try again",
                        )),
                    );
                }
                Err(_) => {}
            },
        }
    }

    /// Reads the body within the limit, runs the route and answers (or hands
    /// a long poll over); `caller` is who [`Gate::admit`] let in.
    fn with_body(&self, mut request: Request, route: Route, caller: Caller) {
        let mut body = Vec::new();
        let limit = self.max_body_bytes;
        let read = request
            .as_reader()
            .take(limit as u64 + 1)
            .read_to_end(&mut body);
        if let Err(error) = read {
            return respond(
                request,
                Err(ApiError::bad_request(format!(
                    "cannot read the body: {error}"
                ))),
            );
        }
        if body.len() > limit {
            return respond(request, Err(ApiError::payload_too_large(limit)));
        }
        match handlers::handle(&self.ctx, caller, route, &body) {
            Ok(Handled::Reply(reply)) => respond(request, Ok(reply)),
            Ok(Handled::LongPoll(awaited, wait)) => {
                let poll = Poll {
                    request,
                    awaited,
                    deadline: Instant::now() + wait,
                };
                if let Err(
                    TrySendError::Full(longpoll::Message::Poll(poll))
                    | TrySendError::Disconnected(longpoll::Message::Poll(poll)),
                ) = self.polls.try_send(longpoll::Message::Poll(Box::new(poll)))
                {
                    respond(
                        poll.request,
                        Err(ApiError::unavailable(
                            "too many waiting requests; try again",
                        )),
                    );
                }
            }
            Err(error) => respond(request, Err(error)),
        }
    }
}

/// Writes an answer; a client that went away is not an error worth more
/// than a debug line.
pub(super) fn respond(request: Request, answer: Result<Reply, ApiError>) {
    let (status, body, content_type, allow) = match answer {
        Ok(Reply::Json(status, value)) => (status, value.to_string(), "application/json", None),
        Ok(Reply::Metrics(text)) => (200, text, "text/plain; version=0.0.4; charset=utf-8", None),
        Ok(Reply::Bytes { headers, body }) => {
            let mut response = Response::from_data(body).with_status_code(200);
            for h in [("Content-Type", "application/octet-stream".to_owned())]
                .into_iter()
                .chain(headers)
                .filter_map(|(name, value)| header(name, &value))
            {
                response.add_header(h);
            }
            if let Err(error) = request.respond(response) {
                tracing::debug!(%error, "client left before its answer was written");
            }
            return;
        }
        Err(error) => (
            error.status,
            error.body().to_string(),
            "application/json",
            error.allow,
        ),
    };
    let mut response = Response::from_data(body.into_bytes()).with_status_code(status);
    if let Some(h) = header("Content-Type", content_type) {
        response.add_header(h);
    }
    if let Some(h) = allow.and_then(|allow| header("Allow", allow)) {
        response.add_header(h);
    }
    if status == 401
        && let Some(h) = header("WWW-Authenticate", "Bearer")
    {
        response.add_header(h);
    }
    if let Err(error) = request.respond(response) {
        tracing::debug!(%error, "client left before its answer was written");
    }
}
