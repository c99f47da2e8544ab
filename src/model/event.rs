//! Lifecycle events published by the scheduler to its subscribers.

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::{TaskId, TaskRecord, TaskStatus};

/// What happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The task was accepted (and is durable, with a durable store).
    Submitted,
    /// A worker started an attempt.
    Started,
    /// An attempt failed and the task waits out its backoff before the next one.
    Retrying,
    /// A task that waited (backoff, recovery or a manual retry) is queued again.
    Requeued,
    /// The task finished successfully.
    Completed,
    /// The task failed for good: retries used up or the error was not retryable.
    Failed,
    /// The task was cancelled before or while it ran.
    Cancelled,
    /// A user held the waiting task: it does not start until released.
    Held,
    /// A user released the held task: it may start again.
    Released,
    /// The running task reported progress.
    Progress,
}

/// One lifecycle transition, with the task's record as it stood right after it.
///
/// `seq` grows with every transition of the whole scheduler and is assigned
/// while the transition happens, so a subscriber that keeps its own view can
/// drop an event whose `task.version` is older than the one it already holds:
/// events published from different threads may arrive slightly out of order.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Global transition sequence number.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// The task after the transition.
    pub task: Arc<TaskRecord>,
}

/// A lifecycle transition without the record, for subscribers that read
/// records themselves when they need them (the HTTP event stream). Holding
/// no share of the record, it costs the scheduler nothing after it is sent:
/// a shared record would have to be copied at the task's next transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskChange {
    /// Global transition sequence number, as in [`Event::seq`].
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// The task.
    pub id: TaskId,
    /// Its status after the transition.
    pub status: TaskStatus,
    /// Its record's version after the transition.
    pub version: u64,
}

impl TaskChange {
    /// The change `kind` left `record` in.
    pub fn of(seq: u64, kind: EventKind, record: &TaskRecord) -> Self {
        Self {
            seq,
            kind,
            id: record.id,
            status: record.status,
            version: record.version,
        }
    }
}
