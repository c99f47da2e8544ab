//! What a running task sees: its identity, its attempt and a cancellation
//! token it must honour.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::model::{ProgressReport, TaskId, TaskLog};

use super::TaskError;

/// Why a task was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A user cancelled it.
    Cancelled,
    /// The attempt ran past its timeout.
    TimedOut,
    /// The scheduler is shutting down and its grace period ran out.
    Shutdown,
    /// The scheduler was paused with its running tasks stopped; the task
    /// goes back to the queue without counting the attempt.
    Paused,
}

impl StopReason {
    fn code(self) -> u8 {
        match self {
            Self::Cancelled => 1,
            Self::TimedOut => 2,
            Self::Shutdown => 3,
            Self::Paused => 4,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Cancelled),
            2 => Some(Self::TimedOut),
            3 => Some(Self::Shutdown),
            4 => Some(Self::Paused),
            _ => None,
        }
    }
}

/// Cooperative cancellation shared between the scheduler and one attempt.
///
/// Checking it is one atomic load; waiting on it wakes the moment it is
/// cancelled. The first reason given wins.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    reason: AtomicU8,
    lock: Mutex<()>,
    wake: Condvar,
}

impl CancelToken {
    /// A token nobody has cancelled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the task to stop; returns false when it was already asked.
    pub fn cancel(&self, reason: StopReason) -> bool {
        let first = self
            .inner
            .reason
            .compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            // Taking the lock orders this wake after any waiter's check.
            let _guard = self.inner.lock.lock();
            self.inner.wake.notify_all();
        }
        first
    }

    /// Why the task was asked to stop, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        StopReason::from_code(self.inner.reason.load(Ordering::Acquire))
    }

    /// True once the task was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.inner.reason.load(Ordering::Acquire) != 0
    }

    /// Waits up to `timeout` for a stop request; true when one came.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.inner.lock.lock();
        while !self.is_cancelled() {
            if self.inner.wake.wait_until(&mut guard, deadline).timed_out() {
                return self.is_cancelled();
            }
        }
        true
    }
}

/// Handed to a task function for each attempt.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The task's id.
    pub task_id: TaskId,
    /// 1-based number of this attempt.
    pub attempt: u32,
    /// Name of the worker running the attempt.
    pub worker: String,
    /// GPU device ids assigned to the attempt (none when it asked for none).
    pub gpus: Vec<u32>,
    cancel: CancelToken,
    /// What the attempt records as it runs (one allocation per attempt).
    recorded: Arc<Recorded>,
}

/// What an attempt records while it runs.
#[derive(Debug, Default)]
struct Recorded {
    log: Mutex<Option<TaskLog>>,
    progress: Mutex<ProgressState>,
}

/// Where progress reports go (the scheduler, or a worker process's link to
/// it), with the task and attempt that sent them. It must be cheap and must
/// not block for long.
pub type ProgressSink = Arc<dyn Fn(TaskId, u32, ProgressReport) + Send + Sync>;

/// Reports closer together than this are merged, so a task that reports
/// in a tight loop costs the scheduler at most ten updates a second.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// The rate limit of one attempt's progress reports.
#[derive(Default)]
struct ProgressState {
    sink: Option<ProgressSink>,
    last_sent: Option<Instant>,
    /// Reports merged while waiting for the interval.
    pending: Option<ProgressReport>,
}

impl std::fmt::Debug for ProgressState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressState")
            .field("sink", &self.sink.is_some())
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl TaskContext {
    /// A context for one attempt.
    pub fn new(task_id: TaskId, attempt: u32, worker: String, cancel: CancelToken) -> Self {
        Self {
            task_id,
            attempt,
            worker,
            gpus: Vec::new(),
            cancel,
            recorded: Arc::new(Recorded::default()),
        }
    }

    /// The context with progress reports going to `sink`.
    #[must_use]
    pub fn with_progress_sink(self, sink: ProgressSink) -> Self {
        self.recorded.progress.lock().sink = Some(sink);
        self
    }

    /// Reports how far the attempt is: `fraction` from 0 to 1, a short
    /// message, and numeric metrics (`[("loss", 0.31), ("epoch", 3.0)]`).
    /// Reports within [`PROGRESS_EVERY`] of the last one sent are merged
    /// and sent with the next (or when the attempt ends). Refuses a
    /// fraction outside 0-1 and metrics that are not finite.
    pub fn progress(
        &self,
        fraction: Option<f64>,
        message: Option<&str>,
        metrics: &[(&str, f64)],
    ) -> Result<(), String> {
        let metrics = metrics
            .iter()
            .map(|(name, value)| ((*name).to_owned(), *value))
            .collect();
        let report = ProgressReport::new(fraction, message.map(str::to_owned), metrics)?;
        self.report_progress(report);
        Ok(())
    }

    /// Sends a validated report, within the rate limit.
    pub fn report_progress(&self, report: ProgressReport) {
        let mut state = self.recorded.progress.lock();
        let Some(sink) = state.sink.clone() else {
            return;
        };
        let merged = match state.pending.take() {
            Some(mut pending) => {
                let ProgressReport {
                    fraction,
                    message,
                    metrics,
                } = report;
                pending.fraction = fraction.or(pending.fraction);
                pending.message = message.or(pending.message);
                pending.metrics.extend(metrics);
                pending
            }
            None => report,
        };
        let now = Instant::now();
        if state
            .last_sent
            .is_some_and(|last| now.duration_since(last) < PROGRESS_EVERY)
        {
            state.pending = Some(merged);
            return;
        }
        state.last_sent = Some(now);
        drop(state);
        sink(self.task_id, self.attempt, merged);
    }

    /// Sends a report held back by the rate limit once its interval has
    /// passed. [`TaskContext::checkpoint`], [`TaskContext::sleep`] and
    /// [`TaskContext::is_cancelled`] call it, so a task that reports twice
    /// quickly and then works for long still shows its latest report.
    pub fn tick_progress(&self) {
        let due = {
            let state = self.recorded.progress.lock();
            state.pending.is_some()
                && state
                    .last_sent
                    .is_none_or(|last| last.elapsed() >= PROGRESS_EVERY)
        };
        if due {
            self.flush_progress();
        }
    }

    /// Sends a report still held back by the rate limit; called when the
    /// attempt's function returns, before its end is reported.
    pub fn flush_progress(&self) {
        let mut state = self.recorded.progress.lock();
        let (Some(sink), Some(pending)) = (state.sink.clone(), state.pending.take()) else {
            return;
        };
        state.last_sent = Some(Instant::now());
        drop(state);
        sink(self.task_id, self.attempt, pending);
    }

    /// The context with these GPU device ids assigned.
    #[must_use]
    pub fn with_gpus(mut self, gpus: Vec<u32>) -> Self {
        self.gpus = gpus;
        self
    }

    /// `CUDA_VISIBLE_DEVICES` for a process the attempt starts: its device
    /// ids, or empty so that a task that asked for none sees no GPU.
    pub fn cuda_visible_devices(&self) -> String {
        self.gpus
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Records where the attempt's output went (tasks that run a process);
    /// it is kept in the task's record.
    pub fn set_log(&self, log: TaskLog) {
        *self.recorded.log.lock() = Some(log);
    }

    /// The output log the attempt recorded, if any.
    pub fn take_log(&self) -> Option<TaskLog> {
        self.recorded.log.lock().take()
    }

    /// True once the task should stop.
    pub fn is_cancelled(&self) -> bool {
        self.tick_progress();
        self.cancel.is_cancelled()
    }

    /// Returns the stop as an error once the task should stop, so a task can
    /// write `ctx.checkpoint()?` inside its loops.
    pub fn checkpoint(&self) -> Result<(), TaskError> {
        self.tick_progress();
        match self.cancel.reason() {
            None => Ok(()),
            Some(reason) => Err(TaskError::stopped(reason)),
        }
    }

    /// Sleeps for `duration` unless asked to stop first (then returns the
    /// stop as an error).
    pub fn sleep(&self, duration: Duration) -> Result<(), TaskError> {
        self.tick_progress();
        self.cancel.wait_timeout(duration);
        self.checkpoint()
    }

    /// The token itself, for tasks that hand it to helpers.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn first_reason_wins_and_wakes_waiters() {
        let token = CancelToken::new();
        let waiter = {
            let token = token.clone();
            thread::spawn(move || token.wait_timeout(Duration::from_secs(10)))
        };
        assert!(token.cancel(StopReason::TimedOut));
        assert!(!token.cancel(StopReason::Cancelled));
        assert_eq!(waiter.join().ok(), Some(true));
        assert_eq!(token.reason(), Some(StopReason::TimedOut));
    }

    #[test]
    fn wait_times_out_without_cancel() {
        let token = CancelToken::new();
        assert!(!token.wait_timeout(Duration::from_millis(5)));
        assert!(!token.is_cancelled());
    }
}
