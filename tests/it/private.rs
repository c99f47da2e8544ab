//! A server's files are its account's alone, and its logs are bounded: the
//! real binary on a real data directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::common::broker::{Proc, submit, wait_final};
use crate::common::wait_until;
use taskdeck::client::Client;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `taskdeck serve` on `data_dir`, started from a shell whose file mode
/// mask is the common `022`, so what the tasks' programs create can be
/// told from what the server creates.
fn serve(data_dir: &Path, extra: &[&str]) -> (Proc, Client) {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_taskdeck"))
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "2"])
        .args(["--allow-code-tasks", "--data-dir"])
        .arg(data_dir)
        .args(extra);
    let proc = Proc::spawn(command);
    let client = Client::new(&proc.listening_url(), None, Duration::from_secs(30));
    (proc, client)
}

fn print_and_touch(client: &Client, file: &Path) -> u64 {
    submit(
        client,
        "command",
        json!([[
            "sh",
            "-c",
            format!("echo secret output; touch '{}'", file.display())
        ]]),
        json!({}),
    )
}

#[test]
fn the_data_directory_and_every_file_in_it_are_private_and_tasks_keep_the_user_s_mask() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs).expect("create");
    // As an earlier version left them: readable by every account.
    for dir in [&data_dir, &logs] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let old_log = logs.join("task-999-attempt-1.log");
    std::fs::write(&old_log, "old output").expect("write");
    std::fs::set_permissions(&old_log, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let (mut proc, client) = serve(&data_dir, &[]);
    let made = temp.path().join("made-by-the-task");
    let id = print_and_touch(&client, &made);
    let done = wait_final(&client, &[id], Duration::from_secs(30));
    assert_eq!(done[0]["status"], "completed", "{:?}", done[0]);

    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(mode(&logs), 0o700);
    assert_eq!(mode(&old_log), 0o600, "a file an earlier version left open");
    let db = data_dir.join("taskdeck.db");
    assert_eq!(mode(&db), 0o600);
    let wal = data_dir.join("taskdeck.db-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }
    let task_log = logs.join(format!("task-{id}-attempt-1.log"));
    assert_eq!(mode(&task_log), 0o600, "the task's output log");
    let process_logs: Vec<_> = std::fs::read_dir(&data_dir)
        .expect("data dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("taskdeck.2"))
        .map(|e| e.path())
        .collect();
    assert!(
        !process_logs.is_empty(),
        "the process log is in the data dir"
    );
    for log in &process_logs {
        assert_eq!(mode(log), 0o600, "{}", log.display());
    }
    assert_eq!(
        mode(&made),
        0o644,
        "the task's own program creates files with the user's mask"
    );
    assert!(proc.terminate(Duration::from_secs(20)), "{}", proc.stderr());
}

#[test]
fn old_process_logs_and_the_logs_of_tasks_no_longer_kept_are_removed() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("create");
    let old_days: Vec<_> = (1..=9)
        .map(|day| data_dir.join(format!("taskdeck.2025-11-0{day}.log")))
        .collect();
    for log in &old_days {
        std::fs::write(log, "an old day").expect("write");
    }
    let notes = data_dir.join("notes.log");
    std::fs::write(&notes, "mine").expect("write");

    // Three tasks one after the other; the server keeps the newest
    // finished one.
    let (mut proc, client) = serve(&data_dir, &["--log-days", "3", "--keep-finished", "1"]);
    let logs = data_dir.join("logs");
    let log_of = |id: u64| logs.join(format!("task-{id}-attempt-1.log"));
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = print_and_touch(&client, &temp.path().join(format!("made-{n}")));
        let done = wait_final(&client, &[id], Duration::from_secs(30));
        assert_eq!(done[0]["status"], "completed", "{:?}", done[0]);
        assert!(log_of(id).exists(), "task {id} wrote its log");
        ids.push(id);
    }

    let kept: Vec<_> = old_days.iter().filter(|log| log.exists()).collect();
    assert_eq!(
        kept,
        [&old_days[7], &old_days[8]],
        "today's file and the two newest old days stay"
    );
    assert!(notes.exists(), "a file that is not a daily log stays");
    let process_log = std::fs::read_dir(&data_dir)
        .expect("data dir")
        .flatten()
        .filter(|e| {
            e.file_name().to_string_lossy().starts_with("taskdeck.")
                && !old_days.contains(&e.path())
        })
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(
        !process_log.contains("task completed") && !process_log.contains("task submitted"),
        "no line per task at the default level: {process_log}"
    );
    assert!(proc.terminate(Duration::from_secs(20)), "{}", proc.stderr());

    // The two older tasks are no longer kept: their output logs go too, at
    // the latest after the next start.
    let (mut proc, client) = serve(&data_dir, &["--log-days", "3", "--keep-finished", "1"]);
    let kept_tasks = client.list("").expect("list");
    assert_eq!(
        kept_tasks["tasks"].as_array().map(Vec::len),
        Some(1),
        "{kept_tasks}"
    );
    let swept = wait_until(Duration::from_secs(30), || {
        !log_of(ids[0]).exists() && !log_of(ids[1]).exists()
    });
    assert!(swept, "the logs of the dropped tasks are removed");
    assert!(log_of(ids[2]).exists(), "the kept task's log stays");
    assert!(proc.terminate(Duration::from_secs(20)), "{}", proc.stderr());
}

#[cfg(feature = "broker")]
#[test]
fn a_worker_s_host_removes_task_logs_not_written_for_its_log_days() {
    use crate::common::broker::{
        broker_available, broker_url, delete_queues, namespace, worker_with,
    };
    use crate::common::wait_until;

    let test = "worker-log-days";
    if !broker_available(test) {
        return;
    }
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("worker-data");
    let logs = data.join("logs");
    std::fs::create_dir_all(&logs).expect("create");
    let old = logs.join("task-41-attempt-1.log");
    let fresh = logs.join("task-42-attempt-1.log");
    let notes = logs.join("notes.txt");
    for file in [&old, &fresh, &notes] {
        std::fs::write(file, "output").expect("write");
    }
    let three_days_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 24 * 3600);
    for file in [&old, &notes] {
        std::fs::File::options()
            .write(true)
            .open(file)
            .and_then(|f| f.set_modified(three_days_ago))
            .expect("age the file");
    }
    let ns = namespace(test);
    let data_arg = data.to_str().expect("a UTF-8 path");
    let worker = worker_with(
        &broker_url(),
        &ns,
        "log-days",
        1,
        &["--data-dir", data_arg, "--log-days", "2"],
        &[],
    );
    assert!(
        wait_until(Duration::from_secs(30), || !old.exists()),
        "a log not written for longer than --log-days goes: {}",
        worker.stderr()
    );
    assert!(fresh.exists(), "a recent log stays");
    assert!(notes.exists(), "a file that is not a task's log stays");
    drop(worker);
    delete_queues(&ns, &["log-days"]);
}
