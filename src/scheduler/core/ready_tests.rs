//! The readiness decision, tested once for both ways a task starts: taken
//! by a thread of the pool, or placed on a worker process.
//! A rule about which task may start gets its test here, run in both modes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Core, Heartbeat, RequestError, Waiting};
use crate::model::{TaskId, TaskRecord, TaskSpec, TaskStatus};
use crate::scheduler::policy::Backoff;
use crate::store::Retention;

const LEASE: Duration = Duration::from_secs(30);

/// How a task reaches a worker.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    /// A thread of the pool takes it.
    Pool,
    /// It is placed on a worker process.
    Workers,
}

pub(super) const MODES: [Mode; 2] = [Mode::Pool, Mode::Workers];

/// Queued tasks of (id, priority).
pub(super) fn core_with(tasks: &[(u64, u8)]) -> Core {
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
        tasks
            .iter()
            .map(|(id, priority)| {
                let spec = TaskSpec::new("noop", vec![]).priority(*priority);
                Arc::new(TaskRecord::new(TaskId(*id), spec, 0))
            })
            .collect(),
        0,
    );
    core
}

/// Starts the next task that may start the way `mode` does; its id.
pub(super) fn start_next(core: &mut Core, mode: Mode) -> Option<TaskId> {
    match mode {
        Mode::Pool => {
            core.target_workers += 1;
            let (worker, _) = core.add_worker();
            core.next_job(worker, 1).map(|job| job.started.record.id)
        }
        Mode::Workers => {
            let now = Instant::now();
            // A worker with a free slot for each task.
            let slots = core.remote.values().map(|w| w.running.len()).sum::<usize>() + 1;
            core.heartbeat(&worker_beat(slots), LEASE, now);
            let placed = core.place(1, LEASE, now, 1);
            placed.runs.first().map(|run| run.record.id)
        }
    }
}

/// A heartbeat of worker process "box-1" with `slots` slots.
fn worker_beat(slots: usize) -> Heartbeat {
    Heartbeat {
        worker: "box-1".into(),
        host: "box".into(),
        concurrency: slots,
        prefetch: 0,
        takes_placements: true,
        running: Vec::new(),
        resources: None,
        gpus: Vec::new(),
        session: 1,
        refused_messages: 0,
    }
}

pub(super) fn start_all(core: &mut Core, mode: Mode) -> Vec<u64> {
    std::iter::from_fn(|| start_next(core, mode))
        .map(|id| id.0)
        .collect()
}

#[test]
fn both_modes_start_by_priority_then_arrival() {
    for mode in MODES {
        let mut core = core_with(&[(1, 5), (2, 9), (3, 5), (4, 9), (5, 0)]);
        assert_eq!(start_all(&mut core, mode), vec![2, 4, 1, 3, 5], "{mode:?}");
        assert_eq!(core.counts()[TaskStatus::Running.index()], 5, "{mode:?}");
    }
}

#[test]
fn a_cancelled_task_never_starts_in_either_mode() {
    for mode in MODES {
        let mut core = core_with(&[(1, 5), (2, 5), (3, 5)]);
        core.cancel(TaskId(2), true, 1).expect("cancel");
        assert_eq!(start_all(&mut core, mode), vec![1, 3], "{mode:?}");
    }
}

#[test]
fn no_task_starts_in_either_mode_while_dispatch_is_stopped() {
    for mode in MODES {
        let mut core = core_with(&[(1, 5), (2, 5)]);
        core.dispatching = false;
        assert_eq!(start_next(&mut core, mode), None, "{mode:?}");
        core.dispatching = true;
        assert_eq!(start_all(&mut core, mode), vec![1, 2], "{mode:?}");
    }
}

#[test]
fn a_delayed_task_starts_in_neither_mode_before_its_time() {
    for mode in MODES {
        let mut core = core_with(&[]);
        let delayed = TaskSpec::new("noop", vec![])
            .priority(9)
            .not_before_us(1_000);
        let delayed = core.insert_queued(
            vec![
                Arc::new(TaskRecord::new(TaskId(1), delayed, 0)),
                Arc::new(TaskRecord::new(TaskId(2), TaskSpec::new("noop", vec![]), 0)),
            ],
            500,
        );
        assert_eq!(delayed.delayed, vec![(TaskId(1), 1_000)], "{mode:?}");
        assert_eq!(start_all(&mut core, mode), vec![2], "{mode:?}");
        assert_eq!(core.counts()[TaskStatus::Queued.index()], 1, "{mode:?}");
        assert_eq!(core.start_ahead(TaskId(1), 999), Some(1_000));
        assert_eq!(core.start_ahead(TaskId(1), 1_000), None);
        // The timer, at its time:
        assert!(core.enqueue_if_queued(TaskId(1)));
        assert_eq!(start_all(&mut core, mode), vec![1], "{mode:?}");
    }
}

#[test]
fn after_a_restart_a_delayed_task_still_waits_for_its_time() {
    let mut core = core_with(&[]);
    let spec = TaskSpec::new("noop", vec![]).not_before_us(5_000);
    core.recover(vec![TaskRecord::new(TaskId(3), spec, 0)], 1_000, None);
    assert_eq!(core.delayed_starts(1_000), vec![(TaskId(3), 5_000)]);
    assert!(core.queue.is_empty());
    assert!(
        core.delayed_starts(5_000).is_empty(),
        "due: nothing to wait for"
    );
}

#[test]
fn a_held_task_starts_in_neither_mode_until_released() {
    for mode in MODES {
        let mut core = core_with(&[(1, 9), (2, 5)]);
        let held = core.hold(TaskId(1)).expect("holdable");
        assert!(held.is_some_and(|change| change.record.held), "{mode:?}");
        assert!(core.hold(TaskId(1)).expect("again").is_none(), "no change");
        assert_eq!(start_all(&mut core, mode), vec![2], "{mode:?}");
        assert!(
            !core.enqueue_if_queued(TaskId(1)),
            "a timer or retry does not free it"
        );
        assert!(core.release(TaskId(1)).expect("releasable").is_some());
        assert!(core.enqueue_if_queued(TaskId(1)));
        assert_eq!(start_all(&mut core, mode), vec![1], "{mode:?}");
        assert!(matches!(
            core.hold(TaskId(1)),
            Err(RequestError::NotWaiting { .. })
        ));
    }
}

#[test]
fn nothing_starts_in_either_mode_while_paused() {
    for mode in MODES {
        let mut core = core_with(&[(1, 5), (2, 5)]);
        core.paused = true;
        assert_eq!(start_next(&mut core, mode), None, "{mode:?}");
        core.paused = false;
        assert_eq!(start_all(&mut core, mode), vec![1, 2], "{mode:?}");
    }
}

#[test]
fn each_waiting_task_says_why() {
    let mut core = core_with(&[(1, 5), (2, 9), (3, 5)]);
    let later = TaskSpec::new("noop", vec![]).not_before_us(9_000);
    core.insert_queued(vec![Arc::new(TaskRecord::new(TaskId(4), later, 0))], 1_000);
    core.hold(TaskId(3)).expect("holdable");
    let ids = [1, 2, 3, 4, 99].map(TaskId);
    let why = core.waiting(&ids, 1_000, None);
    assert_eq!(why[0], Some(Waiting::Behind { ahead: 1, gpus: 0 }));
    assert_eq!(why[1], Some(Waiting::Behind { ahead: 0, gpus: 0 }));
    assert_eq!(why[2], Some(Waiting::Held));
    assert_eq!(why[3], Some(Waiting::NotBefore { until_us: 9_000 }));
    assert_eq!(why[4], None, "unknown");
    assert_eq!(why[1].as_ref().map(|w| w.code()), Some("queued_behind"));
    assert!(
        why[0]
            .as_ref()
            .is_some_and(|w| w.message(1_000).contains("1 task(s)"))
    );
    core.paused = true;
    assert_eq!(core.waiting(&ids, 1_000, None)[0], Some(Waiting::Paused));
    core.paused = false;
    // On worker processes, with none connected.
    let workers = Some((Instant::now(), LEASE));
    assert_eq!(
        core.waiting(&ids, 1_000, workers)[1],
        Some(Waiting::NoWorker)
    );
    assert_eq!(Waiting::NoWorker.code(), "waiting_for_worker");
    // Running and finished tasks do not wait.
    assert_eq!(start_next(&mut core, Mode::Workers), Some(TaskId(2)));
    assert_eq!(core.waiting(&ids, 1_000, workers)[1], None);
    assert_eq!(
        core.waiting(&ids, 1_000, workers)[0],
        Some(Waiting::Behind { ahead: 0, gpus: 0 }),
        "a worker is connected"
    );
}

#[test]
fn a_held_task_cancelled_is_no_longer_held() {
    let mut core = core_with(&[(1, 5)]);
    core.hold(TaskId(1)).expect("holdable");
    core.cancel(TaskId(1), true, 1).expect("cancel");
    let record = &core.tasks[&TaskId(1)].record;
    assert_eq!(record.status, TaskStatus::Cancelled);
    assert!(!record.held);
}
