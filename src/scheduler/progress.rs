//! Progress reports of running tasks: from the pool's workers through the
//! attempt's context, and from worker processes through the broker bridge.

use std::sync::Arc;

use super::{Inner, RequestError, Scheduler};
use crate::model::{ProgressPoint, ProgressReport, TaskId, now_us};
use crate::tasks::ProgressSink;

impl Inner {
    /// The sink the pool's attempts report progress to. It holds the
    /// scheduler weakly, so a context kept by a task does not keep the
    /// scheduler alive.
    pub(super) fn progress_sink(inner: &Arc<Inner>) -> ProgressSink {
        let weak = Arc::downgrade(inner);
        Arc::new(move |id, attempt, report| {
            if let Some(inner) = weak.upgrade() {
                // A report that lost the race with its attempt's end is
                // dropped: it describes an attempt that no longer runs.
                let _ = inner.report_progress(id, attempt, report);
            }
        })
    }

    pub(super) fn report_progress(
        &self,
        id: TaskId,
        attempt: u32,
        report: ProgressReport,
    ) -> Result<(), RequestError> {
        let change = self
            .core
            .lock()
            .report_progress(id, attempt, report, now_us())?;
        self.emit(change);
        Ok(())
    }
}

impl Scheduler {
    /// Takes a progress report of attempt `attempt` of task `id`, which must
    /// be running: the record's progress is updated (and stored), the
    /// attempt's history gets a point, and subscribers get a
    /// [`crate::model::EventKind::Progress`] event. Callers rate-limit
    /// (see [`crate::tasks::PROGRESS_EVERY`]).
    pub fn report_progress(
        &self,
        id: TaskId,
        attempt: u32,
        report: ProgressReport,
    ) -> Result<(), RequestError> {
        self.inner.report_progress(id, attempt, report)
    }

    /// The progress history of an attempt of `id` (the latest attempt that
    /// reported any when `attempt` is `None`): the attempt and its points,
    /// oldest first. Histories are kept in memory while the scheduler holds
    /// the task (the latest value is also in the stored record).
    pub fn progress_history(
        &self,
        id: TaskId,
        attempt: Option<u32>,
    ) -> Option<(u32, Vec<ProgressPoint>)> {
        self.inner.core.lock().progress_history(id, attempt)
    }
}
