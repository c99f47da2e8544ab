//! Tests of the store against real SQLite files in temporary directories.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::json;
use tempfile::TempDir;

use super::*;
use crate::model::{
    AttemptFailure, FailureKind, OnDependencyFailure, TaskId, TaskSpec, TaskStatus,
};

/// Keeps everything, so tests see exactly what they wrote.
const KEEP_ALL: Retention = Retention {
    max_finished: usize::MAX,
    max_age: None,
};

fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temp dir should be creatable");
    let path = dir.path().join("nested").join("tasks.db");
    (dir, path)
}

fn open(path: &Path) -> (Store, Recovered) {
    Store::open(path, KEEP_ALL, Durability::Power).expect("the store should open")
}

fn queued(id: u64) -> TaskRecord {
    TaskRecord::new(
        TaskId(id),
        TaskSpec::new("noop", vec![json!(id)]),
        1_000 + id as i64,
    )
}

/// A record with every optional field set.
fn full(id: u64) -> TaskRecord {
    let spec = TaskSpec::new(
        "mock_ml_task",
        vec![json!(1), json!("two"), json!({"x": [3.5]})],
    )
    .priority(9)
    .max_retries(7)
    .timeout_ms(12_345)
    .kwarg("epochs", json!(10))
    .kwarg("label", json!("ünïcode"))
    .after(TaskId(id.saturating_sub(1)))
    .on_dependency_failure(OnDependencyFailure::Run)
    .queue("train");
    let mut record = TaskRecord::new(TaskId(id), spec, 1_700_000_000_000_000);
    record.status = TaskStatus::Completed;
    record.attempts = 2;
    record.failures = vec![AttemptFailure {
        attempt: 1,
        kind: FailureKind::TimedOut,
        message: "took too long".to_owned(),
        worker: Some("w-1".to_owned()),
        at_us: 1_700_000_000_500_000,
    }];
    record.first_started_at_us = Some(1_700_000_000_100_000);
    record.started_at_us = Some(1_700_000_000_600_000);
    record.finished_at_us = Some(1_700_000_000_900_000);
    record.retry_at_us = Some(1_700_000_000_550_000);
    record.worker = Some("w-2".to_owned());
    record.result = Some(json!({"loss": 0.25, "steps": [1, 2, 3], "none": null}));
    record.error = Some("an earlier error".to_owned());
    record.cancelled_by = Some(TaskId(id + 1));
    record.version = 7;
    record
}

/// Reads one column of one row with a connection of its own.
fn read_column<T: rusqlite::types::FromSql>(path: &Path, id: u64, column: &str) -> T {
    let conn = Connection::open(path).expect("a second connection should open");
    conn.query_row(
        &format!("SELECT {column} FROM tasks WHERE id = ?1"),
        [id as i64],
        |row| row.get(0),
    )
    .expect("the row should exist")
}

#[test]
fn insert_and_reopen_round_trips_records_exactly() {
    let (_dir, path) = temp_db();
    let (store, recovered) = open(&path);
    assert_eq!(recovered.next_id, 1);
    assert!(recovered.tasks.is_empty());
    let mut result_null = queued(3);
    result_null.result = Some(serde_json::Value::Null);
    let records = vec![full(2), queued(1), result_null, full(10)];
    store.insert(records.clone()).expect("insert should commit");
    store
        .insert(Vec::new())
        .expect("an empty insert should succeed");
    store.close().expect("close should succeed");

    let (store, recovered) = open(&path);
    let mut expected = records;
    expected.sort_by_key(|record| record.id);
    assert_eq!(recovered.tasks, expected);
    assert_eq!(recovered.next_id, 11);
    drop(store);
}

#[test]
fn database_is_stamped_as_taskdeck() {
    let (_dir, path) = temp_db();
    let (store, _) = open(&path);
    let conn = Connection::open(&path).expect("a second connection should open");
    let application_id: i32 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .expect("application_id should read");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("user_version should read");
    let journal_mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .expect("journal_mode should read");
    assert_eq!(application_id, APPLICATION_ID);
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(journal_mode, "wal");
    drop(store);
}

#[test]
fn older_versions_never_overwrite_newer_ones() {
    let (_dir, path) = temp_db();
    let (store, _) = open(&path);
    store.insert(vec![queued(1)]).expect("insert should commit");

    let mut record = queued(1);
    record.status = TaskStatus::Running;
    record.attempts = 1;
    record.worker = Some("w-1".to_owned());
    record.version = 3;
    store.save(&record);
    store.flush().expect("flush should succeed");

    // An older version in a later batch is ignored by the statement.
    let mut stale = queued(1);
    stale.version = 2;
    store.save(&stale);
    store.flush().expect("flush should succeed");
    assert_eq!(read_column::<String>(&path, 1, "status"), "running");
    assert_eq!(read_column::<i64>(&path, 1, "version"), 3);

    // Within one batch the highest version wins whatever the order.
    let mut done = record.clone();
    done.status = TaskStatus::Completed;
    done.finished_at_us = Some(5_000);
    done.result = Some(json!([1, 2]));
    done.version = 5;
    let mut older = record.clone();
    older.version = 4;
    store.save(&done);
    store.save(&older);
    store.close().expect("close should succeed");

    let (_store, recovered) = open(&path);
    assert_eq!(recovered.tasks, vec![done]);
}

#[test]
fn flush_makes_saves_visible_to_other_connections() {
    let (_dir, path) = temp_db();
    let (store, _) = open(&path);
    store
        .insert(vec![queued(1), queued(2)])
        .expect("insert should commit");
    for version in 2..=50 {
        let mut record = queued(2);
        record.attempts = version as u32;
        record.version = version;
        store.save(&record);
    }
    store.flush().expect("flush should succeed");
    assert_eq!(read_column::<i64>(&path, 2, "attempts"), 50);
    assert_eq!(read_column::<i64>(&path, 2, "version"), 50);
    assert_eq!(read_column::<i64>(&path, 1, "version"), 1);
    drop(store);
}

#[test]
fn concurrent_inserts_are_all_committed_and_recovered() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 50;
    let (_dir, path) = temp_db();
    let (store, _) = open(&path);
    let store = Arc::new(store);
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for n in 0..PER_THREAD {
                    let id = thread * PER_THREAD + n + 1;
                    store
                        .insert(vec![queued(id)])
                        .expect("insert should commit");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("an inserting thread should not panic");
    }
    let store = Arc::into_inner(store).expect("every other handle is dropped");
    store.close().expect("close should succeed");

    let (_store, recovered) = open(&path);
    let ids: Vec<u64> = recovered.tasks.iter().map(|record| record.id.0).collect();
    let expected: Vec<u64> = (1..=THREADS * PER_THREAD).collect();
    assert_eq!(ids, expected);
    assert_eq!(recovered.next_id, THREADS * PER_THREAD + 1);
}

#[test]
fn a_failed_insert_stores_nothing_and_spares_other_callers() {
    let (_dir, path) = temp_db();
    let (store, _) = open(&path);
    store.insert(vec![queued(1)]).expect("insert should commit");
    let error = store
        .insert(vec![queued(2), queued(1)])
        .expect_err("a duplicate id should fail the transaction");
    assert!(matches!(error, StoreError::Write(_)), "{error}");
    store
        .insert(vec![queued(3)])
        .expect("later inserts should still commit");
    store.close().expect("close should succeed");

    let (_store, recovered) = open(&path);
    let ids: Vec<u64> = recovered.tasks.iter().map(|record| record.id.0).collect();
    assert_eq!(ids, [1, 3]);
}

#[test]
fn a_text_file_is_refused_and_left_unchanged() {
    let (dir, _) = temp_db();
    let long = "These are my notes, not a database.\n".repeat(100);
    for (name, contents) in [("notes.txt", long.as_str()), ("short.txt", "hello\n")] {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).expect("the text file should be writable");
        let error = Store::open(&path, KEEP_ALL, Durability::Power)
            .expect_err("a text file should be refused");
        assert!(
            matches!(&error, StoreError::NotTaskdeck { detail, .. }
                if detail.contains("not an SQLite database")),
            "{error}"
        );
        let after = std::fs::read_to_string(&path).expect("the text file should still read");
        assert_eq!(after, contents);
        assert!(!dir.path().join(format!("{name}-wal")).exists());
    }
}

#[test]
fn another_applications_database_is_refused() {
    let (dir, _) = temp_db();
    let path = dir.path().join("other.db");
    {
        let conn = Connection::open(&path).expect("plain sqlite should open");
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
            .expect("the other app's schema should be creatable");
    }
    let error = Store::open(&path, KEEP_ALL, Durability::Power)
        .expect_err("another app's database should be refused");
    assert!(matches!(error, StoreError::NotTaskdeck { .. }), "{error}");

    let path = dir.path().join("marked.db");
    {
        let conn = Connection::open(&path).expect("plain sqlite should open");
        conn.pragma_update(None, "application_id", 0x1234)
            .expect("the application id should be settable");
    }
    let error = Store::open(&path, KEEP_ALL, Durability::Power)
        .expect_err("another app id should be refused");
    assert!(matches!(error, StoreError::NotTaskdeck { .. }), "{error}");
}

#[test]
fn an_empty_sqlite_file_is_initialised() {
    let (dir, _) = temp_db();
    let path = dir.path().join("empty.db");
    std::fs::write(&path, b"").expect("an empty file should be writable");
    let (store, recovered) = open(&path);
    assert_eq!(recovered.next_id, 1);
    store.insert(vec![queued(1)]).expect("insert should commit");
    drop(store);
}

#[test]
fn a_newer_schema_is_refused() {
    let (_dir, path) = temp_db();
    open(&path).0.close().expect("close should succeed");
    {
        let conn = Connection::open(&path).expect("plain sqlite should open");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("user_version should be settable");
    }
    let error = Store::open(&path, KEEP_ALL, Durability::Power)
        .expect_err("a newer schema should be refused");
    assert!(
        matches!(error, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{error}"
    );
}

#[test]
fn a_second_open_is_locked_out_until_the_first_closes() {
    let (_dir, path) = temp_db();
    let (store, _) = open(&path);
    let error = Store::open(&path, KEEP_ALL, Durability::Power)
        .expect_err("a second open should be refused");
    assert!(matches!(error, StoreError::Locked { .. }), "{error}");
    drop(store);
    let (store, _) = open(&path);
    store.close().expect("close should succeed");
}

#[test]
fn undecodable_rows_are_skipped_but_count_for_next_id() {
    let (_dir, path) = temp_db();
    let (store, _) = open(&path);
    store
        .insert(vec![queued(1), queued(2), queued(3)])
        .expect("insert should commit");
    store.close().expect("close should succeed");
    {
        let conn = Connection::open(&path).expect("plain sqlite should open");
        conn.execute("UPDATE tasks SET status = 'exploded' WHERE id = 3", [])
            .expect("the row should be damageable");
        conn.execute("UPDATE tasks SET args = '{not json' WHERE id = 1", [])
            .expect("the row should be damageable");
    }
    let (_store, recovered) = open(&path);
    let ids: Vec<u64> = recovered.tasks.iter().map(|record| record.id.0).collect();
    assert_eq!(ids, [2]);
    assert_eq!(recovered.next_id, 4);
}

#[test]
fn retention_purge_keeps_unfinished_and_the_newest_finished() {
    let (_dir, path) = temp_db();
    let (store, _) = open(&path);
    let now = now_us();
    let mut records = Vec::new();
    for id in 1..=20_u64 {
        let mut record = queued(id);
        if id % 3 != 0 {
            record.status = if id % 2 == 0 {
                TaskStatus::Completed
            } else {
                TaskStatus::Failed
            };
            record.finished_at_us = Some(now);
        }
        records.push(record);
    }
    // A finished task from long ago goes by age alone.
    let mut ancient = queued(21);
    ancient.status = TaskStatus::Cancelled;
    ancient.finished_at_us = Some(1);
    records.insert(0, ancient);
    // The newest task is unfinished, so no purged row is the highest id;
    // what it depends on stays whatever its age.
    let mut waiting = queued(22);
    waiting.spec = waiting.spec.after(TaskId(1)).after(TaskId(21));
    records.push(waiting);
    store.insert(records).expect("insert should commit");
    store.close().expect("close should succeed");

    let retention = Retention {
        max_finished: 4,
        max_age: Some(Duration::from_secs(3600)),
    };
    let (store, recovered) =
        Store::open(&path, retention, Durability::Power).expect("the store should open");
    let ids: Vec<u64> = recovered.tasks.iter().map(|record| record.id.0).collect();
    // Unfinished: multiples of 3 and 22; finished kept: the two that 22
    // depends on, and with them the newest four.
    assert_eq!(ids, [1, 3, 6, 9, 12, 15, 17, 18, 19, 20, 21, 22]);
    assert_eq!(recovered.next_id, 23);
    drop(store);

    let conn = Connection::open(&path).expect("plain sqlite should open");
    let mut stmt = conn
        .prepare("SELECT id FROM tasks ORDER BY id")
        .expect("the query should prepare");
    let stored: Vec<u64> = stmt
        .query_map([], |row| row.get::<_, i64>(0))
        .expect("the query should run")
        .map(|id| id.expect("ids should read") as u64)
        .collect();
    assert_eq!(stored, ids);
}

#[test]
fn purge_never_removes_the_highest_id() {
    let (_dir, path) = temp_db();
    let (store, _) = open(&path);
    let mut records: Vec<TaskRecord> = (1..=5).map(full).collect();
    for record in &mut records {
        record.finished_at_us = Some(1);
    }
    store.insert(records).expect("insert should commit");
    store.close().expect("close should succeed");

    let retention = Retention {
        max_finished: 0,
        max_age: Some(Duration::from_secs(1)),
    };
    let (store, recovered) =
        Store::open(&path, retention, Durability::Power).expect("the store should open");
    assert!(recovered.tasks.is_empty());
    assert_eq!(recovered.next_id, 6);
    drop(store);
}

#[test]
fn drop_without_close_commits_queued_saves() {
    let (_dir, path) = temp_db();
    let (store, _) = open(&path);
    store.insert(vec![queued(1)]).expect("insert should commit");
    let mut record = queued(1);
    record.status = TaskStatus::Cancelled;
    record.version = 2;
    store.save(&record);
    drop(store);
    let (_store, recovered) = open(&path);
    assert_eq!(recovered.tasks, vec![record]);
}

/// Times one `insert` of 10,000 rows; run with
/// `cargo test --release --lib store::tests::insert_10k -- --ignored --nocapture`.
#[test]
#[ignore = "a timing, not a check"]
fn insert_10k_rows_timing() {
    let (_dir, path) = temp_db();
    let (store, _) = open(&path);
    let records: Vec<TaskRecord> = (1..=10_000).map(full).collect();
    let started = Instant::now();
    store.insert(records).expect("insert should commit");
    let elapsed = started.elapsed();
    eprintln!("insert of 10,000 rows in one call: {elapsed:?}");
    store.close().expect("close should succeed");
    let started = Instant::now();
    let (_store, recovered) = open(&path);
    eprintln!(
        "open recovering {} rows: {:?}",
        recovered.tasks.len(),
        started.elapsed()
    );
}
