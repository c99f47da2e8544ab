//! The engine in-process: ordering, parallelism, retries, panics, timeouts,
//! cancellation, validation, resizing, metrics and events.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde_json::json;

use common::{WAIT, start_memory, wait_until};
use taskdeck::model::{EventKind, FailureKind, TaskId, TaskSpec, TaskStatus};
use taskdeck::scheduler::{CancelOutcome, RequestError, SubmitError};
use taskdeck::tasks::{Param, ParamType, Signature, TaskError};

#[test]
fn priority_order_and_fifo_within_a_priority_under_concurrent_submitters() {
    let scheduler = start_memory(0, |_| {});
    let events = scheduler.subscribe();
    let submitters: Vec<_> = (0..4u64)
        .map(|t| {
            let scheduler = scheduler.clone();
            thread::spawn(move || {
                (0..50u64)
                    .map(|i| {
                        let priority = ((t * 7 + i * 3) % 10) as u8;
                        let spec =
                            TaskSpec::new("noop", vec![json!(t), json!(i)]).priority(priority);
                        (
                            scheduler.submit(spec).expect("submit should succeed"),
                            priority,
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut submitted: Vec<(TaskId, u8)> = submitters
        .into_iter()
        .flat_map(|h| h.join().expect("submitter should not panic"))
        .collect();
    assert_eq!(scheduler.queued().len(), 200);

    scheduler.set_workers(1);
    assert!(scheduler.wait_idle(WAIT));
    let started: Vec<TaskId> = events
        .try_iter()
        .filter(|e| e.kind == EventKind::Started)
        .map(|e| e.task.id)
        .collect();
    submitted.sort_by_key(|(id, priority)| (std::cmp::Reverse(*priority), *id));
    let expected: Vec<TaskId> = submitted.iter().map(|(id, _)| *id).collect();
    assert_eq!(started, expected);
    scheduler.shutdown().expect("shutdown should succeed");
}

/// A task that completes only once `n` copies of it run at the same time.
fn register_rendezvous(registry: &mut taskdeck::tasks::Registry, n: usize) {
    let gate = Arc::new((Mutex::new(0usize), Condvar::new()));
    registry.register(
        "rendezvous",
        "waits until n copies run at once",
        Signature::default(),
        move |_ctx, _args| {
            let (count, cv) = &*gate;
            let mut count = count.lock();
            *count += 1;
            cv.notify_all();
            let deadline = Instant::now() + Duration::from_secs(10);
            while *count < n {
                if cv.wait_until(&mut count, deadline).timed_out() {
                    return Err(TaskError::fatal(format!("only {} ran at once", *count)));
                }
            }
            Ok(json!(*count))
        },
    );
}

#[test]
fn w_workers_overlap_w_tasks_and_share_the_load() {
    let workers = 4;
    let scheduler = start_memory(workers, |r| register_rendezvous(r, workers));
    let ids: Vec<TaskId> = (0..workers)
        .map(|_| {
            scheduler
                .submit(TaskSpec::new("rendezvous", vec![]).max_retries(0))
                .expect("submit should succeed")
        })
        .collect();
    for id in ids {
        let record = scheduler.wait(id, WAIT).expect("task should exist");
        assert_eq!(record.status, TaskStatus::Completed, "{record:?}");
    }
    let runs: Vec<u64> = scheduler.workers().iter().map(|w| w.tasks_run).collect();
    assert_eq!(
        runs,
        vec![1; workers],
        "each worker should have run one task"
    );
    scheduler.shutdown().expect("shutdown should succeed");
}

#[test]
fn failing_tasks_are_retried_until_success_or_retries_run_out() {
    let scheduler = start_memory(2, |_| {});
    let recovers = scheduler
        .submit(TaskSpec::new("fail", vec![json!(2)]).max_retries(3))
        .expect("submit should succeed");
    let gives_up = scheduler
        .submit(TaskSpec::new("fail", vec![json!(5)]).max_retries(3))
        .expect("submit should succeed");

    let done = scheduler.wait(recovers, WAIT).expect("task should exist");
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.attempts, 3);
    assert_eq!(done.failures.len(), 2);
    assert_eq!(done.result, Some(json!({ "succeeded_on_attempt": 3 })));

    let failed = scheduler.wait(gives_up, WAIT).expect("task should exist");
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(failed.attempts, 4);
    assert_eq!(failed.failures.len(), 4);
    let numbers: Vec<u32> = failed.failures.iter().map(|f| f.attempt).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4]);
    assert!(failed.failures.iter().all(|f| f.kind == FailureKind::Error));
    assert_eq!(failed.error.as_deref(), Some("planned failure 4 of 5"));
    scheduler.shutdown().expect("shutdown should succeed");
}

#[test]
fn a_panic_is_contained_and_the_pool_keeps_its_size() {
    let scheduler = start_memory(2, |registry| {
        registry.register("boom", "panics", Signature::default(), |_ctx, _args| {
            panic!("kaboom")
        });
    });
    let id = scheduler
        .submit(TaskSpec::new("boom", vec![]).max_retries(1))
        .expect("submit should succeed");
    let record = scheduler.wait(id, WAIT).expect("task should exist");
    assert_eq!(record.status, TaskStatus::Failed);
    assert_eq!(record.failures.len(), 2);
    assert!(
        record
            .failures
            .iter()
            .all(|f| f.kind == FailureKind::Panicked)
    );
    assert!(record.failures[0].message.contains("kaboom"), "{record:?}");
    assert_eq!(scheduler.workers().len(), 2);

    let after = scheduler
        .submit(TaskSpec::new("noop", vec![json!(1)]))
        .expect("submit should succeed");
    let record = scheduler.wait(after, WAIT).expect("task should exist");
    assert_eq!(record.status, TaskStatus::Completed);
    scheduler.shutdown().expect("shutdown should succeed");
}

#[test]
fn a_timeout_stops_the_attempt_and_frees_the_slot() {
    let scheduler = start_memory(1, |registry| {
        // Ignores its cancellation token for a while, like a stuck library call.
        registry.register(
            "stubborn",
            "ignores cancellation",
            Signature::default(),
            |_ctx, _args| {
                thread::sleep(Duration::from_millis(3_000));
                Ok(json!("late"))
            },
        );
    });
    let cooperative = scheduler
        .submit(
            TaskSpec::new("sleep", vec![json!(60_000)])
                .timeout_ms(100)
                .max_retries(0),
        )
        .expect("submit should succeed");
    let begun = Instant::now();
    let record = scheduler
        .wait(cooperative, WAIT)
        .expect("task should exist");
    assert_eq!(record.status, TaskStatus::Failed);
    assert_eq!(record.failures[0].kind, FailureKind::TimedOut);
    assert!(begun.elapsed() < Duration::from_secs(5));

    let stuck = scheduler
        .submit(
            TaskSpec::new("stubborn", vec![])
                .timeout_ms(50)
                .max_retries(0),
        )
        .expect("submit should succeed");
    let behind = scheduler
        .submit(TaskSpec::new("noop", vec![]))
        .expect("submit should succeed");
    let record = scheduler
        .wait(behind, Duration::from_millis(2_500))
        .expect("task should exist");
    assert_eq!(
        record.status,
        TaskStatus::Completed,
        "the task behind a stuck one should run on a replacement worker"
    );
    let stuck = scheduler.wait(stuck, WAIT).expect("task should exist");
    assert_eq!(stuck.status, TaskStatus::Failed);
    assert_eq!(
        stuck.result, None,
        "a late result of a timed-out attempt is discarded"
    );
    assert_eq!(scheduler.workers().len(), 1);
    scheduler.shutdown().expect("shutdown should succeed");
}

#[test]
fn a_cancelled_queued_task_never_runs_and_a_running_one_stops() {
    let scheduler = start_memory(0, |_| {});
    let events = scheduler.subscribe();
    let queued = scheduler
        .submit(TaskSpec::new("noop", vec![]))
        .expect("submit should succeed");
    let kept = scheduler
        .submit(TaskSpec::new("noop", vec![]))
        .expect("submit should succeed");
    assert_eq!(scheduler.cancel(queued), Ok(CancelOutcome::Removed));
    assert_eq!(scheduler.queued(), vec![kept]);
    scheduler.set_workers(2);
    assert!(scheduler.wait_idle(WAIT));
    let record = scheduler.task(queued).expect("task should exist");
    assert_eq!((record.status, record.attempts), (TaskStatus::Cancelled, 0));
    assert!(
        events
            .try_iter()
            .all(|e| !(e.task.id == queued && e.kind == EventKind::Started))
    );
    assert!(matches!(
        scheduler.cancel(queued),
        Err(RequestError::AlreadyFinished { .. })
    ));
    assert_eq!(
        scheduler.cancel(TaskId(999)),
        Err(RequestError::NotFound(TaskId(999)))
    );

    let running = scheduler
        .submit(TaskSpec::new("sleep", vec![json!(60_000)]))
        .expect("submit should succeed");
    assert!(wait_until(WAIT, || {
        scheduler.task(running).map(|r| r.status) == Some(TaskStatus::Running)
    }));
    assert_eq!(scheduler.cancel(running), Ok(CancelOutcome::StopRequested));
    let record = scheduler.wait(running, WAIT).expect("task should exist");
    assert_eq!(record.status, TaskStatus::Cancelled);
    scheduler.shutdown().expect("shutdown should succeed");
}

#[test]
fn bad_submissions_are_rejected_and_change_nothing() {
    let scheduler = start_memory(1, |registry| {
        registry.register(
            "typed",
            "takes a count",
            Signature::new(vec![Param::required("count", ParamType::UInt)]),
            |_ctx, args| Ok(json!(args.u64("count")?)),
        );
    });
    let bad = [
        TaskSpec::new("no_such_task", vec![]),
        TaskSpec::new("mock_ml_task", vec![json!(100)]),
        TaskSpec::new(
            "mock_cv_task",
            vec![json!("fast"), json!("Object Detection")],
        ),
        TaskSpec::new("typed", vec![json!(1), json!(2)]),
        TaskSpec::new("typed", vec![json!(-3)]),
        TaskSpec::new("noop", vec![]).priority(10),
        TaskSpec::new("noop", vec![]).timeout_ms(0),
    ];
    for spec in bad {
        let error = scheduler
            .submit(spec.clone())
            .expect_err("should be rejected");
        assert!(
            matches!(error, SubmitError::Invalid { .. }),
            "{spec:?}: {error}"
        );
        assert!(!error.to_string().is_empty());
    }
    let batch = vec![
        TaskSpec::new("noop", vec![]),
        TaskSpec::new("typed", vec![json!("x")]),
    ];
    let error = scheduler
        .submit_batch(batch)
        .expect_err("batch should be rejected");
    assert!(
        error.to_string().starts_with("task 1 of the batch"),
        "{error}"
    );
    let stats = scheduler.stats();
    assert_eq!(
        stats.counts,
        Default::default(),
        "nothing should have been added"
    );

    let id = scheduler
        .submit(TaskSpec::new("typed", vec![]).kwarg("count", json!(4)))
        .expect("keyword arguments should be accepted");
    assert_eq!(id, TaskId(1), "rejected submissions should not use up ids");
    scheduler.shutdown().expect("shutdown should succeed");
}

#[test]
fn the_pool_resizes_while_running() {
    let scheduler = start_memory(1, |_| {});
    scheduler.set_workers(3);
    assert_eq!(scheduler.workers().len(), 3);
    let ids = scheduler
        .submit_batch(
            (0..30)
                .map(|_| TaskSpec::new("sleep", vec![json!(5)]))
                .collect(),
        )
        .expect("batch should be accepted");
    scheduler.set_workers(1);
    assert!(wait_until(WAIT, || scheduler.workers().len() == 1));
    assert!(scheduler.wait_idle(WAIT));
    for id in ids {
        assert_eq!(
            scheduler.task(id).map(|r| r.status),
            Some(TaskStatus::Completed)
        );
    }
    scheduler.shutdown().expect("shutdown should succeed");
}

#[test]
fn latency_metrics_and_events_follow_each_task() {
    let scheduler = start_memory(2, |_| {});
    let events = scheduler.subscribe();
    let ids = scheduler
        .submit_batch(vec![
            TaskSpec::new("noop", vec![]),
            TaskSpec::new("fail", vec![json!(1)]),
            TaskSpec::new("sleep", vec![json!(20)]),
        ])
        .expect("batch should be accepted");
    assert!(scheduler.wait_idle(WAIT));
    let stats = scheduler.stats();
    assert_eq!(stats.counts.completed, 3);
    assert_eq!(stats.metrics.total_latency.count, 3);
    assert!(stats.metrics.total_latency.max_us >= 20_000);
    let fail = stats
        .metrics
        .per_name
        .iter()
        .find(|n| n.name == "fail")
        .expect("fail should be reported");
    assert_eq!(
        (fail.runs, fail.attempt_failures, fail.completed),
        (2, 1, 1)
    );
    assert_eq!(stats.metrics.finished_last_minute, 3);

    let mut by_task: HashMap<TaskId, Vec<EventKind>> = HashMap::new();
    for event in events.try_iter() {
        by_task.entry(event.task.id).or_default().push(event.kind);
    }
    use EventKind::*;
    assert_eq!(by_task[&ids[0]], vec![Submitted, Started, Completed]);
    assert_eq!(
        by_task[&ids[1]],
        vec![Submitted, Started, Retrying, Requeued, Started, Completed]
    );
    let record = scheduler.task(ids[2]).expect("task should exist");
    assert!(record.run_time_us().unwrap_or(0) >= 20_000);
    assert!(record.total_latency_us() >= record.run_time_us());
    assert!(record.queue_wait_us().is_some());
    scheduler.shutdown().expect("shutdown should succeed");
}

#[test]
fn a_failed_task_can_be_retried_by_hand() {
    let scheduler = start_memory(1, |_| {});
    let id = scheduler
        .submit(TaskSpec::new("fail", vec![json!(1)]).max_retries(0))
        .expect("submit should succeed");
    assert_eq!(
        scheduler.wait(id, WAIT).map(|r| r.status),
        Some(TaskStatus::Failed)
    );
    scheduler
        .retry(id)
        .expect("a failed task should be retryable");
    let record = scheduler.wait(id, WAIT).expect("task should exist");
    // A fresh budget: attempt numbers restart, so fail(1) fails again once.
    assert_eq!(record.status, TaskStatus::Failed);
    assert_eq!(record.failures.len(), 2);
    let running = scheduler
        .submit(TaskSpec::new("noop", vec![]))
        .expect("submit should succeed");
    scheduler.wait(running, WAIT);
    assert!(matches!(
        scheduler.retry(running),
        Err(RequestError::NotRetryable { .. })
    ));
    scheduler.shutdown().expect("shutdown should succeed");
}

#[test]
fn shutdown_puts_back_tasks_that_outlive_the_grace_period() {
    let mut config = common::config(taskdeck::scheduler::StoreMode::Memory, 1);
    config.shutdown_grace = Duration::from_millis(50);
    let scheduler =
        taskdeck::scheduler::Scheduler::start(config, taskdeck::tasks::Registry::with_builtins())
            .expect("scheduler should start");
    let id = scheduler
        .submit(TaskSpec::new("sleep", vec![json!(60_000)]))
        .expect("submit should succeed");
    scheduler
        .submit(TaskSpec::new("sleep", vec![json!(60_000)]))
        .expect("submit should succeed");
    assert!(wait_until(WAIT, || {
        scheduler.task(id).map(|r| r.status) == Some(TaskStatus::Running)
    }));
    let report = scheduler.shutdown().expect("shutdown should succeed");
    assert_eq!(report.left_queued, 2);
    let record = scheduler.task(id).expect("task should exist");
    assert_eq!((record.status, record.attempts), (TaskStatus::Queued, 0));
    assert!(matches!(
        scheduler.submit(TaskSpec::new("noop", vec![])),
        Err(SubmitError::ShuttingDown)
    ));
}

#[test]
fn finished_history_is_bounded_by_the_retention() {
    let mut config = common::config(taskdeck::scheduler::StoreMode::Memory, 2);
    config.retention = taskdeck::store::Retention {
        max_finished: 5,
        max_age: None,
    };
    let scheduler =
        taskdeck::scheduler::Scheduler::start(config, taskdeck::tasks::Registry::with_builtins())
            .expect("scheduler should start");
    let ids = scheduler
        .submit_batch(
            (0..20)
                .map(|i| TaskSpec::new("noop", vec![json!(i)]))
                .collect(),
        )
        .expect("batch should be accepted");
    assert!(scheduler.wait_idle(WAIT));
    let kept: Vec<TaskId> = ids
        .iter()
        .copied()
        .filter(|id| scheduler.task(*id).is_some())
        .collect();
    assert_eq!(kept.len(), 5, "only the newest finished tasks are kept");
    assert_eq!(scheduler.stats().counts.completed, 5);
    assert_eq!(scheduler.stats().metrics.total_latency.count, 20);
    scheduler.shutdown().expect("shutdown should succeed");
}

#[test]
fn a_delayed_task_waits_queued_for_its_time_and_then_starts_at_once() {
    let scheduler = start_memory(2, |_| {});
    let not_before = taskdeck::model::now_us() + 600_000;
    let delayed = scheduler
        .submit(
            TaskSpec::new("noop", vec![])
                .priority(9)
                .not_before_us(not_before),
        )
        .expect("submit");
    let now = scheduler
        .submit(TaskSpec::new("noop", vec![]))
        .expect("submit");
    let first = scheduler.wait(now, WAIT).expect("known task");
    assert_eq!(first.status, TaskStatus::Completed);
    let waiting = scheduler.task(delayed).expect("known task");
    assert_eq!(
        waiting.status,
        TaskStatus::Queued,
        "a higher priority does not start it early"
    );
    assert_eq!(waiting.spec.not_before_us, Some(not_before));
    let done = scheduler.wait(delayed, WAIT).expect("known task");
    assert_eq!(done.status, TaskStatus::Completed);
    let started = done.first_started_at_us.expect("it ran");
    assert!(
        started >= not_before,
        "started {} µs early",
        not_before - started
    );
    scheduler.shutdown().expect("shutdown should succeed");
}

#[test]
fn pausing_with_stop_running_puts_running_tasks_back_without_counting_them() {
    let scheduler = start_memory(1, |_| {});
    let id = scheduler
        .submit(TaskSpec::new("sleep", vec![json!(60_000)]))
        .expect("submit");
    assert!(wait_until(WAIT, || scheduler
        .task(id)
        .is_some_and(|r| r.status == TaskStatus::Running)));
    assert_eq!(scheduler.pause_and_stop().expect("paused"), 1);
    assert!(wait_until(WAIT, || scheduler
        .task(id)
        .is_some_and(|r| r.status == TaskStatus::Queued)));
    let record = scheduler.task(id).expect("known");
    assert_eq!(record.attempts, 0, "the stopped attempt does not count");
    assert!(record.failures.is_empty());
    assert!(scheduler.is_paused());
    scheduler.resume().expect("resumed");
    assert!(wait_until(WAIT, || scheduler
        .task(id)
        .is_some_and(
            |r| r.status == TaskStatus::Running && r.attempts == 1
        )));
    scheduler.cancel(id).expect("cancel");
    scheduler.shutdown().expect("shutdown should succeed");
}
