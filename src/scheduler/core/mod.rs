//! The scheduler's owned state and its transitions.
//!
//! Everything here runs under the scheduler's one lock and does no I/O:
//! each transition changes the state and returns what the caller must do
//! after unlocking (log, persist, publish, wake somebody).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde_json::Value;

mod depends;
#[cfg(test)]
mod depends_tests;
mod devices;
#[cfg(test)]
mod gpu_share_tests;
mod intake;
mod place;
mod progress;
mod queues;
#[cfg(test)]
mod queues_tests;
mod ready;
#[cfg(test)]
mod ready_tests;
mod remote;
#[cfg(test)]
mod remote_tests;
mod settle;
mod tally;
#[cfg(test)]
mod tally_tests;
mod waiting;

pub use depends::{check_batch_positions, resolve_batch_positions};
use intake::start_ahead;
pub use place::{Placed, Reclaim, Run};
pub use queues::{QueueInfo, QueueSettings};
pub use ready::Placement;
pub(super) use ready::need_of;
pub use remote::{BrokerRefusals, Heartbeat, RemoteWorker, StopRequest};
pub use tally::{Counts, MAX_NAMES, OTHER, TaskCounter};
pub use waiting::Waiting;

use super::policy::Backoff;
use super::queue::ReadyQueue;
use crate::model::{AttemptFailure, EventKind, FailureKind, TaskId, TaskRecord, TaskStatus};
use crate::store::Retention;
use crate::tasks::{CancelToken, StopReason, TaskError};

/// Identifies a worker thread for its whole life.
pub type WorkerId = u64;

/// The attempt a worker is running.
#[derive(Debug)]
pub struct RunState {
    /// Worker running it.
    pub worker: WorkerId,
    /// Attempt number.
    pub attempt: u32,
    /// Its cancellation token.
    pub cancel: CancelToken,
    /// For a worker process: when the attempt counts as lost unless a
    /// heartbeat renews it.
    pub lease_until: Option<Instant>,
    /// Recovered at start as running on a worker process: its placement
    /// may have been lost with the previous scheduler process.
    pub recovered: bool,
}

/// A task and, while it runs, its attempt.
#[derive(Debug)]
pub struct Entry {
    /// The task's record, shared with transitions still being published,
    /// their events and readers (changed copy-on-write, so none of them
    /// copies it).
    pub record: Arc<TaskRecord>,
    /// Set while an attempt runs.
    pub run: Option<RunState>,
    /// Where its name's lifecycle counters are.
    pub name_slot: tally::NameSlot,
}

impl Entry {
    /// A task that does not run now.
    fn idle(record: Arc<TaskRecord>, name_slot: tally::NameSlot) -> Self {
        Self {
            record,
            run: None,
            name_slot,
        }
    }
}

/// One worker of the pool.
#[derive(Debug, Clone)]
pub struct WorkerSlot {
    /// Thread name.
    pub name: String,
    /// Task it runs, if any.
    pub current: Option<TaskId>,
    /// Attempts it has finished.
    pub tasks_run: u64,
    /// Attempts of those that failed.
    pub tasks_failed: u64,
}

/// A transition to log, persist and publish.
#[derive(Debug)]
pub struct Change {
    /// What happened.
    pub kind: EventKind,
    /// The record right after it.
    pub record: Arc<TaskRecord>,
}

/// An attempt handed to a worker.
#[derive(Debug)]
pub struct Job {
    /// The Started transition (its record carries the spec to run).
    pub started: Change,
    /// Token the attempt must honour.
    pub cancel: CancelToken,
    /// Time allowed.
    pub timeout: Option<Duration>,
}

/// How an attempt ended, as the worker saw it.
#[derive(Debug)]
pub enum AttemptResult {
    /// The task returned a value.
    Completed(Value),
    /// The task returned an error.
    Error(TaskError),
    /// The task panicked with this message.
    Panicked(String),
}

/// What the caller must do after an attempt ended or was ended.
#[derive(Debug, Default)]
pub struct Settled {
    /// The transition, none when the attempt no longer counted.
    pub change: Option<Change>,
    /// When to queue the task again (retrying).
    pub retry_at: Option<(Instant, i64)>,
    /// The task went back to the queue at once.
    pub requeued: bool,
    /// Waiters to wake (the task reached a final status).
    pub waiters: Vec<Sender<TaskId>>,
    /// Run time of the attempt and whether it succeeded, for metrics.
    pub attempt: Option<(bool, i64)>,
    /// Set when the task finished by running: completed?, total latency.
    pub finished: Option<(bool, i64)>,
    /// An attempt on a worker process to stop.
    pub stop: Option<StopRequest>,
    /// Tasks cancelled because a dependency failed or was cancelled, with
    /// their waiters (after `change`, in order).
    pub cascade: Vec<(Change, Vec<Sender<TaskId>>)>,
    /// Tasks whose last dependency just completed: queued, out of the ready
    /// queue until the caller puts them there (after `change` is out).
    pub unblocked: Vec<TaskId>,
}

/// Outcome of a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was waiting and will never run.
    Removed,
    /// It is running and was asked to stop.
    StopRequested,
}

/// Why a cancel or retry request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No such task (or it was dropped by the retention).
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// The task is already finished.
    #[error("task {id} is already {status}")]
    AlreadyFinished {
        /// The task.
        id: TaskId,
        /// Its final status.
        status: TaskStatus,
    },
    /// Only failed or cancelled tasks can be retried.
    #[error("task {id} is {status}; only failed or cancelled tasks can be retried")]
    NotRetryable {
        /// The task.
        id: TaskId,
        /// Its status.
        status: TaskStatus,
    },
    /// The task is running, and only waiting tasks were asked for.
    #[error("task {0} is running; only queued or retrying tasks can be removed")]
    Running(TaskId),
    /// A progress report came from an attempt that is not running now.
    #[error("attempt {attempt} of task {id} is not running")]
    NotRunning {
        /// The task.
        id: TaskId,
        /// The attempt that reported.
        attempt: u32,
    },
    /// Only waiting (queued or retrying) tasks can be held.
    #[error("task {id} is {status}; only queued or retrying tasks can be held")]
    NotWaiting {
        /// The task.
        id: TaskId,
        /// Its status.
        status: TaskStatus,
    },
    /// A dependency failed or was cancelled, so the task would be
    /// cancelled again at once.
    #[error(
        "task {id} depends on task {dependency}, which is {status}; retry task {dependency} \
         with cascade to queue both"
    )]
    DependencyFailed {
        /// The task.
        id: TaskId,
        /// The dependency.
        dependency: TaskId,
        /// Its status.
        status: TaskStatus,
    },
    /// The scheduler is shutting down.
    #[error("the scheduler is shutting down")]
    ShuttingDown,
}

/// The scheduler's state. Only the scheduler module touches it.
#[derive(Debug)]
pub struct Core {
    /// Every known task.
    pub tasks: BTreeMap<TaskId, Entry>,
    /// Queued tasks in run order.
    pub queue: ReadyQueue,
    counts: [usize; TaskStatus::ALL.len()],
    busy: usize,
    finished: VecDeque<(TaskId, i64)>,
    /// Live workers (abandoned ones are removed).
    pub workers: BTreeMap<WorkerId, WorkerSlot>,
    /// Worker processes reached through a broker, by id.
    pub remote: BTreeMap<WorkerId, RemoteWorker>,
    remote_ids: HashMap<String, WorkerId>,
    /// Workers wanted.
    pub target_workers: usize,
    next_worker: WorkerId,
    waiters: HashMap<TaskId, Vec<Sender<TaskId>>>,
    /// Submits are accepted.
    pub accepting: bool,
    /// Workers take queued tasks (false once shutdown began).
    pub dispatching: bool,
    /// A user paused the scheduler: no task starts until it is resumed.
    pub paused: bool,
    retention: Retention,
    backoff: Backoff,
    /// This machine's GPU devices tasks may be given, and who holds them.
    gpus: devices::Devices,
    /// Set when devices came free, so idle workers should look again.
    pub gpus_freed: bool,
    /// Tasks in memory that depend on each task (any status).
    dependents: HashMap<TaskId, Vec<TaskId>>,
    /// Queued tasks that may not start yet: the dependencies each still
    /// waits for.
    unmet: HashMap<TaskId, std::collections::HashSet<TaskId>>,
    /// Named queues: their lanes, settings and counts.
    queues: queues::Queues,
    /// Lifecycle counters by task name since start.
    tally: tally::Tally,
    /// The progress history of each task's recent attempts.
    progress: HashMap<TaskId, progress::Histories>,
    /// Broker messages refused, by the scheduler and its workers.
    pub refused: BrokerRefusals,
}

impl Core {
    /// Empty state.
    pub fn new(target_workers: usize, retention: Retention, backoff: Backoff) -> Self {
        Self {
            tasks: BTreeMap::new(),
            queue: ReadyQueue::new(),
            counts: [0; TaskStatus::ALL.len()],
            busy: 0,
            finished: VecDeque::new(),
            workers: BTreeMap::new(),
            remote: BTreeMap::new(),
            remote_ids: HashMap::new(),
            target_workers,
            next_worker: 0,
            waiters: HashMap::new(),
            accepting: true,
            dispatching: true,
            paused: false,
            retention,
            backoff,
            gpus: devices::Devices::default(),
            gpus_freed: false,
            dependents: HashMap::new(),
            unmet: HashMap::new(),
            queues: queues::Queues::default(),
            tally: tally::Tally::default(),
            progress: HashMap::new(),
            refused: BrokerRefusals::default(),
        }
    }

    /// The GPU devices tasks may be given (all free at start).
    pub fn set_gpus(&mut self, devices: &[GpuDevice]) {
        self.gpus = devices::Devices::new(devices);
    }

    /// Takes a reading of the memory that programs Taskdeck did not start
    /// use on this machine's devices (device id, MB); shares are placed
    /// against what is left.
    pub fn set_gpu_foreign(&mut self, readings: &[(u32, u64)]) {
        if self.gpus.set_foreign(readings) {
            self.gpus_freed = true;
        }
    }

    /// Gives the devices an attempt held back.
    fn free_gpus(&mut self, id: TaskId) {
        if !self.gpus.is_empty() && self.gpus.release(id) {
            self.gpus_freed = true;
        }
    }

    /// Tasks held in each status, indexed by [`TaskStatus::index`].
    pub fn counts(&self) -> [usize; TaskStatus::ALL.len()] {
        self.counts
    }

    /// Every task name's lifecycle counters since start (see [`tally`]).
    pub fn totals(&self) -> Vec<(Arc<str>, Counts)> {
        self.tally.snapshot()
    }

    /// Queued, running and retrying tasks.
    pub fn active(&self) -> usize {
        self.counts[TaskStatus::Queued.index()]
            + self.counts[TaskStatus::Running.index()]
            + self.counts[TaskStatus::Retrying.index()]
    }

    /// Workers running an attempt.
    pub fn busy(&self) -> usize {
        self.busy
    }

    fn set_status(
        counts: &mut [usize; 6],
        queues: &mut queues::Queues,
        record: &mut TaskRecord,
        status: TaskStatus,
    ) {
        counts[record.status.index()] = counts[record.status.index()].saturating_sub(1);
        counts[status.index()] += 1;
        queues.count(&record.spec, record.status, false);
        queues.count(&record.spec, status, true);
        record.status = status;
        record.version += 1;
    }

    /// Registers a new worker slot and returns its id and name.
    pub fn add_worker(&mut self) -> (WorkerId, String) {
        self.next_worker += 1;
        let id = self.next_worker;
        let name = format!("worker-{id}");
        self.workers.insert(
            id,
            WorkerSlot {
                name: name.clone(),
                current: None,
                tasks_run: 0,
                tasks_failed: 0,
            },
        );
        (id, name)
    }

    /// Removes the worker when the pool is larger than wanted (or the worker
    /// was abandoned); true when it should exit.
    pub fn retire_if_surplus(&mut self, worker: WorkerId) -> bool {
        if !self.workers.contains_key(&worker) {
            return true;
        }
        if self.workers.len() > self.target_workers {
            self.workers.remove(&worker);
            return true;
        }
        false
    }

    /// Frees the worker (thread or process) that ran `id`; `counted` when
    /// the attempt counts towards its tally.
    fn release_runner(&mut self, worker: WorkerId, id: TaskId, counted: bool, failed: bool) {
        self.free_gpus(id);
        if let Some(remote) = self.remote.get_mut(&worker) {
            remote.running.remove(&id);
            remote.reclaiming.remove(&id);
            if counted {
                remote.tasks_run += 1;
                remote.tasks_failed += u64::from(failed);
            }
            return;
        }
        if let Some(slot) = self.workers.get_mut(&worker) {
            slot.current = None;
            if counted {
                slot.tasks_run += 1;
                slot.tasks_failed += u64::from(failed);
            }
        }
        self.busy = self.busy.saturating_sub(1);
    }

    /// Whether `worker` is a worker process rather than a thread of the pool.
    pub fn is_remote(&self, worker: WorkerId) -> bool {
        self.remote.contains_key(&worker)
    }

    /// Cancels a waiting task or, when `stop_running`, asks a running one to
    /// stop.
    pub fn cancel(
        &mut self,
        id: TaskId,
        stop_running: bool,
        now_us: i64,
    ) -> Result<(CancelOutcome, Settled), RequestError> {
        let entry = self.tasks.get_mut(&id).ok_or(RequestError::NotFound(id))?;
        let status = entry.record.status;
        match status {
            TaskStatus::Queued | TaskStatus::Retrying => {
                let lane = self.queues.lane_of(&entry.record.spec);
                self.queue.remove(lane, entry.record.spec.priority, id);
                let mut settled = Settled::default();
                let message = format!("cancelled while {status}");
                self.finalize(
                    id,
                    TaskStatus::Cancelled,
                    Some(message),
                    now_us,
                    &mut settled,
                );
                Ok((CancelOutcome::Removed, settled))
            }
            TaskStatus::Running if !stop_running => Err(RequestError::Running(id)),
            TaskStatus::Running => {
                if let Some(run) = &entry.run {
                    run.cancel.cancel(StopReason::Cancelled);
                }
                let settled = Settled {
                    stop: self.remote_stop(id, StopReason::Cancelled),
                    ..Settled::default()
                };
                Ok((CancelOutcome::StopRequested, settled))
            }
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled => {
                Err(RequestError::AlreadyFinished { id, status })
            }
        }
    }

    /// Marks a failed or cancelled task as queued again with a fresh retry
    /// budget; its earlier failures stay in its history. The caller publishes
    /// the change, then calls [`Core::enqueue_if_queued`].
    pub fn retry(&mut self, id: TaskId) -> Result<Change, RequestError> {
        if !self.accepting {
            return Err(RequestError::ShuttingDown);
        }
        let status = self
            .tasks
            .get(&id)
            .ok_or(RequestError::NotFound(id))?
            .record
            .status;
        if !matches!(status, TaskStatus::Failed | TaskStatus::Cancelled) {
            return Err(RequestError::NotRetryable { id, status });
        }
        self.relink_retried(id)?;
        let entry = self.tasks.get_mut(&id).ok_or(RequestError::NotFound(id))?;
        let record = Arc::make_mut(&mut entry.record);
        record.attempts = 0;
        record.result = None;
        record.error = None;
        record.finished_at_us = None;
        record.held = false;
        record.cancelled_by = None;
        Self::set_status(
            &mut self.counts,
            &mut self.queues,
            record,
            TaskStatus::Queued,
        );
        self.tally.add(entry.name_slot, TaskCounter::Retried);
        Ok(Change {
            kind: EventKind::Requeued,
            record: Arc::clone(&entry.record),
        })
    }

    /// Registers a waiter for a task's final status. Returns the record when
    /// it is already final, or none when the task is unknown.
    pub fn add_waiter(
        &mut self,
        id: TaskId,
        waiter: Sender<TaskId>,
    ) -> Option<Result<TaskRecord, ()>> {
        let entry = self.tasks.get(&id)?;
        if entry.record.status.is_final() {
            return Some(Ok(TaskRecord::clone(&entry.record)));
        }
        self.waiters.entry(id).or_default().push(waiter);
        Some(Err(()))
    }

    /// Forgets a waiter that stopped waiting.
    pub fn remove_waiter(&mut self, id: TaskId, waiter: &Sender<TaskId>) {
        if let Some(list) = self.waiters.get_mut(&id) {
            list.retain(|w| !w.same_channel(waiter));
            if list.is_empty() {
                self.waiters.remove(&id);
            }
        }
    }
}

/// One GPU device tasks may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuDevice {
    /// Its id, as CUDA_VISIBLE_DEVICES names it.
    pub id: u32,
    /// Its memory, MB, where known.
    pub memory_mb: Option<u64>,
}

impl GpuDevice {
    /// Whether it has at least `wanted` MB (anything does when nothing is
    /// asked for; a device of unknown memory counts as large enough).
    pub fn has_memory(&self, wanted: Option<u64>) -> bool {
        wanted.is_none_or(|wanted| self.memory_mb.is_none_or(|total| total >= wanted))
    }

    /// Whether a request could ever be met on it: a share only on a device
    /// of known memory at least that large (see the device rules).
    pub fn can_take(&self, need: crate::scheduler::queue::GpuNeed) -> bool {
        match need.share_mb() {
            Some(mb) => self.memory_mb.is_some_and(|total| total >= mb),
            None => self.has_memory(need.memory_mb),
        }
    }
}

fn lost_attempt(record: &TaskRecord, now_us: i64) -> AttemptFailure {
    AttemptFailure {
        attempt: record.attempts,
        kind: FailureKind::Lost,
        message: format!(
            "attempt {} was lost: the scheduler stopped while it ran (crash or kill)",
            record.attempts
        ),
        worker: record.worker.clone(),
        at_us: now_us,
    }
}
