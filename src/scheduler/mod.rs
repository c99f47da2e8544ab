//! The engine: a priority queue that is strict FIFO within a priority, a pool
//! of workers that pull from it, retries with backoff, timeouts,
//! cancellation, metrics and lifecycle events.
//!
//! [`Scheduler`] is the one owner of task state and the handle clients use
//! (the window, the HTTP API, the command line, library users). Which queued
//! task may start is decided in one place, the core's
//! [`Core::next_ready`](self::core::Core::next_ready); who runs it is the
//! [`transport`]'s business: the pool's own threads, or worker processes
//! behind a transport that drives the scheduler through its own
//! [`TransportLink`], which only that transport holds. Depends on
//! [`crate::model`], [`crate::tasks`] and [`crate::store`].

mod control;
mod core;
#[cfg(test)]
mod core_tests;
mod errors;
mod events;
mod gpus;
mod link;
mod metrics;
pub mod policy;
mod progress;
pub mod queue;
mod reads;
mod report;
mod shutdown;
mod start;
mod timer;
mod transport;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

pub use self::core::{
    BrokerRefusals, CancelOutcome, GpuDevice, Heartbeat, MAX_NAMES, OTHER, Placed, QueueInfo,
    QueueSettings, Reclaim, RequestError, Run, StopRequest, TaskCounter, Waiting,
};
pub use control::QueueChange;
pub use errors::{DependencyError, QueueError, StartError, SubmitError};
pub use link::{ExternalDispatch, ExternalHooks, RemoteOutcome, TransportLink, run_attempt};
pub use metrics::{LatencyBuckets, LatencySummary, MetricsReport, NameReport};
pub use policy::Backoff;
pub use report::{
    NameTotals, SchedulerStats, StatusCounts, TaskQuery, TaskSort, WorkerInfo, WorkerKind,
    WorkerState,
};

use self::core::{Change, Core, Settled, WorkerId};
use crate::model::{Event, EventKind, TaskChange, TaskId, TaskRecord, TaskSpec, now_us};
use crate::store::Retention;
pub use crate::store::{Durability, StorageStatus, StoreError};
pub use crate::store::{Recovered, Store};
use crate::tasks::Registry;
use events::EventBus;
pub use events::Waker;
use metrics::Metrics;
use timer::Timer;
use transport::Transport;

/// Where task state is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreMode {
    /// Nothing is persisted; for benchmarks and tests.
    Memory,
    /// An SQLite database file.
    File(PathBuf),
}

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Worker threads.
    pub workers: usize,
    /// Persistence.
    pub store: StoreMode,
    /// What an accepted task survives (with [`StoreMode::File`]).
    pub durability: Durability,
    /// Finished-task history kept.
    pub retention: Retention,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// How long shutdown lets running tasks finish before asking them to stop.
    pub shutdown_grace: Duration,
    /// GPU devices tasks may ask for (found through NVML or declared).
    pub gpus: Vec<GpuDevice>,
}

impl SchedulerConfig {
    /// Defaults (one worker per logical CPU) with the given store.
    pub fn new(store: StoreMode) -> Self {
        Self {
            workers: default_workers(),
            store,
            durability: Durability::default(),
            retention: Retention::default(),
            backoff: Backoff::default(),
            shutdown_grace: Duration::from_secs(10),
            gpus: Vec::new(),
        }
    }

    /// Defaults with nothing persisted.
    pub fn in_memory() -> Self {
        Self::new(StoreMode::Memory)
    }
}

/// One worker per logical CPU (at least one).
pub fn default_workers() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// What shutdown did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Running tasks that did not stop in time and were put back in the queue.
    pub put_back: usize,
    /// Tasks still queued or retrying (they run after the next start).
    pub left_queued: usize,
}

#[derive(Debug, Default)]
struct Threads {
    workers: std::collections::HashMap<WorkerId, JoinHandle<()>>,
    timer: Option<JoinHandle<()>>,
}

/// Shared by the handle, the workers and the timer.
struct Inner {
    core: Mutex<Core>,
    /// Workers wait here for queued tasks.
    work_available: Condvar,
    /// Bumped after every change that may give workers something to run,
    /// so a spinning worker notices without taking the lock.
    work_epoch: AtomicU64,
    /// Set while one idle worker spins; the others park.
    spinning: AtomicBool,
    /// Transitions made under the lock whose follow-up (metrics, events,
    /// waiters) has not been carried out yet; raised under the lock, so
    /// [`Scheduler::wait_idle`] does not report idle before the last
    /// finished task is counted.
    settling: AtomicUsize,
    /// Threads inside [`Scheduler::wait_idle`]; the last follow-up wakes
    /// them (checked with `SeqCst` on both sides, so either the waiter sees
    /// no follow-up left or the settler sees the waiter).
    idle_waiters: AtomicUsize,
    /// Signalled when the pool goes idle, a worker exits or tasks run out.
    state_changed: Condvar,
    registry: Arc<Registry>,
    store: Option<Arc<Store>>,
    events: EventBus,
    metrics: Mutex<Metrics>,
    next_id: AtomicU64,
    seq: AtomicU64,
    accepting: AtomicBool,
    shut_down: AtomicBool,
    timer: Timer,
    threads: Mutex<Threads>,
    exited: (Sender<WorkerId>, Receiver<WorkerId>),
    started: Instant,
    config: SchedulerConfig,
    /// Who takes the tasks that may start.
    transport: Transport,
}

impl Inner {
    fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// Claims the single spinning-worker role; false when another has it.
    fn start_spinning(&self) -> bool {
        self.spinning
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Wakes one idle worker (or all) after queueing work.
    fn signal_work(&self, all: bool) {
        self.work_epoch.fetch_add(1, Ordering::Release);
        self.transport.work();
        if all {
            self.work_available.notify_all();
        } else {
            self.work_available.notify_one();
        }
    }

    /// Logs and publishes a transition (without persisting it).
    fn announce(&self, kind: EventKind, record: &Arc<TaskRecord>) {
        report::log_transition(kind, record);
        if self.events.has_subscribers() {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            self.events.publish(seq, kind, record);
        }
    }

    /// Persists, logs and publishes a transition.
    fn emit(&self, change: Change) {
        if let Some(store) = &self.store {
            store.save(&change.record);
        }
        self.announce(change.kind, &change.record);
    }

    /// Runs a transition under the lock, then carries out what it asks for
    /// after unlocking.
    fn settle(&self, transition: impl FnOnce(&mut Core) -> Option<Settled>) {
        let (settled, quiet, gpus_freed) = {
            let mut core = self.core.lock();
            let settled = transition(&mut core);
            if settled.is_some() {
                self.settling.fetch_add(1, Ordering::SeqCst);
            }
            let gpus_freed = std::mem::take(&mut core.gpus_freed);
            (settled, core.active() == 0 || core.busy() == 0, gpus_freed)
        };
        let mut last_follow_up = false;
        if let Some(settled) = settled {
            self.apply(settled);
            last_follow_up = self.settling.fetch_sub(1, Ordering::SeqCst) == 1
                && self.idle_waiters.load(Ordering::SeqCst) > 0;
        }
        if gpus_freed {
            // A task waiting for devices may fit now.
            self.signal_work(true);
        }
        if quiet || last_follow_up {
            // Through the lock, so a waiter that has just seen work left is
            // already waiting when it is woken.
            drop(self.core.lock());
            self.state_changed.notify_all();
        }
    }

    /// Arms the timer for tasks that wait for their start time (`at_us`,
    /// microseconds since the epoch).
    fn delay_starts(&self, delayed: &[(TaskId, i64)]) {
        if delayed.is_empty() {
            return;
        }
        let (now, now_us) = (Instant::now(), now_us());
        for (id, at_us) in delayed {
            let ahead = u64::try_from(at_us.saturating_sub(now_us)).unwrap_or(0);
            self.timer.start(*id, now + Duration::from_micros(ahead));
        }
    }

    /// Puts a queued task whose change is out in the ready queue, or arms
    /// the timer when its start time is still ahead (a delayed task
    /// retried or released before its time).
    fn make_ready(&self, id: TaskId) {
        self.make_ready_all(&[id]);
    }

    /// [`Inner::make_ready`] for several tasks, a few hundred per turn of
    /// the lock, waking workers after each turn (so the first of a wide
    /// fan-out starts before the last is queued).
    fn make_ready_all(&self, ids: &[TaskId]) {
        for chunk in ids.chunks(READY_CHUNK) {
            let now_us = now_us();
            let (mut delayed, mut queued) = (Vec::new(), 0_usize);
            {
                let mut core = self.core.lock();
                for &id in chunk {
                    if let Some(at_us) = core.start_ahead(id, now_us) {
                        delayed.push((id, at_us));
                    } else if core.enqueue_if_queued(id) {
                        queued += 1;
                    }
                }
            }
            self.delay_starts(&delayed);
            if queued > 0 {
                self.signal_work(queued > 1);
            }
        }
    }

    /// Carries out what a settled attempt or cancel asks for.
    fn apply(&self, settled: Settled) {
        let Settled {
            change,
            retry_at,
            requeued,
            waiters,
            attempt,
            finished,
            stop,
            cascade,
            unblocked,
        } = settled;
        if let Some(stop) = stop {
            self.transport.stop(stop);
        }
        let Some(change) = change else {
            return;
        };
        let id = change.record.id;
        if attempt.is_some() || finished.is_some() {
            let name = change.record.spec.name.as_str();
            let mut metrics = self.metrics.lock();
            if let Some((succeeded, run_time_us)) = attempt {
                metrics.record_attempt(name, succeeded, run_time_us);
            }
            if let Some((completed, latency_us)) = finished {
                metrics.record_finished(name, completed, latency_us, Instant::now());
            }
        }
        self.emit(change);
        for waiter in waiters {
            // A waiter that gave up has dropped its receiver, and a full
            // channel already holds a wake-up: nothing to do either way.
            let _ = waiter.try_send(id);
        }
        for (change, waiters) in cascade {
            let id = change.record.id;
            self.emit(change);
            for waiter in waiters {
                let _ = waiter.try_send(id);
            }
        }
        if let Some((due, retry_at_us)) = retry_at {
            self.timer.retry(id, due, retry_at_us);
        }
        if requeued {
            self.signal_work(false);
        }
        self.make_ready_all(&unblocked);
    }
}

/// Result of [`Scheduler::watch`].
#[derive(Debug, Clone)]
pub enum Watch {
    /// The task already is final.
    Finished(Box<TaskRecord>),
    /// The channel will get the task's id when it is.
    Registered,
}

/// Handle to a running scheduler. Cheap to clone; every clone drives the
/// same engine. Call [`Scheduler::shutdown`] once to stop it.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// The registered task types.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The registry, shared (for a worker embedded in this process).
    pub fn registry_handle(&self) -> Arc<Registry> {
        Arc::clone(&self.inner.registry)
    }

    /// In distributed mode, whether the transport takes submits now (the
    /// error says why not); none when the pool's threads run the tasks.
    pub fn transport_status(&self) -> Option<Result<(), String>> {
        self.inner.transport.status()
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &SchedulerConfig {
        &self.inner.config
    }

    /// Accepts one task. With a durable store it returns once the task is
    /// committed to disk.
    pub fn submit(&self, spec: TaskSpec) -> Result<TaskId, SubmitError> {
        let ids = self.submit_batch(vec![spec])?;
        ids.first().copied().ok_or(SubmitError::ShuttingDown)
    }

    /// Accepts several tasks at once, all or none, in one durable commit.
    /// They get consecutive ids in the order given.
    pub fn submit_batch(&self, specs: Vec<TaskSpec>) -> Result<Vec<TaskId>, SubmitError> {
        if !self.inner.accepting.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        self.inner
            .transport
            .ready()
            .map_err(SubmitError::Unavailable)?;
        let batch = specs.len() > 1;
        for (index, spec) in specs.iter().enumerate() {
            self.inner
                .registry
                .validate(spec)
                .and_then(|_| self.check_gpus(spec))
                .map_err(|source| SubmitError::Invalid {
                    index: batch.then_some(index),
                    source,
                })?;
        }
        let dependencies = specs.iter().any(|spec| !spec.depends_on.is_empty());
        if dependencies {
            core::check_batch_positions(&specs).map_err(|(index, source)| {
                SubmitError::Dependency {
                    index: batch.then_some(index),
                    source,
                }
            })?;
        }
        let mut specs = specs;
        let count = specs.len() as u64;
        let first = self.inner.next_id.fetch_add(count, Ordering::Relaxed);
        if dependencies {
            core::resolve_batch_positions(&mut specs, TaskId(first));
            self.inner
                .core
                .lock()
                .check_dependencies(&specs, TaskId(first))
                .map_err(|(index, source)| SubmitError::Dependency {
                    index: batch.then_some(index),
                    source,
                })?;
        }
        let now = now_us();
        let records: Vec<Arc<TaskRecord>> = specs
            .into_iter()
            .zip(first..)
            .map(|(spec, id)| Arc::new(TaskRecord::new(TaskId(id), spec, now)))
            .collect();
        if let Some(store) = &self.inner.store {
            store.insert(
                records
                    .iter()
                    .map(|record| TaskRecord::clone(record))
                    .collect(),
            )?;
        }
        for record in &records {
            self.inner.announce(EventKind::Submitted, record);
        }
        let ids: Vec<TaskId> = records.iter().map(|r| r.id).collect();
        let inserted = self.inner.core.lock().insert_queued(records, now);
        self.inner.delay_starts(&inserted.delayed);
        for (change, _) in inserted.cancelled {
            self.inner.emit(change);
        }
        self.inner.signal_work(batch);
        Ok(ids)
    }

    /// Cancels a queued or retrying task (it never runs) or asks a running
    /// one to stop.
    pub fn cancel(&self, id: TaskId) -> Result<CancelOutcome, RequestError> {
        self.cancel_inner(id, true)
    }

    /// Removes a queued or retrying task from the queue (it never runs);
    /// a running task is left alone ([`RequestError::Running`]).
    pub fn remove(&self, id: TaskId) -> Result<(), RequestError> {
        self.cancel_inner(id, false).map(|_| ())
    }

    fn cancel_inner(&self, id: TaskId, stop_running: bool) -> Result<CancelOutcome, RequestError> {
        let mut outcome = Err(RequestError::NotFound(id));
        self.inner
            .settle(|core| match core.cancel(id, stop_running, now_us()) {
                Ok((done, settled)) => {
                    outcome = Ok(done);
                    Some(settled)
                }
                Err(error) => {
                    outcome = Err(error);
                    None
                }
            });
        outcome
    }

    /// Queues a failed or cancelled task again with a fresh retry budget
    /// (it waits again for dependencies not yet completed). Refused when a
    /// dependency failed; retry that one with cascade instead.
    pub fn retry(&self, id: TaskId) -> Result<(), RequestError> {
        self.retry_cascade(id, false).map(|_| ())
    }

    /// Like [`Scheduler::retry`]; with `cascade`, also queues again the
    /// dependents (and theirs) that its failure cancelled. Returns the ids
    /// queued again, `id` first.
    pub fn retry_cascade(&self, id: TaskId, cascade: bool) -> Result<Vec<TaskId>, RequestError> {
        let changes = self.inner.core.lock().retry_tasks(id, cascade)?;
        let ids: Vec<TaskId> = changes.iter().map(|change| change.record.id).collect();
        for change in changes {
            self.inner.emit(change);
        }
        self.inner.make_ready_all(&ids);
        Ok(ids)
    }

    /// Waits until the task reaches a final status or `timeout` passes, and
    /// returns its record as it then stands; none for an unknown id.
    pub fn wait(&self, id: TaskId, timeout: Duration) -> Option<TaskRecord> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        match self.watch(id, &tx)? {
            Watch::Finished(record) => return Some(*record),
            Watch::Registered => {}
        }
        // A completion right behind the submit is common: spin briefly
        // before parking. Either a wake-up or the timeout; the record says
        // which.
        if !worker::spin_until(WAIT_SPIN.min(timeout), || !rx.is_empty()) {
            let _ = rx.recv_timeout(timeout);
        }
        self.unwatch(id, &tx);
        self.task(id)
    }

    /// Asks for the task's id on `notify` the moment it reaches a final
    /// status (once). Returns the record instead when it already is final,
    /// and none for an unknown id. Many watches may share one channel; see
    /// [`Scheduler::unwatch`].
    pub fn watch(&self, id: TaskId, notify: &Sender<TaskId>) -> Option<Watch> {
        let mut core = self.inner.core.lock();
        match core.add_waiter(id, notify.clone())? {
            Ok(record) => Some(Watch::Finished(Box::new(record))),
            Err(()) => Some(Watch::Registered),
        }
    }

    /// Forgets the watches of `id` that notify on this channel.
    pub fn unwatch(&self, id: TaskId, notify: &Sender<TaskId>) {
        self.inner.core.lock().remove_waiter(id, notify);
    }

    /// Waits until no task is queued, running or retrying; false on timeout.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let inner = &self.inner;
        let busy = |core: &Core| core.active() > 0 || inner.settling.load(Ordering::SeqCst) > 0;
        inner.idle_waiters.fetch_add(1, Ordering::SeqCst);
        let mut core = inner.core.lock();
        let mut idle = true;
        while busy(&core) {
            if inner
                .state_changed
                .wait_until(&mut core, deadline)
                .timed_out()
            {
                idle = !busy(&core);
                break;
            }
        }
        drop(core);
        inner.idle_waiters.fetch_sub(1, Ordering::SeqCst);
        idle
    }

    /// A receiver of every lifecycle event from now on.
    pub fn subscribe(&self) -> Receiver<Event> {
        self.inner.events.subscribe(None)
    }

    /// A receiver of every transition from now on, without the records (see
    /// [`TaskChange`]): for subscribers that read the records they need.
    pub fn subscribe_changes(&self) -> Receiver<TaskChange> {
        self.inner.events.subscribe_changes()
    }

    /// Like [`Scheduler::subscribe`], calling `waker` after each event sent
    /// (cheap and non-blocking, e.g. a flag plus a repaint request).
    pub fn subscribe_with_waker(&self, waker: Waker) -> Receiver<Event> {
        self.inner.events.subscribe(Some(waker))
    }

    /// Changes the number of workers while running. Surplus workers finish
    /// their current task first. In distributed mode this sizes the worker
    /// process embedded in this one.
    pub fn set_workers(&self, workers: usize) {
        if self.inner.is_shut_down() {
            return;
        }
        if self.inner.transport.resize(workers) {
            return;
        }
        self.inner.core.lock().target_workers = workers;
        worker::ensure_workers(&self.inner);
        self.inner.signal_work(true);
    }
}

/// Tasks made ready per turn of the lock (see [`Inner::make_ready_all`]).
const READY_CHUNK: usize = 256;

/// How long [`Scheduler::wait`] spins before parking.
const WAIT_SPIN: Duration = Duration::from_micros(50);
