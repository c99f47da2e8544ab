//! What readers get from the scheduler: task queries, worker states, counts
//! and the log line of each transition.

use serde::Serialize;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::{Counts, RemoteWorker, TaskCounter, WorkerId, WorkerSlot};
use super::metrics::MetricsReport;
use crate::model::{EventKind, HostSummary, TaskId, TaskRecord, TaskStatus};

/// Selects and pages tasks; newest first unless `oldest_first`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only tasks in this status.
    pub status: Option<TaskStatus>,
    /// Only tasks with this name.
    pub name: Option<String>,
    /// Matches to skip.
    pub offset: usize,
    /// Most matches to return.
    pub limit: usize,
    /// Order by ascending id.
    pub oldest_first: bool,
}

impl Default for TaskQuery {
    fn default() -> Self {
        Self {
            status: None,
            name: None,
            offset: 0,
            limit: 100,
            oldest_first: false,
        }
    }
}

impl TaskQuery {
    fn matches(&self, record: &TaskRecord) -> bool {
        self.status.is_none_or(|status| record.status == status)
            && self
                .name
                .as_deref()
                .is_none_or(|name| record.spec.name == name)
    }

    /// Applies the query to records given in ascending id order, sharing
    /// the matches (cloning an `Arc` each, never a record), so a caller
    /// holding a lock holds it only for the scan.
    pub fn select<'a>(
        &self,
        records: impl DoubleEndedIterator<Item = &'a Arc<TaskRecord>>,
    ) -> Vec<Arc<TaskRecord>> {
        let pick = |iter: &mut dyn Iterator<Item = &'a Arc<TaskRecord>>| -> Vec<Arc<TaskRecord>> {
            iter.filter(|record| self.matches(record))
                .skip(self.offset)
                .take(self.limit)
                .cloned()
                .collect()
        };
        if self.oldest_first {
            pick(&mut { records })
        } else {
            pick(&mut records.rev())
        }
    }
}

/// Whether a worker runs something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Waiting for a task.
    Idle,
    /// Running a task.
    Busy,
    /// A worker process not heard from for a lease period.
    Silent,
    /// A worker process that said goodbye.
    Stopped,
}

/// Where a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerKind {
    /// A thread of this process's pool.
    Thread,
    /// A worker process reached through the broker.
    Process,
}

/// One worker as readers see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerInfo {
    /// Worker number.
    pub id: u64,
    /// Worker name, as recorded in task records.
    pub name: String,
    /// Idle or busy.
    pub state: WorkerState,
    /// Task it runs.
    pub current_task: Option<TaskId>,
    /// Attempts it finished.
    pub tasks_run: u64,
    /// Attempts of those that failed.
    pub tasks_failed: u64,
    /// Thread of the pool or worker process.
    pub kind: WorkerKind,
    /// Host of a worker process.
    pub host: Option<String>,
    /// Attempts it runs at once.
    pub concurrency: usize,
    /// Every task it runs (a worker process may run several).
    pub running: Vec<TaskId>,
    /// Its host's load, from a worker process's last heartbeat.
    pub resources: Option<HostSummary>,
    /// Milliseconds since a worker process was last heard from.
    pub last_heard_ms: Option<u64>,
    /// Broker messages a worker process refused (unsigned, or signed with
    /// another key) since this scheduler started, as its heartbeats say
    /// (0 for a thread).
    pub refused_messages: u64,
}

impl WorkerInfo {
    pub(super) fn from_slot(id: WorkerId, slot: &WorkerSlot) -> Self {
        Self {
            id,
            name: slot.name.clone(),
            state: if slot.current.is_some() {
                WorkerState::Busy
            } else {
                WorkerState::Idle
            },
            current_task: slot.current,
            tasks_run: slot.tasks_run,
            tasks_failed: slot.tasks_failed,
            kind: WorkerKind::Thread,
            host: None,
            concurrency: 1,
            running: slot.current.into_iter().collect(),
            resources: None,
            last_heard_ms: None,
            refused_messages: 0,
        }
    }

    pub(super) fn from_remote(
        id: WorkerId,
        remote: &RemoteWorker,
        now: Instant,
        lease: Duration,
    ) -> Self {
        let since = remote
            .last_heard
            .map(|at| now.saturating_duration_since(at));
        let state = if remote.gone {
            WorkerState::Stopped
        } else if remote.disconnected || since.is_none_or(|since| since > lease) {
            WorkerState::Silent
        } else if remote.running.is_empty() {
            WorkerState::Idle
        } else {
            WorkerState::Busy
        };
        Self {
            id,
            name: remote.name.clone(),
            state,
            current_task: remote.running.first().copied(),
            tasks_run: remote.tasks_run,
            tasks_failed: remote.tasks_failed,
            kind: WorkerKind::Process,
            host: (!remote.host.is_empty()).then(|| remote.host.clone()),
            concurrency: remote.concurrency,
            running: remote.running.iter().copied().collect(),
            resources: remote.resources.clone(),
            last_heard_ms: since.map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX)),
            refused_messages: remote.refused_messages,
        }
    }
}

/// Tasks held in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    /// Waiting for a worker.
    pub queued: usize,
    /// Being run.
    pub running: usize,
    /// Waiting out a backoff.
    pub retrying: usize,
    /// Finished successfully (within the retention).
    pub completed: usize,
    /// Failed for good (within the retention).
    pub failed: usize,
    /// Cancelled (within the retention).
    pub cancelled: usize,
}

impl StatusCounts {
    pub(super) fn from_array(counts: [usize; TaskStatus::ALL.len()]) -> Self {
        let [queued, running, retrying, completed, failed, cancelled] = counts;
        Self {
            queued,
            running,
            retrying,
            completed,
            failed,
            cancelled,
        }
    }

    /// Count for one status.
    pub fn get(&self, status: TaskStatus) -> usize {
        match status {
            TaskStatus::Queued => self.queued,
            TaskStatus::Running => self.running,
            TaskStatus::Retrying => self.retrying,
            TaskStatus::Completed => self.completed,
            TaskStatus::Failed => self.failed,
            TaskStatus::Cancelled => self.cancelled,
        }
    }
}

/// One task name's lifecycle counters since the process started (see
/// [`Scheduler::totals`](super::Scheduler::totals)); they only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NameTotals {
    /// Task name, or [`OTHER`](super::OTHER) for the names beyond
    /// [`MAX_NAMES`](super::MAX_NAMES).
    pub name: String,
    /// Tasks accepted.
    pub submitted: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Tasks failed for good.
    pub failed: u64,
    /// Failed attempts followed by another, and manual retries.
    pub retried: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Attempts lost with their worker.
    pub lost: u64,
}

impl NameTotals {
    pub(super) fn new(name: &str, counts: Counts) -> Self {
        let [submitted, completed, failed, retried, cancelled, lost] = counts;
        Self {
            name: name.to_owned(),
            submitted,
            completed,
            failed,
            retried,
            cancelled,
            lost,
        }
    }

    /// The value of one counter.
    pub fn get(&self, counter: TaskCounter) -> u64 {
        match counter {
            TaskCounter::Submitted => self.submitted,
            TaskCounter::Completed => self.completed,
            TaskCounter::Failed => self.failed,
            TaskCounter::Retried => self.retried,
            TaskCounter::Cancelled => self.cancelled,
            TaskCounter::Lost => self.lost,
        }
    }
}

/// A snapshot of the scheduler's load and performance.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerStats {
    /// Tasks held by status.
    pub counts: StatusCounts,
    /// Tasks waiting in the queue.
    pub queue_depth: usize,
    /// Live workers.
    pub workers_total: usize,
    /// Workers running a task.
    pub workers_busy: usize,
    /// Workers waiting for a task.
    pub workers_idle: usize,
    /// Workers wanted (differs from total while resizing).
    pub workers_target: usize,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Paused by a user: no task starts.
    pub paused: bool,
    /// Latency percentiles and throughput.
    pub metrics: MetricsReport,
}

fn ms(micros: Option<i64>) -> f64 {
    micros.map_or(0.0, |us| us as f64 / 1_000.0)
}

/// Writes the one log line of a transition: the everyday ones (submitted,
/// started, completed, queued again) at DEBUG, so a busy scheduler's log
/// does not grow by three lines a task at the default level; what a user
/// did (held, released, cancelled) at INFO; failures at WARN.
pub(super) fn log_transition(kind: EventKind, record: &TaskRecord) {
    let task = record.id.0;
    let name = record.spec.name.as_str();
    let attempt = record.attempts;
    let worker = record.worker.as_deref().unwrap_or("-");
    match kind {
        EventKind::Submitted => {
            tracing::debug!(
                task,
                name,
                priority = record.spec.priority,
                "task submitted"
            );
        }
        EventKind::Started => tracing::debug!(
            task,
            name,
            attempt,
            worker,
            queue_wait_ms = ms(record.queue_wait_us()),
            "task started"
        ),
        EventKind::Retrying => tracing::warn!(
            task,
            name,
            attempt,
            worker,
            error = record.failures.last().map_or("", |f| f.message.as_str()),
            retry_in_ms = ms(record.retry_at_us.map(|at| at - crate::model::now_us())),
            "task attempt failed; retrying"
        ),
        EventKind::Requeued => tracing::debug!(task, name, attempt, "task queued again"),
        EventKind::Held => tracing::info!(task, name, "task held"),
        EventKind::Released => tracing::info!(task, name, "task released"),
        EventKind::Progress => tracing::trace!(task, name, "task reported progress"),
        EventKind::Completed => tracing::debug!(
            task,
            name,
            attempt,
            worker,
            run_ms = ms(record.run_time_us()),
            total_ms = ms(record.total_latency_us()),
            "task completed"
        ),
        EventKind::Failed => tracing::warn!(
            task,
            name,
            attempt,
            worker,
            error = record.error.as_deref().unwrap_or(""),
            total_ms = ms(record.total_latency_us()),
            "task failed"
        ),
        EventKind::Cancelled => tracing::info!(
            task,
            name,
            attempt,
            error = record.error.as_deref().unwrap_or(""),
            "task cancelled"
        ),
    }
}
