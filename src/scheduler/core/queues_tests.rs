//! Named queues, tested in both ways a task starts (a thread of the pool,
//! a worker process): a queue's limit is never exceeded, a paused queue
//! starts nothing while the others run, and waiting tasks say why.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::ready_tests::{MODES, Mode, core_with, start_all};
use super::{AttemptResult, Core, QueueSettings, Waiting};
use crate::model::{TaskId, TaskRecord, TaskSpec, TaskStatus};
use crate::tasks::StopReason;

/// Accepts tasks (id, queue) at time 0.
fn accept(core: &mut Core, tasks: &[(u64, &str)]) {
    let records = tasks
        .iter()
        .map(|(id, queue)| {
            let spec = TaskSpec::new("noop", vec![]).queue(*queue);
            Arc::new(TaskRecord::new(TaskId(*id), spec, 0))
        })
        .collect();
    core.insert_queued(records, 0);
}

fn finish(core: &mut Core, mode: Mode, id: u64) {
    let id = TaskId(id);
    let run = core.tasks[&id].run.as_ref().expect("it runs");
    let (worker, attempt) = (run.worker, run.attempt);
    let done = AttemptResult::Completed(json!(null));
    match mode {
        Mode::Pool => core.finish_attempt(worker, id, attempt, done, Instant::now(), 2),
        Mode::Workers => core.finish_remote("box-1", id, attempt, done, None, 1, Instant::now(), 2),
    };
}

fn limit(limit: usize) -> QueueSettings {
    QueueSettings {
        limit: Some(limit),
        paused: false,
    }
}

#[test]
fn a_queue_limit_holds_in_both_modes_while_other_queues_run() {
    for mode in MODES {
        let mut core = core_with(&[]);
        accept(
            &mut core,
            &[
                (1, "train"),
                (2, "train"),
                (3, "prep"),
                (4, "train"),
                (5, "default"),
            ],
        );
        core.set_queue("train", limit(1));
        assert_eq!(start_all(&mut core, mode), vec![1, 3, 5], "{mode:?}");
        let why = core.waiting(&[TaskId(2)], 0, None);
        assert_eq!(
            why[0],
            Some(Waiting::QueueAtLimit {
                queue: "train".into(),
                limit: 1
            })
        );
        assert_eq!(why[0].as_ref().map(Waiting::code), Some("queue_at_limit"));
        finish(&mut core, mode, 1);
        assert_eq!(start_all(&mut core, mode), vec![2], "{mode:?}");
        core.set_queue("train", limit(3));
        assert_eq!(start_all(&mut core, mode), vec![4], "{mode:?}");
        let train = core
            .queue_list()
            .into_iter()
            .find(|q| q.name == "train")
            .expect("listed");
        assert_eq!(train.counts[TaskStatus::Running.index()], 2);
        assert_eq!(train.counts[TaskStatus::Completed.index()], 1);
    }
}

#[test]
fn a_paused_queue_starts_nothing_in_either_mode_while_the_others_run() {
    for mode in MODES {
        let mut core = core_with(&[]);
        accept(
            &mut core,
            &[(1, "gpu"), (2, "default"), (3, "gpu"), (4, "cpu")],
        );
        core.set_queue(
            "gpu",
            QueueSettings {
                limit: None,
                paused: true,
            },
        );
        assert_eq!(start_all(&mut core, mode), vec![2, 4], "{mode:?}");
        let why = core.waiting(&[TaskId(3)], 0, None);
        assert_eq!(
            why[0],
            Some(Waiting::QueuePaused {
                queue: "gpu".into()
            })
        );
        core.set_queue("gpu", QueueSettings::default());
        assert_eq!(start_all(&mut core, mode), vec![1, 3], "{mode:?}");
    }
}

#[test]
fn the_tasks_ahead_of_a_task_are_counted_in_open_queues_only() {
    let mut core = core_with(&[]);
    accept(
        &mut core,
        &[(1, "frozen"), (2, "frozen"), (3, "default"), (4, "default")],
    );
    core.set_queue(
        "frozen",
        QueueSettings {
            limit: None,
            paused: true,
        },
    );
    let why = core.waiting(&[TaskId(4)], 0, None);
    assert_eq!(why[0], Some(Waiting::Behind { ahead: 1, gpus: 0 }));
}

#[test]
fn pausing_a_queue_with_stop_running_stops_only_its_tasks() {
    let mut core = core_with(&[]);
    accept(&mut core, &[(1, "a"), (2, "b")]);
    start_all(&mut core, Mode::Pool);
    assert!(core.stop_running_in("a", StopReason::Paused).is_empty());
    let reason = |id: u64| {
        core.tasks[&TaskId(id)]
            .run
            .as_ref()
            .map(|r| r.cancel.reason())
    };
    assert_eq!(reason(1), Some(Some(StopReason::Paused)));
    assert_eq!(reason(2), Some(None));
}
