//! Progress reports of running attempts: the latest value goes into the
//! record, every report into the attempt's bounded history.

use std::sync::Arc;

use super::{Change, Core};
use crate::model::{
    EventKind, Progress, ProgressHistory, ProgressPoint, ProgressReport, TaskId, TaskStatus,
};
use crate::scheduler::RequestError;

/// Attempts whose history is kept per task (the newest ones).
const ATTEMPTS_KEPT: usize = 8;

/// The progress histories of one task's recent attempts, oldest first.
#[derive(Debug, Default)]
pub struct Histories(Vec<(u32, ProgressHistory)>);

impl Core {
    /// Takes a progress report of attempt `attempt` of `id`, which must be
    /// the attempt running now (a report from an attempt that ended or was
    /// superseded is refused, so it cannot overwrite a newer one's).
    pub fn report_progress(
        &mut self,
        id: TaskId,
        attempt: u32,
        report: ProgressReport,
        now_us: i64,
    ) -> Result<Change, RequestError> {
        let entry = self.tasks.get_mut(&id).ok_or(RequestError::NotFound(id))?;
        let current = entry.record.status == TaskStatus::Running
            && entry.run.as_ref().is_some_and(|run| run.attempt == attempt);
        if !current {
            return Err(RequestError::NotRunning { id, attempt });
        }
        let point = ProgressPoint {
            at_us: now_us,
            fraction: report.fraction,
            metrics: report.metrics.clone(),
        };
        let record = Arc::make_mut(&mut entry.record);
        let started_at_us = record.started_at_us.unwrap_or(now_us);
        record.progress = Some(Progress::advance(
            record.progress.as_ref(),
            report,
            now_us,
            started_at_us,
        ));
        record.version += 1;
        let histories = self.progress.entry(id).or_default();
        match histories.0.iter_mut().find(|(n, _)| *n == attempt) {
            Some((_, history)) => history.push(point),
            None => {
                let mut history = ProgressHistory::default();
                history.push(point);
                histories.0.push((attempt, history));
                if histories.0.len() > ATTEMPTS_KEPT {
                    histories.0.remove(0);
                }
            }
        }
        Ok(Change {
            kind: EventKind::Progress,
            record: Arc::clone(&entry.record),
        })
    }

    /// The progress history of attempt `attempt` of `id` (the latest
    /// attempt with one when `None`): the attempt and its points.
    pub fn progress_history(
        &self,
        id: TaskId,
        attempt: Option<u32>,
    ) -> Option<(u32, Vec<ProgressPoint>)> {
        let histories = self.progress.get(&id)?;
        let (n, history) = match attempt {
            Some(attempt) => histories.0.iter().find(|(n, _)| *n == attempt)?,
            None => histories.0.last()?,
        };
        Some((*n, history.points().to_vec()))
    }
}
