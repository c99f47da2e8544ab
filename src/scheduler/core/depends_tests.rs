//! Dependencies, tested in both ways a task starts (a thread of the pool,
//! a worker process): a dependent starts only after its dependencies
//! completed, and the end of a dependency reaches its dependents.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::ready_tests::{MODES, Mode, core_with, start_all};
use super::{AttemptResult, Core, RequestError, Settled, Waiting};
use crate::model::{OnDependencyFailure, TaskId, TaskRecord, TaskSpec, TaskStatus};
use crate::scheduler::errors::DependencyError;
use crate::tasks::TaskError;

/// A task spec with no retries that depends on `after`.
fn after(after: &[u64]) -> TaskSpec {
    after
        .iter()
        .fold(TaskSpec::new("noop", vec![]).max_retries(0), |spec, id| {
            spec.after(TaskId(*id))
        })
}

/// Accepts tasks (id, spec) at time 0.
fn accept(core: &mut Core, tasks: Vec<(u64, TaskSpec)>) {
    let records = tasks
        .into_iter()
        .map(|(id, spec)| Arc::new(TaskRecord::new(TaskId(id), spec, 0)))
        .collect();
    let inserted = core.insert_queued(records, 0);
    assert!(inserted.cancelled.is_empty());
}

/// Ends the running attempt of `id` the way `mode` reports it, then puts
/// the tasks it unblocked in the ready queue (as the scheduler does once
/// the change is out).
fn finish(core: &mut Core, mode: Mode, id: u64, result: AttemptResult) -> Settled {
    let id = TaskId(id);
    let run = core.tasks[&id].run.as_ref().expect("it runs");
    let (worker, attempt) = (run.worker, run.attempt);
    let settled = match mode {
        Mode::Pool => core.finish_attempt(worker, id, attempt, result, Instant::now(), 2),
        Mode::Workers => {
            core.finish_remote("box-1", id, attempt, result, None, 1, Instant::now(), 2)
        }
    };
    for unblocked in &settled.unblocked {
        assert!(core.enqueue_if_queued(*unblocked));
    }
    settled
}

fn completed() -> AttemptResult {
    AttemptResult::Completed(json!(null))
}

fn failed() -> AttemptResult {
    AttemptResult::Error(TaskError::fatal("broken"))
}

fn status(core: &Core, id: u64) -> TaskStatus {
    core.tasks[&TaskId(id)].record.status
}

#[test]
fn a_chain_runs_in_order_in_both_modes() {
    for mode in MODES {
        let mut core = core_with(&[(1, 0)]);
        accept(
            &mut core,
            vec![(2, after(&[1]).priority(9)), (3, after(&[2]).priority(9))],
        );
        accept(&mut core, vec![(4, TaskSpec::new("noop", vec![]))]);
        assert_eq!(start_all(&mut core, mode), vec![4, 1], "{mode:?}");
        let settled = finish(&mut core, mode, 1, completed());
        assert_eq!(settled.unblocked, vec![TaskId(2)], "{mode:?}");
        assert_eq!(start_all(&mut core, mode), vec![2], "{mode:?}");
        assert!(!core.enqueue_if_queued(TaskId(3)), "3 still waits for 2");
        finish(&mut core, mode, 2, completed());
        assert_eq!(start_all(&mut core, mode), vec![3], "{mode:?}");
    }
}

#[test]
fn a_fan_in_starts_once_after_its_last_dependency_in_both_modes() {
    for mode in MODES {
        let mut core = core_with(&[(1, 5), (2, 5), (3, 5)]);
        accept(&mut core, vec![(4, after(&[1, 2, 3]))]);
        assert_eq!(start_all(&mut core, mode), vec![1, 2, 3], "{mode:?}");
        assert!(finish(&mut core, mode, 2, completed()).unblocked.is_empty());
        let why = core.waiting(&[TaskId(4)], 0, None);
        assert_eq!(
            why[0],
            Some(Waiting::Dependencies {
                count: 2,
                ids: vec![TaskId(1), TaskId(3)]
            })
        );
        assert_eq!(
            why[0].as_ref().map(Waiting::code),
            Some("waiting_for_dependencies")
        );
        assert!(finish(&mut core, mode, 3, completed()).unblocked.is_empty());
        assert_eq!(start_all(&mut core, mode), Vec::<u64>::new());
        let settled = finish(&mut core, mode, 1, completed());
        assert_eq!(settled.unblocked, vec![TaskId(4)], "{mode:?}");
        assert_eq!(start_all(&mut core, mode), vec![4], "{mode:?}");
        assert_eq!(start_all(&mut core, mode), Vec::<u64>::new(), "once");
    }
}

#[test]
fn a_failed_dependency_cancels_its_dependents_transitively_in_both_modes() {
    for mode in MODES {
        let mut core = core_with(&[]);
        accept(
            &mut core,
            vec![
                (1, TaskSpec::new("noop", vec![]).max_retries(0)),
                (2, after(&[1])),
                (3, after(&[2])),
                (
                    4,
                    after(&[1]).on_dependency_failure(OnDependencyFailure::Run),
                ),
            ],
        );
        assert_eq!(start_all(&mut core, mode), vec![1], "{mode:?}");
        let settled = finish(&mut core, mode, 1, failed());
        assert_eq!(status(&core, 1), TaskStatus::Failed);
        let cancelled: Vec<(TaskId, Option<TaskId>)> = settled
            .cascade
            .iter()
            .map(|(change, _)| (change.record.id, change.record.cancelled_by))
            .collect();
        assert_eq!(
            cancelled,
            vec![(TaskId(2), Some(TaskId(1))), (TaskId(3), Some(TaskId(2)))]
        );
        let error = core.tasks[&TaskId(2)].record.error.clone();
        assert_eq!(
            error.as_deref(),
            Some("cancelled: its dependency, task 1, failed")
        );
        assert_eq!(settled.unblocked, vec![TaskId(4)], "it runs anyway");
        assert_eq!(start_all(&mut core, mode), vec![4], "{mode:?}");
        assert_eq!(core.counts()[TaskStatus::Cancelled.index()], 2);
    }
}

#[test]
fn cancelling_a_waiting_dependency_cancels_its_dependents() {
    let mut core = core_with(&[(1, 5)]);
    accept(&mut core, vec![(2, after(&[1]))]);
    let (_, settled) = core.cancel(TaskId(1), true, 3).expect("queued");
    assert_eq!(settled.cascade.len(), 1);
    assert_eq!(status(&core, 2), TaskStatus::Cancelled);
    assert_eq!(
        core.tasks[&TaskId(2)].record.error.as_deref(),
        Some("cancelled: its dependency, task 1, cancelled")
    );
}

#[test]
fn retry_with_cascade_queues_the_dependents_again_and_they_wait_again() {
    for mode in MODES {
        let mut core = core_with(&[]);
        accept(
            &mut core,
            vec![
                (1, TaskSpec::new("noop", vec![]).max_retries(0)),
                (2, after(&[1])),
                (3, after(&[2])),
            ],
        );
        start_all(&mut core, mode);
        finish(&mut core, mode, 1, failed());
        assert_eq!(
            core.retry(TaskId(3)).err(),
            Some(RequestError::DependencyFailed {
                id: TaskId(3),
                dependency: TaskId(2),
                status: TaskStatus::Cancelled
            })
        );
        let changes = core.retry_tasks(TaskId(1), true).expect("retryable");
        let ids: Vec<TaskId> = changes.iter().map(|change| change.record.id).collect();
        assert_eq!(ids, vec![TaskId(1), TaskId(2), TaskId(3)]);
        assert!(changes.iter().all(|c| c.record.cancelled_by.is_none()));
        for id in &ids {
            core.enqueue_if_queued(*id);
        }
        assert_eq!(start_all(&mut core, mode), vec![1], "{mode:?}");
        finish(&mut core, mode, 1, completed());
        assert_eq!(start_all(&mut core, mode), vec![2], "{mode:?}");
        finish(&mut core, mode, 2, completed());
        assert_eq!(start_all(&mut core, mode), vec![3], "{mode:?}");
    }
}

#[test]
fn a_retried_dependency_is_waited_for_again_by_a_task_that_runs_anyway() {
    let mut core = core_with(&[]);
    let anyway = after(&[1, 2]).on_dependency_failure(OnDependencyFailure::Run);
    accept(
        &mut core,
        vec![
            (1, TaskSpec::new("noop", vec![]).max_retries(0)),
            (2, TaskSpec::new("noop", vec![]).max_retries(0).priority(0)),
            (3, anyway),
        ],
    );
    assert_eq!(start_all(&mut core, Mode::Pool), vec![1, 2]);
    finish(&mut core, Mode::Pool, 1, failed());
    core.retry(TaskId(1)).expect("retryable");
    assert!(core.enqueue_if_queued(TaskId(1)));
    assert!(
        finish(&mut core, Mode::Pool, 2, completed())
            .unblocked
            .is_empty()
    );
    assert_eq!(start_all(&mut core, Mode::Pool), vec![1]);
    let settled = finish(&mut core, Mode::Pool, 1, completed());
    assert_eq!(settled.unblocked, vec![TaskId(3)]);
}

#[test]
fn dependencies_are_checked_before_a_task_is_accepted() {
    let mut core = core_with(&[(1, 5), (2, 5)]);
    start_all(&mut core, Mode::Pool);
    core.cancel(TaskId(2), true, 1).expect("running");
    let running_two = core.tasks[&TaskId(2)].run.as_ref().map(|r| r.worker);
    let worker = running_two.expect("2 runs");
    let stopped = AttemptResult::Error(TaskError::fatal("stopped"));
    core.finish_attempt(worker, TaskId(2), 1, stopped, Instant::now(), 2);
    assert_eq!(status(&core, 2), TaskStatus::Cancelled);

    let check = |core: &Core, specs: &[TaskSpec]| core.check_dependencies(specs, TaskId(10));
    assert_eq!(check(&core, &[after(&[1])]), Ok(()));
    assert_eq!(
        check(&core, &[after(&[7])]),
        Err((0, DependencyError::Unknown(TaskId(7))))
    );
    assert_eq!(
        check(&core, &[after(&[10])]),
        Err((0, DependencyError::Unknown(TaskId(10))))
    );
    assert_eq!(
        core.check_dependencies(&[after(&[2])], TaskId(1)),
        Err((0, DependencyError::NotEarlier(TaskId(2)))),
        "a known task accepted later"
    );
    assert_eq!(
        check(&core, &[after(&[]), after(&[10])]),
        Ok(()),
        "an earlier task of the batch"
    );
    assert!(matches!(
        check(&core, &[after(&[2])]),
        Err((0, DependencyError::AlreadyFailed { .. }))
    ));
    let anyway = after(&[2]).on_dependency_failure(OnDependencyFailure::Run);
    assert_eq!(check(&core, &[anyway]), Ok(()));

    let batch = [
        TaskSpec::new("noop", vec![]),
        TaskSpec::new("noop", vec![]).after_batch(0).after_batch(0),
    ];
    assert_eq!(super::check_batch_positions(&batch), Ok(()));
    let mut resolved = batch.to_vec();
    super::resolve_batch_positions(&mut resolved, TaskId(10));
    assert_eq!(
        resolved[1].dependency_ids().collect::<Vec<_>>(),
        [TaskId(10)]
    );
    let forward = [TaskSpec::new("noop", vec![]).after_batch(0)];
    assert_eq!(
        super::check_batch_positions(&forward),
        Err((0, DependencyError::BatchIndex { batch_index: 0 }))
    );
}

#[test]
fn after_a_restart_dependents_wait_run_or_are_cancelled_as_before() {
    let mut core = core_with(&[]);
    let mut done = TaskRecord::new(TaskId(1), TaskSpec::new("noop", vec![]), 0);
    done.status = TaskStatus::Completed;
    done.finished_at_us = Some(1);
    let mut broken = TaskRecord::new(TaskId(2), TaskSpec::new("noop", vec![]), 0);
    broken.status = TaskStatus::Failed;
    broken.finished_at_us = Some(1);
    let records = vec![
        done,
        broken,
        TaskRecord::new(TaskId(3), after(&[1]), 0),
        TaskRecord::new(TaskId(4), after(&[3]), 0),
        TaskRecord::new(TaskId(5), after(&[2]), 0),
        TaskRecord::new(TaskId(6), after(&[5]), 0),
    ];
    let changes = core.recover(records, 10, None);
    let cancelled: Vec<TaskId> = changes.iter().map(|change| change.record.id).collect();
    assert_eq!(cancelled, vec![TaskId(5), TaskId(6)]);
    assert_eq!(start_all(&mut core, Mode::Pool), vec![3]);
    finish(&mut core, Mode::Pool, 3, completed());
    assert_eq!(start_all(&mut core, Mode::Pool), vec![4]);
    assert_eq!(core.dependents_of(TaskId(2)), vec![TaskId(5)]);
}
