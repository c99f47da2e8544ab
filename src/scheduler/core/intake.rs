//! Taking tasks in: accepted submissions, and the stored tasks a restart
//! recovers.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::{Change, Core, Entry, RunState, TaskCounter, lost_attempt, need_of};
use crate::model::{EventKind, TaskId, TaskRecord, TaskStatus};
use crate::scheduler::policy::{self, Recovery};
use crate::tasks::CancelToken;

impl Core {
    /// Adds accepted tasks to the table and the ready queue. A task whose
    /// start time is still ahead at `now_us` waits outside the ready queue
    /// and is returned in `delayed` with that time (the caller arms the
    /// timer, then calls [`Core::enqueue_if_queued`]); so does one that
    /// waits for dependencies, until they complete. A task whose dependency
    /// failed in the meantime is cancelled at once (`cancelled`).
    pub fn insert_queued(&mut self, records: Vec<Arc<TaskRecord>>, now_us: i64) -> Inserted {
        let mut inserted = Inserted::default();
        for record in records {
            self.counts[TaskStatus::Queued.index()] += 1;
            let lane = self.queues.intern_spec(&record.spec);
            self.queues.count(&record.spec, TaskStatus::Queued, true);
            let name_slot = self.tally.slot(&record.spec.name);
            self.tally.add(name_slot, TaskCounter::Submitted);
            let id = record.id;
            let ahead = start_ahead(&record.spec, now_us);
            if record.spec.depends_on.is_empty() {
                match ahead {
                    Some(at_us) => inserted.delayed.push((id, at_us)),
                    None => self
                        .queue
                        .push(lane, record.spec.priority, id, need_of(&record.spec)),
                }
                self.tasks.insert(id, Entry::idle(record, name_slot));
                continue;
            }
            self.tasks
                .insert(id, Entry::idle(Arc::clone(&record), name_slot));
            let waits = self.link_accepted(&record, now_us, &mut inserted.cancelled);
            match ahead {
                Some(at_us) => inserted.delayed.push((id, at_us)),
                None if !waits => {
                    self.queue
                        .push(lane, record.spec.priority, id, need_of(&record.spec));
                }
                None => {}
            }
        }
        if !inserted.cancelled.is_empty() {
            self.evict(now_us);
        }
        inserted
    }

    /// Takes stored tasks back after a restart, applying [`policy::recovery`].
    /// Returns the transitions that changed a record.
    ///
    /// With `remote_lease_until` (tasks run on worker processes), a task
    /// that was running stays running on its worker with a fresh lease: the
    /// worker may still be at it, and its result may be waiting in the
    /// broker. If it is not, the lease runs out and the attempt is lost then.
    pub fn recover(
        &mut self,
        records: Vec<TaskRecord>,
        now_us: i64,
        remote_lease_until: Option<Instant>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut finished = Vec::new();
        for mut record in records {
            let rule = policy::recovery(record.status, record.attempts, record.spec.max_retries);
            self.counts[record.status.index()] += 1;
            let lane = self.queues.intern_spec(&record.spec);
            self.queues.count(&record.spec, record.status, true);
            let name_slot = self.tally.slot(&record.spec.name);
            if record.status == TaskStatus::Running
                && let (Some(lease_until), Some(worker)) = (remote_lease_until, &record.worker)
            {
                let worker = self.remote_id(worker);
                if let Some(remote) = self.remote.get_mut(&worker) {
                    remote.running.insert(record.id);
                }
                let run = RunState {
                    worker,
                    attempt: record.attempts,
                    cancel: CancelToken::new(),
                    lease_until: Some(lease_until),
                    recovered: true,
                };
                let record = Arc::new(record);
                self.tasks.insert(
                    record.id,
                    Entry {
                        record,
                        run: Some(run),
                        name_slot,
                    },
                );
                continue;
            }
            let mut changed = None;
            match rule {
                Recovery::Keep => {
                    finished.push((record.id, record.finished_at_us.unwrap_or(0)));
                }
                Recovery::Requeue | Recovery::LostThenRequeue => {
                    if start_ahead(&record.spec, now_us).is_none() && !record.held {
                        self.queue.push(
                            lane,
                            record.spec.priority,
                            record.id,
                            need_of(&record.spec),
                        );
                    }
                    if record.status != TaskStatus::Queued {
                        if rule == Recovery::LostThenRequeue {
                            record.failures.push(lost_attempt(&record, now_us));
                            self.tally.add(name_slot, TaskCounter::Lost);
                            self.tally.add(name_slot, TaskCounter::Retried);
                        }
                        record.retry_at_us = None;
                        Self::set_status(
                            &mut self.counts,
                            &mut self.queues,
                            &mut record,
                            TaskStatus::Queued,
                        );
                        changed = Some(EventKind::Requeued);
                    }
                }
                Recovery::LostThenFail => {
                    let lost = lost_attempt(&record, now_us);
                    record.error = Some(lost.message.clone());
                    record.failures.push(lost);
                    record.finished_at_us = Some(now_us);
                    Self::set_status(
                        &mut self.counts,
                        &mut self.queues,
                        &mut record,
                        TaskStatus::Failed,
                    );
                    finished.push((record.id, now_us));
                    self.tally.add(name_slot, TaskCounter::Lost);
                    self.tally.add(name_slot, TaskCounter::Failed);
                    changed = Some(EventKind::Failed);
                }
            }
            let record = Arc::new(record);
            if let Some(kind) = changed {
                changes.push(Change {
                    kind,
                    record: Arc::clone(&record),
                });
            }
            self.tasks.insert(record.id, Entry::idle(record, name_slot));
        }
        finished.sort_by_key(|(_, at)| *at);
        self.finished.extend(finished);
        changes.extend(self.link_recovered(now_us));
        self.evict(now_us);
        changes
    }
}

/// What [`Core::insert_queued`] did besides queueing.
#[derive(Debug, Default)]
pub struct Inserted {
    /// Tasks that wait for their start time (id, microseconds since the
    /// epoch).
    pub delayed: Vec<(TaskId, i64)>,
    /// Tasks cancelled at once: a dependency failed while they were being
    /// accepted.
    pub cancelled: Vec<(Change, Vec<Sender<TaskId>>)>,
}

/// The spec's start time, when it is still ahead at `now_us`.
pub(super) fn start_ahead(spec: &crate::model::TaskSpec, now_us: i64) -> Option<i64> {
    spec.not_before_us.filter(|at_us| *at_us > now_us)
}
