//! Command tasks through the real scheduler: a timeout and a cancel both
//! take down the whole process group, grandchildren included.

use crate::common;

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use common::{WAIT, config, wait_until};
use taskdeck::model::{FailureKind, TaskSpec, TaskStatus};
use taskdeck::scheduler::{Scheduler, StoreMode};
use taskdeck::tasks::{ExecSettings, Registry, register_exec_tasks};

fn scheduler(dir: &Path) -> Scheduler {
    let mut registry = Registry::with_builtins();
    let mut settings = ExecSettings::new(dir.join("logs"));
    settings.kill_grace = Duration::from_secs(2);
    register_exec_tasks(&mut registry, settings);
    Scheduler::start(config(StoreMode::Memory, 2), registry).expect("scheduler should start")
}

/// A command whose background child writes its pid to `pid_file`, then
/// both wait for a long time.
fn family(pid_file: &Path) -> TaskSpec {
    let script = format!(
        "sleep 300 & echo $! > '{}'; echo started; wait",
        pid_file.display()
    );
    TaskSpec::new("command", vec![json!(["sh", "-c", script])]).max_retries(0)
}

/// The pid written to `path`, once it is there.
fn child_pid(path: &Path) -> i32 {
    let mut pid = None;
    assert!(wait_until(WAIT, || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok());
        pid.is_some()
    }));
    pid.expect("a pid")
}

/// Whether the process is gone (or a zombie nobody reaps, which runs no
/// more code).
fn gone(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    if !alive {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scheduler = scheduler(dir.path());
    let pid_file = dir.path().join("child.pid");
    let mut spec = family(&pid_file);
    spec.timeout_ms = Some(1_000);
    let id = scheduler.submit(spec).expect("submit");
    let child = child_pid(&pid_file);
    let record = scheduler.wait(id, WAIT).expect("task");
    assert_eq!(record.status, TaskStatus::Failed, "{record:?}");
    assert_eq!(record.failures[0].kind, FailureKind::TimedOut);
    assert!(
        wait_until(WAIT, || gone(child)),
        "the grandchild {child} was killed with its group"
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn a_cancel_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scheduler = scheduler(dir.path());
    let pid_file = dir.path().join("child.pid");
    let id = scheduler.submit(family(&pid_file)).expect("submit");
    let child = child_pid(&pid_file);
    scheduler.cancel(id).expect("stop requested");
    let record = scheduler.wait(id, WAIT).expect("task");
    assert_eq!(record.status, TaskStatus::Cancelled, "{record:?}");
    assert!(
        record.log.is_some_and(|log| log.tail.contains("started")),
        "the output up to the cancel is kept"
    );
    assert!(
        wait_until(WAIT, || gone(child)),
        "the grandchild {child} was killed with its group"
    );
    scheduler.shutdown().expect("shutdown");
}
