//! How a task that may start reaches a worker: the one place where the two
//! modes differ.
//!
//! Which task may start is decided once, in the core
//! ([`Core::next_ready`](super::core::Core::next_ready)); a
//! [`Transport`] only says who takes it from there. With
//! [`Transport::Pool`] the scheduler's own threads take it; with
//! [`Transport::External`] the scheduler places it on a worker process
//! ([`Core::place`](super::core::Core::place)) and a transport (the
//! RabbitMQ bridge) sends it there, driving the scheduler through its
//! [`TransportLink`](super::TransportLink). Everything else the scheduler
//! does is the same in both modes, so every `match` on the mode lives here.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::core::{Core, GpuDevice, StopRequest};
use super::link::ExternalDispatch;
use super::queue::GpuNeed;
use crate::model::TaskStatus;

/// Who takes the tasks that may start.
pub(super) enum Transport {
    /// The pool's threads.
    Pool,
    /// Worker processes reached through a transport.
    External(ExternalDispatch),
}

/// Queue and worker figures for the stats, as the mode sees them.
pub(super) struct Load {
    /// Tasks waiting to start.
    pub(super) queue_depth: usize,
    /// Worker slots.
    pub(super) total: usize,
    /// Slots running an attempt.
    pub(super) busy: usize,
    /// Slots asked for in this process.
    pub(super) target: usize,
}

impl Transport {
    /// Threads the pool starts with.
    pub(super) fn pool_size(&self, configured: usize) -> usize {
        match self {
            Self::Pool => configured,
            Self::External(_) => 0,
        }
    }

    /// For recovery: until when an attempt that was running on a worker
    /// process at the last stop stays its own (none: no worker processes,
    /// such an attempt was lost).
    pub(super) fn recovered_lease_until(&self, now: Instant) -> Option<Instant> {
        match self {
            Self::Pool => None,
            Self::External(external) => Some(now + external.lease),
        }
    }

    /// How long a worker process stays listed without being heard from.
    pub(super) fn worker_lease(&self) -> Duration {
        match self {
            Self::Pool => Duration::MAX,
            Self::External(external) => external.lease,
        }
    }

    /// Whether submits can be confirmed now; the error says why not.
    pub(super) fn ready(&self) -> Result<(), String> {
        match self {
            Self::Pool => Ok(()),
            Self::External(external) => external.hooks.ready(),
        }
    }

    /// Whether tasks run on worker processes reached through a transport.
    pub(super) fn is_external(&self) -> bool {
        matches!(self, Self::External(_))
    }

    /// The transport's state, for readers; none for the pool.
    pub(super) fn status(&self) -> Option<Result<(), String>> {
        match self {
            Self::Pool => None,
            Self::External(external) => Some(external.hooks.ready()),
        }
    }

    /// For tasks that run on worker processes: now, and how recently a
    /// worker must have been heard from to count as connected.
    pub(super) fn worker_processes(&self, now: Instant) -> Option<(Instant, Duration)> {
        match self {
            Self::Pool => None,
            Self::External(external) => Some((now, external.lease)),
        }
    }

    /// Tells the transport that tasks may have become ready to start.
    pub(super) fn work(&self) {
        if let Self::External(external) = self {
            external.hooks.work();
        }
    }

    /// Asks the worker process running an attempt to stop it (a pool
    /// thread is stopped through its cancel token instead).
    pub(super) fn stop(&self, request: StopRequest) {
        if let Self::External(external) = self {
            tracing::debug!(task = %request.task, worker = %request.worker, "asking the worker to stop the attempt");
            external.hooks.stop(request);
        }
    }

    /// Passes a new pool size to the transport; false when the pool's own
    /// threads are to be resized instead.
    pub(super) fn resize(&self, workers: usize) -> bool {
        match self {
            Self::Pool => false,
            Self::External(external) => {
                external.hooks.resize(workers);
                true
            }
        }
    }

    /// How many devices with at least `memory_mb` one runner can give a
    /// task: this machine's for the pool, the best equipped worker process
    /// heard from within a lease otherwise.
    pub(super) fn gpus_fitting(
        &self,
        core: &Mutex<Core>,
        local: &[GpuDevice],
        need: GpuNeed,
    ) -> usize {
        match self {
            Self::Pool => local.iter().filter(|device| device.can_take(need)).count(),
            Self::External(external) => {
                core.lock()
                    .remote_gpu_capacity(need, external.lease, Instant::now())
            }
        }
    }

    /// Queue and worker figures (read under the core lock).
    pub(super) fn load(&self, core: &Core) -> Load {
        match self {
            Self::Pool => Load {
                queue_depth: core.queue.len(),
                total: core.workers.len(),
                busy: core.busy(),
                target: core.target_workers,
            },
            // The broker holds the queue; every worker is a process.
            Self::External(external) => {
                let (total, busy) = core.remote_load();
                Load {
                    queue_depth: core.counts()[TaskStatus::Queued.index()],
                    total,
                    busy,
                    target: external.hooks.local_workers(),
                }
            }
        }
    }
}
