//! Task identity, submission spec, status and the full record of a task.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Progress;

/// Highest priority; tasks with higher priority run first.
pub const PRIORITY_MAX: u8 = 9;
/// Priority of a task that does not ask for one.
pub const PRIORITY_DEFAULT: u8 = 5;
/// Retries allowed after the first attempt when a task does not say.
pub const RETRIES_DEFAULT: u32 = 3;
/// The queue of a task that names none.
pub const DEFAULT_QUEUE: &str = "default";
/// The longest queue name.
pub const QUEUE_NAME_MAX: usize = 64;

/// Checks a queue name: 1 to [`QUEUE_NAME_MAX`] letters, digits, `_`, `-`
/// or `.`; the error says what is wrong.
pub fn check_queue_name(name: &str) -> Result<(), String> {
    let fine = !name.is_empty()
        && name.len() <= QUEUE_NAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "queue name {name:?} must be 1 to {QUEUE_NAME_MAX} letters, digits, '_', '-' or '.'"
        ))
    }
}

/// Current wall-clock time in microseconds since the Unix epoch.
///
/// Records store wall-clock times so that they mean the same thing after a
/// restart; a clock before 1970 reads as 0.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Monotonic task id, assigned at submission; a higher id was accepted later.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a client asks to run: a registered task name with its arguments and
/// the policy for running it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Registered task name, e.g. `mock_ml_task`.
    pub name: String,
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments, matched to the signature's parameter names.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub kwargs: Map<String, Value>,
    /// 0 to 9; higher runs first.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// Retries allowed after the first failed attempt.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Time allowed for one attempt; none means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// GPUs the task needs; the scheduler assigns device ids when it starts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gpus: u32,
    /// Memory each assigned GPU must have, in MB (checked against the
    /// devices' total memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_mb: Option<u64>,
    /// Not startable before this time (microseconds since the epoch); the
    /// task waits queued until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_us: Option<i64>,
    /// Tasks that must complete before this one may start. At submit an
    /// entry may name an earlier task of the same batch; the scheduler
    /// stores ids only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
    /// What happens when a dependency fails for good or is cancelled.
    #[serde(default, skip_serializing_if = "OnDependencyFailure::is_default")]
    pub on_dependency_failure: OnDependencyFailure,
    /// The queue it belongs to (each has its own limit and pause); none
    /// is [`DEFAULT_QUEUE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

/// A task that a spec depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dependency {
    /// An accepted task, by id.
    Task(TaskId),
    /// An earlier task of the same batch submission, by its position in
    /// the batch (0-based); resolved to an id at submit.
    Batch {
        /// Position in the batch.
        batch_index: usize,
    },
}

/// What a task does when one of its dependencies fails for good or is
/// cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDependencyFailure {
    /// It is cancelled too (and so, in turn, are its own dependents that
    /// cancel), with a reason naming the dependency.
    #[default]
    Cancel,
    /// It runs anyway once every dependency has finished, however it
    /// finished.
    Run,
}

impl OnDependencyFailure {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The lower-case name used in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Run => "run",
        }
    }
}

impl FromStr for OnDependencyFailure {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cancel" => Ok(Self::Cancel),
            "run" => Ok(Self::Run),
            other => Err(format!(
                "unknown dependency failure policy {other:?} (expected cancel or run)"
            )),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_priority() -> u8 {
    PRIORITY_DEFAULT
}

fn default_retries() -> u32 {
    RETRIES_DEFAULT
}

impl TaskSpec {
    /// A spec with default priority, retries and no timeout.
    pub fn new(name: impl Into<String>, args: Vec<Value>) -> Self {
        Self {
            name: name.into(),
            args,
            kwargs: Map::new(),
            priority: PRIORITY_DEFAULT,
            max_retries: RETRIES_DEFAULT,
            timeout_ms: None,
            gpus: 0,
            gpu_memory_mb: None,
            not_before_us: None,
            depends_on: Vec::new(),
            on_dependency_failure: OnDependencyFailure::Cancel,
            queue: None,
        }
    }

    /// The name of its queue.
    pub fn queue_name(&self) -> &str {
        self.queue.as_deref().unwrap_or(DEFAULT_QUEUE)
    }

    /// Puts it in queue `name` (the default queue is kept as none).
    #[must_use]
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.queue = (name != DEFAULT_QUEUE).then_some(name);
        self
    }

    /// Ids of the accepted tasks it depends on (batch positions not yet
    /// resolved are left out).
    pub fn dependency_ids(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.depends_on
            .iter()
            .filter_map(|dependency| match dependency {
                Dependency::Task(id) => Some(*id),
                Dependency::Batch { .. } => None,
            })
    }

    /// Starts only after `id` completed.
    #[must_use]
    pub fn after(mut self, id: TaskId) -> Self {
        self.depends_on.push(Dependency::Task(id));
        self
    }

    /// Starts only after the task at `batch_index` of the same batch
    /// submission completed.
    #[must_use]
    pub fn after_batch(mut self, batch_index: usize) -> Self {
        self.depends_on.push(Dependency::Batch { batch_index });
        self
    }

    /// Sets what happens when a dependency fails for good or is cancelled.
    #[must_use]
    pub fn on_dependency_failure(mut self, policy: OnDependencyFailure) -> Self {
        self.on_dependency_failure = policy;
        self
    }

    /// Keeps the task from starting before `at_us` (microseconds since the
    /// epoch).
    #[must_use]
    pub fn not_before_us(mut self, at_us: i64) -> Self {
        self.not_before_us = Some(at_us);
        self
    }

    /// Asks for this many GPUs.
    #[must_use]
    pub fn gpus(mut self, gpus: u32) -> Self {
        self.gpus = gpus;
        self
    }

    /// Sets the priority (validated at submit).
    #[must_use]
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Sets how many retries follow a failed first attempt.
    #[must_use]
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Sets the time allowed for one attempt.
    #[must_use]
    pub fn timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }

    /// Adds one keyword argument.
    #[must_use]
    pub fn kwarg(mut self, name: impl Into<String>, value: Value) -> Self {
        self.kwargs.insert(name.into(), value);
        self
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting in the queue for a worker.
    Queued,
    /// A worker runs an attempt.
    Running,
    /// An attempt failed; waiting out the backoff before the next one.
    Retrying,
    /// Finished successfully.
    Completed,
    /// Finished unsuccessfully: retries used up or the error was not retryable.
    Failed,
    /// Cancelled before or while running.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Retrying,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// True for statuses a task never leaves by itself.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The lower-case name used in the store, the API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Position in [`TaskStatus::ALL`], for per-status counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of [`TaskStatus::ALL`].
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "unknown task status {0:?} (expected queued, running, retrying, completed, failed or cancelled)"
)]
pub struct UnknownStatus(pub String);

impl FromStr for TaskStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Why an attempt did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The task returned an error.
    Error,
    /// The task panicked.
    Panicked,
    /// The attempt ran past the task's timeout.
    TimedOut,
    /// The process running the attempt stopped (crash or kill) before it finished.
    Lost,
}

/// One failed attempt, kept in the task's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptFailure {
    /// 1-based attempt number.
    pub attempt: u32,
    /// Kind of failure.
    pub kind: FailureKind,
    /// The error message.
    pub message: String,
    /// Worker that ran the attempt, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When the attempt ended, microseconds since the epoch.
    pub at_us: i64,
}

/// Where an attempt's output went: a log file with the process's stdout
/// and stderr, and its last lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLog {
    /// The log file, on the machine that ran the attempt.
    pub path: String,
    /// Bytes written to it (output beyond the cap is dropped).
    pub bytes: u64,
    /// Whether output was dropped at the cap.
    pub truncated: bool,
    /// The last lines of the output.
    pub tail: String,
    /// The most GPU memory the attempt's processes used at once, in MB,
    /// where NVML reports per-process usage (attempts given GPUs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_peak_memory_mb: Option<u64>,
}

/// Everything known about one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Task id.
    pub id: TaskId,
    /// What was submitted.
    pub spec: TaskSpec,
    /// Current status.
    pub status: TaskStatus,
    /// Attempts started so far (including lost ones).
    pub attempts: u32,
    /// Every failed attempt's error, oldest first.
    pub failures: Vec<AttemptFailure>,
    /// When it was accepted, microseconds since the epoch.
    pub submitted_at_us: i64,
    /// When its first attempt started.
    pub first_started_at_us: Option<i64>,
    /// When its latest attempt started.
    pub started_at_us: Option<i64>,
    /// When it reached a final status.
    pub finished_at_us: Option<i64>,
    /// When the next attempt is due while `retrying`.
    pub retry_at_us: Option<i64>,
    /// Worker that ran (or runs) the latest attempt.
    pub worker: Option<String>,
    /// The result of a completed task.
    pub result: Option<Value>,
    /// The final error of a failed or cancelled task.
    pub error: Option<String>,
    /// The output log of the latest attempt, for tasks that run a process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<TaskLog>,
    /// GPU device ids assigned to the latest attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_ids: Vec<u32>,
    /// Held by a user: it stays queued (or retrying) and does not start
    /// until released.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// The dependency whose failure or cancellation cancelled this task
    /// (a retry with cascade queues it again together with that one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<TaskId>,
    /// The latest progress the current (or last) attempt reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Grows with every change to the record; newer versions win in the store
    /// and in subscribers' views.
    pub version: u64,
}

impl TaskRecord {
    /// A freshly accepted, queued task.
    pub fn new(id: TaskId, spec: TaskSpec, submitted_at_us: i64) -> Self {
        Self {
            id,
            spec,
            status: TaskStatus::Queued,
            attempts: 0,
            failures: Vec::new(),
            submitted_at_us,
            first_started_at_us: None,
            started_at_us: None,
            finished_at_us: None,
            retry_at_us: None,
            worker: None,
            result: None,
            error: None,
            log: None,
            gpu_ids: Vec::new(),
            held: false,
            cancelled_by: None,
            progress: None,
            version: 1,
        }
    }

    /// Time from submission to the first attempt's start.
    pub fn queue_wait_us(&self) -> Option<i64> {
        self.first_started_at_us
            .map(|started| (started - self.submitted_at_us).max(0))
    }

    /// Duration of the latest attempt, once the task finished.
    pub fn run_time_us(&self) -> Option<i64> {
        match (self.started_at_us, self.finished_at_us) {
            (Some(started), Some(finished)) => Some((finished - started).max(0)),
            _ => None,
        }
    }

    /// Time from submission to reaching a final status.
    pub fn total_latency_us(&self) -> Option<i64> {
        self.finished_at_us
            .map(|finished| (finished - self.submitted_at_us).max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>().ok(), Some(status));
            assert_eq!(TaskStatus::ALL[status.index()], status);
        }
        assert!("done".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn spec_defaults_apply_when_deserialising() {
        let spec: TaskSpec =
            serde_json::from_str(r#"{"name":"noop"}"#).expect("minimal spec should parse");
        assert_eq!(spec, TaskSpec::new("noop", vec![]));
    }

    #[test]
    fn durations_derive_from_timestamps() {
        let mut record = TaskRecord::new(TaskId(1), TaskSpec::new("noop", vec![]), 1_000);
        assert_eq!(record.queue_wait_us(), None);
        record.first_started_at_us = Some(1_500);
        record.started_at_us = Some(2_000);
        record.finished_at_us = Some(4_000);
        assert_eq!(record.queue_wait_us(), Some(500));
        assert_eq!(record.run_time_us(), Some(2_000));
        assert_eq!(record.total_latency_us(), Some(3_000));
    }
}
