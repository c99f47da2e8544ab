//! The scheduler on a real SQLite file: durability across restarts.

use crate::common;

use serde_json::json;

use common::{WAIT, config};
use taskdeck::model::{TaskSpec, TaskStatus};
use taskdeck::scheduler::StartError;
use taskdeck::scheduler::{Scheduler, StoreMode};
use taskdeck::store::StoreError;
use taskdeck::tasks::Registry;

fn start(db: &std::path::Path, workers: usize) -> Scheduler {
    Scheduler::start(
        config(StoreMode::File(db.to_owned()), workers),
        Registry::with_builtins(),
    )
    .expect("scheduler should start on the database")
}

#[test]
fn accepted_tasks_survive_a_restart_in_their_original_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tasks.db");

    let scheduler = start(&db, 0);
    let mut ids = Vec::new();
    for (i, priority) in [5u8, 9, 5, 0, 9].into_iter().enumerate() {
        let spec = TaskSpec::new("noop", vec![json!(i)]).priority(priority);
        ids.push(scheduler.submit(spec).expect("submit should succeed"));
    }
    ids.extend(
        scheduler
            .submit_batch(vec![
                TaskSpec::new("noop", vec![json!("a")]),
                TaskSpec::new("fail", vec![json!(1)]).max_retries(2),
            ])
            .expect("batch should be accepted"),
    );
    let order_before = scheduler.queued();
    let records_before: Vec<_> = ids.iter().map(|id| scheduler.task(*id)).collect();
    scheduler.shutdown().expect("shutdown should succeed");

    let scheduler = start(&db, 0);
    assert_eq!(scheduler.queued(), order_before);
    let records_after: Vec<_> = ids.iter().map(|id| scheduler.task(*id)).collect();
    assert_eq!(records_after, records_before);
    scheduler.set_workers(2);
    assert!(scheduler.wait_idle(WAIT));
    let next = scheduler
        .submit(TaskSpec::new("noop", vec![]))
        .expect("submit should succeed");
    assert!(
        next > *ids.last().expect("ids"),
        "ids keep growing after a restart"
    );
    scheduler.wait(next, WAIT);
    scheduler.shutdown().expect("shutdown should succeed");

    let scheduler = start(&db, 0);
    for id in &ids {
        let record = scheduler.task(*id).expect("finished tasks stay queryable");
        assert_eq!(record.status, TaskStatus::Completed, "{record:?}");
    }
    let retried = scheduler.task(ids[6]).expect("task should exist");
    assert_eq!((retried.attempts, retried.failures.len()), (2, 1));
    assert_eq!(retried.result, Some(json!({ "succeeded_on_attempt": 2 })));
    scheduler.shutdown().expect("shutdown should succeed");
}

#[test]
fn a_file_that_is_not_a_taskdeck_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.txt");
    std::fs::write(&db, "my precious notes\n".repeat(100)).expect("write file");
    let error = Scheduler::start(
        config(StoreMode::File(db.clone()), 1),
        Registry::with_builtins(),
    )
    .expect_err("a text file should be refused");
    assert!(
        matches!(error, StartError::Store(StoreError::NotTaskdeck { .. })),
        "{error}"
    );
    assert!(error.to_string().contains("notes.txt"), "{error}");
    let text = std::fs::read_to_string(&db).expect("read file");
    assert_eq!(text, "my precious notes\n".repeat(100));
}

#[test]
fn two_schedulers_cannot_share_a_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tasks.db");
    let first = start(&db, 0);
    let error = Scheduler::start(
        config(StoreMode::File(db.clone()), 0),
        Registry::with_builtins(),
    )
    .expect_err("a second scheduler should be refused");
    assert!(
        matches!(error, StartError::Store(StoreError::Locked { .. })),
        "{error}"
    );
    first.shutdown().expect("shutdown should succeed");
}

#[test]
fn resource_history_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tasks.db");
    let scheduler = start(&db, 0);
    let now = taskdeck::model::now_us();
    for i in 0..3 {
        scheduler.save_resource_sample(&taskdeck::model::ResourceSample {
            at_us: now - (3 - i) * 1_000_000,
            cpu_percent: 10.0 * i as f32,
            cpu_per_core: vec![10.0 * i as f32],
            memory_used_bytes: 1 << 30,
            memory_total_bytes: 8 << 30,
            disks: Vec::new(),
            gpus: taskdeck::model::GpuState::Unavailable {
                reason: "no NVIDIA driver found".into(),
            },
        });
    }
    scheduler.shutdown().expect("shutdown should succeed");

    let scheduler = start(&db, 0);
    let samples = scheduler.take_past_resource_samples();
    let cpu: Vec<f32> = samples.iter().map(|s| s.cpu_percent).collect();
    assert_eq!(
        cpu,
        vec![0.0, 10.0, 20.0],
        "the last hour comes back, oldest first"
    );
    assert!(
        scheduler.take_past_resource_samples().is_empty(),
        "handed out once"
    );
    scheduler.shutdown().expect("shutdown should succeed");
}
