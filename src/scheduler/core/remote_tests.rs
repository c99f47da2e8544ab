//! Unit tests of attempts on worker processes: placement, leases, results
//! and recovery, without threads or a broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{AttemptResult, Core, GpuDevice, Heartbeat};
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
        prefetch: 0,
        takes_placements: true,
        running: running.iter().map(|(id, a)| (TaskId(*id), *a)).collect(),
        resources: None,
        gpus: Vec::new(),
        session: 7,
        refused_messages: 0,
    }
}

/// Makes `worker` known with 2 slots (a heartbeat) and places what may
/// start; the tasks and attempts placed, on any worker.
fn place_on(core: &mut Core, worker: &str, now: Instant) -> Vec<(u64, u32, String)> {
    core.heartbeat(&beat(worker, &[]), LEASE, now);
    core.place(100, LEASE, now, 0)
        .runs
        .into_iter()
        .map(|run| (run.record.id.0, run.attempt, run.worker))
        .collect()
}

#[test]
fn each_task_is_placed_once_spread_over_the_workers_with_free_slots() {
    let mut core = core_with(&[1, 2, 3, 4, 5]);
    let now = Instant::now();
    core.heartbeat(&beat("a", &[]), LEASE, now);
    core.heartbeat(&beat("b", &[]), LEASE, now);
    let placed = core.place(100, LEASE, now, 5);
    let on = |worker: &str| {
        placed
            .runs
            .iter()
            .filter(|run| run.worker == worker)
            .count()
    };
    assert_eq!((on("a"), on("b")), (2, 2), "two slots each, no prefetch");
    assert_eq!(placed.changes.len(), 4);
    assert!(placed.changes.iter().all(|c| c.kind == EventKind::Started));
    assert!(placed.runs.iter().all(|run| run.attempt == 1));
    let mut ids: Vec<u64> = placed.runs.iter().map(|run| run.record.id.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3, 4], "in run order, each once");
    assert!(
        core.place(100, LEASE, now, 6).runs.is_empty(),
        "no credit left"
    );
    // An ended attempt frees its slot for the next task.
    core.finish_remote(
        "b",
        TaskId(2),
        1,
        AttemptResult::Completed(json!(1)),
        None,
        3,
        now,
        7,
    );
    let next = core.place(100, LEASE, now, 8).runs;
    assert_eq!(next.len(), 1);
    assert_eq!(
        (next[0].record.id, next[0].worker.as_str()),
        (TaskId(5), "b")
    );
}

#[test]
fn a_worker_gets_its_prefetch_beyond_its_slots_and_old_workers_get_nothing() {
    let mut core = core_with(&[1, 2, 3, 4, 5]);
    let now = Instant::now();
    let mut old = beat("old", &[]);
    old.takes_placements = false;
    core.heartbeat(&old, LEASE, now);
    assert!(
        core.place(100, LEASE, now, 0).runs.is_empty(),
        "an older worker"
    );
    let mut prefetching = beat("a", &[]);
    prefetching.concurrency = 1;
    prefetching.prefetch = 2;
    core.heartbeat(&prefetching, LEASE, now);
    assert_eq!(core.place(100, LEASE, now, 0).runs.len(), 3);
    // Stopping, it says it has no slots: nothing more is placed.
    prefetching.concurrency = 0;
    prefetching.running = vec![(TaskId(1), 1), (TaskId(2), 1), (TaskId(3), 1)];
    core.heartbeat(&prefetching, LEASE, now);
    core.release_remote("a", TaskId(3), 1);
    assert!(core.place(100, LEASE, now, 0).runs.is_empty());
}

#[test]
fn a_removed_task_is_never_placed() {
    let mut core = core_with(&[1, 2]);
    core.cancel(TaskId(1), false, 3).expect("removed");
    let placed = place_on(&mut core, "a", Instant::now());
    assert_eq!(placed, [(2, 1, "a".to_owned())]);
}

#[test]
fn gpu_tasks_get_free_devices_of_one_worker_and_wait_for_them() {
    let mut core = core_with(&[]);
    let gpu = |id: u64, gpus: u32| {
        let spec = TaskSpec::new("noop", vec![]).gpus(gpus);
        Arc::new(TaskRecord::new(TaskId(id), spec, 0))
    };
    core.insert_queued(vec![gpu(1, 1), gpu(2, 2), gpu(3, 1)], 0);
    let now = Instant::now();
    let mut box_a = beat("a", &[]);
    box_a.concurrency = 4;
    box_a.gpus = vec![
        GpuDevice {
            id: 0,
            memory_mb: Some(8_000),
        },
        GpuDevice {
            id: 1,
            memory_mb: Some(8_000),
        },
    ];
    core.heartbeat(&box_a, LEASE, now);
    let placed = core.place(100, LEASE, now, 0).runs;
    // Task 2 needs both devices while task 1 holds one: it waits, and task
    // 3 waits behind it (GPU tasks start in order).
    assert_eq!(placed.len(), 1);
    assert_eq!(
        (placed[0].record.id, placed[0].gpu_ids.clone()),
        (TaskId(1), vec![0])
    );
    core.finish_remote(
        "a",
        TaskId(1),
        1,
        AttemptResult::Completed(json!(1)),
        None,
        3,
        now,
        7,
    );
    let placed = core.place(100, LEASE, now, 8).runs;
    assert_eq!(placed.len(), 1);
    assert_eq!(
        (placed[0].record.id, placed[0].gpu_ids.clone()),
        (TaskId(2), vec![0, 1])
    );
    core.finish_remote(
        "a",
        TaskId(2),
        1,
        AttemptResult::Completed(json!(1)),
        None,
        3,
        now,
        9,
    );
    let placed = core.place(100, LEASE, now, 10).runs;
    assert_eq!(
        (placed[0].record.id, placed[0].gpu_ids.clone()),
        (TaskId(3), vec![0])
    );
}

#[test]
fn an_attempt_waiting_on_a_busy_worker_is_asked_back_for_an_idle_one() {
    let mut core = core_with(&[1, 2]);
    let now = Instant::now();
    let mut busy = beat("a", &[]);
    busy.concurrency = 1;
    busy.prefetch = 1;
    core.heartbeat(&busy, LEASE, now);
    assert_eq!(core.place(100, LEASE, now, 0).runs.len(), 2);
    core.heartbeat(&beat("b", &[]), LEASE, now);
    let soon = core.place(100, LEASE, now, 100_000);
    assert!(
        soon.reclaims.is_empty(),
        "placed moments ago: it may start yet"
    );
    let later = core.place(100, LEASE, now, 1_000_000);
    assert_eq!(later.reclaims.len(), 1, "{:?}", later.reclaims);
    assert_eq!(later.reclaims[0].worker, "a");
    assert!(
        core.place(100, LEASE, now, 2_000_000).reclaims.is_empty(),
        "asked once"
    );
    // Handed back, it is placed on the idle worker.
    let task = later.reclaims[0].task;
    core.release_remote("a", task, 1);
    let placed = core.place(100, LEASE, now, 2_000_000).runs;
    assert_eq!(placed.len(), 1);
    assert_eq!(
        (placed[0].record.id, placed[0].worker.as_str()),
        (task, "b")
    );
}

#[test]
fn heartbeats_renew_leases_and_a_silent_worker_loses_its_attempt() {
    let mut core = core_with(&[1]);
    let start = Instant::now();
    place_on(&mut core, "a", start);
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
    place_on(&mut core, "a", start);
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
    place_on(&mut core, "a", start);
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
    place_on(&mut core, "a", now);
    let stale = core.heartbeat(&beat("b", &[(1, 1)]), LEASE, now);
    assert_eq!(core.tasks[&TaskId(1)].record.worker.as_deref(), Some("a"));
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].worker, "b");
    assert_eq!(stale[0].reason, StopReason::Cancelled);
}

#[test]
fn results_complete_released_attempts_requeue_and_tallies_follow() {
    let mut core = core_with(&[1, 2]);
    let now = Instant::now();
    place_on(&mut core, "a", now);
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
    place_on(&mut core, "a", Instant::now());
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
    // Its placement may have died with the last process: it is sent again.
    let again = core.recovered_placements();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].worker.as_str(), again[0].attempt), ("gpu-1", 1));
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
fn a_goodbye_hands_back_placements_the_worker_never_saw_without_counting() {
    let mut core = core_with(&[1]);
    let now = Instant::now();
    place_on(&mut core, "a", now);
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
    place_on(&mut core, "a", start);
    let back = start + LEASE * 2;
    core.renew_all_leases(back + LEASE);
    assert!(core.expire_leases(back, 10).is_empty());
    assert_eq!(core.expire_leases(back + LEASE, 20).len(), 1);
}

#[test]
fn a_worker_whose_lease_ran_out_gets_nothing_until_it_is_heard_from() {
    let mut core = core_with(&[1]);
    let start = Instant::now();
    place_on(&mut core, "frozen", start);
    core.heartbeat(
        &beat("other", &[]),
        LEASE,
        start + LEASE - Duration::from_secs(1),
    );
    let lost_at = start + LEASE;
    assert_eq!(core.expire_leases(lost_at, 10).len(), 1);
    core.retry_due(
        TaskId(1),
        core.tasks[&TaskId(1)].record.retry_at_us.unwrap_or(0),
    );
    core.enqueue_if_queued(TaskId(1));
    // The frozen worker was heard from within the lease, but it let one run
    // out: the next attempt goes to the other worker.
    let placed = core.place(10, LEASE, lost_at, 20).runs;
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].worker, "other");
    core.heartbeat(&beat("frozen", &[]), LEASE, lost_at);
    assert!(core.remote.values().all(|w| !w.silent), "heard from again");
}

#[test]
fn refusals_from_heartbeats_add_up_across_lost_beats_and_worker_restarts() {
    let mut core = core_with(&[]);
    let now = Instant::now();
    let refused = |count: u64| Heartbeat {
        refused_messages: count,
        ..beat("w", &[])
    };
    core.heartbeat(&refused(0), LEASE, now);
    core.heartbeat(&refused(2), LEASE, now);
    // A heartbeat was lost: its count is in the next one.
    core.heartbeat(&refused(5), LEASE, now);
    core.heartbeat(&refused(5), LEASE, now);
    // The worker restarted and counts from zero again.
    core.heartbeat(&refused(1), LEASE, now);
    core.refused_by_scheduler(3);
    let worker = core.remote.values().next().expect("w is known");
    assert_eq!(worker.refused_messages, 6);
    assert_eq!(core.refused.by_workers, 6);
    assert_eq!(core.refused.by_scheduler, 3);
}
