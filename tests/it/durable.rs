//! The scheduler on a real SQLite file: durability across restarts.

use crate::common;

use serde_json::json;

use common::{WAIT, config, wait_until};
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

/// Resource samples stored in the database, read beside the running
/// writer (WAL readers do not block it).
fn stored_samples(db: &std::path::Path) -> Vec<i64> {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare("SELECT at_us FROM resource_samples ORDER BY at_us") else {
        return Vec::new();
    };
    stmt.query_map([], |row| row.get(0))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

#[test]
fn the_stack_records_resource_history_that_survives_a_restart() {
    // What `taskdeck serve` and the window run: the runtime, not the
    // scheduler and not the window, records telemetry in the store.
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tasks.db");
    let stack_config = || taskdeck::runtime::StackConfig {
        scheduler: config(StoreMode::File(db.clone()), 0),
        api: None,
        broker: None,
        task_logs: None,
    };
    let stack = taskdeck::runtime::Stack::start(stack_config(), Registry::with_builtins())
        .expect("the stack should start");
    assert!(
        stack.past_samples.is_empty(),
        "a new database has no history"
    );
    // Telemetry samples once a second.
    assert!(
        wait_until(WAIT, || stored_samples(&db).len() >= 2),
        "samples should be recorded while the stack runs"
    );
    stack.shutdown().expect("shutdown should succeed");
    let recorded = stored_samples(&db);

    let stack = taskdeck::runtime::Stack::start(stack_config(), Registry::with_builtins())
        .expect("the stack should start again");
    let past: Vec<i64> = stack.past_samples.iter().map(|s| s.at_us).collect();
    stack.shutdown().expect("shutdown should succeed");
    assert_eq!(past, recorded, "the last hour comes back, oldest first");
    assert!(past.len() >= 2);
}
