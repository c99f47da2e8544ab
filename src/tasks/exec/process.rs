//! Running one process to its end: its own process group, stdout and stderr
//! copied into the attempt's log file, stop requests turned into SIGTERM and
//! SIGKILL for the whole group, and nothing of the group left behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::progress_file::{PROGRESS_ENV, ProgressFile};
use super::{
    ExecSettings, GPU_MEMORY_EVERY, POLL_INTERVAL, READER_DRAIN_TIMEOUT, TAIL_MAX_BYTES,
    TAIL_MAX_LINES, absolute, file_error,
};
use crate::model::TaskLog;
use crate::tasks::{StopReason, TaskContext, TaskError};

/// How a process run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending {
    /// It exited by itself with this code.
    Exited(i32),
    /// A signal not sent by us killed it.
    Signalled(i32),
    /// We stopped it because the task was asked to stop.
    Stopped(StopReason),
    /// Its status could not be learned; the text says why.
    Unknown(String),
}

impl Ending {
    fn from_status(status: ExitStatus) -> Self {
        if let Some(code) = status.code() {
            return Self::Exited(code);
        }
        #[cfg(unix)]
        if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
            return Self::Signalled(signal);
        }
        Self::Unknown(format!("ended without an exit code ({status})"))
    }
}

/// A process run that is over, with the end of its stderr.
pub(super) struct Finished {
    /// How it ended.
    pub(super) ending: Ending,
    /// The last lines of its stderr.
    pub(super) stderr_tail: String,
}

impl Finished {
    /// The task error for an ending other than success; `detail` follows the
    /// exit code ("exited with code 3{detail}; stderr ...").
    pub(super) fn error(&self, detail: &str) -> TaskError {
        let stderr = if self.stderr_tail.trim().is_empty() {
            "stderr was empty".to_owned()
        } else {
            format!("stderr ends with:\n{}", self.stderr_tail)
        };
        match &self.ending {
            Ending::Stopped(reason) => TaskError::stopped(*reason),
            Ending::Exited(code) => {
                TaskError::retryable(format!("exited with code {code}{detail}; {stderr}"))
            }
            Ending::Signalled(signal) => TaskError::retryable(format!(
                "killed by signal {signal} ({}){detail}; {stderr}",
                signal_name(*signal)
            )),
            Ending::Unknown(why) => TaskError::retryable(format!("{why}{detail}; {stderr}")),
        }
    }
}

/// Runs `command` to its end (or until the task is asked to stop), writes its
/// output to the attempt's log file and records the log in `ctx`. `what`
/// names the program for spawn errors.
pub(super) fn run_process(
    settings: &ExecSettings,
    ctx: &TaskContext,
    mut command: Command,
    what: &str,
) -> Result<Finished, TaskError> {
    fs::create_dir_all(&settings.log_dir).map_err(file_error("create", &settings.log_dir))?;
    let log_path = absolute(&crate::tasks::logfile::log_path(
        &settings.log_dir,
        ctx.task_id,
        ctx.attempt,
    ));
    let file = open_log(&log_path).map_err(file_error("open the log", &log_path))?;
    let mut progress = ProgressFile::create(&settings.log_dir, ctx)
        .map_err(file_error("create the progress file in", &settings.log_dir))?;
    command
        .env(PROGRESS_ENV, absolute(progress.path()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The scheduler's assignment wins over the task's own env: a task
        // sees exactly its GPUs, and one that asked for none sees none.
        .env("CUDA_VISIBLE_DEVICES", ctx.cuda_visible_devices());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    #[cfg(unix)]
    if let Some(mask) = settings.child_umask {
        let mask = mask as libc::mode_t;
        // SAFETY: between fork and exec the child only calls umask, which is
        // async-signal-safe, allocates nothing and cannot fail.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                libc::umask(mask);
                Ok(())
            });
        }
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            // Nothing ran, so the empty log is not worth keeping.
            let _ignored = fs::remove_file(&log_path);
            return Err(TaskError::fatal(format!("cannot start {what}: {error}")));
        }
    };
    let sink = Arc::new(LogSink::new(file, settings.log_cap_bytes));
    let thread_prefix = format!("taskdeck-task-{}", ctx.task_id);
    let readers = match Readers::start(&mut child, &sink, &thread_prefix) {
        Ok(readers) => readers,
        Err(error) => {
            kill_unwatched(&mut child);
            return Err(TaskError::retryable(format!(
                "cannot start an output reader thread: {error}"
            )));
        }
    };
    let mut watch = match ExitWatch::start(child, format!("{thread_prefix}-wait")) {
        Ok(watch) => watch,
        Err(error) => {
            readers.finish();
            return Err(TaskError::retryable(format!(
                "cannot start the waiter thread: {error}"
            )));
        }
    };

    let token = ctx.cancel_token();
    let mut stop: Option<(StopReason, Instant)> = None;
    let mut killed = false;
    // The peak GPU memory of the group, for attempts given GPUs.
    let probe = settings
        .gpu_memory_probe
        .as_ref()
        .filter(|_| !ctx.gpus.is_empty())
        .zip(watch.group_id());
    let mut gpu_peak_memory_mb: Option<u64> = None;
    let mut next_probe = Instant::now();
    let status = loop {
        if let Some((probe, group)) = &probe
            && Instant::now() >= next_probe
        {
            next_probe = Instant::now() + GPU_MEMORY_EVERY;
            if let Some(used) = (probe.0)(*group) {
                gpu_peak_memory_mb = Some(gpu_peak_memory_mb.unwrap_or(0).max(used));
            }
        }
        progress.poll(ctx);
        if let Some(status) = watch.wait(POLL_INTERVAL) {
            break status;
        }
        match stop {
            None => {
                if let Some(reason) = token.reason() {
                    watch.terminate();
                    stop = Some((reason, Instant::now() + settings.kill_grace));
                }
            }
            Some((_, deadline)) if !killed && Instant::now() >= deadline => {
                watch.kill();
                killed = true;
            }
            Some(_) => {}
        }
    };
    watch.finish();
    readers.finish();
    progress.finish(ctx);
    let (bytes, truncated, tail, stderr_tail) = sink.summary();
    ctx.set_log(TaskLog {
        path: log_path.display().to_string(),
        bytes,
        truncated,
        tail,
        gpu_peak_memory_mb,
    });
    let ending = match (stop, status) {
        (Some((reason, _)), _) => Ending::Stopped(reason),
        (None, Ok(status)) => Ending::from_status(status),
        (None, Err(error)) => Ending::Unknown(format!("waiting for {what} failed: {error}")),
    };
    Ok(Finished {
        ending,
        stderr_tail,
    })
}

/// Opens a fresh log file in append mode, which keeps the two readers'
/// writes whole; a file left by an earlier run of the same attempt is replaced.
fn open_log(path: &Path) -> io::Result<File> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Kills a child no waiter thread owns yet and reaps it.
fn kill_unwatched(child: &mut Child) {
    #[cfg(unix)]
    signal_group(group_of(child), libc::SIGKILL);
    #[cfg(not(unix))]
    if let Err(error) = child.kill() {
        tracing::warn!(%error, "could not kill a child process");
    }
    if let Err(error) = child.wait() {
        tracing::warn!(%error, "could not reap a killed child process");
    }
}

/// The output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// Where both reader threads put output: the capped log file and the tails.
/// The file is written without a lock (appends are atomic); the lock guards
/// only the in-memory tails.
struct LogSink {
    file: File,
    cap_bytes: u64,
    reserved: AtomicU64,
    written: AtomicU64,
    truncated: AtomicBool,
    write_failed: AtomicBool,
    tails: Mutex<Tails>,
}

#[derive(Default)]
struct Tails {
    combined: Tail,
    stderr: Tail,
}

impl LogSink {
    fn new(file: File, cap_bytes: u64) -> Self {
        Self {
            file,
            cap_bytes,
            reserved: AtomicU64::new(0),
            written: AtomicU64::new(0),
            truncated: AtomicBool::new(false),
            write_failed: AtomicBool::new(false),
            tails: Mutex::new(Tails::default()),
        }
    }

    fn record(&self, chunk: &[u8], stream: Stream) {
        let allowed = self.reserve(chunk.len());
        if allowed < chunk.len() {
            self.truncated.store(true, Ordering::Relaxed);
        }
        let to_write = chunk.get(..allowed).unwrap_or_default();
        if !to_write.is_empty() && !self.write_failed.load(Ordering::Relaxed) {
            match (&self.file).write_all(to_write) {
                Ok(()) => {
                    self.written
                        .fetch_add(to_write.len() as u64, Ordering::Relaxed);
                }
                Err(error) => {
                    self.truncated.store(true, Ordering::Relaxed);
                    if !self.write_failed.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%error, "could not write a task's log file; dropping the rest of its output");
                    }
                }
            }
        }
        let mut tails = self.tails.lock();
        tails.combined.push(chunk);
        if stream == Stream::Stderr {
            tails.stderr.push(chunk);
        }
    }

    /// Claims up to `wanted` bytes of the cap; returns how many it got.
    fn reserve(&self, wanted: usize) -> usize {
        let wanted = wanted as u64;
        let claim = |used: u64| wanted.min(self.cap_bytes.saturating_sub(used));
        match self
            .reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used + claim(used))
            }) {
            // The claim is at most `wanted`, which came from a usize.
            Ok(used) | Err(used) => usize::try_from(claim(used)).unwrap_or(0),
        }
    }

    /// Bytes written, whether output was dropped, the combined tail and the
    /// stderr tail.
    fn summary(&self) -> (u64, bool, String, String) {
        let tails = self.tails.lock();
        (
            self.written.load(Ordering::Relaxed),
            self.truncated.load(Ordering::Relaxed),
            tails.combined.render(),
            tails.stderr.render(),
        )
    }
}

/// The last bytes of some output, to show how it ended.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    cut: bool,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        // Trimming only past twice the limit keeps pushes amortised O(1).
        if self.bytes.len() > 2 * TAIL_MAX_BYTES {
            let excess = self.bytes.len() - TAIL_MAX_BYTES;
            self.bytes.drain(..excess);
            self.cut = true;
        }
    }

    /// The last lines (at most [`TAIL_MAX_LINES`] and [`TAIL_MAX_BYTES`]),
    /// without a partial first line when the start was cut off.
    fn render(&self) -> String {
        let start = self.bytes.len().saturating_sub(TAIL_MAX_BYTES);
        let mut kept = self.bytes.get(start..).unwrap_or_default();
        if start > 0 || self.cut {
            let after_first_newline = kept
                .iter()
                .position(|byte| *byte == b'\n')
                .and_then(|at| kept.get(at + 1..))
                .filter(|rest| rest.iter().any(|byte| !byte.is_ascii_whitespace()));
            if let Some(rest) = after_first_newline {
                kept = rest;
            }
        }
        let text = String::from_utf8_lossy(kept);
        let lines: Vec<&str> = text.lines().collect();
        let first = lines.len().saturating_sub(TAIL_MAX_LINES);
        lines.get(first..).unwrap_or_default().join("\n")
    }
}

/// The two threads that copy stdout and stderr into the sink.
struct Readers {
    handles: Vec<JoinHandle<()>>,
    /// Disconnects once every reader has ended (each drops its sender).
    done: Receiver<()>,
}

impl Readers {
    fn start(child: &mut Child, sink: &Arc<LogSink>, thread_prefix: &str) -> io::Result<Self> {
        let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
        let mut handles = Vec::with_capacity(2);
        if let Some(pipe) = child.stdout.take() {
            let name = format!("{thread_prefix}-out");
            handles.push(spawn_reader(
                pipe,
                sink,
                Stream::Stdout,
                name,
                done_tx.clone(),
            )?);
        }
        if let Some(pipe) = child.stderr.take() {
            let name = format!("{thread_prefix}-err");
            handles.push(spawn_reader(pipe, sink, Stream::Stderr, name, done_tx)?);
        }
        Ok(Self { handles, done })
    }

    /// Joins the readers once they end; when a process outside the group
    /// still holds a pipe after [`READER_DRAIN_TIMEOUT`], they are left to
    /// finish on their own.
    fn finish(self) {
        let deadline = Instant::now() + READER_DRAIN_TIMEOUT;
        loop {
            match self.done.recv_deadline(deadline) {
                Ok(()) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    tracing::warn!(
                        "a process that left the task's group still holds its output; not waiting for it"
                    );
                    return;
                }
            }
        }
        for handle in self.handles {
            if handle.join().is_err() {
                tracing::warn!("a task output reader panicked");
            }
        }
    }
}

/// Starts a thread that copies `pipe` into `sink` and drops `done` when the
/// pipe closes.
fn spawn_reader(
    mut pipe: impl Read + Send + 'static,
    sink: &Arc<LogSink>,
    stream: Stream,
    name: String,
    done: Sender<()>,
) -> io::Result<JoinHandle<()>> {
    let sink = Arc::clone(sink);
    thread::Builder::new().name(name).spawn(move || {
        let _done = done;
        let mut buffer = [0_u8; 8192];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => sink.record(buffer.get(..read).unwrap_or_default(), stream),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::warn!(%error, ?stream, "could not read a task's output");
                    break;
                }
            }
        }
    })
}

/// Waits for the child on a named thread and signals its process group.
#[cfg(unix)]
struct ExitWatch {
    group: libc::pid_t,
    exits: Receiver<io::Result<ExitStatus>>,
    waiter: JoinHandle<()>,
}

#[cfg(unix)]
impl ExitWatch {
    fn start(mut child: Child, thread_name: String) -> io::Result<Self> {
        let group = group_of(&child);
        let (exit_tx, exits) = crossbeam_channel::bounded(1);
        let spawned = thread::Builder::new().name(thread_name).spawn(move || {
            // The receiver is gone only if the task thread is, and then
            // nobody is left to tell.
            let _unheard = exit_tx.send(child.wait());
        });
        match spawned {
            Ok(waiter) => Ok(Self {
                group,
                exits,
                waiter,
            }),
            Err(error) => {
                // The child was dropped with the closure; kill its group so
                // nothing keeps running (it stays a zombie until we exit).
                signal_group(group, libc::SIGKILL);
                Err(error)
            }
        }
    }

    fn wait(&mut self, timeout: Duration) -> Option<io::Result<ExitStatus>> {
        match self.exits.recv_timeout(timeout) {
            Ok(status) => Some(status),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Err(io::Error::other(
                "the waiter thread ended without an exit status",
            ))),
        }
    }

    fn terminate(&mut self) {
        signal_group(self.group, libc::SIGTERM);
    }

    /// The child's process group id.
    fn group_id(&self) -> Option<u32> {
        u32::try_from(self.group).ok()
    }

    fn kill(&mut self) {
        signal_group(self.group, libc::SIGKILL);
    }

    /// Kills what is left of the group and joins the waiter.
    fn finish(self) {
        signal_group(self.group, libc::SIGKILL);
        if self.waiter.join().is_err() {
            tracing::warn!("a task's waiter thread panicked");
        }
    }
}

/// The process group of a child started with `process_group(0)`.
#[cfg(unix)]
fn group_of(child: &Child) -> libc::pid_t {
    libc::pid_t::try_from(child.id()).expect("a unix process id should fit in pid_t")
}

/// Sends `signal` to every process in the group; a group already gone is fine.
#[cfg(unix)]
fn signal_group(group: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let result = unsafe { libc::kill(-group, signal) };
    if result == -1 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(%error, group, signal, "could not signal a task's process group");
        }
    }
}

/// Without process groups the child itself is polled and killed.
#[cfg(not(unix))]
struct ExitWatch {
    child: Child,
}

#[cfg(not(unix))]
impl ExitWatch {
    fn start(child: Child, _thread_name: String) -> io::Result<Self> {
        Ok(Self { child })
    }

    fn wait(&mut self, timeout: Duration) -> Option<io::Result<ExitStatus>> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(Ok(status)),
            Ok(None) => {
                // A bounded pause between polls; the caller checks the token.
                thread::park_timeout(timeout);
                None
            }
            Err(error) => Some(Err(error)),
        }
    }

    fn terminate(&mut self) {
        self.kill();
    }

    /// No process groups here.
    fn group_id(&self) -> Option<u32> {
        None
    }

    fn kill(&mut self) {
        if let Err(error) = self.child.kill() {
            tracing::warn!(%error, "could not kill a task's process");
        }
    }

    fn finish(self) {}
}

/// A signal's usual name, for error messages.
#[cfg_attr(not(unix), allow(unused_variables))]
fn signal_name(signal: i32) -> &'static str {
    #[cfg(unix)]
    for (number, name) in [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGTERM, "SIGTERM"),
    ] {
        if number == signal {
            return name;
        }
    }
    "unknown signal"
}
