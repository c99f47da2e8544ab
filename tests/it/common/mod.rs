//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod broker;
pub mod webdriver;

use std::time::{Duration, Instant};

use taskdeck::scheduler::{Backoff, Scheduler, SchedulerConfig, StoreMode};
use taskdeck::tasks::Registry;

/// Generous limit for conditions that normally hold within milliseconds.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `condition` until it holds or `timeout` passes; true when it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A port nothing listens on now, on 127.0.0.1 (for a process that must
/// listen on a port known before it starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The most intervals (start, end) that overlap at one moment.
pub fn most_at_once(intervals: &[(f64, f64)]) -> usize {
    let mut edges: Vec<(f64, i32)> = intervals
        .iter()
        .flat_map(|(start, end)| [(*start, 1), (*end, -1)])
        .collect();
    // An end and a start at the same instant do not overlap.
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

/// A config with fast retries for tests.
pub fn config(store: StoreMode, workers: usize) -> SchedulerConfig {
    let mut config = SchedulerConfig::new(store);
    config.workers = workers;
    config.backoff = Backoff {
        base: Duration::from_millis(1),
        max: Duration::from_millis(20),
    };
    config.shutdown_grace = Duration::from_secs(5);
    config
}

/// An in-memory scheduler with the built-ins plus `extra`'s registrations.
pub fn start_memory(workers: usize, extra: impl FnOnce(&mut Registry)) -> Scheduler {
    let mut registry = taskdeck::demo::registry();
    extra(&mut registry);
    Scheduler::start(config(StoreMode::Memory, workers), registry)
        .expect("in-memory scheduler should start")
}

/// An in-process scheduler with the HTTP API on a free loopback port.
pub struct Api {
    pub scheduler: Scheduler,
    pub server: Option<taskdeck::api::ApiServer>,
    pub telemetry: std::sync::Arc<taskdeck::telemetry::Telemetry>,
    pub url: String,
}

impl Api {
    pub fn start(workers: usize, token: Option<&str>) -> Self {
        Self::start_with(workers, token, |_| {})
    }

    pub fn start_with(
        workers: usize,
        token: Option<&str>,
        adjust: impl FnOnce(&mut taskdeck::api::ApiConfig),
    ) -> Self {
        let scheduler = Scheduler::start(
            config(StoreMode::Memory, workers),
            taskdeck::demo::registry(),
        )
        .expect("scheduler should start");
        let telemetry = std::sync::Arc::new(
            taskdeck::telemetry::Telemetry::start(Default::default())
                .expect("telemetry should start"),
        );
        let mut api_config = taskdeck::api::ApiConfig {
            listen: "127.0.0.1:0".into(),
            token: token.map(str::to_owned),
            ..Default::default()
        };
        adjust(&mut api_config);
        let source = {
            let telemetry = std::sync::Arc::clone(&telemetry);
            std::sync::Arc::new(move || telemetry.latest())
        };
        let server = taskdeck::api::ApiServer::start(api_config, scheduler.clone(), source)
            .expect("the API should start");
        let url = server.url();
        Self {
            scheduler,
            server: Some(server),
            telemetry,
            url,
        }
    }

    pub fn client(&self, token: Option<&str>) -> taskdeck::client::Client {
        taskdeck::client::Client::new(&self.url, token, Duration::from_secs(30))
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().expect("server").local_addr()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        let _ = self.scheduler.shutdown();
        self.telemetry.stop();
    }
}

/// Sends raw bytes and reads the whole answer (the request should ask the
/// The `Authorization` header line (with its CRLF) a client of this account
/// sends to the server at `addr`: the secret a `taskdeck serve` of this
/// account left for its port, if any (in-process servers have none).
pub fn auth_header(addr: std::net::SocketAddr) -> String {
    taskdeck::client::secret::discover(&format!("http://{addr}")).map_or(String::new(), |secret| {
        format!("Authorization: Bearer {secret}\r\n")
    })
}

/// server to close, or the server closes).
pub fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request).expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// A command running `sh -c script sh ARGS...` (add the arguments) as root
/// of a new user and mount namespace, where the script may mount a tmpfs
/// without privileges; the mount disappears with the namespace.
pub fn in_own_mount_namespace(script: &str) -> std::process::Command {
    let mut command = std::process::Command::new("unshare");
    command.args([
        "--user",
        "--map-root-user",
        "--mount",
        "--",
        "sh",
        "-c",
        script,
        "sh",
    ]);
    command
}

/// Whether a test that needs such a namespace must fail instead of
/// skipping where none can be made (`TASKDECK_REQUIRE_TMPFS=1`, as in CI).
pub fn tmpfs_required() -> bool {
    std::env::var("TASKDECK_REQUIRE_TMPFS").is_ok_and(|v| v == "1")
}
