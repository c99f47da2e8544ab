//! Placing attempts on worker processes.
//!
//! The scheduler knows every worker's slots, the attempts placed on it and
//! its GPU devices (from its heartbeats), so it chooses the worker itself:
//! the placement is the grant, and nothing travels back before the attempt
//! runs. A worker is given up to one attempt per slot plus its prefetch
//! (attempts that wait there for a slot, so a slot that frees starts the
//! next one without a round trip). A GPU task is placed only on a free slot
//! with enough free devices, which it is given.
//!
//! An attempt waiting on a busy worker while another worker has a free slot
//! and nothing else is ready is asked back ([`Reclaim`]); if it has not
//! started, the worker hands it back and it is placed again.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::devices::Devices;
use super::ready::need_of;
use super::{Change, Core, Entry, Placement, WorkerId};
use crate::model::{TaskId, TaskRecord};
use crate::scheduler::queue::GpuNeed;

use super::remote::RemoteWorker;

/// How long an attempt waits on a busy worker before it may be asked back
/// for a worker with a free slot.
const RECLAIM_AFTER_US: i64 = 500_000;

/// An attempt placed on a worker process: what to send it.
#[derive(Debug, Clone)]
pub struct Run {
    /// The worker.
    pub worker: String,
    /// The task as placed.
    pub record: Arc<TaskRecord>,
    /// The attempt number.
    pub attempt: u32,
    /// The worker's devices given to it.
    pub gpu_ids: Vec<u32>,
}

/// A request to a worker to hand back an attempt it has not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reclaim {
    /// The worker.
    pub worker: String,
    /// The task.
    pub task: TaskId,
    /// The attempt.
    pub attempt: u32,
}

/// What one placement round decided.
#[derive(Debug, Default)]
pub struct Placed {
    /// Attempts to send to their workers.
    pub runs: Vec<Run>,
    /// Their `Started` transitions, to persist and publish.
    pub changes: Vec<Change>,
    /// Attempts to ask back.
    pub reclaims: Vec<Reclaim>,
}

impl RemoteWorker {
    /// Whether attempts may be placed on it: it takes placements, is
    /// connected, has slots and was heard from within `lease`.
    pub(super) fn available(&self, now: Instant, lease: Duration) -> bool {
        self.takes_placements
            && !self.gone
            && !self.disconnected
            && !self.silent
            && self.session != 0
            && self.concurrency > 0
            && self
                .last_heard
                .is_some_and(|at| now.saturating_duration_since(at) <= lease)
    }

    /// Attempts it may still be given.
    fn credit(&self) -> usize {
        (self.concurrency + self.prefetch).saturating_sub(self.running.len())
    }

    /// Slots that run nothing and have nothing waiting for them.
    fn free_slots(&self) -> usize {
        self.concurrency.saturating_sub(self.running.len())
    }

    /// Its devices and who holds them: the attempts placed on it, and
    /// the memory other programs use there (from its last heartbeat).
    pub(super) fn devices(&self, tasks: &BTreeMap<TaskId, Entry>) -> Devices {
        let mut devices = Devices::new(&self.gpus);
        if devices.is_empty() {
            return devices;
        }
        devices.set_foreign(&self.foreign_gpu_mb());
        for id in &self.running {
            if let Some(entry) = tasks.get(id) {
                let need = need_of(&entry.record.spec);
                devices.hold(*id, need, &entry.record.gpu_ids);
            }
        }
        devices
    }

    /// Whether a task with this GPU need can start on it now.
    pub(super) fn fits(&self, need: GpuNeed, tasks: &BTreeMap<TaskId, Entry>) -> bool {
        self.free_slots() > 0 && (need.count == 0 || self.devices(tasks).choose(need).is_some())
    }
}

impl Core {
    /// Places up to `max` tasks that may start on worker processes heard
    /// from within `lease` (each attempt leased until `now + lease`), in
    /// run order, and asks back attempts that wait on a busy worker while
    /// another has a free slot and nothing is ready.
    pub fn place(&mut self, max: usize, lease: Duration, now: Instant, now_us: i64) -> Placed {
        let mut placed = Placed::default();
        while placed.runs.len() < max {
            let any_credit = self
                .remote
                .values()
                .any(|remote| remote.available(now, lease) && remote.credit() > 0);
            if !any_credit {
                break;
            }
            let Some((id, need)) = self.next_ready(Placement::Workers { now, lease }) else {
                break;
            };
            let Some((worker, gpu_ids)) = self.choose_worker(need, now, lease) else {
                self.enqueue_if_queued(id);
                break;
            };
            let Some(name) = self.remote.get(&worker).map(|remote| remote.name.clone()) else {
                break;
            };
            let lease_until = Some(now + lease);
            let Some(started) = self.start_attempt(
                id,
                worker,
                name.clone(),
                gpu_ids.clone(),
                lease_until,
                now_us,
            ) else {
                continue;
            };
            if let Some(remote) = self.remote.get_mut(&worker) {
                remote.running.insert(id);
            }
            placed.runs.push(Run {
                worker: name,
                record: Arc::clone(&started.change.record),
                attempt: started.attempt,
                gpu_ids,
            });
            placed.changes.push(started.change);
        }
        if placed.runs.len() < max {
            self.reclaim_waiting(now, lease, now_us, &mut placed.reclaims);
        }
        placed
    }

    /// The worker for a task with this GPU need, and the devices it gets:
    /// for a GPU task, a free slot with enough free devices; otherwise the
    /// worker with credit whose slots are least taken.
    fn choose_worker(
        &self,
        need: GpuNeed,
        now: Instant,
        lease: Duration,
    ) -> Option<(WorkerId, Vec<u32>)> {
        let candidates = self
            .remote
            .iter()
            .filter(|(_, remote)| remote.available(now, lease) && remote.credit() > 0);
        if need.count > 0 {
            let (id, remote) = candidates
                .filter(|(_, remote)| remote.fits(need, &self.tasks))
                .min_by_key(|(_, remote)| load_of(remote))?;
            let devices = remote.devices(&self.tasks).choose(need)?;
            return Some((*id, devices));
        }
        candidates
            .min_by_key(|(_, remote)| load_of(remote))
            .map(|(id, _)| (*id, Vec::new()))
    }

    /// Asks back attempts waiting on a busy worker, at most one per free
    /// slot elsewhere, when nothing is ready to fill those slots.
    fn reclaim_waiting(
        &mut self,
        now: Instant,
        lease: Duration,
        now_us: i64,
        out: &mut Vec<Reclaim>,
    ) {
        if !self.dispatch_open() || !self.queue.is_empty() {
            return;
        }
        let idle: usize = self
            .remote
            .values()
            .filter(|remote| remote.available(now, lease))
            .map(RemoteWorker::free_slots)
            .sum();
        let asked: usize = self
            .remote
            .values()
            .map(|remote| remote.reclaiming.len())
            .sum();
        let mut room = idle.saturating_sub(asked);
        if room == 0 {
            return;
        }
        let tasks = &self.tasks;
        for remote in self.remote.values_mut() {
            if room == 0 {
                break;
            }
            let waiting = remote.running.len().saturating_sub(remote.concurrency);
            if waiting <= remote.reclaiming.len() {
                continue;
            }
            // The worker starts what it was given in order, so the last
            // placed are the ones still waiting.
            let mut newest: Vec<(i64, TaskId, u32)> = remote
                .running
                .iter()
                .filter(|id| !remote.reclaiming.contains(id))
                .filter_map(|id| {
                    let entry = tasks.get(id)?;
                    let run = entry.run.as_ref()?;
                    Some((entry.record.started_at_us?, *id, run.attempt))
                })
                .collect();
            newest.sort_unstable_by(|a, b| b.cmp(a));
            let wanted = (waiting - remote.reclaiming.len()).min(room);
            for (placed_at, task, attempt) in newest.into_iter().take(wanted) {
                if now_us - placed_at < RECLAIM_AFTER_US {
                    continue;
                }
                remote.reclaiming.insert(task);
                room -= 1;
                out.push(Reclaim {
                    worker: remote.name.clone(),
                    task,
                    attempt,
                });
            }
        }
    }
}

impl Core {
    /// The attempts placed on worker processes that have not ended, with
    /// their workers (running there, or waiting there for a slot).
    pub fn placed_attempts(&self) -> HashSet<(TaskId, u32, String)> {
        self.remote
            .values()
            .flat_map(|remote| {
                remote.running.iter().filter_map(|id| {
                    let run = self.tasks.get(id)?.run.as_ref()?;
                    Some((*id, run.attempt, remote.name.clone()))
                })
            })
            .collect()
    }

    /// Attempts recovered at start as running on worker processes, which
    /// the previous scheduler process may have died before sending: the
    /// transport sends them again, and a worker runs one only if it has
    /// not run that attempt.
    pub fn recovered_placements(&self) -> Vec<Run> {
        self.tasks
            .values()
            .filter_map(|entry| {
                let run = entry.run.as_ref().filter(|run| run.recovered)?;
                let remote = self.remote.get(&run.worker)?;
                Some(Run {
                    worker: remote.name.clone(),
                    record: Arc::clone(&entry.record),
                    attempt: run.attempt,
                    gpu_ids: entry.record.gpu_ids.clone(),
                })
            })
            .collect()
    }
}

/// How taken a worker's slots are, in thousandths (lower places first).
fn load_of(remote: &RemoteWorker) -> usize {
    remote.running.len().saturating_mul(1_000) / remote.concurrency.max(1)
}
