//! Real RabbitMQ, real `taskdeck serve` and `taskdeck worker` processes for
//! the distributed-mode tests.
//!
//! The tests need RabbitMQ at 127.0.0.1:5672 (guest/guest), or the URL in
//! `TASKDECK_TEST_BROKER`. Without one they print how to enable them and
//! pass, unless `TASKDECK_REQUIRE_BROKER=1` (set by CI), where a missing
//! broker fails them.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use taskdeck::client::Client;

use super::wait_until;

/// The broker key every `serve` and `worker` the helpers start shares
/// (through `TASKDECK_BROKER_KEY`; a test's own environment comes after it,
/// so a test may give another, or an empty one to use a key file).
pub const TEST_KEY: &str = "taskdeck-integration-tests-shared-broker-key";

/// The header a signature travels in.
#[cfg(feature = "broker")]
pub const SIGNATURE: &str = "x-taskdeck-signature";

/// The HMAC-SHA256 of `body` under `key`, hex.
#[cfg(feature = "broker")]
pub fn signature(key: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes());
    ring::hmac::sign(&key, body)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Publishes `body` to `queue` with the broker account, with this
/// signature header (none: unsigned) and claimed sender; waits for the
/// broker's confirm.
#[cfg(feature = "broker")]
pub fn publish(url: &str, queue: &str, body: &[u8], signature: Option<String>, sender: &str) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .expect("connects with the broker account");
        let channel = connection.create_channel().await.expect("a channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let mut headers = FieldTable::default();
        if let Some(signature) = signature {
            headers.insert(SIGNATURE.into(), AMQPValue::LongString(signature.into()));
        }
        let properties = lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_app_id(sender.into())
            .with_headers(headers);
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("published")
            .await
            .expect("confirmed");
        assert!(!confirm.is_nack(), "the broker took the message");
        let _ = connection.close(200, "done".into()).await;
    });
}

/// Gives a command the tests' shared broker key, and no key file from the
/// environment that runs the tests.
pub fn with_test_key(command: &mut Command) -> &mut Command {
    command
        .env("TASKDECK_BROKER_KEY", TEST_KEY)
        .env_remove("TASKDECK_BROKER_KEY_FILE")
}

/// Tests that restart the broker or change its settings run alone.
static BROKER: RwLock<()> = RwLock::new(());

/// Holds the broker for a test: shared, or alone.
#[allow(dead_code)]
pub enum Hold {
    Shared(RwLockReadGuard<'static, ()>),
    Alone(RwLockWriteGuard<'static, ()>),
}

/// What every broker test starts with: a temporary directory, a queue
/// namespace of its own, the broker URL, and its hold on the broker. None
/// (after a printed notice) when no broker answers.
pub struct Case {
    pub dir: tempfile::TempDir,
    pub ns: String,
    pub url: String,
    pub _guard: Hold,
}

impl Case {
    fn start(prefix: &str, alone: bool) -> Option<Self> {
        let test = std::thread::current().name().unwrap_or(prefix).to_owned();
        // The hold first: a test that restarts the broker holds it alone,
        // and the broker answers again only when that test lets go.
        let hold = if alone {
            Hold::Alone(BROKER.write().unwrap_or_else(PoisonError::into_inner))
        } else {
            Hold::Shared(BROKER.read().unwrap_or_else(PoisonError::into_inner))
        };
        if !broker_available(&test) {
            return None;
        }
        Some(Self {
            dir: tempfile::tempdir().expect("temp dir"),
            ns: namespace(prefix),
            url: broker_url(),
            _guard: hold,
        })
    }

    /// A test that runs beside the other shared ones.
    pub fn shared(prefix: &str) -> Option<Self> {
        Self::start(prefix, false)
    }

    /// A test that restarts the broker or changes its settings.
    pub fn exclusive(prefix: &str) -> Option<Self> {
        Self::start(prefix, true)
    }
}

pub fn status(record: &Value) -> &str {
    record["status"].as_str().unwrap_or("?")
}

/// The broker the tests use.
pub fn broker_url() -> String {
    std::env::var("TASKDECK_TEST_BROKER")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Whether the broker answers; prints a notice (or fails, when required)
/// when it does not.
pub fn broker_available(test: &str) -> bool {
    let url = broker_url();
    let host_port = url
        .split_once('@')
        .map_or(url.as_str(), |(_, rest)| rest)
        .trim_start_matches("amqp://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:5672")
        .to_owned();
    let reachable = host_port.to_socket_addrs().ok().is_some_and(|mut addrs| {
        addrs.any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
    });
    if reachable {
        return true;
    }
    assert!(
        std::env::var("TASKDECK_REQUIRE_BROKER").as_deref() != Ok("1"),
        "RabbitMQ does not answer at {host_port}, and TASKDECK_REQUIRE_BROKER=1 requires it"
    );
    eprintln!(
        "skipping {test}: RabbitMQ does not answer at {host_port}. Start it \
         (rabbitmq-server -detached, guest/guest) or point TASKDECK_TEST_BROKER \
         at one to run the distributed-mode tests."
    );
    false
}

/// A queue-name prefix no other test uses.
pub fn namespace(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "tdtest-{test}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `rabbitmqctl` with these arguments; panics when it fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl should run (it ships with RabbitMQ)");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stops RabbitMQ's application for `down` and starts it again (also when
/// the wait panics): what it kept in memory only is gone.
pub fn restart_broker(down: Duration) {
    struct StartAgain;
    impl Drop for StartAgain {
        fn drop(&mut self) {
            rabbitmqctl(&["start_app"]);
            rabbitmqctl(&["await_startup"]);
        }
    }
    rabbitmqctl(&["stop_app"]);
    let _start_again = StartAgain;
    std::thread::sleep(down);
}

/// Messages in `queue` that the broker keeps on disk (persistent).
pub fn persistent_messages(queue: &str) -> u64 {
    rabbitmqctl(&[
        "list_queues",
        "--quiet",
        "--no-table-headers",
        "name",
        "messages_persistent",
    ])
    .lines()
    .filter_map(|line| {
        let (name, count) = line.split_once('\t')?;
        (name == queue).then(|| count.trim().parse().ok())?
    })
    .next()
    .unwrap_or(0)
}

/// Deletes a test's queues (best effort; they hold nothing of value).
pub fn delete_queues(namespace: &str, workers: &[&str]) {
    let mut queues = vec![format!("{namespace}.tasks"), format!("{namespace}.events")];
    queues.extend(workers.iter().map(|w| format!("{namespace}.worker.{w}")));
    queues.extend(workers.iter().map(|w| format!("{namespace}.presence.{w}")));
    for queue in queues {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_queue", &queue])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process killed when dropped, with its stderr collected.
pub struct Proc {
    pub child: Child,
    stderr: Arc<Mutex<String>>,
    /// What it wrote to stdout after its first line.
    stdout: Arc<Mutex<String>>,
    pub first_line: String,
}

impl Proc {
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("taskdeck should start");
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut text) = sink.lock() {
                        text.push_str(&String::from_utf8_lossy(&buffer[..n]));
                    }
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut first_line = String::new();
        reader.read_line(&mut first_line).expect("first line");
        // Keep draining stdout so the child never blocks on a full pipe.
        let stdout = Arc::new(Mutex::new(String::new()));
        {
            let sink = Arc::clone(&stdout);
            thread::spawn(move || {
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if let Ok(mut text) = sink.lock() {
                        text.push_str(&line);
                    }
                    line.clear();
                }
            });
        }
        Self {
            child,
            stderr,
            stdout,
            first_line,
        }
    }

    /// The URL a `serve` process said it listens on (its first line).
    pub fn listening_url(&self) -> String {
        self.first_line
            .trim()
            .strip_prefix("taskdeck listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {:?}", self.first_line))
            .to_owned()
    }

    /// The lines it wrote to stdout after the first, so far.
    pub fn stdout_rest(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit; true when it exited with 0.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let mut code = None;
        wait_until(timeout, || {
            code = self.child.try_wait().ok().flatten();
            code.is_some()
        });
        code.is_some_and(|status| status.success())
    }

    /// Still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `taskdeck serve` (no broker) on a free loopback port with its data in
/// `dir` and `extra` flags, without any token from the environment: the
/// process, a client of it (with its local secret) and its address.
pub fn serve_local(dir: &Path, extra: &[&str]) -> (Proc, Client, std::net::SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskdeck"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env_remove("TASKDECK_TOKEN");
    let proc = Proc::spawn(command);
    let url = proc.listening_url();
    let addr = url
        .trim_start_matches("http://")
        .parse()
        .expect("an address");
    let client = Client::new(&url, None, Duration::from_secs(30));
    (proc, client, addr)
}

/// `taskdeck serve --broker` with its HTTP client.
pub struct Serve {
    pub proc: Proc,
    pub client: Client,
}

/// Starts `taskdeck serve` in distributed mode and waits until it is
/// connected; `db` none keeps tasks in memory. Extra flags go last.
pub fn serve(
    broker: &str,
    namespace: &str,
    db: Option<&Path>,
    data_dir: &Path,
    extra: &[&str],
) -> Serve {
    let server = spawn_serve(broker, namespace, db, data_dir, extra);
    wait_connected(&server);
    server
}

/// [`serve`] with its SQLite store (`t.db`) and data in the test's
/// directory `dir`.
pub fn serve_in(broker: &str, namespace: &str, dir: &Path, extra: &[&str]) -> Serve {
    serve(broker, namespace, Some(&dir.join("t.db")), dir, extra)
}

/// Starts `taskdeck serve` in distributed mode without waiting for the
/// broker.
pub fn spawn_serve(
    broker: &str,
    namespace: &str,
    db: Option<&Path>,
    data_dir: &Path,
    extra: &[&str],
) -> Serve {
    spawn_serve_env(broker, namespace, db, data_dir, extra, &[])
}

/// [`spawn_serve`] with extra environment variables.
pub fn spawn_serve_env(
    broker: &str,
    namespace: &str,
    db: Option<&Path>,
    data_dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Serve {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskdeck"));
    with_test_key(&mut command).envs(env.iter().copied());
    command
        .arg("serve")
        .args(["--broker", broker, "--broker-namespace", namespace])
        .args(["--listen", "127.0.0.1:0", "--retry-delay-ms", "10"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "info");
    match db {
        Some(db) => command.arg("--db").arg(db),
        None => command.arg("--memory"),
    };
    command.args(extra);
    let proc = Proc::spawn(command);
    let client = Client::new(&proc.listening_url(), None, Duration::from_secs(30));
    Serve { proc, client }
}

/// Waits until the server says it is connected to the broker.
pub fn wait_connected(server: &Serve) {
    let connected = wait_until(Duration::from_secs(60), || {
        server
            .client
            .call("GET", "/healthz", None)
            .is_ok_and(|health| health["broker"]["connected"] == true)
    });
    assert!(
        connected,
        "the server should connect to the broker: {}",
        server.proc.stderr()
    );
}

/// Starts `taskdeck worker`.
pub fn worker(broker: &str, namespace: &str, name: &str, concurrency: usize) -> Proc {
    worker_env(broker, namespace, name, concurrency, &[])
}

/// [`worker`] with extra environment variables.
pub fn worker_env(
    broker: &str,
    namespace: &str,
    name: &str,
    concurrency: usize,
    env: &[(&str, &str)],
) -> Proc {
    worker_with(broker, namespace, name, concurrency, &[], env)
}

/// [`worker`] with extra flags and environment variables.
pub fn worker_with(
    broker: &str,
    namespace: &str,
    name: &str,
    concurrency: usize,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskdeck"));
    with_test_key(&mut command).envs(env.iter().copied());
    command
        .arg("worker")
        .args(["--broker", broker, "--broker-namespace", namespace])
        .args(["--name", name, "--concurrency", &concurrency.to_string()])
        .args(["--grace", "2"])
        .args(extra)
        .env("RUST_LOG", "info");
    if !extra.contains(&"--heartbeat") {
        command.args(["--heartbeat", "0.2"]);
    }
    let proc = Proc::spawn(command);
    assert!(
        proc.first_line
            .starts_with(&format!("taskdeck worker {name}")),
        "unexpected first line {:?}; stderr: {}",
        proc.first_line,
        proc.stderr()
    );
    proc
}

/// The `/metrics` text.
pub fn scrape(server: &Serve) -> String {
    ureq::get(format!("{}/metrics", server.client.url()))
        .call()
        .ok()
        .and_then(|answer| answer.into_body().read_to_string().ok())
        .unwrap_or_default()
}

/// `taskdeck_broker_messages_refused_total{by="BY"}`, when exposed.
pub fn refused(server: &Serve, by: &str) -> Option<u64> {
    let prefix = format!("taskdeck_broker_messages_refused_total{{by=\"{by}\"}} ");
    scrape(server)
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

/// A worker's entry in `GET /api/v1/workers`.
pub fn listed(server: &Serve, name: &str) -> Option<Value> {
    workers(&server.client)
        .into_iter()
        .find(|entry| entry["name"] == name)
}

/// Submits `task` with these arguments and options; returns its id.
pub fn submit(client: &Client, task: &str, args: Value, options: Value) -> u64 {
    let mut body = json!({ "task": task, "args": args });
    if let (Some(body), Some(options)) = (body.as_object_mut(), options.as_object()) {
        body.extend(options.clone());
    }
    client.submit(&body).expect("submit should be accepted")
}

/// The task's record, or null while the server does not answer.
pub fn task(client: &Client, id: u64) -> Value {
    client.task(id).unwrap_or(Value::Null)
}

/// Waits until every task is in a final status; panics with the stragglers
/// otherwise.
pub fn wait_final(client: &Client, ids: &[u64], timeout: Duration) -> Vec<Value> {
    let mut records = Vec::new();
    let done = wait_until(timeout, || {
        records = ids.iter().map(|id| task(client, *id)).collect();
        records.iter().all(|r| {
            matches!(
                r["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
        })
    });
    assert!(
        done,
        "tasks not final in time: {:?}",
        records
            .iter()
            .filter(|r| !matches!(
                r["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ))
            .map(|r| (r["id"].clone(), r["status"].clone(), r["worker"].clone()))
            .collect::<Vec<_>>()
    );
    records
}

/// The workers route's entries.
pub fn workers(client: &Client) -> Vec<Value> {
    client
        .call("GET", "/api/v1/workers", None)
        .ok()
        .and_then(|answer| answer["workers"].as_array().cloned())
        .unwrap_or_default()
}

/// Whether a command-line tool is installed; prints a notice (or fails, when
/// the broker tests are required) when it is not.
pub fn tool_available(tool: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if found {
        return true;
    }
    assert!(
        std::env::var("TASKDECK_REQUIRE_BROKER").as_deref() != Ok("1"),
        "{tool} is missing, and TASKDECK_REQUIRE_BROKER=1 requires {test} to run"
    );
    eprintln!("skipping {test}: {tool} is not installed");
    false
}
