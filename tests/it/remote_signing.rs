//! Signed broker messages against a real RabbitMQ: a holder of the broker
//! account without the key cannot make a worker run anything nor the
//! scheduler take a forged result; a worker with another key is never
//! given work; a worker without a key, or with a key file others can read,
//! does not start; the scheduler makes its key and a worker sharing its
//! data directory finds it.
//!
//! Forged messages are published straight to the queues with the broker
//! account (lapin), and signed with `ring` directly, so the tests
//! check the wire format rather than reuse the code under test.

use crate::common::{self, broker};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use broker::{
    Case, TEST_KEY, delete_queues, listed, publish, refused, scrape, serve, signature,
    spawn_serve_env, status, submit, task, wait_connected, wait_final, worker, worker_env,
    worker_with, workers,
};
use common::{WAIT, wait_until};
use taskdeck::model::TaskSpec;

const LONG: Duration = Duration::from_secs(90);

/// A key that is not the tests' shared one.
const OTHER_KEY: &str = "not the scheduler's key, but long enough";

/// A placement of a `command` task that creates `marker`, as the scheduler
/// would send it.
fn placement_creating(marker: &Path, task: u64, placement: u64) -> Vec<u8> {
    let command = format!("touch '{}'", marker.display());
    let spec = TaskSpec::new("command", vec![json!(["sh", "-c", command])]);
    serde_json::to_vec(&json!({
        "type": "run", "task": task, "attempt": 1, "placement": placement,
        "spec": spec, "timeout_ms": null, "lease_ms": 30_000,
    }))
    .expect("json")
}

#[test]
fn a_forged_placement_is_refused_unread_and_the_worker_keeps_working() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("forgedrun")
    else {
        return;
    };
    let server = serve(&url, &ns, None, dir.path(), &["--workers", "0"]);
    let mut target = worker(&url, &ns, "fw", 1);
    assert!(wait_until(LONG, || listed(&server, "fw").is_some()));
    let queue = format!("{ns}.worker.fw");
    let marker = dir.path().join("forged-marker");
    // Unsigned; signed with another key; and the key's signature of
    // another body on a changed one.
    let unsigned = placement_creating(&marker, 900_001, 1);
    publish(&url, &queue, &unsigned, None, "mallory");
    let wrong_key = placement_creating(&marker, 900_002, 2);
    let forged = signature(OTHER_KEY, &wrong_key);
    publish(&url, &queue, &wrong_key, Some(forged), "scheduler");
    let changed = placement_creating(&marker, 900_003, 3);
    let borrowed = signature(TEST_KEY, &placement_creating(&marker, 900_004, 4));
    publish(&url, &queue, &changed, Some(borrowed), "scheduler");
    // The worker counts them, and says so in its heartbeats.
    let counted = wait_until(LONG, || {
        listed(&server, "fw").is_some_and(|entry| entry["refused_messages"] == 3)
    });
    assert!(counted, "{:?}\n{}", listed(&server, "fw"), target.stderr());
    assert_eq!(refused(&server, "worker"), Some(3), "{}", scrape(&server));
    assert_eq!(refused(&server, "scheduler"), Some(0));
    // Still healthy: a real task runs on it.
    let id = submit(&server.client, "noop", json!([]), json!({}));
    let record = &wait_final(&server.client, &[id], LONG)[0];
    assert_eq!(status(record), "completed", "{record}");
    assert_eq!(record["worker"], "fw");
    assert!(target.alive());
    assert!(!marker.exists(), "a refused placement ran");
    let log = target.stderr();
    assert!(log.contains("refused a broker message unread"), "{log}");
    assert!(log.contains(&queue), "{log}");
    assert!(
        log.contains("mallory"),
        "the claimed sender is logged: {log}"
    );
    // What was refused would have run: signed with the key, it does.
    let genuine = placement_creating(&marker, 900_005, 5);
    let signed = signature(TEST_KEY, &genuine);
    publish(&url, &queue, &genuine, Some(signed), "scheduler");
    assert!(wait_until(LONG, || marker.exists()), "{}", target.stderr());
    drop((server, target));
    delete_queues(&ns, &["fw"]);
}

#[test]
fn a_forged_report_is_refused_and_changes_nothing() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("forgedreport")
    else {
        return;
    };
    let server = serve(&url, &ns, None, dir.path(), &["--workers", "0"]);
    let _w = worker(&url, &ns, "rw", 1);
    let id = submit(&server.client, "sleep", json!([4_000]), json!({}));
    assert!(wait_until(LONG, || {
        let record = task(&server.client, id);
        status(&record) == "running" && record["worker"] == "rw"
    }));
    let completion = serde_json::to_vec(&json!({
        "type": "finished", "worker": "rw", "task": id, "attempt": 1,
        "outcome": { "kind": "completed", "value": { "forged": true } },
        "started_at_us": 0, "finished_at_us": 0, "run_time_us": 1,
    }))
    .expect("json");
    let events = format!("{ns}.events");
    publish(&url, &events, &completion, None, "rw");
    let forged = signature(OTHER_KEY, &completion);
    publish(&url, &events, &completion, Some(forged), "rw");
    assert!(
        wait_until(WAIT, || refused(&server, "scheduler") == Some(2)),
        "{}",
        scrape(&server)
    );
    let record = task(&server.client, id);
    assert_eq!(status(&record), "running", "{record}");
    assert_eq!(record["attempts"], 1, "{record}");
    let record = &wait_final(&server.client, &[id], LONG)[0];
    assert_eq!(status(record), "completed", "{record}");
    assert_eq!(record["result"], json!({ "slept_ms": 4_000 }), "{record}");
    let log = server.proc.stderr();
    assert!(log.contains("refused a broker message unread"), "{log}");
    assert!(log.contains(&events), "{log}");
    drop((server, _w));
    delete_queues(&ns, &["rw"]);
}

#[test]
fn a_worker_with_another_key_runs_nothing_and_the_task_waits_for_one_with_the_key() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("wrongkey")
    else {
        return;
    };
    let server = serve(&url, &ns, None, dir.path(), &["--workers", "0"]);
    let mut stranger = worker_env(
        &url,
        &ns,
        "stranger",
        2,
        &[("TASKDECK_BROKER_KEY", OTHER_KEY)],
    );
    let id = submit(&server.client, "noop", json!([]), json!({}));
    // Its heartbeats come every 0.2 s and are refused unread: it is never
    // known, so nothing is placed on it.
    assert!(
        wait_until(LONG, || refused(&server, "scheduler") >= Some(5)),
        "{}\n{}",
        scrape(&server),
        server.proc.stderr()
    );
    assert!(
        listed(&server, "stranger").is_none(),
        "{:?}",
        workers(&server.client)
    );
    assert_eq!(status(&task(&server.client, id)), "queued");
    assert!(stranger.alive());
    let _keeper = worker(&url, &ns, "keeper", 1);
    let record = &wait_final(&server.client, &[id], LONG)[0];
    assert_eq!(status(record), "completed", "{record}");
    assert_eq!(record["worker"], "keeper");
    assert_eq!(record["attempts"], 1, "{record}");
    let log = server.proc.stderr();
    assert!(log.contains("refused a broker message unread"), "{log}");
    assert!(
        log.contains("stranger"),
        "the claimed sender is logged: {log}"
    );
    // Once a minute at most for one sender: one line for dozens refused.
    assert_eq!(log.matches("sender=stranger").count(), 1, "{log}");
    drop((server, stranger, _keeper));
    delete_queues(&ns, &["stranger", "keeper"]);
}

/// Runs `taskdeck ARGS` without the tests' key (and with `env`), expecting
/// it to exit by itself; its exit success and stderr.
fn run_alone(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskdeck"))
        .args(args)
        .env_remove("TASKDECK_BROKER_KEY")
        .env_remove("TASKDECK_BROKER_KEY_FILE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("taskdeck runs");
    let exited = wait_until(WAIT, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("output");
    assert!(exited, "it kept running");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[cfg(unix)]
#[test]
fn a_worker_without_a_key_or_with_a_key_file_others_can_read_does_not_start() {
    use std::os::unix::fs::PermissionsExt as _;
    // Nothing answers at this address, and a worker retries a broker
    // forever: exiting by itself shows it gave up before connecting (after
    // waiting a moment for a key a scheduler beside it might create).
    let nowhere = "amqp://guest:guest@127.0.0.1:1/%2f";
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().display().to_string();
    let (ok, message) = run_alone(&["worker", "--broker", nowhere, "--data-dir", &data], &[]);
    assert!(!ok, "{message}");
    let expected = dir.path().join("broker.key");
    assert!(message.contains("waiting up to 10 s"), "{message}");
    assert!(message.contains("no broker key"), "{message}");
    assert!(
        message.contains(&expected.display().to_string()),
        "{message}"
    );
    assert!(message.contains("--broker-key-file"), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    assert!(!expected.exists(), "a worker never makes a key");

    // Outside the data directory, whose own files a start makes private.
    let keys = tempfile::tempdir().expect("temp dir");
    let key = keys.path().join("shared.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").expect("written");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let key = key.display().to_string();
    let common = [
        "--broker",
        nowhere,
        "--data-dir",
        &data,
        "--broker-key-file",
        &key,
    ];
    for command in [
        &["worker"][..],
        &["serve", "--memory", "--listen", "127.0.0.1:0"],
    ] {
        let args: Vec<&str> = command.iter().chain(&common).copied().collect();
        let (ok, message) = run_alone(&args, &[]);
        assert!(!ok, "{command:?}: {message}");
        assert!(
            message.contains("can be read by other accounts"),
            "{command:?}: {message}"
        );
        assert!(
            message.contains(&format!("chmod 600 {key}")),
            "{command:?}: {message}"
        );
    }
    // The variable naming the file is read the same way.
    let (ok, message) = run_alone(
        &["worker", "--broker", nowhere, "--data-dir", &data],
        &[("TASKDECK_BROKER_KEY_FILE", &key)],
    );
    assert!(!ok && message.contains("chmod 600"), "{message}");
    // A key shorter than 16 bytes is refused too.
    let (ok, message) = run_alone(
        &["worker", "--broker", nowhere, "--data-dir", &data],
        &[("TASKDECK_BROKER_KEY", "short")],
    );
    assert!(!ok && message.contains("at least 16"), "{message}");
}

#[cfg(unix)]
#[test]
fn serve_makes_a_private_key_that_a_worker_sharing_its_data_dir_finds() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("makekey")
    else {
        return;
    };
    // An empty variable counts as none: the key comes from the data dir.
    let no_key = [("TASKDECK_BROKER_KEY", "")];
    let server = spawn_serve_env(&url, &ns, None, dir.path(), &["--workers", "0"], &no_key);
    wait_connected(&server);
    let path = dir.path().join("broker.key");
    let mode = std::fs::metadata(&path)
        .expect("the key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let log = server.proc.stderr();
    assert!(log.contains("created the broker key"), "{log}");
    assert!(
        log.contains("workers on other machines need a copy"),
        "{log}"
    );
    let data = dir.path().display().to_string();
    let _same_dir = worker_with(&url, &ns, "samedir", 1, &["--data-dir", &data], &no_key);
    // A copy elsewhere, named on the command line.
    let copy = tempfile::tempdir().expect("temp dir");
    let copied = copy.path().join("from-the-scheduler.key");
    std::fs::copy(&path, &copied).expect("copied");
    std::fs::set_permissions(&copied, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let copied = copied.display().to_string();
    let flag = ["--broker-key-file", copied.as_str()];
    let _copy = worker_with(&url, &ns, "copied", 1, &flag, &no_key);
    let ids: Vec<u64> = (0..8)
        .map(|_| submit(&server.client, "sleep", json!([200]), json!({})))
        .collect();
    let records = wait_final(&server.client, &ids, LONG);
    assert!(
        records.iter().all(|r| status(r) == "completed"),
        "{records:?}"
    );
    for name in ["samedir", "copied"] {
        assert!(
            records.iter().any(|r| r["worker"] == name),
            "{name} ran nothing: {records:?}"
        );
    }
    assert_eq!(refused(&server, "scheduler"), Some(0));
    assert_eq!(refused(&server, "worker"), Some(0));
    drop((server, _same_dir, _copy));
    delete_queues(&ns, &["samedir", "copied"]);
}

#[test]
fn a_worker_started_with_its_scheduler_s_first_start_waits_for_the_key_it_creates() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("keywait")
    else {
        return;
    };
    // Both started at once on a machine where neither ran before: the
    // worker looks before the scheduler has made the key.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let said = dir.path().join("worker.stderr");
    let early = Killed(
        Command::new(env!("CARGO_BIN_EXE_taskdeck"))
            .args(["worker", "--broker", &url, "--broker-namespace", &ns])
            .args([
                "--name",
                "early",
                "--concurrency",
                "1",
                "--heartbeat",
                "0.2",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .env("TASKDECK_BROKER_KEY", "")
            .env_remove("TASKDECK_BROKER_KEY_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&said).expect("stderr file"))
            .spawn()
            .expect("taskdeck runs"),
    );
    let stderr = || std::fs::read_to_string(&said).unwrap_or_default();
    assert!(
        wait_until(WAIT, || stderr().contains("waiting up to")),
        "{}",
        stderr()
    );
    assert!(!dir.path().join("broker.key").exists());
    let no_key = [("TASKDECK_BROKER_KEY", "")];
    let server = spawn_serve_env(&url, &ns, None, dir.path(), &["--workers", "0"], &no_key);
    wait_connected(&server);
    let id = submit(&server.client, "noop", json!([]), json!({}));
    let record = &wait_final(&server.client, &[id], LONG)[0];
    assert_eq!(status(record), "completed", "{record}: {}", stderr());
    assert_eq!(record["worker"], "early", "{record}");
    assert_eq!(refused(&server, "scheduler"), Some(0));
    drop((server, early));
    delete_queues(&ns, &["early"]);
}
