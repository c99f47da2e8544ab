//! How attempts end: completion, failure with retry or not, timeout, a
//! dying worker, shutdown put-back, and the retention of finished tasks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{AttemptResult, Change, Core, Settled, TaskCounter, WorkerId};
use crate::model::{AttemptFailure, EventKind, FailureKind, TaskId, TaskLog, TaskStatus};
use crate::scheduler::policy;
use crate::tasks::{CancelToken, StopReason};

impl Core {
    /// Applies the end of attempt `attempt` of `id` that ran on `worker`.
    /// An attempt the scheduler already settled (timed out, put back at
    /// shutdown) changes nothing.
    pub fn finish_attempt(
        &mut self,
        worker: WorkerId,
        id: TaskId,
        attempt: u32,
        result: AttemptResult,
        now: Instant,
        now_us: i64,
    ) -> Settled {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return Settled::default();
        };
        let current = entry
            .run
            .as_ref()
            .is_some_and(|run| run.worker == worker && run.attempt == attempt);
        if !current || entry.record.status != TaskStatus::Running {
            return Settled::default();
        }
        let Some(run) = entry.run.take() else {
            return Settled::default();
        };
        let run_time_us = now_us - entry.record.started_at_us.unwrap_or(now_us);
        let stop = run.cancel.reason();
        let (failure, succeeded) = match result {
            AttemptResult::Completed(value) => {
                Arc::make_mut(&mut entry.record).result = Some(value);
                (None, true)
            }
            AttemptResult::Error(error) => {
                let stop = error.stop.or(stop);
                (
                    Some((FailureKind::Error, error.message, error.retryable, stop)),
                    false,
                )
            }
            AttemptResult::Panicked(message) => (
                Some((
                    FailureKind::Panicked,
                    format!("panicked: {message}"),
                    true,
                    stop,
                )),
                false,
            ),
        };
        self.release_runner(worker, id, true, !succeeded);
        let mut settled = Settled {
            attempt: Some((succeeded, run_time_us)),
            ..Settled::default()
        };
        match failure {
            None => self.finalize(id, TaskStatus::Completed, None, now_us, &mut settled),
            Some((_, _, _, Some(StopReason::Cancelled))) => {
                self.finalize(
                    id,
                    TaskStatus::Cancelled,
                    Some("cancelled while running".to_owned()),
                    now_us,
                    &mut settled,
                );
            }
            Some((_, _, _, Some(StopReason::Shutdown | StopReason::Paused))) => {
                settled.attempt = None;
                self.put_back(id, &mut settled);
            }
            Some((_, _, _, Some(StopReason::TimedOut))) => {
                // A worker process counts the timeout itself and reports it.
                self.record_timeout(id, now, now_us, &mut settled);
            }
            Some((kind, message, retryable, _)) => {
                self.record_failure(
                    id,
                    kind,
                    message,
                    retryable,
                    true,
                    now,
                    now_us,
                    &mut settled,
                );
            }
        }
        settled
    }

    /// Keeps the output log an attempt recorded in the task's record, when
    /// that attempt (on that worker) is still the running one; call it just
    /// before [`Core::finish_attempt`].
    pub fn set_log(&mut self, worker: WorkerId, id: TaskId, attempt: u32, log: TaskLog) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        let current = entry
            .run
            .as_ref()
            .is_some_and(|run| run.worker == worker && run.attempt == attempt);
        if current {
            Arc::make_mut(&mut entry.record).log = Some(log);
        }
    }

    /// Ends a running attempt that passed its deadline: the attempt counts as
    /// timed out and its worker is abandoned (removed from the pool, so a
    /// replacement can start while the old thread winds down). Returns none
    /// when that attempt is no longer running.
    pub fn time_out(
        &mut self,
        id: TaskId,
        attempt: u32,
        now: Instant,
        now_us: i64,
    ) -> Option<Settled> {
        let entry = self.tasks.get_mut(&id)?;
        if entry.record.status != TaskStatus::Running
            || entry.run.as_ref().is_none_or(|run| run.attempt != attempt)
        {
            return None;
        }
        let stop = self.remote_stop(id, StopReason::TimedOut);
        let entry = self.tasks.get_mut(&id)?;
        let run = entry.run.take()?;
        run.cancel.cancel(StopReason::TimedOut);
        let run_time_us = now_us - entry.record.started_at_us.unwrap_or(now_us);
        self.release_runner(run.worker, id, true, true);
        // A thread stuck in the task is abandoned; a worker process is asked
        // to stop the attempt and keeps its other slots.
        self.workers.remove(&run.worker);
        let mut settled = Settled {
            attempt: Some((false, run_time_us)),
            stop,
            ..Settled::default()
        };
        self.record_timeout(id, now, now_us, &mut settled);
        Some(settled)
    }

    /// Counts the attempt of `id` as timed out (retried like any retryable
    /// failure).
    fn record_timeout(&mut self, id: TaskId, now: Instant, now_us: i64, settled: &mut Settled) {
        let timeout_ms = self
            .tasks
            .get(&id)
            .and_then(|entry| entry.record.spec.timeout_ms)
            .unwrap_or(0);
        let message = format!("timed out after {timeout_ms} ms");
        self.record_failure(
            id,
            FailureKind::TimedOut,
            message,
            true,
            true,
            now,
            now_us,
            settled,
        );
    }

    /// The worker thread died outside a task; its attempt is lost.
    pub fn worker_died(&mut self, worker: WorkerId, now: Instant, now_us: i64) -> Option<Settled> {
        let slot = self.workers.remove(&worker)?;
        let id = slot.current?;
        let entry = self.tasks.get_mut(&id)?;
        let attempt = entry
            .run
            .as_ref()
            .filter(|run| run.worker == worker)?
            .attempt;
        entry.run = None;
        self.busy = self.busy.saturating_sub(1);
        self.free_gpus(id);
        let mut settled = Settled::default();
        let message = format!("worker {} died during attempt {attempt}", slot.name);
        self.record_lost(id, message, true, now, now_us, &mut settled);
        Some(settled)
    }

    /// Counts the attempt of `id` as lost (its worker died or went silent);
    /// retried like any retryable failure.
    ///
    /// Without `backoff` the retry is queued at once (the attempt still
    /// counts): for an attempt lost with its worker process, whose next
    /// attempt runs on another.
    pub(super) fn record_lost(
        &mut self,
        id: TaskId,
        message: String,
        backoff: bool,
        now: Instant,
        now_us: i64,
        settled: &mut Settled,
    ) {
        self.record_failure(
            id,
            FailureKind::Lost,
            message,
            true,
            backoff,
            now,
            now_us,
            settled,
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_failure(
        &mut self,
        id: TaskId,
        kind: FailureKind,
        message: String,
        retryable: bool,
        backoff: bool,
        now: Instant,
        now_us: i64,
        settled: &mut Settled,
    ) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        if kind == FailureKind::Lost {
            self.tally.add(entry.name_slot, TaskCounter::Lost);
        }
        let record = Arc::make_mut(&mut entry.record);
        record.failures.push(AttemptFailure {
            attempt: record.attempts,
            kind,
            message: message.clone(),
            worker: record.worker.clone(),
            at_us: now_us,
        });
        if policy::should_retry(retryable, record.attempts, record.spec.max_retries) {
            let delay = if backoff {
                self.backoff.delay(record.attempts, fastrand::f64())
            } else {
                Duration::ZERO
            };
            let retry_at_us = policy::due_at_us(delay);
            record.retry_at_us = Some(retry_at_us);
            Self::set_status(
                &mut self.counts,
                &mut self.queues,
                record,
                TaskStatus::Retrying,
            );
            self.tally.add(entry.name_slot, TaskCounter::Retried);
            settled.retry_at = Some((now + delay, retry_at_us));
            settled.change = Some(Change {
                kind: EventKind::Retrying,
                record: Arc::clone(&entry.record),
            });
        } else {
            self.finalize(id, TaskStatus::Failed, Some(message), now_us, settled);
        }
    }

    /// Puts a running task back in the queue without counting its attempt.
    pub(super) fn put_back(&mut self, id: TaskId, settled: &mut Settled) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        entry.run = None;
        let record = Arc::make_mut(&mut entry.record);
        record.attempts = record.attempts.saturating_sub(1);
        Self::set_status(
            &mut self.counts,
            &mut self.queues,
            record,
            TaskStatus::Queued,
        );
        let lane = self.queues.lane_of(&record.spec);
        self.queue
            .push(lane, record.spec.priority, id, super::need_of(&record.spec));
        settled.requeued = true;
        settled.change = Some(Change {
            kind: EventKind::Requeued,
            record: Arc::clone(&entry.record),
        });
    }

    /// Puts back every task still running (shutdown after the grace period,
    /// for attempts that did not stop when asked).
    pub fn put_back_running(&mut self) -> Vec<Change> {
        let running: Vec<(TaskId, WorkerId)> = self
            .tasks
            .iter()
            .filter_map(|(id, entry)| entry.run.as_ref().map(|run| (*id, run.worker)))
            .filter(|(_, worker)| !self.is_remote(*worker))
            .collect();
        let mut changes = Vec::new();
        for (id, worker) in running {
            self.release_runner(worker, id, false, false);
            self.workers.remove(&worker);
            let mut settled = Settled::default();
            self.put_back(id, &mut settled);
            changes.extend(settled.change);
        }
        changes
    }

    /// Asks every running attempt to stop for `reason`: the pool's through
    /// their tokens; returns the stop requests for worker processes.
    pub fn stop_running(&self, reason: StopReason) -> Vec<super::StopRequest> {
        self.stop_running_where(reason, |_| true)
    }

    /// [`Core::stop_running`] for the tasks of queue `name`.
    pub fn stop_running_in(&self, name: &str, reason: StopReason) -> Vec<super::StopRequest> {
        self.stop_running_where(reason, |spec| spec.queue_name() == name)
    }

    fn stop_running_where(
        &self,
        reason: StopReason,
        which: impl Fn(&crate::model::TaskSpec) -> bool,
    ) -> Vec<super::StopRequest> {
        let mut requests = Vec::new();
        for (id, entry) in &self.tasks {
            let Some(run) = &entry.run else {
                continue;
            };
            if !which(&entry.record.spec) {
                continue;
            }
            if self.is_remote(run.worker) {
                requests.extend(self.remote_stop(*id, reason));
            } else {
                run.cancel.cancel(reason);
            }
        }
        requests
    }

    /// Cancellation tokens of every attempt running on a thread of the pool
    /// (worker processes keep theirs running across a scheduler restart).
    pub fn running_tokens(&self) -> Vec<CancelToken> {
        self.tasks
            .values()
            .filter_map(|entry| entry.run.as_ref())
            .filter(|run| !self.is_remote(run.worker))
            .map(|run| run.cancel.clone())
            .collect()
    }

    pub(super) fn finalize(
        &mut self,
        id: TaskId,
        status: TaskStatus,
        error: Option<String>,
        now_us: i64,
        settled: &mut Settled,
    ) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        let record = Arc::make_mut(&mut entry.record);
        record.finished_at_us = Some(now_us);
        record.retry_at_us = None;
        record.error = error;
        // A hold means "do not start yet"; a finished task has nothing left
        // to hold.
        record.held = false;
        Self::set_status(&mut self.counts, &mut self.queues, record, status);
        let counter = match status {
            TaskStatus::Completed => Some(TaskCounter::Completed),
            TaskStatus::Failed => Some(TaskCounter::Failed),
            TaskStatus::Cancelled => Some(TaskCounter::Cancelled),
            TaskStatus::Queued | TaskStatus::Running | TaskStatus::Retrying => None,
        };
        if let Some(counter) = counter {
            self.tally.add(entry.name_slot, counter);
        }
        if status != TaskStatus::Cancelled {
            let latency = record.total_latency_us().unwrap_or(0);
            settled.finished = Some((status == TaskStatus::Completed, latency));
        }
        let kind = match status {
            TaskStatus::Completed => EventKind::Completed,
            TaskStatus::Failed => EventKind::Failed,
            _ => EventKind::Cancelled,
        };
        settled.change = Some(Change {
            kind,
            record: Arc::clone(&entry.record),
        });
        settled.waiters = self.waiters.remove(&id).unwrap_or_default();
        self.finished.push_back((id, now_us));
        self.dependency_ended(id, status, now_us, settled);
        self.evict(now_us);
    }

    /// Drops the oldest finished tasks beyond the retention.
    pub(super) fn evict(&mut self, now_us: i64) {
        let max_age_us = self
            .retention
            .max_age
            .map(|age| i64::try_from(age.as_micros()).unwrap_or(i64::MAX));
        while let Some(&(id, finished_at)) = self.finished.front() {
            let too_many = self.finished.len() > self.retention.max_finished;
            let too_old = max_age_us.is_some_and(|age| now_us.saturating_sub(finished_at) > age);
            if !too_many && !too_old {
                break;
            }
            self.finished.pop_front();
            let stale = self.tasks.get(&id).is_none_or(|entry| {
                !entry.record.status.is_final() || entry.record.finished_at_us != Some(finished_at)
            });
            if !stale && let Some(entry) = self.tasks.remove(&id) {
                self.forget_dependents(id);
                self.progress.remove(&id);
                let index = entry.record.status.index();
                self.counts[index] = self.counts[index].saturating_sub(1);
                self.queues
                    .count(&entry.record.spec, entry.record.status, false);
            }
        }
    }
}
