//! Which queued task may start now, and starting it.
//!
//! This is the one readiness decision. The pool's threads
//! ([`Core::next_job`]) and the placement on worker processes
//! ([`Core::place`]) both choose through [`Core::next_ready`] and both check
//! [`Core::may_start`]; they differ only in whose free devices a GPU task
//! needs ([`Placement`]) and in who runs the attempt.
//! A new rule about which task may start belongs in `may_start` (or in the
//! ready queue's order) and nowhere else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Change, Core, Entry, Job, RunState, WorkerId};
use crate::model::{EventKind, TaskId, TaskSpec, TaskStatus};
use crate::scheduler::queue::GpuNeed;
use crate::tasks::CancelToken;

/// Where a chosen task will run, which decides how its GPU need is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On the pool's threads: a GPU task waits until this machine's free
    /// devices fit it (see the ready queue's rules).
    Pool,
    /// On worker processes heard from within `lease` of `now`: a GPU task
    /// waits until one of them has a free slot and enough free devices.
    Workers {
        /// Now.
        now: Instant,
        /// How recently a worker must have been heard from.
        lease: Duration,
    },
}

/// An attempt just started, as both kinds of runner need it.
pub(super) struct Started {
    pub(super) change: Change,
    pub(super) cancel: CancelToken,
    pub(super) attempt: u32,
    pub(super) timeout: Option<Duration>,
}

impl Core {
    /// Whether a task may start now: dispatch is on, the task is queued,
    /// not held, waits for no dependency, its queue is open (not paused,
    /// under its limit), and no attempt of it runs. Every rule about which task may
    /// start goes here, so it holds for local workers and worker processes
    /// alike.
    pub(super) fn may_start(&self, entry: &Entry) -> bool {
        self.dispatch_open()
            && entry.record.status == TaskStatus::Queued
            && !entry.record.held
            && entry.run.is_none()
            && !self.waits_for_dependencies(entry.record.id)
            && self.queues.open(self.queues.lane_of(&entry.record.spec))
    }

    /// Whether any task may start: dispatch is on (not shutting down) and
    /// the scheduler is not paused.
    pub fn dispatch_open(&self) -> bool {
        self.dispatching && !self.paused
    }

    /// Takes the next task that may start, in run order (priority, then
    /// arrival; a GPU task only once its devices are free), with what it
    /// needs of the GPUs. Entries the ready queue still names but that may
    /// no longer start (cancelled, already running) are dropped from it on
    /// the way.
    pub fn next_ready(&mut self, placement: Placement) -> Option<(TaskId, GpuNeed)> {
        if !self.dispatch_open() {
            return None;
        }
        loop {
            let (id, need) = match placement {
                Placement::Pool => {
                    let (gpus, queues) = (&self.gpus, &self.queues);
                    self.queue.pop_placeable(
                        |lane| queues.open(lane),
                        |need| gpus.choose(need).is_some(),
                    )?
                }
                Placement::Workers { now, lease } => {
                    let (remote, tasks) = (&self.remote, &self.tasks);
                    let queues = &self.queues;
                    self.queue.pop_placeable(
                        |lane| queues.open(lane),
                        |need| {
                            remote.values().any(|worker| {
                                worker.available(now, lease) && worker.fits(need, tasks)
                            })
                        },
                    )?
                }
            };
            if self
                .tasks
                .get(&id)
                .is_some_and(|entry| self.may_start(entry))
            {
                return Some((id, need));
            }
        }
    }

    /// Starts the next task that may start on the pool's `worker`; a task
    /// that needs GPUs gets free device ids.
    pub fn next_job(&mut self, worker: WorkerId, now_us: i64) -> Option<Job> {
        let worker_name = self.workers.get(&worker)?.name.clone();
        let (id, need) = self.next_ready(Placement::Pool)?;
        let gpu_ids = if need.count == 0 {
            Vec::new()
        } else {
            // It was taken because it fits; nothing changed since.
            let ids = self.gpus.choose(need).unwrap_or_default();
            self.gpus.hold(id, need, &ids);
            ids
        };
        let started = self.start_attempt(id, worker, worker_name, gpu_ids, None, now_us)?;
        if let Some(slot) = self.workers.get_mut(&worker) {
            slot.current = Some(id);
        }
        self.busy += 1;
        Some(Job {
            started: started.change,
            cancel: started.cancel,
            timeout: started.timeout,
        })
    }

    /// Marks a chosen task running on `worker` (a pool thread, or a worker
    /// process with a lease until `lease_until`) with the given devices.
    pub(super) fn start_attempt(
        &mut self,
        id: TaskId,
        worker: WorkerId,
        worker_name: String,
        gpu_ids: Vec<u32>,
        lease_until: Option<Instant>,
        now_us: i64,
    ) -> Option<Started> {
        let entry = self.tasks.get_mut(&id)?;
        let record = Arc::make_mut(&mut entry.record);
        Self::set_status(
            &mut self.counts,
            &mut self.queues,
            record,
            TaskStatus::Running,
        );
        record.attempts += 1;
        record.started_at_us = Some(now_us);
        record.first_started_at_us.get_or_insert(now_us);
        record.progress = None;
        record.worker = Some(worker_name);
        record.retry_at_us = None;
        record.gpu_ids = gpu_ids;
        let cancel = CancelToken::new();
        entry.run = Some(RunState {
            worker,
            attempt: record.attempts,
            cancel: cancel.clone(),
            lease_until,
            recovered: false,
        });
        Some(Started {
            attempt: record.attempts,
            timeout: record.spec.timeout_ms.map(Duration::from_millis),
            cancel,
            change: Change {
                kind: EventKind::Started,
                record: Arc::clone(&entry.record),
            },
        })
    }
}

/// What a spec needs of the GPUs, for the ready queue.
pub(crate) fn need_of(spec: &TaskSpec) -> GpuNeed {
    GpuNeed {
        count: spec.gpus,
        memory_mb: spec.gpu_memory_mb,
    }
}
