//! Tests for the `command` and `python` tasks, with real processes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tempfile::TempDir;

use super::{ExecSettings, register_exec_tasks};
use crate::model::{TaskId, TaskLog};
use crate::tasks::{CancelToken, Registry, StopReason, TaskContext, TaskError};

/// A registry with the exec tasks, logging into a temp dir.
struct Harness {
    dir: TempDir,
    registry: Registry,
}

impl Harness {
    fn new() -> Self {
        Self::with(|_, _| {})
    }

    /// A harness whose settings `configure` adjusts; it gets the temp dir too.
    fn with(configure: impl FnOnce(&Path, &mut ExecSettings)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir should be created");
        let mut settings = ExecSettings::new(dir.path().join("logs"));
        configure(dir.path(), &mut settings);
        let mut registry = Registry::empty();
        register_exec_tasks(&mut registry, settings);
        Self { dir, registry }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("logs").join("task-1-attempt-1.log")
    }

    /// Runs a task with keyword arguments; returns its result and log.
    fn run(&self, name: &str, kwargs: Value) -> (Result<Value, TaskError>, Option<TaskLog>) {
        self.run_with_token(name, kwargs, CancelToken::new())
    }

    fn run_with_token(
        &self,
        name: &str,
        kwargs: Value,
        token: CancelToken,
    ) -> (Result<Value, TaskError>, Option<TaskLog>) {
        let def = self.registry.get(name).expect("task should be registered");
        let kwargs: Map<String, Value> = match kwargs {
            Value::Object(map) => map,
            other => panic!("kwargs should be an object, got {other}"),
        };
        let bound = def.signature.bind(&[], &kwargs).expect("args should bind");
        let ctx = TaskContext::new(TaskId(1), 1, "test".into(), token);
        let result = def.call(&ctx, &bound);
        (result, ctx.take_log())
    }
}

/// Polls `condition` every few milliseconds until it holds or `timeout` ends.
fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Cancels `token` with `reason` once the log file holds `marker`.
fn cancel_when_logged(
    path: PathBuf,
    marker: &'static str,
    token: CancelToken,
    reason: StopReason,
) -> thread::JoinHandle<bool> {
    thread::Builder::new()
        .name("exec-test-canceller".into())
        .spawn(move || {
            let seen = wait_until(Duration::from_secs(10), || {
                fs::read_to_string(&path).is_ok_and(|text| text.contains(marker))
            });
            token.cancel(reason);
            seen
        })
        .expect("canceller thread should start")
}

/// True once no live process has this pid (a zombie nobody reaps counts as
/// gone: it no longer runs).
fn process_gone(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    if !alive {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
    })
}

fn read_pid(path: &Path) -> libc::pid_t {
    fs::read_to_string(path)
        .expect("the shell should have written the pid")
        .trim()
        .parse()
        .expect("the pid should be a number")
}

fn failure(result: Result<Value, TaskError>) -> TaskError {
    result.expect_err("the task should fail")
}

#[test]
fn command_logs_stdout_and_stderr_and_keeps_the_tail() {
    let harness = Harness::new();
    let (result, log) = harness.run(
        "command",
        json!({"argv": ["sh", "-c", "echo out-line; echo err-line >&2"]}),
    );
    assert_eq!(result, Ok(json!({"exit_code": 0})));
    let log = log.expect("a log should be recorded");
    let text = fs::read_to_string(&log.path).expect("log file should exist");
    assert!(
        text.contains("out-line") && text.contains("err-line"),
        "{text}"
    );
    assert_eq!(log.bytes, text.len() as u64);
    assert!(!log.truncated);
    assert!(log.tail.contains("out-line") && log.tail.contains("err-line"));
    assert!(Path::new(&log.path).ends_with("logs/task-1-attempt-1.log"));
}

#[test]
fn command_failure_names_the_exit_code_and_stderr_tail() {
    let harness = Harness::new();
    let (result, _) = harness.run(
        "command",
        json!({"argv": ["sh", "-c", "echo quiet; echo boom-detail >&2; exit 3"]}),
    );
    let error = failure(result);
    assert!(error.retryable && error.stop.is_none());
    assert!(
        error.message.contains("exited with code 3"),
        "{}",
        error.message
    );
    assert!(error.message.contains("boom-detail"), "{}", error.message);
    assert!(!error.message.contains("quiet"), "{}", error.message);

    let (result, _) = harness.run("command", json!({"argv": ["sh", "-c", "exit 4"]}));
    let message = failure(result).message;
    assert!(
        message.contains("code 4") && message.contains("stderr was empty"),
        "{message}"
    );
}

#[test]
fn command_with_shell_runs_one_string() {
    let harness = Harness::new();
    let (result, log) = harness.run(
        "command",
        json!({"argv": ["echo $((40 + 2)) | tr 4 x"], "shell": true}),
    );
    assert_eq!(result, Ok(json!({"exit_code": 0})));
    assert_eq!(log.map(|log| log.tail), Some("x2".to_owned()));
}

#[test]
fn command_honours_env_and_cwd() {
    let harness = Harness::new();
    let work = harness.dir.path().join("work");
    fs::create_dir(&work).expect("work dir should be created");
    let (result, log) = harness.run(
        "command",
        json!({
            "argv": ["sh", "-c", "pwd; echo \"value=$TD_EXEC_VALUE\""],
            "cwd": work.to_str().expect("temp path should be UTF-8"),
            "env": {"TD_EXEC_VALUE": "hello"},
        }),
    );
    assert_eq!(result, Ok(json!({"exit_code": 0})));
    let tail = log.expect("a log should be recorded").tail;
    let work = work.canonicalize().expect("work dir should resolve");
    let printed = tail.lines().next().map(PathBuf::from).unwrap_or_default();
    assert_eq!(printed.canonicalize().ok(), Some(work), "{tail}");
    assert!(tail.contains("value=hello"), "{tail}");
}

#[test]
fn command_missing_program_is_fatal() {
    let harness = Harness::new();
    let (result, log) = harness.run("command", json!({"argv": ["taskdeck-no-such-program"]}));
    let error = failure(result);
    assert!(!error.retryable, "{error:?}");
    assert!(
        error.message.contains("taskdeck-no-such-program"),
        "{}",
        error.message
    );
    assert!(error.message.contains("os error"), "{}", error.message);
    assert!(log.is_none());
}

#[test]
fn command_rejects_bad_argument_shapes() {
    let harness = Harness::new();
    for kwargs in [
        json!({"argv": []}),
        json!({"argv": ["echo", 1]}),
        json!({"argv": ["echo"], "env": {"A": 1}}),
        json!({"argv": ["echo"], "env": ["A"]}),
        json!({"argv": ["echo"], "cwd": 5}),
        json!({"argv": ["echo"], "cwd": "/no/such/taskdeck/dir"}),
        json!({"argv": ["echo", "a"], "shell": true}),
    ] {
        let (result, _) = harness.run("command", kwargs.clone());
        let error = failure(result);
        assert!(!error.retryable, "{kwargs}: {error:?}");
    }
}

#[test]
fn cancel_kills_the_whole_process_group() {
    let harness = Harness::new();
    let work = harness.dir.path().join("work");
    fs::create_dir(&work).expect("work dir should be created");
    let token = CancelToken::new();
    let canceller = cancel_when_logged(
        harness.log_path(),
        "started",
        token.clone(),
        StopReason::Cancelled,
    );
    let (result, _) = harness.run_with_token(
        "command",
        json!({
            "argv": ["sh", "-c", "sleep 300 & echo $! > child.pid; echo started; wait"],
            "cwd": work.to_str().expect("temp path should be UTF-8"),
        }),
        token,
    );
    assert!(canceller.join().expect("canceller should not panic"));
    assert_eq!(failure(result).stop, Some(StopReason::Cancelled));
    let pid = read_pid(&work.join("child.pid"));
    assert!(
        wait_until(Duration::from_secs(5), || process_gone(pid)),
        "grandchild {pid} should be gone"
    );
}

#[test]
fn leftover_processes_are_killed_when_the_main_process_exits() {
    let harness = Harness::new();
    let work = harness.dir.path().join("work");
    fs::create_dir(&work).expect("work dir should be created");
    let started = Instant::now();
    let (result, _) = harness.run(
        "command",
        json!({
            "argv": ["sleep 300 & echo $! > child.pid"],
            "shell": true,
            "cwd": work.to_str().expect("temp path should be UTF-8"),
        }),
    );
    assert_eq!(result, Ok(json!({"exit_code": 0})));
    assert!(started.elapsed() < Duration::from_secs(60));
    let pid = read_pid(&work.join("child.pid"));
    assert!(
        wait_until(Duration::from_secs(5), || process_gone(pid)),
        "background process {pid} should be gone"
    );
}

#[test]
fn a_process_ignoring_sigterm_is_killed_after_the_grace() {
    let grace = Duration::from_millis(300);
    let harness = Harness::with(|_, settings| settings.kill_grace = grace);
    let token = CancelToken::new();
    let canceller = cancel_when_logged(
        harness.log_path(),
        "ready",
        token.clone(),
        StopReason::TimedOut,
    );
    let started = Instant::now();
    let (result, _) = harness.run_with_token(
        "command",
        json!({"argv": ["trap '' TERM; echo ready; sleep 300"], "shell": true}),
        token,
    );
    assert!(canceller.join().expect("canceller should not panic"));
    assert_eq!(failure(result).stop, Some(StopReason::TimedOut));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= grace,
        "stopped after {elapsed:?}, before the grace"
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}

#[test]
fn the_log_cap_truncates_but_the_tail_shows_the_end() {
    let harness = Harness::with(|_, settings| settings.log_cap_bytes = 100);
    let script = "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done";
    let (result, log) = harness.run("command", json!({"argv": [script], "shell": true}));
    assert_eq!(result, Ok(json!({"exit_code": 0})));
    let log = log.expect("a log should be recorded");
    assert!(log.truncated);
    assert_eq!(log.bytes, 100);
    let on_disk = fs::metadata(&log.path).expect("log should exist").len();
    assert_eq!(on_disk, 100);
    assert!(log.tail.ends_with("line-299"), "{}", log.tail);
    assert_eq!(log.tail.lines().count(), 20);
}

fn python_available() -> bool {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        eprintln!("python3 not found; skipping the python task test");
    }
    found
}

const SAMPLE_MODULE: &str = r#"
import os, time

def add(a, b, scale=1):
    print("adding", a, b)
    return {"sum": (a + b) * scale}

class Tools:
    @staticmethod
    def twice(x):
        return x * 2

def boom():
    raise ValueError("bad input")

def leave():
    raise SystemExit(3)

def opaque():
    return object()

def vanish():
    os._exit(7)

def linger():
    print("lingering", flush=True)
    time.sleep(300)
"#;

/// A harness whose `pythonpath` holds the module `td_exec_sample`.
fn python_harness() -> Harness {
    Harness::with(|dir, settings| {
        let modules = dir.join("modules");
        fs::create_dir(&modules).expect("modules dir should be created");
        fs::write(modules.join("td_exec_sample.py"), SAMPLE_MODULE)
            .expect("module should be written");
        settings.pythonpath = vec![modules];
    })
}

#[test]
fn python_returns_the_function_value_and_logs_its_output() {
    if !python_available() {
        return;
    }
    let harness = python_harness();
    let (result, log) = harness.run(
        "python",
        json!({"function": "td_exec_sample:add", "args": [2, 3], "kwargs": {"scale": 10}}),
    );
    assert_eq!(result, Ok(json!({"sum": 50})));
    let tail = log.expect("a log should be recorded").tail;
    assert!(tail.contains("adding 2 3"), "{tail}");
    assert!(!harness.dir.path().join("logs/run-1-1").exists());

    let (result, _) = harness.run(
        "python",
        json!({"function": "td_exec_sample:Tools.twice", "args": [4]}),
    );
    assert_eq!(result, Ok(json!(8)));
}

#[test]
fn python_exceptions_carry_their_traceback() {
    if !python_available() {
        return;
    }
    let harness = python_harness();
    let (result, _) = harness.run("python", json!({"function": "td_exec_sample:boom"}));
    let error = failure(result);
    assert!(error.retryable);
    for expected in ["ValueError: bad input", "Traceback", "td_exec_sample.py"] {
        assert!(error.message.contains(expected), "{}", error.message);
    }
    assert!(!error.message.contains("<string>"), "{}", error.message);

    let (result, _) = harness.run("python", json!({"function": "td_exec_sample:leave"}));
    let message = failure(result).message;
    assert!(message.starts_with("SystemExit: 3"), "{message}");

    let (result, _) = harness.run("python", json!({"function": "td_no_such_module:f"}));
    let message = failure(result).message;
    assert!(message.contains("ModuleNotFoundError"), "{message}");
}

#[test]
fn python_non_serialisable_value_is_an_error() {
    if !python_available() {
        return;
    }
    let harness = python_harness();
    let (result, _) = harness.run("python", json!({"function": "td_exec_sample:opaque"}));
    let message = failure(result).message;
    assert!(message.contains("not JSON-serialisable"), "{message}");
}

#[test]
fn python_exit_without_a_result_names_the_code() {
    if !python_available() {
        return;
    }
    let harness = python_harness();
    let (result, _) = harness.run("python", json!({"function": "td_exec_sample:vanish"}));
    let error = failure(result);
    assert!(error.retryable);
    assert!(
        error
            .message
            .contains("exited with code 7 without writing a result"),
        "{}",
        error.message
    );
}

#[test]
fn python_stops_when_cancelled() {
    if !python_available() {
        return;
    }
    let harness = python_harness();
    let token = CancelToken::new();
    let canceller = cancel_when_logged(
        harness.log_path(),
        "lingering",
        token.clone(),
        StopReason::Shutdown,
    );
    let (result, _) = harness.run_with_token(
        "python",
        json!({"function": "td_exec_sample:linger"}),
        token,
    );
    assert!(canceller.join().expect("canceller should not panic"));
    assert_eq!(failure(result).stop, Some(StopReason::Shutdown));
    assert!(!harness.dir.path().join("logs/run-1-1").exists());
}

#[test]
fn python_bad_function_strings_are_fatal() {
    let harness = Harness::new();
    for function in [
        "no_colon",
        "a:b:c",
        ":f",
        "m:",
        "m:.f",
        "pkg..mod:f",
        "m:f g",
    ] {
        let (result, _) = harness.run("python", json!({"function": function}));
        let error = failure(result);
        assert!(!error.retryable, "{function}: {error:?}");
        assert!(
            error.message.contains("module:Class.method"),
            "{}",
            error.message
        );
    }
}

#[test]
fn python_missing_interpreter_is_fatal() {
    let harness = Harness::with(|_, settings| settings.python = "taskdeck-no-such-python".into());
    let (result, _) = harness.run("python", json!({"function": "m:f"}));
    let error = failure(result);
    assert!(!error.retryable, "{error:?}");
    assert!(
        error.message.contains("taskdeck-no-such-python"),
        "{}",
        error.message
    );
    assert!(error.message.contains("--python"), "{}", error.message);
}

#[test]
fn the_peak_gpu_memory_of_the_group_is_recorded_for_attempts_given_gpus() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let readings = Arc::new(AtomicU64::new(0));
    let groups = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let probe = {
        let readings = Arc::clone(&readings);
        let groups = Arc::clone(&groups);
        super::GpuMemoryProbe(Arc::new(move |group| {
            groups.lock().push(group);
            // 100, 300, 200, 200, ... MB: the peak is 300.
            let n = readings.fetch_add(1, Ordering::SeqCst);
            Some(match n {
                0 => 100,
                1 => 300,
                _ => 200,
            })
        }))
    };
    let harness = Harness::with(|_, settings| settings.gpu_memory_probe = Some(probe));
    let def = harness.registry.get("command").expect("registered");
    let kwargs: Map<String, Value> = json!({ "argv": ["sh", "-c", "sleep 1.2"] })
        .as_object()
        .cloned()
        .expect("object");
    let bound = def.signature.bind(&[], &kwargs).expect("bind");
    let ctx = TaskContext::new(TaskId(1), 1, "test".into(), CancelToken::new()).with_gpus(vec![0]);
    def.call(&ctx, &bound).expect("completes");
    let log = ctx.take_log().expect("a log");
    assert!(readings.load(Ordering::SeqCst) >= 2, "read while it ran");
    assert_eq!(log.gpu_peak_memory_mb, Some(300));
    assert!(
        groups.lock().iter().all(|group| *group > 1),
        "asked about its process group"
    );

    // An attempt given no GPU is not measured.
    readings.store(0, Ordering::SeqCst);
    let (result, log) = harness.run("command", json!({ "argv": ["true"] }));
    result.expect("completes");
    assert_eq!(log.expect("a log").gpu_peak_memory_mb, None);
    assert_eq!(readings.load(Ordering::SeqCst), 0);
}
