//! Tasks that run external processes: `command` runs a program and `python`
//! calls a function in a Python module through a small runner script.
//!
//! Both share one process runner:
//! - The child gets its own process group, so a stop reaches its children too.
//! - Its stdout and stderr go, as they arrive, into one log file per attempt
//!   (`task-{id}-attempt-{n}.log`), up to a byte cap; the last lines are kept
//!   for the task record.
//! - A stop request (cancel, timeout, shutdown) sends SIGTERM to the group,
//!   waits up to the grace period, then sends SIGKILL.
//! - Once the main child has exited, whatever is left of its group is killed,
//!   so no orphans stay behind.
//!
//! Depends only on [`crate::model`] and the rest of [`crate::tasks`]. The
//! process runner itself is in `process.rs`.

mod process;
mod progress_file;
#[cfg(test)]
mod tests;

use process::{Ending, run_process};

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{BoundArgs, Param, ParamType, Registry, Signature, TaskContext, TaskError};

/// How often the task thread looks at the cancellation token while it waits.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long the output readers may take to finish once the process group is
/// gone; only a process that left the group can keep the pipes open longer.
const READER_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// The tail keeps at most this many bytes of output...
const TAIL_MAX_BYTES: usize = 4096;
/// ...and at most this many lines.
const TAIL_MAX_LINES: usize = 20;
/// How often an attempt with GPUs has its GPU memory read.
const GPU_MEMORY_EVERY: Duration = Duration::from_millis(500);
/// The script the `python` task runs with `python -c`.
const RUNNER_SCRIPT: &str = include_str!("runner.py");

/// Settings for tasks that run a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSettings {
    /// Where the per-attempt log files (`task-{id}-attempt-{n}.log`) and the
    /// `python` task's scratch directories go; created when missing.
    pub log_dir: PathBuf,
    /// Interpreter for `python` tasks, e.g. `python3`.
    pub python: String,
    /// Directories put before the inherited `PYTHONPATH` for `python` tasks.
    pub pythonpath: Vec<PathBuf>,
    /// How long a process may take to exit after SIGTERM before SIGKILL.
    pub kill_grace: Duration,
    /// Most bytes written to one log file; later output is dropped and the
    /// log marked truncated.
    pub log_cap_bytes: u64,
    /// Reads the GPU memory a process group uses, for attempts that were
    /// given GPUs; none where it cannot be read (no NVML).
    pub gpu_memory_probe: Option<GpuMemoryProbe>,
    /// The file mode mask the programs run with, where it differs from this
    /// process's (which keeps its own files private); `None` inherits it.
    pub child_umask: Option<u32>,
}

/// Reads the GPU memory (MB) the processes of one process group use now;
/// none when it cannot tell.
#[derive(Clone)]
pub struct GpuMemoryProbe(pub Arc<dyn Fn(u32) -> Option<u64> + Send + Sync>);

impl std::fmt::Debug for GpuMemoryProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GpuMemoryProbe")
    }
}

impl PartialEq for GpuMemoryProbe {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for GpuMemoryProbe {}

impl ExecSettings {
    /// Defaults: `python3`, no extra `PYTHONPATH`, 5 s grace, 16 MiB logs.
    pub fn new(log_dir: PathBuf) -> Self {
        Self {
            log_dir,
            python: "python3".to_owned(),
            pythonpath: Vec::new(),
            kill_grace: Duration::from_secs(5),
            log_cap_bytes: 16 * 1024 * 1024,
            gpu_memory_probe: None,
            child_umask: None,
        }
    }
}

/// Registers the `command` and `python` tasks as code runners (the HTTP API
/// refuses them unless the server opted in).
pub fn register_exec_tasks(registry: &mut Registry, settings: ExecSettings) {
    let settings = Arc::new(settings);
    let command_settings = Arc::clone(&settings);
    // Nullable parameters are `Any` because defaults are type-checked too;
    // the tasks check their shapes themselves.
    registry.register_code_runner(
        "command",
        "Runs a program: argv is [program, args...], with optional cwd and extra env; \
         shell: true runs argv's one string with sh -c. Output goes to a log file.",
        Signature::new(vec![
            Param::required("argv", ParamType::Array),
            Param::optional("cwd", ParamType::Any, Value::Null),
            Param::optional("env", ParamType::Any, Value::Null),
            Param::optional("shell", ParamType::Bool, json!(false)),
        ]),
        move |ctx, args| run_command(&command_settings, ctx, args),
    );
    registry.register_code_runner(
        "python",
        "Calls a Python function (\"package.module:function\" or \"module:Class.method\") \
         with args and kwargs in a fresh interpreter and returns its JSON result.",
        Signature::new(vec![
            Param::required("function", ParamType::String),
            Param::optional("args", ParamType::Array, json!([])),
            Param::optional("kwargs", ParamType::Object, json!({})),
            Param::optional("cwd", ParamType::Any, Value::Null),
        ]),
        move |ctx, args| run_python(&settings, ctx, args),
    );
}

fn run_command(
    settings: &ExecSettings,
    ctx: &TaskContext,
    args: &BoundArgs,
) -> Result<Value, TaskError> {
    let argv = string_list(args.value("argv")?, "argv")?;
    let shell = args.value("shell")?.as_bool().unwrap_or(false);
    let (mut command, what) = if shell {
        let [script] = argv.as_slice() else {
            return Err(TaskError::fatal(format!(
                "with shell: true, argv must be exactly one string (the shell command), got {} items",
                argv.len()
            )));
        };
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        (command, "shell \"sh\"".to_owned())
    } else {
        let Some((program, rest)) = argv.split_first() else {
            return Err(TaskError::fatal(
                "argv must not be empty: its first item is the program to run",
            ));
        };
        let mut command = Command::new(program);
        command.args(rest);
        (command, format!("program {program:?}"))
    };
    apply_cwd(&mut command, args.value("cwd")?)?;
    for (key, value) in string_map(args.value("env")?, "env")? {
        command.env(key, value);
    }
    let finished = run_process(settings, ctx, command, &what)?;
    match finished.ending {
        Ending::Exited(0) => Ok(json!({ "exit_code": 0 })),
        _ => Err(finished.error("")),
    }
}

fn run_python(
    settings: &ExecSettings,
    ctx: &TaskContext,
    args: &BoundArgs,
) -> Result<Value, TaskError> {
    let function = args.str("function")?;
    check_function(function)?;
    let mut command = Command::new(&settings.python);
    apply_cwd(&mut command, args.value("cwd")?)?;
    if let Some(pythonpath) = python_path(&settings.pythonpath)? {
        command.env("PYTHONPATH", pythonpath);
    }
    let scratch = ScratchDir::create(
        absolute(&settings.log_dir).join(format!("run-{}-{}", ctx.task_id, ctx.attempt)),
    )?;
    let spec_path = scratch.path.join("spec.json");
    let result_path = scratch.path.join("result.json");
    let spec = json!({
        "function": function,
        "args": args.value("args")?,
        "kwargs": args.value("kwargs")?,
    });
    fs::write(&spec_path, spec.to_string()).map_err(file_error("write", &spec_path))?;
    command
        .args(["-u", "-c", RUNNER_SCRIPT])
        .arg(&spec_path)
        .arg(&result_path);
    let what = format!(
        "Python interpreter {:?} (choose another with --python or TASKDECK_PYTHON)",
        settings.python
    );
    let finished = run_process(settings, ctx, command, &what)?;
    if let Ending::Stopped(reason) = finished.ending {
        return Err(TaskError::stopped(reason));
    }
    match read_runner_result(&result_path)? {
        Some(RunnerResult {
            ok: true, value, ..
        }) => Ok(value),
        Some(RunnerResult {
            error, traceback, ..
        }) => Err(TaskError::retryable(
            format!("{error}\n{traceback}").trim_end().to_owned(),
        )),
        None => Err(finished.error(" without writing a result")),
    }
}

/// What the runner script writes to its result file.
#[derive(Debug, Deserialize)]
struct RunnerResult {
    ok: bool,
    #[serde(default)]
    value: Value,
    #[serde(default)]
    error: String,
    #[serde(default)]
    traceback: String,
}

fn read_runner_result(path: &Path) -> Result<Option<RunnerResult>, TaskError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(TaskError::retryable(format!(
                "cannot read the Python result {}: {error}",
                path.display()
            )));
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|error| TaskError::retryable(format!("the Python result is not valid: {error}")))
}

/// Checks `module.path:attr.path`: one colon, no empty or blank segments.
fn check_function(function: &str) -> Result<(), TaskError> {
    let well_formed = function.split_once(':').is_some_and(|(module, attrs)| {
        [module, attrs].iter().all(|dotted| {
            dotted.split('.').all(|part| {
                !part.is_empty() && !part.contains(|c: char| c == ':' || c.is_whitespace())
            })
        })
    });
    if well_formed {
        Ok(())
    } else {
        Err(TaskError::fatal(format!(
            "function must look like \"package.module:function\" or \"module:Class.method\", got {function:?}"
        )))
    }
}

/// The extra `PYTHONPATH` entries (made absolute, so a task's `cwd` does not
/// move them) followed by the inherited ones; none when both are empty.
fn python_path(extra: &[PathBuf]) -> Result<Option<OsString>, TaskError> {
    let inherited = std::env::var_os("PYTHONPATH").unwrap_or_default();
    let entries: Vec<PathBuf> = extra
        .iter()
        .map(|path| absolute(path))
        .chain(std::env::split_paths(&inherited))
        .filter(|path| !path.as_os_str().is_empty())
        .collect();
    if entries.is_empty() {
        return Ok(None);
    }
    std::env::join_paths(entries)
        .map(Some)
        .map_err(|error| TaskError::fatal(format!("cannot build PYTHONPATH: {error}")))
}

/// A per-attempt directory for the runner's spec and result files, removed
/// when dropped.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create(path: PathBuf) -> Result<Self, TaskError> {
        // A leftover from an attempt that died with the process is replaced.
        let _ignored_if_missing = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).map_err(file_error("create", &path))?;
        Ok(Self { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.path) {
            tracing::warn!(%error, path = %self.path.display(), "could not remove a python task's scratch directory");
        }
    }
}

fn string_list(value: &Value, name: &str) -> Result<Vec<String>, TaskError> {
    let Value::Array(items) = value else {
        return Err(TaskError::fatal(format!(
            "{name} must be a list of strings"
        )));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            item.as_str().map(str::to_owned).ok_or_else(|| {
                TaskError::fatal(format!("{name}[{index}] must be a string, got {item}"))
            })
        })
        .collect()
}

fn string_map(value: &Value, name: &str) -> Result<Vec<(String, String)>, TaskError> {
    let map = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Object(map) => map,
        other => {
            return Err(TaskError::fatal(format!(
                "{name} must be an object of strings, got {other}"
            )));
        }
    };
    map.iter()
        .map(|(key, item)| match item.as_str() {
            Some(text) => Ok((key.clone(), text.to_owned())),
            None => Err(TaskError::fatal(format!(
                "{name}.{key} must be a string, got {item}"
            ))),
        })
        .collect()
}

fn apply_cwd(command: &mut Command, cwd: &Value) -> Result<(), TaskError> {
    match cwd {
        Value::Null => Ok(()),
        Value::String(dir) if Path::new(dir).is_dir() => {
            command.current_dir(dir);
            Ok(())
        }
        Value::String(dir) => Err(TaskError::fatal(format!(
            "cwd {dir:?} is not an existing directory"
        ))),
        other => Err(TaskError::fatal(format!(
            "cwd must be a string, got {other}"
        ))),
    }
}

/// Our own files failing (disk full, say) may pass, so the error is retryable.
fn file_error(doing: &str, path: &Path) -> impl FnOnce(io::Error) -> TaskError {
    move |error| TaskError::retryable(format!("cannot {doing} {}: {error}", path.display()))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
