//! The real `taskdeck serve` binary: mock tasks to completion, kill -9 in
//! the middle of work, restart, graceful stop, and refusing bad databases.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde_json::json;

use common::{config, wait_until};
use taskdeck::demo::{CV_OPERATIONS, ML_ALGORITHMS};
use taskdeck::model::TaskSpec;
use taskdeck::scheduler::{Scheduler, StoreMode};

const TASKS: usize = 40;
const LONG_WAIT: Duration = Duration::from_secs(60);

fn serve(db: &Path, data_dir: &Path, workers: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_taskdeck"))
        .arg("serve")
        .arg("--db")
        .arg(db)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--workers", &workers.to_string(), "--retry-delay-ms", "10"])
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("taskdeck serve should start")
}

/// Status and attempts of every task, read from the real file while the
/// server may be running (WAL readers do not block the writer).
fn rows(db: &Path) -> HashMap<i64, (String, i64, String)> {
    let Ok(conn) = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return HashMap::new();
    };
    let Ok(mut stmt) = conn.prepare("SELECT id, status, attempts, failures FROM tasks") else {
        return HashMap::new();
    };
    stmt.query_map([], |row| {
        Ok((row.get(0)?, (row.get(1)?, row.get(2)?, row.get(3)?)))
    })
    .map(|rows| rows.filter_map(Result::ok).collect())
    .unwrap_or_default()
}

fn count(db: &Path, status: &str) -> usize {
    rows(db).values().filter(|(s, _, _)| s == status).count()
}

fn seed(db: &Path) {
    let scheduler = Scheduler::start(
        config(StoreMode::File(db.to_owned()), 0),
        taskdeck::demo::registry(),
    )
    .expect("scheduler should start");
    let specs = (0..TASKS)
        .map(|i| {
            let duration = json!(150 + (i % 4) * 50);
            if i % 2 == 0 {
                TaskSpec::new(
                    "mock_ml_task",
                    vec![duration, json!(ML_ALGORITHMS[i % ML_ALGORITHMS.len()])],
                )
            } else {
                TaskSpec::new(
                    "mock_cv_task",
                    vec![duration, json!(CV_OPERATIONS[i % CV_OPERATIONS.len()])],
                )
            }
        })
        .collect();
    scheduler
        .submit_batch(specs)
        .expect("batch should be accepted");
    scheduler.shutdown().expect("shutdown should succeed");
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill should run");
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let mut status = None;
    assert!(
        wait_until(LONG_WAIT, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        }),
        "taskdeck serve should exit"
    );
    status.expect("exit status")
}

#[test]
fn serve_survives_kill_9_and_every_task_completes_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tasks.db");
    let data_dir: PathBuf = dir.path().join("data");
    seed(&db);
    assert_eq!(count(&db, "queued"), TASKS);

    let mut first = serve(&db, &data_dir, 4);
    let mid_work = wait_until(LONG_WAIT, || {
        let rows = rows(&db);
        let completed = rows.values().filter(|(s, _, _)| s == "completed").count();
        let running = rows.values().filter(|(s, _, _)| s == "running").count();
        completed >= 8 && running >= 2
    });
    first.kill().expect("kill -9 should work");
    first.wait().expect("killed process should be reaped");
    assert!(mid_work, "the server should have been mid-work when killed");

    let at_kill = rows(&db);
    let running_at_kill: Vec<i64> = at_kill
        .iter()
        .filter(|(_, (status, _, _))| status == "running")
        .map(|(id, _)| *id)
        .collect();
    assert!(!running_at_kill.is_empty());

    let mut second = serve(&db, &data_dir, 4);
    let all_done = wait_until(LONG_WAIT, || count(&db, "completed") == TASKS);
    sigterm(&second);
    let status = wait_exit(&mut second);
    assert!(
        all_done,
        "every task should complete after the restart: {:?}",
        rows(&db)
    );
    assert!(
        status.success(),
        "SIGTERM should stop the server cleanly: {status:?}"
    );

    let after = rows(&db);
    let mut ids: Vec<i64> = after.keys().copied().collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=TASKS as i64).collect::<Vec<_>>(),
        "no task lost or duplicated"
    );
    for (id, (status, attempts, failures)) in &after {
        assert_eq!(status, "completed");
        let failures: serde_json::Value = serde_json::from_str(failures).expect("failures json");
        let failures = failures.as_array().expect("failures array");
        if running_at_kill.contains(id) {
            assert_eq!(
                *attempts, 2,
                "task {id} ran again once after losing its attempt"
            );
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0]["kind"], "lost");
        } else {
            assert_eq!(*attempts, 1, "task {id} ran once");
            assert!(failures.is_empty());
        }
    }

    let log = std::fs::read_dir(&data_dir)
        .expect("data dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(log.contains("recovered tasks from the store"), "{log}");
    assert!(
        !log.contains("task completed"),
        "the everyday transitions stay out of the log at the default level"
    );
}

#[test]
fn serve_refuses_a_file_that_is_not_a_taskdeck_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("thesis.txt");
    std::fs::write(&db, "chapter one\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_taskdeck"))
        .arg("serve")
        .arg("--db")
        .arg(&db)
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("taskdeck should run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("thesis.txt") && stderr.contains("not a Taskdeck database"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&db).expect("read"), "chapter one\n");
}

/// Runs `taskdeck` with `args`, insists on success, and parses the one JSON
/// line it prints.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_taskdeck"))
        .args(args)
        .output()
        .expect("taskdeck bench should run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

#[test]
fn bench_prints_one_json_line() {
    let report = bench_json(&[
        "bench",
        "--tasks",
        "2000",
        "--workers",
        "2",
        "--memory",
        "--latency-tasks",
        "200",
    ]);
    assert_eq!(report["tasks"], 2000);
    assert_eq!(report["latency"]["samples"], 200);
    assert!(report["throughput_tasks_per_s"].as_f64().unwrap_or(0.0) > 0.0);
}

#[test]
fn dependency_bench_prints_one_json_line_with_both_shapes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bench.db");
    let report = bench_json(&[
        "bench",
        "--dependencies",
        "--tasks",
        "300",
        "--workers",
        "2",
        "--db",
        &db.to_string_lossy(),
    ]);
    assert_eq!(report["store"], "sqlite", "{report}");
    assert_eq!(report["chain"]["tasks"], 300, "{report}");
    assert_eq!(report["chain"]["handoff"]["samples"], 299, "{report}");
    assert_eq!(report["fan"]["width"], 300, "{report}");
    assert_eq!(report["fan"]["fan_out"]["samples"], 300, "{report}");
    assert!(report["fan"]["fan_in_us"].is_u64(), "{report}");
}

#[test]
fn http_bench_prints_one_json_line() {
    let report = bench_json(&[
        "bench",
        "--http",
        "--tasks",
        "2000",
        "--workers",
        "2",
        "--clients",
        "4",
        "--batch",
        "100",
        "--latency-tasks",
        "50",
    ]);
    assert_eq!(report["clients"], 4);
    assert_eq!(report["latency"]["samples"], 50);
    assert!(report["single_submit_tasks_per_s"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(report["batch_submit_tasks_per_s"].as_f64().unwrap_or(0.0) > 0.0);
}

#[test]
fn a_second_serve_on_a_database_in_use_says_why_once_without_colour_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tasks.db");
    let mut first = serve(&db, dir.path(), 0);
    assert!(
        wait_until(LONG_WAIT, || dir.path().join("tasks.db.lock").exists()
            && db.exists()),
        "the first server should open the database"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_taskdeck"))
        .arg("serve")
        .arg("--db")
        .arg(&db)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("taskdeck should run");
    first.kill().expect("kill");
    first.wait().expect("reap");
    assert!(!output.status.success());
    // stderr is a pipe here: plain text, and the reason said once.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains('\u{1b}'),
        "no terminal colour codes: {stderr:?}"
    );
    assert_eq!(
        stderr.matches("in use by another Taskdeck process").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("cannot start the scheduler: database"),
        "{stderr}"
    );
}

/// Starts `taskdeck serve` on `data_dir` and returns it with its address.
fn serve_on(data_dir: &Path) -> (Child, std::net::SocketAddr) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskdeck"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--workers", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("taskdeck serve should start");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("taskdeck listening on http://") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(LONG_WAIT)
        .expect("the server should say where it listens");
    (child, addr.parse().expect("an address"))
}

/// `GET /api/v1/monitoring/history?minutes=M` of the server whose data
/// directory is `dir` (its secret is there): the sample times, in seconds.
fn history(addr: std::net::SocketAddr, dir: &Path, minutes: u32) -> Vec<f64> {
    let secret = std::fs::read_to_string(dir.join("secret")).unwrap_or_default();
    let request = format!(
        "GET /api/v1/monitoring/history?minutes={minutes} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        secret.trim()
    );
    let answer = common::raw_http(addr, request.as_bytes());
    let body: serde_json::Value = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or_default();
    body["samples"]
        .as_array()
        .map(|samples| {
            samples
                .iter()
                .filter_map(|s| s["sampled_at"].as_f64())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn serve_keeps_an_hour_of_resource_history_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut first, addr) = serve_on(dir.path());
    // Samples come once a second.
    let mut before = Vec::new();
    assert!(
        wait_until(LONG_WAIT, || {
            before = history(addr, dir.path(), 60);
            before.len() >= 2
        }),
        "the history route should fill while serve runs: {before:?}"
    );
    assert!(
        before.windows(2).all(|pair| pair[0] < pair[1]),
        "oldest first: {before:?}"
    );
    sigterm(&first);
    assert!(wait_exit(&mut first).success());
    let recorded = before.len();

    let (mut second, addr) = serve_on(dir.path());
    let after = history(addr, dir.path(), 60);
    let last_minute = history(addr, dir.path(), 1);
    sigterm(&second);
    assert!(wait_exit(&mut second).success());
    assert!(
        after.len() >= recorded && after[..recorded] == before[..],
        "the samples recorded before the restart come back first: {before:?} then {after:?}"
    );
    assert!(
        last_minute.len() <= after.len() && !last_minute.is_empty(),
        "{last_minute:?}"
    );
}
