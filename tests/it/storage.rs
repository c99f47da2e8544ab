//! A full disk under the real `taskdeck serve`: submits are refused with a
//! clear status, state changes that could not be written are kept and
//! written once there is room again, the server recovers by itself, and
//! after a `kill -9` nothing that completed comes back to run again.
//!
//! The server runs on a small tmpfs mounted in a mount namespace of its own
//! (`unshare --user --map-root-user --mount`), so the test needs no root;
//! the test reaches that file system through `/proc/PID/root`. Where user
//! namespaces are not allowed the test says so and skips, unless
//! `TASKDECK_REQUIRE_TMPFS=1` (as in CI) makes that a failure.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::wait_until;

/// Size of the file system the server gets.
const FS_SIZE: &str = "8m";
const LONG_WAIT: Duration = Duration::from_secs(60);

/// Mounts a tmpfs on `$1` and runs `$2 serve` on it in the background,
/// writing its pid to `$3`; once the server is gone the shell stays (and
/// with it the mount) until it is killed, so the test can read the files.
const SANDBOX: &str = r#"
mount -t tmpfs -o size="$4" tmpfs "$1" || exit 97
"$2" serve --data-dir "$1" --listen 127.0.0.1:0 --workers "$5" --retry-delay-ms 10 &
echo "$!" > "$3"
wait
exec sleep 600
"#;

/// A server in its own mount namespace on a small tmpfs.
struct Sandbox {
    /// The shell that holds the namespace (its pid is the unshare child's).
    shell: Child,
    /// The server's pid.
    server_pid: u32,
    /// The mount point, as seen inside the namespace.
    mount: PathBuf,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Sandbox {
    /// Starts the sandbox with `workers` workers, or explains why it cannot
    /// and returns none.
    fn start(workers: usize) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mount = dir.path().join("fs");
        std::fs::create_dir(&mount).expect("mount point");
        let pid_file = dir.path().join("server.pid");
        let mut shell = common::in_own_mount_namespace(SANDBOX)
            .arg(&mount)
            .arg(env!("CARGO_BIN_EXE_taskdeck"))
            .arg(&pid_file)
            .arg(FS_SIZE)
            .arg(workers.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdout = shell.stdout.take().expect("piped stdout");
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("taskdeck listening on http://") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let Ok(addr) = rx.recv_timeout(LONG_WAIT) else {
            let _ = shell.kill();
            let status = shell.wait().ok();
            eprintln!(
                "cannot start taskdeck on a tmpfs in a user namespace (unshare exited {status:?})"
            );
            return None;
        };
        let server_pid = std::fs::read_to_string(&pid_file)
            .expect("the shell should have written the server's pid")
            .trim()
            .parse()
            .expect("a pid");
        let sandbox = Self {
            shell,
            server_pid,
            mount,
            addr: addr.parse().expect("the listening address"),
            _dir: dir,
        };
        // The server's local secret, in its data directory on the tmpfs.
        let secret = std::fs::read_to_string(sandbox.path("secret"))
            .expect("the server keeps its secret in its data directory");
        SECRETS
            .lock()
            .expect("the secrets' lock")
            .insert(sandbox.addr, secret.trim().to_owned());
        Some(sandbox)
    }

    /// A path on the server's file system, as this process reaches it.
    fn path(&self, name: &str) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.shell.id()))
            .join(
                self.mount
                    .strip_prefix("/")
                    .expect("an absolute mount point"),
            )
            .join(name)
    }

    fn server_alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.server_pid)).exists()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.server_pid.to_string()])
            .status();
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

/// The local secret of each sandboxed server, by its address.
static SECRETS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<SocketAddr, String>>,
> = std::sync::LazyLock::new(Default::default);

/// One request on its own connection, with the server's secret: the status
/// and the JSON body.
fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let secret = SECRETS
        .lock()
        .expect("the secrets' lock")
        .get(&addr)
        .cloned()
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nAuthorization: Bearer {secret}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = common::raw_http(addr, request.as_bytes());
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let json = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

fn submit(addr: SocketAddr, task: &str, args: Value) -> (u16, Value) {
    call(
        addr,
        "POST",
        "/api/v1/tasks",
        Some(&json!({ "task": task, "args": args })),
    )
}

/// Writes to `path` until the file system is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("the filler file should be creatable");
    let chunk = vec![0x5au8; 16 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(error) => panic!("filling the file system failed: {error}"),
        }
    }
    let _ = file.sync_all();
}

/// A sandbox, or none after saying why the test is skipped.
fn sandbox(workers: usize) -> Option<Sandbox> {
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: needs Linux mount namespaces");
        return None;
    }
    let sandbox = Sandbox::start(workers);
    if sandbox.is_none() {
        assert!(
            !common::tmpfs_required(),
            "TASKDECK_REQUIRE_TMPFS=1 but no tmpfs sandbox could start"
        );
        eprintln!(
            "skipped: user namespaces are not available here; set TASKDECK_REQUIRE_TMPFS=1 to make this a failure"
        );
    }
    sandbox
}

/// Submits no-op tasks until one is refused; returns the refusal.
fn submit_until_refused(addr: SocketAddr, accepted: &mut Vec<u64>) -> (u16, Value) {
    let deadline = Instant::now() + LONG_WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "no submit was refused on a full disk"
        );
        let (status, answer) = submit(addr, "noop", json!([]));
        match status {
            201 => accepted.push(answer["id"].as_u64().expect("an id")),
            _ => return (status, answer),
        }
    }
}

#[test]
fn a_full_disk_refuses_submits_keeps_state_changes_and_recovers_by_itself() {
    let Some(sandbox) = sandbox(2) else {
        return;
    };
    let addr = sandbox.addr;
    let mut accepted: Vec<u64> = Vec::new();

    // Slow tasks accepted while there is room; they finish while the disk is full.
    for _ in 0..12 {
        let (status, answer) = submit(addr, "sleep", json!([250]));
        assert_eq!(status, 201, "{answer}");
        accepted.push(answer["id"].as_u64().expect("an id"));
    }
    fill(&sandbox.path("filler"));

    // Writes that still fit in space SQLite already holds may succeed; keep
    // submitting until the disk refuses.
    let refusal = submit_until_refused(addr, &mut accepted);
    assert_eq!(refusal.0, 507, "a full disk is 507: {}", refusal.1);
    assert_eq!(refusal.1["error"]["code"], "storage_full");
    assert!(
        refusal.1["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("full"),
        "{}",
        refusal.1
    );

    // Tasks keep finishing; the changes that cannot be written wait.
    let mut health = Value::Null;
    assert!(
        wait_until(LONG_WAIT, || {
            let (status, answer) = call(addr, "GET", "/healthz", None);
            health = answer;
            status == 503 && health["storage"]["pending_updates"].as_u64().unwrap_or(0) > 0
        }),
        "/healthz should report the full disk and the waiting changes: {health}"
    );
    assert_eq!(health["status"], "storage_full");
    assert_eq!(health["storage"]["full"], true);
    assert_eq!(health["storage"]["writable"], false);
    let (status, answer) = submit(addr, "noop", json!([]));
    assert_eq!(
        status, 507,
        "submits stay refused while changes wait: {answer}"
    );
    assert!(sandbox.server_alive(), "the server should keep running");

    // Room again: it writes what waited and takes tasks again by itself.
    std::fs::remove_file(sandbox.path("filler")).expect("the filler should be removable");
    assert!(
        wait_until(LONG_WAIT, || {
            let (status, answer) = call(addr, "GET", "/healthz", None);
            health = answer;
            status == 200
        }),
        "/healthz should be ok again once there is room: {health}"
    );
    assert_eq!(health["status"], "ok");
    assert_eq!(health["storage"]["pending_updates"], 0);
    let (status, answer) = submit(addr, "noop", json!([]));
    assert_eq!(status, 201, "submits work again: {answer}");
    accepted.push(answer["id"].as_u64().expect("an id"));

    let (status, answer) = call(
        addr,
        "POST",
        "/api/v1/tasks/wait?timeout_s=60",
        Some(&json!({ "ids": accepted })),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["finished"], true, "{answer}");
    for task in answer["tasks"].as_array().expect("tasks") {
        assert_eq!(task["status"], "completed", "{task}");
    }

    // Every final state reaches the database without a restart: the ones
    // kept while the disk was full too. (The last changes are written a
    // moment after the tasks finish, so this waits for them.)
    let mut rows = Vec::new();
    assert!(
        wait_until(LONG_WAIT, || {
            rows = stored(&sandbox);
            rows.len() == accepted.len() && rows.iter().all(|(_, status, _)| status == "completed")
        }),
        "every accepted task should be stored as completed: {rows:?}"
    );

    // Killed now, the database keeps every completion: nothing runs twice.
    let killed = Command::new("kill")
        .args(["-9", &sandbox.server_pid.to_string()])
        .status()
        .expect("kill should run");
    assert!(killed.success());
    assert!(wait_until(LONG_WAIT, || !sandbox.server_alive()));
    let rows = stored(&sandbox);
    let ids: Vec<u64> = rows.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(
        ids, accepted,
        "every accepted task is stored, and nothing else"
    );
    for (id, status, attempts) in rows {
        assert_eq!(status, "completed", "task {id} is stored as completed");
        assert_eq!(attempts, 1, "task {id} ran once");
    }
}

/// Id, status and attempts of every task stored on the sandbox's file
/// system, in id order, read from a copy of the database and its WAL (SQLite
/// resolves the `/proc/PID/root` link, so it cannot open the file in place);
/// none when the copy cannot be read (say, taken mid-write).
fn stored(sandbox: &Sandbox) -> Vec<(u64, String, i64)> {
    let copy = tempfile::tempdir().expect("temp dir");
    for name in ["taskdeck.db", "taskdeck.db-wal"] {
        let from = sandbox.path(name);
        if from.exists() && std::fs::copy(&from, copy.path().join(name)).is_err() {
            return Vec::new();
        }
    }
    let Ok(conn) = rusqlite::Connection::open(copy.path().join("taskdeck.db")) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare("SELECT id, status, attempts FROM tasks ORDER BY id") else {
        return Vec::new();
    };
    stmt.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?.unsigned_abs(),
            row.get(1)?,
            row.get(2)?,
        ))
    })
    .map(|rows| rows.filter_map(Result::ok).collect())
    .unwrap_or_default()
}

#[test]
fn an_idle_server_on_a_full_disk_notices_by_itself_when_there_is_room_again() {
    // No workers: nothing but the refused submits ever writes.
    let Some(sandbox) = sandbox(0) else {
        return;
    };
    let addr = sandbox.addr;
    let mut accepted = Vec::new();
    fill(&sandbox.path("filler"));
    let (status, answer) = submit_until_refused(addr, &mut accepted);
    assert_eq!(
        (status, &answer["error"]["code"]),
        (507, &json!("storage_full")),
        "{answer}"
    );
    let (status, health) = call(addr, "GET", "/healthz", None);
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["storage"]["full"], true);
    assert_eq!(health["storage"]["pending_updates"], 0, "{health}");

    // Nothing is retried, yet the server finds out that there is room.
    std::fs::remove_file(sandbox.path("filler")).expect("the filler should be removable");
    let mut health = Value::Null;
    assert!(
        wait_until(LONG_WAIT, || {
            let (status, answer) = call(addr, "GET", "/healthz", None);
            health = answer;
            status == 200
        }),
        "/healthz should be ok again without any submit: {health}"
    );
    let (status, answer) = submit(addr, "noop", json!([]));
    assert_eq!(status, 201, "{answer}");
    accepted.push(answer["id"].as_u64().expect("an id"));
    let (status, listed) = call(
        addr,
        "GET",
        "/api/v1/tasks?status=queued&limit=1000&order=oldest",
        None,
    );
    assert_eq!(status, 200, "{listed}");
    let queued: Vec<u64> = listed["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["id"].as_u64())
        .collect();
    assert_eq!(
        queued, accepted,
        "every accepted task is queued, and only those"
    );
}
