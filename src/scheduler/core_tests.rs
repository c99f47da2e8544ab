//! Unit tests of the scheduler's state transitions, without threads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::core::{AttemptResult, CancelOutcome, Core, RequestError};
use super::policy::Backoff;
use crate::model::{EventKind, FailureKind, TaskId, TaskRecord, TaskSpec, TaskStatus};
use crate::store::Retention;
use crate::tasks::{StopReason, TaskError};

fn core_with(tasks: &[(u64, u8)], max_finished: usize) -> Core {
    let backoff = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_secs(1),
    };
    let retention = Retention {
        max_finished,
        max_age: None,
    };
    let mut core = Core::new(1, retention, backoff);
    core.insert_queued(
        tasks
            .iter()
            .map(|(id, priority)| {
                let spec = TaskSpec::new("noop", vec![])
                    .priority(*priority)
                    .max_retries(1);
                Arc::new(TaskRecord::new(TaskId(*id), spec, 0))
            })
            .collect(),
        0,
    );
    core
}

#[test]
fn a_worker_takes_tasks_by_priority_and_marks_them_running() {
    let mut core = core_with(&[(1, 5), (2, 9)], 10);
    let (worker, _) = core.add_worker();
    let job = core.next_job(worker, 100).expect("a task should be ready");
    assert_eq!(job.started.record.id, TaskId(2));
    assert_eq!(job.started.kind, EventKind::Started);
    assert_eq!(job.started.record.attempts, 1);
    assert_eq!(core.busy(), 1);
    assert_eq!(core.counts()[TaskStatus::Running.index()], 1);
}

#[test]
fn a_failed_attempt_retries_then_fails_and_a_stale_result_changes_nothing() {
    let mut core = core_with(&[(1, 5)], 10);
    let (worker, _) = core.add_worker();
    let now = Instant::now();
    let job = core.next_job(worker, 0).expect("ready");
    let error = AttemptResult::Error(TaskError::retryable("boom"));
    let settled = core.finish_attempt(worker, TaskId(1), 1, error, now, 10);
    let change = settled.change.expect("a transition");
    assert_eq!(change.kind, EventKind::Retrying);
    let (_, retry_at_us) = settled.retry_at.expect("a retry time");
    drop(job);

    let stale = core.finish_attempt(
        worker,
        TaskId(1),
        1,
        AttemptResult::Completed(json!(1)),
        now,
        20,
    );
    assert!(
        stale.change.is_none(),
        "a settled attempt cannot settle again"
    );

    assert!(
        core.retry_due(TaskId(1), retry_at_us + 1).is_none(),
        "only the armed retry counts"
    );
    assert!(core.retry_due(TaskId(1), retry_at_us).is_some());
    assert!(core.queue.is_empty(), "queued only after the event is out");
    assert!(core.enqueue_if_queued(TaskId(1)));
    core.next_job(worker, 30).expect("ready again");
    let settled = core.finish_attempt(
        worker,
        TaskId(1),
        2,
        AttemptResult::Panicked("oops".into()),
        now,
        40,
    );
    let record = settled.change.expect("a transition").record;
    assert_eq!(record.status, TaskStatus::Failed);
    assert_eq!(record.failures.len(), 2);
    assert_eq!(record.failures[1].kind, FailureKind::Panicked);
    assert_eq!(settled.finished, Some((false, 40)));
}

#[test]
fn a_timeout_abandons_the_worker_and_frees_its_slot() {
    let mut core = core_with(&[(1, 5)], 10);
    let (worker, _) = core.add_worker();
    let job = core.next_job(worker, 0).expect("ready");
    let settled = core
        .time_out(TaskId(1), 1, Instant::now(), 50)
        .expect("the attempt was running");
    assert_eq!(job.cancel.reason(), Some(StopReason::TimedOut));
    assert!(core.workers.is_empty(), "the stuck worker left the pool");
    assert_eq!(core.busy(), 0);
    let record = settled.change.expect("a transition").record;
    assert_eq!(record.status, TaskStatus::Retrying);
    assert_eq!(record.failures[0].kind, FailureKind::TimedOut);
    assert!(core.time_out(TaskId(1), 1, Instant::now(), 60).is_none());
}

#[test]
fn cancelling_is_removal_for_waiting_tasks_and_a_request_for_running_ones() {
    let mut core = core_with(&[(1, 5), (2, 5)], 10);
    let (worker, _) = core.add_worker();
    let job = core.next_job(worker, 0).expect("ready");
    let (outcome, settled) = core.cancel(TaskId(2), true, 5).expect("queued task");
    assert_eq!(outcome, CancelOutcome::Removed);
    assert_eq!(settled.change.map(|c| c.kind), Some(EventKind::Cancelled));
    assert!(core.queue.is_empty());
    assert!(!core.enqueue_if_queued(TaskId(2)));

    assert_eq!(
        core.cancel(TaskId(1), false, 6).err(),
        Some(RequestError::Running(TaskId(1))),
        "removing leaves a running task alone"
    );
    assert!(job.cancel.reason().is_none());
    let (outcome, settled) = core.cancel(TaskId(1), true, 6).expect("running task");
    assert_eq!(outcome, CancelOutcome::StopRequested);
    assert!(settled.change.is_none());
    assert_eq!(job.cancel.reason(), Some(StopReason::Cancelled));
    let stopped = AttemptResult::Error(TaskError::stopped(StopReason::Cancelled));
    let settled = core.finish_attempt(worker, TaskId(1), 1, stopped, Instant::now(), 7);
    assert_eq!(
        settled.change.map(|c| c.record.status),
        Some(TaskStatus::Cancelled)
    );
    assert!(matches!(
        core.cancel(TaskId(1), true, 8),
        Err(RequestError::AlreadyFinished { .. })
    ));
}

#[test]
fn recovery_requeues_in_order_and_counts_lost_attempts() {
    let mut core = core_with(&[], 10);
    let mut running = TaskRecord::new(TaskId(3), TaskSpec::new("noop", vec![]).max_retries(0), 0);
    running.status = TaskStatus::Running;
    running.attempts = 1;
    let mut retrying = TaskRecord::new(TaskId(2), TaskSpec::new("noop", vec![]), 0);
    retrying.status = TaskStatus::Retrying;
    retrying.attempts = 1;
    let queued = TaskRecord::new(TaskId(1), TaskSpec::new("noop", vec![]), 0);
    let mut lost = TaskRecord::new(TaskId(4), TaskSpec::new("noop", vec![]), 0);
    lost.status = TaskStatus::Running;
    lost.attempts = 1;
    let changes = core.recover(vec![queued, retrying, running, lost], 100, None);
    let kinds: Vec<(u64, EventKind)> = changes.iter().map(|c| (c.record.id.0, c.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (2, EventKind::Requeued),
            (3, EventKind::Failed),
            (4, EventKind::Requeued)
        ]
    );
    assert_eq!(
        core.queue.iter().map(|id| id.0).collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
    let failed = &changes[1].record;
    assert_eq!(failed.failures[0].kind, FailureKind::Lost);
    assert_eq!(core.counts()[TaskStatus::Failed.index()], 1);
}

#[test]
fn the_oldest_finished_tasks_are_evicted_beyond_the_retention() {
    let mut core = core_with(&[(1, 5), (2, 5), (3, 5)], 2);
    for id in 1..=3 {
        core.cancel(TaskId(id), true, id as i64)
            .expect("queued task");
    }
    assert!(!core.tasks.contains_key(&TaskId(1)));
    assert!(core.tasks.contains_key(&TaskId(2)) && core.tasks.contains_key(&TaskId(3)));
    assert_eq!(core.counts()[TaskStatus::Cancelled.index()], 2);
}
