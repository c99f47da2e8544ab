//! Tasks that wait without being in the ready queue (a retry backoff, a
//! start time still ahead, a hold) and their way into it.

use std::sync::Arc;

use super::{Change, Core, RequestError, need_of, start_ahead};
use crate::model::{EventKind, TaskId, TaskStatus};

impl Core {
    /// Marks a task whose backoff ended as queued; none when it is no longer
    /// waiting for that retry (cancelled meanwhile). The caller publishes the
    /// change, then calls [`Core::enqueue_if_queued`].
    pub fn retry_due(&mut self, id: TaskId, retry_at_us: i64) -> Option<Change> {
        let entry = self.tasks.get_mut(&id)?;
        let record = Arc::make_mut(&mut entry.record);
        if record.status != TaskStatus::Retrying || record.retry_at_us != Some(retry_at_us) {
            return None;
        }
        record.retry_at_us = None;
        Self::set_status(
            &mut self.counts,
            &mut self.queues,
            record,
            TaskStatus::Queued,
        );
        Some(Change {
            kind: EventKind::Requeued,
            record: Arc::clone(&entry.record),
        })
    }

    /// Second half of [`Core::retry_due`] and [`Core::retry`]: puts a task
    /// that is queued but not yet in the ready queue there, once its
    /// `requeued` event is out (so no `started` event can precede it). A task
    /// cancelled in between stays out.
    pub fn enqueue_if_queued(&mut self, id: TaskId) -> bool {
        let Some(entry) = self.tasks.get(&id) else {
            return false;
        };
        if entry.record.status != TaskStatus::Queued
            || entry.record.held
            || entry.run.is_some()
            || self.waits_for_dependencies(id)
        {
            return false;
        }
        let lane = self.queues.lane_of(&entry.record.spec);
        self.queue.push(
            lane,
            entry.record.spec.priority,
            id,
            need_of(&entry.record.spec),
        );
        true
    }

    /// The start time of a queued task that is still ahead at `now_us`.
    pub fn start_ahead(&self, id: TaskId, now_us: i64) -> Option<i64> {
        let entry = self.tasks.get(&id)?;
        if entry.record.status != TaskStatus::Queued || entry.run.is_some() {
            return None;
        }
        start_ahead(&entry.record.spec, now_us)
    }

    /// Holds a waiting (queued or retrying) task: it stays so, but does
    /// not start until released. None when it already is held.
    pub fn hold(&mut self, id: TaskId) -> Result<Option<Change>, RequestError> {
        let entry = self.tasks.get_mut(&id).ok_or(RequestError::NotFound(id))?;
        let status = entry.record.status;
        match status {
            TaskStatus::Queued | TaskStatus::Retrying => {}
            TaskStatus::Running => return Err(RequestError::NotWaiting { id, status }),
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled => {
                return Err(RequestError::AlreadyFinished { id, status });
            }
        }
        if entry.record.held {
            return Ok(None);
        }
        let lane = self.queues.lane_of(&entry.record.spec);
        self.queue.remove(lane, entry.record.spec.priority, id);
        let record = Arc::make_mut(&mut entry.record);
        record.held = true;
        record.version += 1;
        Ok(Some(Change {
            kind: EventKind::Held,
            record: Arc::clone(&entry.record),
        }))
    }

    /// Releases a held task; none when it was not held. The caller then
    /// puts it in the ready queue ([`Core::enqueue_if_queued`]) or waits
    /// for its start time.
    pub fn release(&mut self, id: TaskId) -> Result<Option<Change>, RequestError> {
        let entry = self.tasks.get_mut(&id).ok_or(RequestError::NotFound(id))?;
        if !entry.record.held {
            return Ok(None);
        }
        let record = Arc::make_mut(&mut entry.record);
        record.held = false;
        record.version += 1;
        Ok(Some(Change {
            kind: EventKind::Released,
            record: Arc::clone(&entry.record),
        }))
    }

    /// Queued tasks whose start time is still ahead at `now_us` (after a
    /// restart, for the timer).
    pub fn delayed_starts(&self, now_us: i64) -> Vec<(TaskId, i64)> {
        self.tasks
            .values()
            .filter(|entry| {
                entry.record.status == TaskStatus::Queued
                    && !entry.record.held
                    && entry.run.is_none()
            })
            .filter_map(|entry| Some((entry.record.id, start_ahead(&entry.record.spec, now_us)?)))
            .collect()
    }
}

/// Why a task that has not started yet waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// Dependencies it waits for have not completed.
    Dependencies {
        /// How many it still waits for.
        count: usize,
        /// The lowest of their ids (at most [`Waiting::LISTED`]).
        ids: Vec<TaskId>,
    },
    /// It failed an attempt and waits out the retry backoff until then.
    RetryBackoff {
        /// When the next attempt is due, microseconds since the epoch.
        until_us: i64,
    },
    /// A user held it.
    Held,
    /// Its start time is ahead.
    NotBefore {
        /// The start time, microseconds since the epoch.
        until_us: i64,
    },
    /// The scheduler is paused.
    Paused,
    /// Its queue is paused.
    QueuePaused {
        /// The queue.
        queue: String,
    },
    /// Its queue runs as many tasks as its limit allows.
    QueueAtLimit {
        /// The queue.
        queue: String,
        /// The limit.
        limit: usize,
    },
    /// The scheduler is shutting down.
    ShuttingDown,
    /// In the ready queue with this many tasks before it; a GPU task may
    /// also wait for free devices.
    Behind {
        /// Tasks that start before it.
        ahead: usize,
        /// GPUs it needs.
        gpus: u32,
    },
    /// In the ready queue with this many tasks before it, and it asks for
    /// a share of one GPU's memory.
    GpuMemory {
        /// Tasks that start before it.
        ahead: usize,
        /// The memory it asks for, MB.
        memory_mb: u64,
    },
    /// It runs on worker processes, and none is connected.
    NoWorker,
}

impl Waiting {
    /// How many dependency ids a reason lists.
    pub const LISTED: usize = 20;

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Dependencies { .. } => "waiting_for_dependencies",
            Self::RetryBackoff { .. } => "retry_backoff",
            Self::Held => "held",
            Self::NotBefore { .. } => "not_before",
            Self::Paused => "scheduler_paused",
            Self::QueuePaused { .. } => "queue_paused",
            Self::QueueAtLimit { .. } => "queue_at_limit",
            Self::ShuttingDown => "shutting_down",
            Self::Behind { gpus: 0, .. } => "queued_behind",
            Self::Behind { .. } => "waiting_for_gpus",
            Self::GpuMemory { .. } => "waiting_for_gpu_memory",
            Self::NoWorker => "waiting_for_worker",
        }
    }

    /// A sentence for people, with times relative to `now_us`.
    pub fn message(&self, now_us: i64) -> String {
        let after = |until_us: i64| {
            let secs = (until_us - now_us).max(0) as f64 / 1e6;
            if secs < 120.0 {
                format!("{secs:.1} s")
            } else if secs < 7_200.0 {
                format!("{:.1} min", secs / 60.0)
            } else {
                format!("{:.1} h", secs / 3_600.0)
            }
        };
        match *self {
            Self::Dependencies { count, ref ids } => {
                let listed: Vec<String> = ids.iter().map(ToString::to_string).collect();
                let more = count.saturating_sub(ids.len());
                let tail = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                format!(
                    "waits for {count} dependenc{} to complete: task {}{tail}",
                    if count == 1 { "y" } else { "ies" },
                    listed.join(", ")
                )
            }
            Self::RetryBackoff { until_us } => {
                format!(
                    "waits out its retry backoff; next attempt in {}",
                    after(until_us)
                )
            }
            Self::Held => "held; it starts only after a release".to_owned(),
            Self::NotBefore { until_us } => {
                format!("not before its start time, in {}", after(until_us))
            }
            Self::Paused => {
                "the scheduler is paused; nothing starts until it is resumed".to_owned()
            }
            Self::QueuePaused { ref queue } => {
                format!("queue {queue} is paused; its tasks start only after it is resumed")
            }
            Self::QueueAtLimit { ref queue, limit } => {
                format!("queue {queue} already runs {limit} task(s), its limit")
            }
            Self::ShuttingDown => {
                "the scheduler is shutting down; it runs after the next start".to_owned()
            }
            Self::Behind { ahead: 0, gpus: 0 } => "next to start, when a worker is free".to_owned(),
            Self::Behind { ahead, gpus: 0 } => {
                format!("{ahead} task(s) of higher priority or queued earlier start first")
            }
            Self::Behind { ahead, gpus } => format!(
                "needs {gpus} free GPU(s); {ahead} task(s) of higher priority or queued earlier come first"
            ),
            Self::GpuMemory { ahead, memory_mb } => format!(
                "needs {memory_mb} MB free on one GPU; {ahead} task(s) of higher priority or queued earlier come first"
            ),
            Self::NoWorker => "no worker process is connected to run it".to_owned(),
        }
    }
}

impl Core {
    /// Why each of these tasks waits (none for a task that runs, finished
    /// or is unknown). One pass over the ready queue for all of them.
    ///
    /// `workers`: tasks run on worker processes, which count as connected
    /// when heard from within the lease (now, lease).
    pub fn waiting(
        &self,
        ids: &[TaskId],
        now_us: i64,
        workers: Option<(std::time::Instant, std::time::Duration)>,
    ) -> Vec<Option<Waiting>> {
        let no_worker = workers.is_some_and(|(now, lease)| {
            !self
                .remote
                .values()
                .any(|remote| remote.available(now, lease))
        });
        let in_queue: std::collections::HashSet<TaskId> = ids
            .iter()
            .copied()
            .filter(|id| {
                self.tasks.get(id).is_some_and(|entry| {
                    entry.record.status == TaskStatus::Queued && entry.run.is_none()
                })
            })
            .collect();
        let mut ahead = std::collections::HashMap::new();
        if !in_queue.is_empty() {
            let queues = &self.queues;
            let ordered = self.queue.ordered_where(|lane| queues.open(lane));
            for (position, id) in ordered.enumerate() {
                if in_queue.contains(&id) {
                    ahead.insert(id, position);
                    if ahead.len() == in_queue.len() {
                        break;
                    }
                }
            }
        }
        ids.iter()
            .map(|id| {
                let entry = self.tasks.get(id)?;
                let record = &entry.record;
                match record.status {
                    TaskStatus::Retrying => {
                        if record.held {
                            return Some(Waiting::Held);
                        }
                        return record
                            .retry_at_us
                            .map(|until_us| Waiting::RetryBackoff { until_us });
                    }
                    TaskStatus::Queued if entry.run.is_none() => {}
                    _ => return None,
                }
                if record.held {
                    return Some(Waiting::Held);
                }
                if let Some(pending) = self.unmet.get(id) {
                    let mut ids: Vec<TaskId> = pending.iter().copied().collect();
                    ids.sort_unstable();
                    ids.truncate(Waiting::LISTED);
                    return Some(Waiting::Dependencies {
                        count: pending.len(),
                        ids,
                    });
                }
                if let Some(until_us) = start_ahead(&record.spec, now_us) {
                    return Some(Waiting::NotBefore { until_us });
                }
                if self.paused {
                    return Some(Waiting::Paused);
                }
                let lane = self.queues.lane_of(&record.spec);
                let settings = self.queues.settings(lane);
                if settings.paused {
                    return Some(Waiting::QueuePaused {
                        queue: record.spec.queue_name().to_owned(),
                    });
                }
                if !self.dispatching {
                    return Some(Waiting::ShuttingDown);
                }
                if no_worker {
                    return Some(Waiting::NoWorker);
                }
                if let Some(limit) = settings.limit.filter(|_| !self.queues.open(lane)) {
                    return Some(Waiting::QueueAtLimit {
                        queue: record.spec.queue_name().to_owned(),
                        limit,
                    });
                }
                let ahead = ahead.get(id).copied().unwrap_or(0);
                Some(match need_of(&record.spec).share_mb() {
                    Some(memory_mb) => Waiting::GpuMemory { ahead, memory_mb },
                    None => Waiting::Behind {
                        ahead,
                        gpus: record.spec.gpus,
                    },
                })
            })
            .collect()
    }
}
