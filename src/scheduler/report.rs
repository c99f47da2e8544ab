//! What readers get from the scheduler: task queries, worker states, counts
//! and the log line of each transition.

use serde::{Deserialize, Serialize};

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::{Counts, RemoteWorker, TaskCounter, WorkerId, WorkerSlot};
use super::metrics::MetricsReport;
use crate::model::{EventKind, HostSummary, TaskId, TaskRecord, TaskStatus};

/// What a task listing is sorted by; ties go by id, in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskSort {
    /// Task id: submission order.
    #[default]
    Id,
    /// Priority (0-9).
    Priority,
    /// Status, in lifecycle order (queued, running, retrying, completed,
    /// failed, cancelled).
    Status,
    /// Run time: the last attempt's for a finished task, so far for a
    /// running one; tasks that never ran come last either way.
    Duration,
    /// Task name.
    Task,
}

impl TaskSort {
    /// The names `parse` takes, in declaration order.
    pub const NAMES: [&'static str; 5] = ["id", "priority", "status", "duration", "task"];

    /// The sort a name such as `duration` names.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "id" => Some(Self::Id),
            "priority" => Some(Self::Priority),
            "status" => Some(Self::Status),
            "duration" => Some(Self::Duration),
            "task" => Some(Self::Task),
            _ => None,
        }
    }

    /// Orders two records lowest first by this key, then by id; a
    /// duration-less record is after every other whatever the direction,
    /// which is why the direction is applied here.
    fn compare(self, a: &TaskRecord, b: &TaskRecord, descending: bool, now_us: i64) -> Ordering {
        let directed = |ordering: Ordering| {
            if descending {
                ordering.reverse()
            } else {
                ordering
            }
        };
        let by_key = match self {
            Self::Id => Ordering::Equal,
            Self::Priority => a.spec.priority.cmp(&b.spec.priority),
            Self::Status => a.status.index().cmp(&b.status.index()),
            Self::Task => a.spec.name.cmp(&b.spec.name),
            Self::Duration => match (duration_us(a, now_us), duration_us(b, now_us)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => return Ordering::Less,
                (None, Some(_)) => return Ordering::Greater,
                (None, None) => Ordering::Equal,
            },
        };
        directed(by_key.then(a.id.cmp(&b.id)))
    }
}

/// How long a task ran: its last attempt's run time once finished, the
/// time since it started while it runs, none before.
fn duration_us(record: &TaskRecord, now_us: i64) -> Option<i64> {
    record.run_time_us().or_else(|| {
        (record.status == TaskStatus::Running)
            .then_some(record.started_at_us)
            .flatten()
            .map(|started| (now_us - started).max(0))
    })
}

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
    /// Lowest first (by id: oldest first).
    pub oldest_first: bool,
    /// What the tasks are sorted by.
    pub sort: TaskSort,
}

impl Default for TaskQuery {
    fn default() -> Self {
        Self {
            status: None,
            name: None,
            offset: 0,
            limit: 100,
            oldest_first: false,
            sort: TaskSort::Id,
        }
    }
}

impl TaskQuery {
    pub(super) fn matches(&self, record: &TaskRecord) -> bool {
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

    /// The page of `matched` (every match, taken under the lock) in this
    /// query's sort, found without the lock: a partial selection of the
    /// first `offset + limit` (linear), then a sort of those alone, so a
    /// page of 100,000 tasks costs about one pass over them.
    pub fn page_sorted(
        &self,
        mut matched: Vec<Arc<TaskRecord>>,
        now_us: i64,
    ) -> Vec<Arc<TaskRecord>> {
        let descending = !self.oldest_first;
        let order =
            |a: &Arc<TaskRecord>, b: &Arc<TaskRecord>| self.sort.compare(a, b, descending, now_us);
        let end = self.offset.saturating_add(self.limit).min(matched.len());
        if end == 0 || self.offset >= matched.len() {
            return Vec::new();
        }
        if end < matched.len() {
            matched.select_nth_unstable_by(end - 1, order);
            matched.truncate(end);
        }
        matched.sort_unstable_by(order);
        matched.drain(..self.offset);
        matched
    }
}

/// Whether a worker runs something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerKind {
    /// A thread of this process's pool.
    Thread,
    /// A worker process reached through the broker.
    Process,
}

/// One worker as readers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskSpec;

    fn record(id: u64, name: &str, priority: u8, ran_us: Option<i64>) -> Arc<TaskRecord> {
        let mut spec = TaskSpec::new(name, vec![]);
        spec.priority = priority;
        let mut record = TaskRecord::new(TaskId(id), spec, 0);
        if let Some(us) = ran_us {
            record.status = TaskStatus::Completed;
            record.started_at_us = Some(1_000);
            record.finished_at_us = Some(1_000 + us);
        }
        Arc::new(record)
    }

    fn ids(query: &TaskQuery, records: &[Arc<TaskRecord>]) -> Vec<u64> {
        query
            .page_sorted(records.to_vec(), 0)
            .iter()
            .map(|r| r.id.0)
            .collect()
    }

    #[test]
    fn sorted_pages_follow_the_key_then_the_id() {
        let records = [
            record(1, "b", 5, Some(30)),
            record(2, "a", 9, None),
            record(3, "c", 5, Some(10)),
            record(4, "a", 0, Some(20)),
        ];
        let query = |sort, oldest_first, offset, limit| TaskQuery {
            sort,
            oldest_first,
            offset,
            limit,
            ..TaskQuery::default()
        };
        assert_eq!(
            ids(&query(TaskSort::Priority, false, 0, 10), &records),
            [2, 3, 1, 4]
        );
        assert_eq!(
            ids(&query(TaskSort::Priority, true, 0, 10), &records),
            [4, 1, 3, 2]
        );
        assert_eq!(
            ids(&query(TaskSort::Task, true, 0, 10), &records),
            [2, 4, 1, 3]
        );
        // Tasks that never ran come last in both directions.
        assert_eq!(
            ids(&query(TaskSort::Duration, false, 0, 10), &records),
            [1, 4, 3, 2]
        );
        assert_eq!(
            ids(&query(TaskSort::Duration, true, 0, 10), &records),
            [3, 4, 1, 2]
        );
        // Pages are cut from the whole order.
        assert_eq!(
            ids(&query(TaskSort::Duration, true, 1, 2), &records),
            [4, 1]
        );
        assert_eq!(ids(&query(TaskSort::Duration, true, 3, 5), &records), [2]);
        assert!(ids(&query(TaskSort::Duration, true, 4, 5), &records).is_empty());
        assert_eq!(ids(&query(TaskSort::Status, true, 0, 1), &records), [2]);
        assert_eq!(
            TaskSort::NAMES.map(|name| TaskSort::parse(name).is_some()),
            [true; 5]
        );
    }
}
