//! The `taskdeck` client commands against a real `taskdeck serve`.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{WAIT, wait_until};

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    pub(crate) fn start(extra: &[&str]) -> Self {
        let mut args = vec!["--memory"];
        args.extend_from_slice(extra);
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self::start_in(dir.path(), &args);
        server._dir = Some(dir);
        server
    }

    /// `serve` with its data directory (and database) in `dir`.
    pub(crate) fn start_in(dir: &std::path::Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_taskdeck"))
            .args(["serve", "--workers", "2", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("taskdeck serve should start");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("listening line");
        let url = line
            .trim()
            .strip_prefix("taskdeck listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self {
            child,
            url,
            _dir: None,
        }
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_taskdeck"))
            .args(args)
            .args(["--url", &self.url])
            .env_remove("TASKDECK_TOKEN")
            .output()
            .expect("taskdeck should run")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn client_commands_drive_a_running_server() {
    let server = Server::start(&[]);

    let done = server.run(&[
        "submit",
        "mock_ml_task",
        "300",
        "Random Forest",
        "--priority",
        "7",
        "--wait",
    ]);
    assert!(done.status.success(), "{}", text(&done));
    let out = text(&done);
    assert!(
        out.contains("mock_ml_task completed") && out.contains("accuracy"),
        "{out}"
    );

    let failed = server.run(&["submit", "fail", "3", "--retries", "0", "--wait"]);
    assert!(!failed.status.success(), "a failed task fails the command");
    assert!(
        text(&failed).contains("planned failure 1 of 3"),
        "{}",
        text(&failed)
    );

    let submitted = server.run(&["submit", "sleep", "60000"]);
    assert!(submitted.status.success(), "{}", text(&submitted));
    let id = text(&submitted)
        .trim()
        .strip_prefix("submitted task ")
        .expect("id line")
        .to_owned();
    assert!(wait_until(WAIT, || text(&server.run(&["status", &id]))
        .contains("running")));
    let cancelled = server.run(&["cancel", &id]);
    assert!(
        text(&cancelled).contains("asked it to stop"),
        "{}",
        text(&cancelled)
    );
    let waited = server.run(&["wait", &id, "--timeout", "20"]);
    assert!(!waited.status.success());
    assert!(text(&waited).contains("cancelled"), "{}", text(&waited));

    let listed = server.run(&["list", "--status", "completed"]);
    assert!(listed.status.success());
    assert!(text(&listed).contains("mock_ml_task"), "{}", text(&listed));
    let json_list = server.run(&["list", "--json", "--limit", "1"]);
    let parsed: serde_json::Value = serde_json::from_slice(&json_list.stdout).expect("list --json");
    assert_eq!(parsed["tasks"].as_array().map(Vec::len), Some(1));

    let monitor = server.run(&["monitor"]);
    assert!(monitor.status.success(), "{}", text(&monitor));
    assert!(
        text(&monitor).contains("Workers") && text(&monitor).contains("GPU"),
        "{}",
        text(&monitor)
    );
    let monitor_json = server.run(&["monitor", "--json"]);
    let parsed: serde_json::Value =
        serde_json::from_slice(&monitor_json.stdout).expect("monitor --json");
    assert_eq!(parsed["workers"]["total"], 2);

    let mock = server.run(&["mock", "--count", "3", "--max-duration-ms", "1200"]);
    assert!(mock.status.success(), "{}", text(&mock));
    assert_eq!(text(&mock).matches("submitted task").count(), 3);

    let retried = server.run(&["retry", "2"]);
    assert!(retried.status.success(), "{}", text(&retried));
}

#[test]
fn bad_input_is_a_plain_message_and_a_non_zero_exit() {
    let server = Server::start(&[]);
    for args in [
        vec!["submit", "no_such_task"],
        vec!["submit", "sleep", "soon"],
        vec!["submit", "noop", "--priority", "12"],
        vec!["status", "999"],
        vec!["cancel", "999"],
        vec!["submit", "noop", "--kwarg", "novalue"],
    ] {
        let output = server.run(&args);
        assert!(!output.status.success(), "{args:?} should fail");
        let message = text(&output);
        assert!(
            message.contains("taskdeck: ") || message.contains("error:"),
            "{args:?}: {message}"
        );
        assert!(!message.contains("panicked"), "{message}");
    }
    let unreachable = Command::new(env!("CARGO_BIN_EXE_taskdeck"))
        .args(["status", "1", "--url", "http://127.0.0.1:9"])
        .output()
        .expect("run");
    assert!(!unreachable.status.success());
    assert!(
        text(&unreachable).contains("cannot reach the Taskdeck server"),
        "{}",
        text(&unreachable)
    );
}

#[test]
fn a_token_protected_server_needs_the_token_or_the_owner_s_secret_from_the_cli() {
    let server = Server::start(&["--token", "hunter2"]);
    // A client of another account: it cannot read this one's secret.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let stranger = |token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_taskdeck"));
        command
            .args(["list", "--url", &server.url])
            .env("HOME", elsewhere.path())
            .env_remove("XDG_DATA_HOME")
            .env_remove("TASKDECK_DATA_DIR")
            .env_remove("TASKDECK_TOKEN");
        if let Some(token) = token {
            command.env("TASKDECK_TOKEN", token);
        }
        command.output().expect("run")
    };
    let denied = stranger(None);
    assert!(!denied.status.success());
    assert!(text(&denied).contains("401"), "{}", text(&denied));
    let wrong = stranger(Some("hunter3"));
    assert!(!wrong.status.success());
    assert!(text(&wrong).contains("401"), "{}", text(&wrong));
    let allowed = stranger(Some("hunter2"));
    assert!(allowed.status.success(), "{}", text(&allowed));
    let owner = server.run(&["list"]);
    assert!(
        owner.status.success(),
        "the owner's command line sends the local secret: {}",
        text(&owner)
    );
}

#[test]
fn serve_refuses_to_listen_beyond_loopback_without_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_taskdeck"))
        .args(["serve", "--memory", "--listen", "0.0.0.0:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("TASKDECK_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(
        text(&output).contains("refusing to listen on 0.0.0.0"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_lease_too_short_for_healthy_workers_is_refused_before_starting() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskdeck"))
        .args([
            "serve",
            "--memory",
            "--listen",
            "127.0.0.1:0",
            "--lease",
            "0.5",
        ])
        .args(["--broker", "amqp://guest:guest@127.0.0.1:1/%2f"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let exited = wait_until(WAIT, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("output");
    assert!(exited, "serve started with a 0.5 s lease");
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("--lease must be"), "{message}");
    assert!(message.contains("1 or more"), "{message}");
    assert!(!message.contains("panicked"), "{message}");
}

#[test]
fn a_delayed_task_keeps_its_time_across_kill_9_and_runs_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start_in(dir.path(), &[]);
    let submitted = server.run(&["submit", "noop", "--delay", "4s"]);
    assert!(submitted.status.success(), "{}", text(&submitted));
    let id = text(&submitted)
        .trim()
        .strip_prefix("submitted task ")
        .and_then(|id| id.parse::<u64>().ok())
        .expect("an id");
    let status = server.run(&["status", &id.to_string()]);
    assert!(text(&status).contains("not before:"), "{}", text(&status));
    let client = taskdeck::client::Client::new(&server.url, None, WAIT);
    let before = client.task(id).expect("the task");
    assert_eq!(before["status"], "queued", "{before}");
    let not_before = before["not_before"].as_f64().expect("a start time");
    let _ = server.child.kill();
    let _ = server.child.wait();
    // The same data directory: the database and its delayed task.
    let server = Server::start_in(dir.path(), &[]);
    let client = taskdeck::client::Client::new(&server.url, None, WAIT);
    let after = client.task(id).expect("the task survived");
    assert_eq!(after["status"], "queued", "{after}");
    assert_eq!(after["not_before"].as_f64(), Some(not_before));
    assert!(wait_until(Duration::from_secs(30), || {
        client
            .task(id)
            .is_ok_and(|task| task["status"] == "completed")
    }));
    let done = client.task(id).expect("the task");
    let started = done["first_started_at"].as_f64().expect("it ran");
    assert!(started >= not_before, "{done}");
}

#[test]
fn a_bad_delay_is_a_plain_message() {
    let server = Server::start(&[]);
    for args in [
        vec!["submit", "noop", "--delay", "soon"],
        vec!["submit", "noop", "--delay=-5s"],
        vec!["submit", "noop", "--at", "tomorrow"],
        vec![
            "submit",
            "noop",
            "--delay",
            "5s",
            "--at",
            "2026-12-02T03:00",
        ],
    ] {
        let output = server.run(&args);
        assert!(!output.status.success(), "{args:?} should fail");
        let message = text(&output);
        assert!(
            message.contains("--delay") || message.contains("--at"),
            "{args:?}: {message}"
        );
        assert!(!message.contains("panicked"), "{message}");
    }
    let listed = server.run(&["list", "--json"]);
    assert!(!text(&listed).contains("noop"), "nothing was submitted");
}

#[test]
fn a_held_task_stays_held_across_kill_9_and_runs_once_released() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start_in(dir.path(), &[]);
    let submitted = server.run(&["submit", "noop"]);
    let id = text(&submitted)
        .trim()
        .strip_prefix("submitted task ")
        .and_then(|id| id.parse::<u64>().ok())
        .expect("an id");
    // A task that runs at once cannot be held; queue one behind a blocker.
    let blockers: Vec<String> = (0..2)
        .map(|_| {
            let out = server.run(&["submit", "sleep", "60000"]);
            text(&out).trim().replace("submitted task ", "")
        })
        .collect();
    let client = taskdeck::client::Client::new(&server.url, None, WAIT);
    assert!(wait_until(WAIT, || {
        blockers.iter().all(|b| {
            client
                .task(b.parse().unwrap_or(0))
                .is_ok_and(|t| t["status"] == "running")
        })
    }));
    let waiting = server.run(&["submit", "noop"]);
    let waiting_id = text(&waiting).trim().replace("submitted task ", "");
    let held = server.run(&["hold", &waiting_id]);
    assert!(held.status.success(), "{}", text(&held));
    let running = server.run(&["hold", &blockers[0]]);
    assert!(!running.status.success(), "a running task cannot be held");
    assert!(
        text(&running).contains("only queued or retrying"),
        "{}",
        text(&running)
    );
    let status = server.run(&["status", &waiting_id]);
    assert!(
        text(&status).contains("waiting:     held"),
        "{}",
        text(&status)
    );
    let _ = server.child.kill();
    let _ = server.child.wait();
    // Restarted without the blockers' slots taken for long: they were
    // running, so they are queued again; the held task must stay put.
    let server = Server::start_in(dir.path(), &[]);
    let client = taskdeck::client::Client::new(&server.url, None, WAIT);
    for blocker in &blockers {
        let cancelled = server.run(&["cancel", blocker]);
        assert!(cancelled.status.success(), "{}", text(&cancelled));
    }
    let waiting_id: u64 = waiting_id.parse().expect("an id");
    let record = client.task(waiting_id).expect("the task survived");
    assert_eq!(record["held"], true, "{record}");
    assert_eq!(record["status"], "queued", "{record}");
    assert!(
        !wait_until(std::time::Duration::from_millis(500), || {
            client
                .task(waiting_id)
                .is_ok_and(|t| t["status"] != "queued")
        }),
        "a held task does not start"
    );
    let released = server.run(&["release", &waiting_id.to_string()]);
    assert!(released.status.success(), "{}", text(&released));
    assert!(wait_until(WAIT, || {
        client
            .task(waiting_id)
            .is_ok_and(|t| t["status"] == "completed")
    }));
    assert!(client.task(id).is_ok_and(|t| t["status"] == "completed"));
}

#[test]
fn a_paused_scheduler_stays_paused_across_kill_9_until_resumed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start_in(dir.path(), &[]);
    let paused = server.run(&["pause"]);
    assert!(paused.status.success(), "{}", text(&paused));
    assert!(text(&paused).contains("paused"), "{}", text(&paused));
    let submitted = server.run(&["submit", "noop"]);
    assert!(submitted.status.success(), "{}", text(&submitted));
    let id: u64 = text(&submitted)
        .trim()
        .strip_prefix("submitted task ")
        .and_then(|id| id.parse().ok())
        .expect("an id");
    let _ = server.child.kill();
    let _ = server.child.wait();
    let server = Server::start_in(dir.path(), &[]);
    let client = taskdeck::client::Client::new(&server.url, None, WAIT);
    let report = client.call("GET", "/api/v1/report", None).expect("report");
    assert_eq!(report["paused"], true, "{report}");
    assert!(
        !wait_until(Duration::from_millis(500), || {
            client.task(id).is_ok_and(|t| t["status"] != "queued")
        }),
        "nothing starts while paused"
    );
    let resumed = server.run(&["resume"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(wait_until(WAIT, || {
        client.task(id).is_ok_and(|t| t["status"] == "completed")
    }));
    assert_eq!(
        client.call("GET", "/api/v1/report", None).expect("report")["paused"],
        false
    );
}
