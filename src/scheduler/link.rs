//! The transport's side of the scheduler: a [`TransportLink`] is handed
//! only to the transport that started the scheduler
//! ([`Scheduler::start_external`]); through it the transport takes tasks
//! for publishing, and worker processes claim, report and finish attempts.
//! The client-facing [`Scheduler`] handle has none of these methods, and
//! the scheduler stays the one owner of task state.
//!
//! This module knows nothing of the transport; it defines the hooks the
//! transport gives the scheduler ([`ExternalHooks`]) and the calls it makes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::core::{AttemptResult, Settled};
pub use super::core::{Denial, Grant, Heartbeat, StopRequest};
use super::transport::Transport;
use super::{Inner, Scheduler};
use crate::model::TaskSpec;
use crate::model::{TaskId, TaskLog, TaskRecord, now_us};
use crate::tasks::{Registry, TaskContext, TaskError};

/// Settings and hooks of dispatch through a transport.
#[derive(Clone)]
pub struct ExternalDispatch {
    /// How long an attempt stays owned by its worker without a heartbeat.
    pub lease: Duration,
    /// How long a submit waits for the transport to confirm its tasks.
    pub publish_wait: Duration,
    /// The transport's side.
    pub hooks: Arc<dyn ExternalHooks>,
}

impl std::fmt::Debug for ExternalDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalDispatch")
            .field("lease", &self.lease)
            .field("publish_wait", &self.publish_wait)
            .finish_non_exhaustive()
    }
}

/// What the scheduler asks of the transport. Calls must not block: they are
/// made from the scheduler's threads and the callers of its handle.
pub trait ExternalHooks: Send + Sync {
    /// Whether submits can be confirmed now; the error says why not (with
    /// no credentials in it).
    fn ready(&self) -> Result<(), String>;
    /// Asks the worker running an attempt to stop it.
    fn stop(&self, request: StopRequest);
    /// The pool size was changed (the transport may run a local worker).
    fn resize(&self, workers: usize);
    /// Slots of the local worker process (0 when there is none).
    fn local_workers(&self) -> usize;
}

/// How an attempt on a worker process ended, as it reports it.
#[derive(Debug, Clone)]
pub enum RemoteOutcome {
    /// The task returned this value.
    Completed(serde_json::Value),
    /// The task returned an error.
    Error(TaskError),
    /// The task panicked with this message.
    Panicked(String),
}

impl From<RemoteOutcome> for AttemptResult {
    fn from(outcome: RemoteOutcome) -> Self {
        match outcome {
            RemoteOutcome::Completed(value) => Self::Completed(value),
            RemoteOutcome::Error(error) => Self::Error(error),
            RemoteOutcome::Panicked(message) => Self::Panicked(message),
        }
    }
}

/// Waits of submits for their tasks to be published, shared with the core.
#[derive(Debug)]
pub(super) struct PublishWait {
    remaining: std::sync::atomic::AtomicUsize,
    done: crossbeam_channel::Sender<()>,
}

impl PublishWait {
    pub(super) fn new(count: usize) -> (Arc<Self>, crossbeam_channel::Receiver<()>) {
        let (done, rx) = crossbeam_channel::bounded(1);
        let wait = Arc::new(Self {
            remaining: std::sync::atomic::AtomicUsize::new(count),
            done,
        });
        (wait, rx)
    }

    fn one_done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.done.try_send(());
        }
    }
}

/// The transport's handle on the scheduler. Cheap to clone; it exists only
/// in distributed mode and only the transport holds it.
#[derive(Clone)]
pub struct TransportLink {
    inner: Arc<Inner>,
    lease: Duration,
}

impl std::fmt::Debug for TransportLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportLink")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Starts a scheduler whose tasks run on worker processes reached
    /// through a transport, like [`Scheduler::start_with_store`]. Returns
    /// the client-facing handle and the link the transport drives it with.
    pub fn start_external(
        config: super::SchedulerConfig,
        registry: Registry,
        opened: Option<(Arc<crate::store::Store>, crate::store::Recovered)>,
        external: ExternalDispatch,
    ) -> Result<(Self, TransportLink), super::StartError> {
        let lease = external.lease;
        let scheduler = Self::launch(config, registry, opened, Transport::External(external))?;
        let link = TransportLink {
            inner: Arc::clone(&scheduler.inner),
            lease,
        };
        Ok((scheduler, link))
    }
}

impl TransportLink {
    /// Takes up to `max` tasks that may start, for publishing, in run order,
    /// waiting up to `timeout` for one. Each stays queued until a claim is
    /// granted; report the outcome with [`TransportLink::published`] or
    /// [`TransportLink::unpublish`].
    pub fn take_for_publishing(&self, max: usize, timeout: Duration) -> Vec<Arc<TaskRecord>> {
        let deadline = Instant::now() + timeout;
        let mut core = self.inner.core.lock();
        loop {
            let taken = core.take_for_publishing(max);
            if !taken.is_empty() || self.inner.is_shut_down() {
                return taken;
            }
            if self
                .inner
                .work_available
                .wait_until(&mut core, deadline)
                .timed_out()
            {
                return core.take_for_publishing(max);
            }
        }
    }

    /// The transport confirmed these tasks: their submits may return.
    pub fn published(&self, ids: &[TaskId]) {
        self.inner.confirmed(ids);
    }

    /// Publishing failed: the tasks go back to the ready queue, to be taken
    /// again once the transport is back.
    pub fn unpublish(&self, ids: &[TaskId]) {
        let requeued = self.inner.core.lock().unpublish(ids);
        if requeued > 0 {
            tracing::debug!(requeued, "tasks wait for the broker to come back");
        }
    }

    /// Decides a worker's claim of a delivered task (with the device ids it
    /// set aside, for a GPU task); see the core's rules.
    pub fn claim(&self, worker: &str, id: TaskId, gpu_ids: Vec<u32>) -> Result<Grant, Denial> {
        let lease = self.lease;
        let claimed =
            self.inner
                .core
                .lock()
                .claim(worker, id, gpu_ids, lease, Instant::now(), now_us());
        let (grant, started) = claimed?;
        if let Some(started) = started {
            if let Some(timeout) = grant.timeout {
                self.inner
                    .timer
                    .deadline(id, grant.attempt, Instant::now() + timeout);
            }
            self.inner.emit(started);
        }
        Ok(grant)
    }

    /// Takes a worker's heartbeat; returns attempts it runs that are no
    /// longer its own (the transport asks it to stop them).
    pub fn heartbeat(&self, beat: &Heartbeat) -> Vec<StopRequest> {
        let lease = self.lease;
        self.inner
            .core
            .lock()
            .heartbeat(beat, lease, Instant::now())
    }

    /// Applies the end of an attempt a worker reports (with its output log,
    /// for tasks that run a process). A report of an
    /// attempt that no longer counts (lost, timed out, stopped) changes
    /// nothing.
    pub fn finish(
        &self,
        worker: &str,
        id: TaskId,
        attempt: u32,
        outcome: RemoteOutcome,
        log: Option<TaskLog>,
        run_time_us: i64,
    ) {
        self.inner.settle(|core| {
            Some(core.finish_remote(
                worker,
                id,
                attempt,
                outcome.into(),
                log,
                run_time_us,
                Instant::now(),
                now_us(),
            ))
        });
    }

    /// A worker hands back an attempt it will not run to its end; the task
    /// is queued again without counting the attempt.
    pub fn release(&self, worker: &str, id: TaskId, attempt: u32) {
        self.inner
            .settle(|core| Some(core.release_remote(worker, id, attempt)));
    }

    /// A worker process is stopping; attempts it still holds (granted after
    /// it stopped taking tasks) are queued again without counting.
    pub fn worker_gone(&self, worker: &str) {
        let settled = self.inner.core.lock().remote_gone(worker, Instant::now());
        self.apply_all(settled);
    }

    /// The broker reports that a worker's connection `session` closed
    /// without a goodbye: its attempts are lost unless it is heard from
    /// within `grace` (call [`TransportLink::expire_leases`] then). Returns
    /// how many attempts wait for it.
    pub fn connection_lost(&self, worker: &str, session: u64, grace: Duration) -> usize {
        self.inner
            .core
            .lock()
            .connection_lost(worker, session, grace, Instant::now())
    }

    /// Restarts every running attempt's lease from now; the transport calls
    /// it when it (re)connects, as heartbeats could not arrive before.
    pub fn renew_all_leases(&self) {
        let until = Instant::now() + self.lease;
        self.inner.core.lock().renew_all_leases(until);
    }

    /// Counts attempts whose lease ran out as lost (retried by the retry
    /// policy) and asks their workers to stop them; returns how many.
    pub fn expire_leases(&self) -> usize {
        let settled = self
            .inner
            .core
            .lock()
            .expire_leases(Instant::now(), now_us());
        let count = settled.len();
        self.apply_all(settled);
        count
    }

    fn apply_all(&self, settled: Vec<Settled>) {
        for one in settled {
            self.inner.apply(one);
        }
        self.inner.state_changed.notify_all();
    }

    /// Commits every change made so far to the store (a no-op in memory);
    /// the transport calls it before acknowledging the messages it applied.
    pub fn flush(&self) -> Result<(), crate::store::StoreError> {
        match &self.inner.store {
            Some(store) => store.flush(),
            None => Ok(()),
        }
    }
}

impl Inner {
    /// Registers a submit's wait for the transport to confirm the tasks
    /// it publishes now (accepted at `now_us`: a task that waits for its
    /// start time is published then, and while the scheduler is paused
    /// nothing is, so the submit does not wait for those);
    /// none when nothing needs confirming. Returns how long to wait, and
    /// the tasks waited for.
    pub(super) fn publish_wait(
        &self,
        records: &[Arc<TaskRecord>],
        now_us: i64,
    ) -> Option<(crossbeam_channel::Receiver<()>, Duration, Vec<TaskId>)> {
        let waited = self.transport.confirm_wait()?;
        if self.core.lock().paused {
            // Nothing is published while paused; the store has the tasks.
            return None;
        }
        let ids: Vec<TaskId> = records
            .iter()
            .filter(|record| !super::core::starts_later(&record.spec, now_us))
            .map(|record| record.id)
            .collect();
        if ids.is_empty() {
            return None;
        }
        let (wait, rx) = PublishWait::new(ids.len());
        let mut all = self.publish_waits.lock();
        for id in &ids {
            all.insert(*id, Arc::clone(&wait));
        }
        drop(all);
        Some((rx, waited, ids))
    }

    /// The transport confirmed these tasks (or a submit stopped waiting for
    /// them): their submits may return.
    pub(super) fn confirmed(&self, ids: &[TaskId]) {
        let waits: Vec<Arc<PublishWait>> = {
            let mut all = self.publish_waits.lock();
            if all.is_empty() {
                return;
            }
            ids.iter().filter_map(|id| all.remove(id)).collect()
        };
        for wait in waits {
            wait.one_done();
        }
    }
}

/// Runs one attempt of `spec` in the calling thread, as the pool's threads
/// do (a panic becomes [`RemoteOutcome::Panicked`]); for worker processes.
pub fn run_attempt(registry: &Registry, ctx: &TaskContext, spec: &TaskSpec) -> RemoteOutcome {
    match super::worker::run_attempt(registry, ctx, &spec.name, &spec.args, &spec.kwargs) {
        AttemptResult::Completed(value) => RemoteOutcome::Completed(value),
        AttemptResult::Error(error) => RemoteOutcome::Error(error),
        AttemptResult::Panicked(message) => RemoteOutcome::Panicked(message),
    }
}
