//! Tests of resource samples in the store and of the migration from the
//! version-1 schema, against real SQLite files in temporary directories.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde_json::json;
use tempfile::TempDir;

use super::*;
use crate::model::{DiskSample, GpuSample, GpuState, TaskId, TaskSpec, TaskStatus};

/// Keeps every task, so tests see exactly what they wrote.
const KEEP_ALL: Retention = Retention {
    max_finished: usize::MAX,
    max_age: None,
};

const SECOND_US: i64 = 1_000_000;

fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temp dir should be creatable");
    let path = dir.path().join("tasks.db");
    (dir, path)
}

fn open(path: &Path) -> (Store, Recovered) {
    Store::open(path, KEEP_ALL, Durability::Power).expect("the store should open")
}

/// A sample taken at `at_us` whose values are derived from it, with GPUs
/// when `gpus` is set.
fn sample(at_us: i64, gpus: bool) -> ResourceSample {
    let n = (at_us / SECOND_US).rem_euclid(100) as f32;
    ResourceSample {
        at_us,
        cpu_percent: n,
        cpu_per_core: vec![n, 100.0 - n, 0.5],
        memory_used_bytes: 3 << 30,
        memory_total_bytes: 16 << 30,
        disks: vec![DiskSample {
            mount: "/".to_owned(),
            used_bytes: 70,
            total_bytes: 100,
        }],
        gpus: if gpus {
            GpuState::Available {
                devices: vec![GpuSample {
                    index: 0,
                    name: "NVIDIA H200".to_owned(),
                    utilization_percent: 45.0,
                    memory_used_bytes: 12 << 30,
                    memory_total_bytes: 140 << 30,
                    temperature_c: Some(51),
                    foreign_memory_bytes: Some(2 << 30),
                }],
            }
        } else {
            GpuState::Unavailable {
                reason: "no NVIDIA driver found".to_owned(),
            }
        },
    }
}

fn stored_sample_times(path: &Path) -> Vec<i64> {
    let conn = Connection::open(path).expect("a second connection should open");
    let mut stmt = conn
        .prepare("SELECT at_us FROM resource_samples ORDER BY at_us")
        .expect("the query should prepare");
    stmt.query_map([], |row| row.get(0))
        .expect("the query should run")
        .map(|at_us| at_us.expect("the time should read"))
        .collect()
}

#[test]
fn samples_survive_a_restart_oldest_first() {
    let (_dir, path) = temp_db();
    let (store, recovered) = open(&path);
    assert!(recovered.samples.is_empty());
    let now = now_us();
    // Saved out of order, and alternating GPU states, to check both the
    // order of recovery and the JSON shape of every variant.
    let times = [
        now - 30 * SECOND_US,
        now - 10 * SECOND_US,
        now - 20 * SECOND_US,
        now,
    ];
    let saved: Vec<ResourceSample> = times
        .iter()
        .enumerate()
        .map(|(n, &at_us)| sample(at_us, n % 2 == 0))
        .collect();
    for sample in &saved {
        store.save_sample(sample);
    }
    store.close().expect("close should succeed");

    let (store, recovered) = open(&path);
    let mut expected = saved;
    expected.sort_by_key(|sample| sample.at_us);
    assert_eq!(recovered.samples, expected);
    drop(store);
}

#[test]
fn samples_older_than_an_hour_are_purged_and_not_recovered() {
    let (_dir, path) = temp_db();
    let (store, _) = open(&path);
    let now = now_us();
    let hour_us = 3600 * SECOND_US;
    let old = [now - 3 * hour_us, now - hour_us - 60 * SECOND_US];
    let recent = [now - hour_us + 60 * SECOND_US, now - SECOND_US];
    for at_us in old.iter().chain(&recent) {
        store.save_sample(&sample(*at_us, false));
    }
    store.flush().expect("flush should succeed");
    assert_eq!(stored_sample_times(&path).len(), 4);
    store.close().expect("close should succeed");

    let (store, recovered) = open(&path);
    let recovered_times: Vec<i64> = recovered.samples.iter().map(|s| s.at_us).collect();
    assert_eq!(recovered_times, recent);
    assert_eq!(stored_sample_times(&path), recent);
    drop(store);
}

#[test]
fn the_writers_purge_rule_drops_only_samples_before_the_cutoff() {
    let (_dir, path) = temp_db();
    let conn = schema::open(&path, Durability::Power).expect("the database should open");
    let hour_us = 3600 * SECOND_US;
    let now = 10 * hour_us;
    for at_us in [now - 2 * hour_us, now - hour_us - 1, now - hour_us, now] {
        conn.execute(
            "INSERT INTO resource_samples (at_us, sample) VALUES (?1, '{}')",
            [at_us],
        )
        .expect("a row should insert");
    }
    let cutoff = samples::cutoff_us(SAMPLE_RETENTION, now);
    assert_eq!(cutoff, now - hour_us);
    assert_eq!(samples::purge(&conn, cutoff).ok(), Some(2));
    drop(conn);
    assert_eq!(stored_sample_times(&path), [now - hour_us, now]);
}

#[test]
fn undecodable_samples_are_skipped() {
    let (_dir, path) = temp_db();
    let (store, _) = open(&path);
    let now = now_us();
    for at_us in [now - 3 * SECOND_US, now - 2 * SECOND_US, now - SECOND_US] {
        store.save_sample(&sample(at_us, true));
    }
    store.close().expect("close should succeed");
    {
        let conn = Connection::open(&path).expect("plain sqlite should open");
        conn.execute(
            "UPDATE resource_samples SET sample = '{not json' WHERE at_us = ?1",
            [now - 2 * SECOND_US],
        )
        .expect("the row should be damageable");
    }
    let (_store, recovered) = open(&path);
    let times: Vec<i64> = recovered.samples.iter().map(|s| s.at_us).collect();
    assert_eq!(times, [now - 3 * SECOND_US, now - SECOND_US]);
}

/// The version-1 schema exactly as the first release created it.
const V1_SCHEMA: &str = "CREATE TABLE tasks (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        args TEXT NOT NULL,
        kwargs TEXT NOT NULL,
        priority INTEGER NOT NULL,
        max_retries INTEGER NOT NULL,
        timeout_ms INTEGER,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        failures TEXT NOT NULL,
        submitted_at_us INTEGER NOT NULL,
        first_started_at_us INTEGER,
        started_at_us INTEGER,
        finished_at_us INTEGER,
        retry_at_us INTEGER,
        worker TEXT,
        result TEXT,
        error TEXT,
        version INTEGER NOT NULL
    ) STRICT;";

#[test]
fn a_version_1_database_migrates_and_keeps_its_tasks() {
    let (_dir, path) = temp_db();
    let mut first = TaskRecord::new(TaskId(1), TaskSpec::new("noop", vec![json!(1)]), 1_000);
    first.status = TaskStatus::Running;
    first.attempts = 1;
    first.worker = Some("w-1".to_owned());
    first.version = 3;
    let second = TaskRecord::new(
        TaskId(7),
        TaskSpec::new("mock_ml_task", vec![json!("x")]).kwarg("epochs", json!(10)),
        2_000,
    );
    {
        let conn = Connection::open(&path).expect("plain sqlite should open");
        conn.execute_batch(V1_SCHEMA)
            .expect("the version-1 schema should be creatable");
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .expect("the application id should be settable");
        conn.pragma_update(None, "user_version", 1)
            .expect("user_version should be settable");
        for record in [&first, &second] {
            insert_v1(&conn, record);
        }
    }

    let (store, recovered) = open(&path);
    assert_eq!(recovered.tasks, vec![first, second]);
    assert_eq!(recovered.next_id, 8);
    assert!(recovered.samples.is_empty());
    let version: i64 = Connection::open(&path)
        .expect("a second connection should open")
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("user_version should read");
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 9);

    let taken = sample(now_us(), true);
    store.save_sample(&taken);
    store.close().expect("close should succeed");
    let (_store, recovered) = open(&path);
    assert_eq!(recovered.samples, vec![taken]);
    assert_eq!(recovered.tasks.len(), 2);
}

/// Inserts a record as version 1 stored it (its columns, frozen here so
/// that later schema changes do not leak into the migration test).
fn insert_v1(conn: &Connection, record: &TaskRecord) {
    conn.execute(
        "INSERT INTO tasks (id, name, args, kwargs, priority, max_retries, timeout_ms, status, \
         attempts, failures, submitted_at_us, first_started_at_us, started_at_us, \
         finished_at_us, retry_at_us, worker, result, error, version) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        rusqlite::params![
            i64::try_from(record.id.0).expect("small id"),
            record.spec.name,
            json_text(&record.spec.args),
            json_text(&record.spec.kwargs),
            record.spec.priority,
            record.spec.max_retries,
            record.spec.timeout_ms.map(|ms| i64::try_from(ms).expect("small timeout")),
            record.status.as_str(),
            record.attempts,
            json_text(&record.failures),
            record.submitted_at_us,
            record.first_started_at_us,
            record.started_at_us,
            record.finished_at_us,
            record.retry_at_us,
            record.worker,
            record.result.as_ref().map(json_text),
            record.error,
            i64::try_from(record.version).expect("small version"),
        ],
    )
    .expect("a version-1 row should insert");
}

/// JSON text of a test value.
fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("test values encode")
}

#[test]
fn an_attempts_output_log_survives_a_restart() {
    let (_dir, path) = temp_db();
    let record = TaskRecord::new(
        TaskId(1),
        TaskSpec::new("command", vec![json!(["true"])]),
        1,
    );
    let (store, _) = open(&path);
    store.insert(vec![record.clone()]).expect("insert");
    let mut finished = record;
    finished.status = TaskStatus::Completed;
    finished.log = Some(crate::model::TaskLog {
        path: "/data/logs/task-1-attempt-1.log".into(),
        bytes: 12,
        truncated: false,
        tail: "hello world\n".into(),
        gpu_peak_memory_mb: Some(1_234),
    });
    finished.version = 2;
    store.save(&finished);
    store.close().expect("close");
    let (_store, recovered) = open(&path);
    assert_eq!(recovered.tasks, vec![finished]);
}
