//! The transport's side of the scheduler: a [`TransportLink`] is handed
//! only to the transport that started the scheduler
//! ([`Scheduler::start_external`]); through it the transport places tasks
//! on worker processes, and passes on what those report: heartbeats, ends
//! of attempts, hand-backs, lost connections.
//! The client-facing [`Scheduler`] handle has none of these methods, and
//! the scheduler stays the one owner of task state.
//!
//! This module knows nothing of the transport; it defines the hooks the
//! transport gives the scheduler ([`ExternalHooks`]) and the calls it makes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::{AttemptResult, Settled};
pub use super::core::{Heartbeat, Placed, StopRequest};
use super::transport::Transport;
use super::{Inner, Scheduler};
use crate::model::TaskSpec;
use crate::model::{TaskId, TaskLog, now_us};
use crate::tasks::{Registry, TaskContext, TaskError};

/// Settings and hooks of dispatch through a transport.
#[derive(Clone)]
pub struct ExternalDispatch {
    /// How long an attempt stays owned by its worker without a heartbeat.
    pub lease: Duration,
    /// The transport's side.
    pub hooks: Arc<dyn ExternalHooks>,
}

impl std::fmt::Debug for ExternalDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalDispatch")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// What the scheduler asks of the transport. Calls must not block: they are
/// made from the scheduler's threads and the callers of its handle.
pub trait ExternalHooks: Send + Sync {
    /// Whether submits can be taken now; the error says why not (with no
    /// credentials in it).
    fn ready(&self) -> Result<(), String>;
    /// Tasks may have become ready to start: the transport should call
    /// [`TransportLink::place`] soon.
    fn work(&self);
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
    /// Takes progress a worker process forwarded for one of its attempts
    /// (see [`crate::scheduler::Scheduler::report_progress`]).
    pub fn progress(
        &self,
        id: TaskId,
        attempt: u32,
        report: crate::model::ProgressReport,
    ) -> Result<(), super::RequestError> {
        self.inner.report_progress(id, attempt, report)
    }

    /// Places what may start now on worker processes, up to `max`
    /// attempts (see the core's rules), and records their starts; returns
    /// what to send to the workers.
    pub fn place(&self, max: usize) -> Placed {
        let mut placed = self
            .inner
            .core
            .lock()
            .place(max, self.lease, Instant::now(), now_us());
        for change in placed.changes.drain(..) {
            self.inner.emit(change);
        }
        placed
    }

    /// Attempts recovered at start as running on worker processes, to send
    /// again (see the core's rules).
    pub fn recovered_placements(&self) -> Vec<super::core::Run> {
        self.inner.core.lock().recovered_placements()
    }

    /// The attempts placed on worker processes that have not ended, with
    /// their workers.
    pub fn placed_attempts(&self) -> std::collections::HashSet<(TaskId, u32, String)> {
        self.inner.core.lock().placed_attempts()
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

    /// Counts messages the transport refused unread (unsigned, or signed
    /// with another key); workers count theirs in their heartbeats.
    pub fn refused(&self, messages: u64) {
        self.inner.core.lock().refused_by_scheduler(messages);
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

/// Runs one attempt of `spec` in the calling thread, as the pool's threads
/// do (a panic becomes [`RemoteOutcome::Panicked`]); for worker processes.
pub fn run_attempt(registry: &Registry, ctx: &TaskContext, spec: &TaskSpec) -> RemoteOutcome {
    match super::worker::run_attempt(registry, ctx, &spec.name, &spec.args, &spec.kwargs) {
        AttemptResult::Completed(value) => RemoteOutcome::Completed(value),
        AttemptResult::Error(error) => RemoteOutcome::Error(error),
        AttemptResult::Panicked(message) => RemoteOutcome::Panicked(message),
    }
}
