//! Unit tests of attempts on worker processes: claims, leases, results and
//! recovery, without threads or a broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{AttemptResult, Core, Denial, Heartbeat};
use crate::model::{EventKind, FailureKind, TaskId, TaskLog, TaskRecord, TaskSpec, TaskStatus};
use crate::scheduler::policy::Backoff;
use crate::store::Retention;
use crate::tasks::StopReason;

const LEASE: Duration = Duration::from_secs(30);

fn core_with(ids: &[u64]) -> Core {
    let backoff = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_secs(1),
    };
    let retention = Retention {
        max_finished: 100,
        max_age: None,
    };
    let mut core = Core::new(0, retention, backoff);
    core.insert_queued(
        ids.iter()
            .map(|id| {
                Arc::new(TaskRecord::new(
                    TaskId(*id),
                    TaskSpec::new("noop", vec![]).max_retries(1),
                    0,
                ))
            })
            .collect(),
        0,
    );
    core
}

fn beat(worker: &str, running: &[(u64, u32)]) -> Heartbeat {
    Heartbeat {
        worker: worker.into(),
        host: "box".into(),
        concurrency: 2,
        running: running.iter().map(|(id, a)| (TaskId(*id), *a)).collect(),
        resources: None,
        gpus: Vec::new(),
        session: 7,
    }
}

#[test]
fn a_queued_task_is_granted_once_and_a_second_worker_is_denied() {
    let mut core = core_with(&[1]);
    let now = Instant::now();
    let published = core.take_for_publishing(10);
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].status, TaskStatus::Queued);
    let (grant, started) = core
        .claim("a", TaskId(1), Vec::new(), LEASE, now, 5)
        .expect("granted");
    assert_eq!(grant.attempt, 1);
    let started = started.expect("a started transition");
    assert_eq!(started.kind, EventKind::Started);
    assert_eq!(started.record.worker.as_deref(), Some("a"));
    assert_eq!(
        core.claim("b", TaskId(1), Vec::new(), LEASE, now, 6).err(),
        Some(Denial::RunningElsewhere)
    );
    // The same worker claiming again (after a reconnect) gets the same attempt.
    let (again, none) = core
        .claim("a", TaskId(1), Vec::new(), LEASE, now, 7)
        .expect("granted again");
    assert_eq!(again.attempt, 1);
    assert!(none.is_none());
    assert_eq!(
        core.claim("a", TaskId(9), Vec::new(), LEASE, now, 8).err(),
        Some(Denial::Unknown)
    );
}

#[test]
fn a_removed_task_is_denied_so_it_never_runs() {
    let mut core = core_with(&[1]);
    let _ = core.take_for_publishing(10);
    core.cancel(TaskId(1), false, 3).expect("removed");
    assert_eq!(
        core.claim("a", TaskId(1), Vec::new(), LEASE, Instant::now(), 4)
            .err(),
        Some(Denial::NotQueued(TaskStatus::Cancelled))
    );
}

#[test]
fn heartbeats_renew_leases_and_a_silent_worker_loses_its_attempt() {
    let mut core = core_with(&[1]);
    let start = Instant::now();
    core.claim("a", TaskId(1), Vec::new(), LEASE, start, 0)
        .expect("granted");
    let later = start + LEASE - Duration::from_secs(1);
    assert!(
        core.heartbeat(&beat("a", &[(1, 1)]), LEASE, later)
            .is_empty()
    );
    assert!(core.expire_leases(start + LEASE, 10).is_empty(), "renewed");
    let settled = core.expire_leases(later + LEASE, 20);
    assert_eq!(settled.len(), 1);
    let change = settled[0].change.as_ref().expect("a transition");
    assert_eq!(change.kind, EventKind::Retrying);
    assert_eq!(change.record.failures[0].kind, FailureKind::Lost);
    let stop = settled[0]
        .stop
        .as_ref()
        .expect("the worker is asked to stop");
    assert_eq!((stop.worker.as_str(), stop.attempt), ("a", 1));
    // Its late result no longer counts.
    let late = core.finish_remote(
        "a",
        TaskId(1),
        1,
        AttemptResult::Completed(json!(1)),
        None,
        5,
        later + LEASE,
        30,
    );
    assert!(late.change.is_none());
}

const GRACE: Duration = Duration::from_millis(400);

#[test]
fn a_closed_connection_loses_its_attempts_after_the_grace_and_requeues_at_once() {
    let mut core = core_with(&[1]);
    let start = Instant::now();
    core.heartbeat(&beat("a", &[]), LEASE, start);
    core.claim("a", TaskId(1), Vec::new(), LEASE, start, 0)
        .expect("granted");
    assert_eq!(core.connection_lost("a", 7, GRACE, start), 1);
    assert!(
        core.expire_leases(start + GRACE / 2, 10).is_empty(),
        "within the grace"
    );
    let lost_at = start + GRACE;
    let settled = core.expire_leases(lost_at, 20);
    assert_eq!(settled.len(), 1);
    let change = settled[0].change.as_ref().expect("a transition");
    assert_eq!(change.kind, EventKind::Retrying);
    let failure = &change.record.failures[0];
    assert_eq!(failure.kind, FailureKind::Lost);
    assert!(
        failure.message.contains("lost its connection"),
        "{}",
        failure.message
    );
    let (due, _) = settled[0].retry_at.expect("queued again");
    assert_eq!(due, lost_at, "no backoff: the next attempt runs elsewhere");
    assert_eq!(core.remote_load(), (0, 0), "its slots count no more");
}

#[test]
fn a_worker_back_within_the_grace_keeps_its_attempts() {
    let mut core = core_with(&[1]);
    let start = Instant::now();
    core.heartbeat(&beat("a", &[]), LEASE, start);
    core.claim("a", TaskId(1), Vec::new(), LEASE, start, 0)
        .expect("granted");
    core.connection_lost("a", 7, GRACE, start);
    let mut back = beat("a", &[(1, 1)]);
    back.session = 8;
    assert!(core.heartbeat(&back, LEASE, start + GRACE / 2).is_empty());
    assert!(core.expire_leases(start + GRACE * 2, 10).is_empty());
    // The token of the closed connection, arriving late, changes nothing.
    assert_eq!(core.connection_lost("a", 7, GRACE, start + GRACE), 0);
    assert!(core.expire_leases(start + GRACE * 3, 10).is_empty());
}

#[test]
fn a_heartbeat_listing_an_attempt_that_is_not_its_own_gets_a_stop() {
    let mut core = core_with(&[1]);
    let now = Instant::now();
    core.claim("a", TaskId(1), Vec::new(), LEASE, now, 0)
        .expect("granted");
    let stale = core.heartbeat(&beat("b", &[(1, 1)]), LEASE, now);
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].worker, "b");
    assert_eq!(stale[0].reason, StopReason::Cancelled);
}

#[test]
fn results_complete_released_attempts_requeue_and_tallies_follow() {
    let mut core = core_with(&[1, 2]);
    let now = Instant::now();
    core.claim("a", TaskId(1), Vec::new(), LEASE, now, 0)
        .expect("granted");
    core.claim("a", TaskId(2), Vec::new(), LEASE, now, 0)
        .expect("granted");
    let (total, busy) = (core.remote_load().0, core.remote_load().1);
    assert_eq!(
        (total, busy),
        (0, 2),
        "concurrency is known from heartbeats only"
    );
    core.heartbeat(&beat("a", &[(1, 1), (2, 1)]), LEASE, now);
    assert_eq!(core.remote_load(), (2, 2));
    let done = core.finish_remote(
        "a",
        TaskId(1),
        1,
        AttemptResult::Completed(json!("ok")),
        Some(TaskLog {
            path: "/tmp/x.log".into(),
            bytes: 3,
            truncated: false,
            tail: "ok\n".into(),
            gpu_peak_memory_mb: None,
        }),
        1_000,
        now,
        50,
    );
    let completed = done.change.as_ref().expect("completed");
    assert_eq!(completed.kind, EventKind::Completed);
    assert_eq!(
        completed.record.log.as_ref().map(|log| log.tail.as_str()),
        Some("ok\n"),
        "the attempt's output log is kept in the record"
    );
    assert_eq!(done.attempt, Some((true, 1_000)), "the worker's run time");
    let released = core.release_remote("a", TaskId(2), 1);
    let change = released.change.expect("requeued");
    assert_eq!(change.kind, EventKind::Requeued);
    assert_eq!(
        change.record.attempts, 0,
        "a handed-back attempt does not count"
    );
    assert!(released.requeued);
    let worker = core.remote.values().next().expect("known worker");
    assert_eq!((worker.tasks_run, worker.running.len()), (1, 0));
}

#[test]
fn cancelling_a_remote_attempt_asks_its_worker_to_stop() {
    let mut core = core_with(&[1]);
    core.claim("a", TaskId(1), Vec::new(), LEASE, Instant::now(), 0)
        .expect("granted");
    let (_, settled) = core.cancel(TaskId(1), true, 5).expect("stop requested");
    let stop = settled.stop.expect("a stop request");
    assert_eq!(
        (stop.worker.as_str(), stop.reason),
        ("a", StopReason::Cancelled)
    );
}

#[test]
fn recovery_keeps_remote_attempts_running_under_a_fresh_lease() {
    let mut running = TaskRecord::new(TaskId(4), TaskSpec::new("noop", vec![]), 0);
    running.status = TaskStatus::Running;
    running.attempts = 1;
    running.worker = Some("gpu-1".into());
    let mut core = core_with(&[]);
    let until = Instant::now() + LEASE;
    let changes = core.recover(vec![running], 10, Some(until));
    assert!(
        changes.is_empty(),
        "nothing changes until the lease runs out"
    );
    assert_eq!(core.counts()[TaskStatus::Running.index()], 1);
    let late = core.finish_remote(
        "gpu-1",
        TaskId(4),
        1,
        AttemptResult::Completed(json!(null)),
        None,
        1,
        Instant::now(),
        20,
    );
    assert_eq!(late.change.expect("applied").kind, EventKind::Completed);
}

#[test]
fn a_goodbye_hands_back_grants_the_worker_never_saw_without_counting() {
    let mut core = core_with(&[1]);
    let now = Instant::now();
    core.claim("a", TaskId(1), Vec::new(), LEASE, now, 0)
        .expect("granted");
    let settled = core.remote_gone("a", now);
    assert_eq!(settled.len(), 1);
    let change = settled[0].change.as_ref().expect("requeued");
    assert_eq!(change.kind, EventKind::Requeued);
    assert_eq!(change.record.attempts, 0);
    assert!(change.record.failures.is_empty());
    assert!(core.remote.values().all(|w| w.gone && w.running.is_empty()));
}

#[test]
fn leases_restart_after_the_broker_was_away() {
    let mut core = core_with(&[1]);
    let start = Instant::now();
    core.claim("a", TaskId(1), Vec::new(), LEASE, start, 0)
        .expect("granted");
    let back = start + LEASE * 2;
    core.renew_all_leases(back + LEASE);
    assert!(core.expire_leases(back, 10).is_empty());
    assert_eq!(core.expire_leases(back + LEASE, 20).len(), 1);
}
