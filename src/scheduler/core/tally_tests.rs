//! The lifecycle counters: each transition counts once for its task's
//! name, in both ways a task runs, and the retention never lowers them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::ready_tests::{Mode, core_with, start_next};
use super::{AttemptResult, Core, Counts, TaskCounter};
use crate::model::{TaskId, TaskRecord, TaskSpec, TaskStatus};
use crate::scheduler::policy::Backoff;
use crate::store::Retention;
use crate::tasks::TaskError;

fn accept(core: &mut Core, specs: Vec<(u64, TaskSpec)>) {
    let records = specs
        .into_iter()
        .map(|(id, spec)| Arc::new(TaskRecord::new(TaskId(id), spec, 0)))
        .collect();
    core.insert_queued(records, 0);
}

fn totals(core: &Core, name: &str) -> Counts {
    core.totals()
        .into_iter()
        .find(|(n, _)| &**n == name)
        .map(|(_, counts)| counts)
        .unwrap_or_default()
}

/// Ends the running attempt of `id` on the pool's thread with `result`.
fn end(core: &mut Core, id: u64, result: AttemptResult) -> super::Settled {
    let id = TaskId(id);
    let run = core.tasks[&id].run.as_ref().expect("it runs");
    let (worker, attempt) = (run.worker, run.attempt);
    core.finish_attempt(worker, id, attempt, result, Instant::now(), 5)
}

fn boom() -> AttemptResult {
    AttemptResult::Error(TaskError::retryable("boom"))
}

/// Queues a task whose backoff was armed in `settled` again, and starts it.
fn retry_now(core: &mut Core, id: u64, settled: &super::Settled) {
    let (_, retry_at_us) = settled.retry_at.expect("a retry is armed");
    core.retry_due(TaskId(id), retry_at_us).expect("requeued");
    assert!(core.enqueue_if_queued(TaskId(id)));
    assert_eq!(start_next(core, Mode::Pool), Some(TaskId(id)));
}

#[test]
fn each_transition_counts_once_for_its_name() {
    let mut core = core_with(&[]);
    accept(
        &mut core,
        vec![
            (1, TaskSpec::new("noop", vec![]).max_retries(0)),
            (2, TaskSpec::new("fail", vec![]).max_retries(1)),
            (3, TaskSpec::new("noop", vec![]).max_retries(0)),
            (4, TaskSpec::new("sleep", vec![]).after(TaskId(2))),
        ],
    );
    let started: Vec<_> = std::iter::from_fn(|| start_next(&mut core, Mode::Pool)).collect();
    assert_eq!(started, [TaskId(1), TaskId(2), TaskId(3)]);

    end(&mut core, 1, AttemptResult::Completed(json!(1)));
    let first = end(&mut core, 2, boom());
    core.cancel(TaskId(3), true, 5).expect("stop requested");
    end(&mut core, 3, boom());
    // The retry fails for good and takes its dependent down with it.
    retry_now(&mut core, 2, &first);
    let second = end(&mut core, 2, boom());
    assert_eq!(second.cascade.len(), 1);
    // A manual retry with cascade queues both again.
    assert_eq!(core.retry_tasks(TaskId(2), true).expect("retried").len(), 2);
    assert!(core.enqueue_if_queued(TaskId(2)));
    assert_eq!(start_next(&mut core, Mode::Pool), Some(TaskId(2)));
    // Its worker thread dies: the attempt is lost and runs again.
    let worker = core.tasks[&TaskId(2)].run.as_ref().expect("runs").worker;
    let lost = core
        .worker_died(worker, Instant::now(), 6)
        .expect("an attempt was lost");
    assert!(lost.retry_at.is_some());

    // [submitted, completed, failed, retried, cancelled, lost]
    assert_eq!(totals(&core, "noop"), [2, 1, 0, 0, 1, 0]);
    assert_eq!(totals(&core, "fail"), [1, 0, 1, 3, 0, 1]);
    assert_eq!(totals(&core, "sleep"), [1, 0, 0, 1, 1, 0]);
    // In the order first seen; nothing counted as "other".
    let names: Vec<String> = core.totals().iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, ["noop", "fail", "sleep"]);
}

#[test]
fn an_attempt_lost_with_its_worker_process_counts_as_lost_and_retried() {
    let mut core = core_with(&[]);
    accept(
        &mut core,
        vec![(1, TaskSpec::new("noop", vec![]).max_retries(2))],
    );
    assert_eq!(start_next(&mut core, Mode::Workers), Some(TaskId(1)));
    let settled = core.expire_leases(Instant::now() + Duration::from_secs(120), 10);
    assert_eq!(settled.len(), 1, "the lease ran out");
    assert_eq!(totals(&core, "noop"), [1, 0, 0, 1, 0, 1]);
}

#[test]
fn the_retention_dropping_finished_tasks_lowers_no_counter() {
    let backoff = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_secs(1),
    };
    let retention = Retention {
        max_finished: 1,
        max_age: None,
    };
    let mut core = Core::new(0, retention, backoff);
    accept(
        &mut core,
        (1..=3)
            .map(|id| (id, TaskSpec::new("noop", vec![])))
            .collect(),
    );
    for id in 1..=3 {
        assert_eq!(start_next(&mut core, Mode::Pool), Some(TaskId(id)));
        end(&mut core, id, AttemptResult::Completed(json!(id)));
    }
    assert_eq!(core.counts()[TaskStatus::Completed.index()], 1, "one kept");
    assert_eq!(core.tasks.len(), 1);
    assert_eq!(totals(&core, "noop")[TaskCounter::Completed.index()], 3);
    assert_eq!(totals(&core, "noop")[TaskCounter::Submitted.index()], 3);
}

#[test]
fn attempts_lost_when_the_scheduler_stopped_count_at_recovery() {
    let mut core = core_with(&[]);
    let running = |id: u64, max_retries: u32| {
        let spec = TaskSpec::new("noop", vec![]).max_retries(max_retries);
        let mut record = TaskRecord::new(TaskId(id), spec, 0);
        record.status = TaskStatus::Running;
        record.attempts = 1;
        record
    };
    let mut done = TaskRecord::new(TaskId(3), TaskSpec::new("noop", vec![]), 0);
    done.status = TaskStatus::Completed;
    core.recover(vec![running(1, 1), running(2, 0), done], 10, None);
    // One runs again, one failed for good; recovering is no submit, and
    // what finished before the restart is not counted again.
    assert_eq!(totals(&core, "noop"), [0, 0, 1, 1, 0, 2]);
}
