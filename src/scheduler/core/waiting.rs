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
        Self::set_status(&mut self.counts, record, TaskStatus::Queued);
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
        if entry.record.status != TaskStatus::Queued || entry.record.held || entry.run.is_some() {
            return false;
        }
        self.queue
            .push(entry.record.spec.priority, id, need_of(&entry.record.spec));
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
        self.queue.remove(entry.record.spec.priority, id);
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
