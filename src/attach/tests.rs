//! The conversions read back what the API's views write.

use serde_json::json;

use super::convert;
use crate::api::views;
use crate::model::{
    AttemptFailure, Dependency, DiskSample, FailureKind, GpuState, OnDependencyFailure,
    ResourceSample, TaskId, TaskLog, TaskRecord, TaskSpec, TaskStatus,
};
use crate::scheduler::{QueueChange, QueueInfo};

fn full_record() -> TaskRecord {
    let mut spec = TaskSpec::new("sleep", vec![json!(5)])
        .priority(7)
        .max_retries(3)
        .queue("gpu");
    spec.kwargs.insert("ms".into(), json!(10));
    spec.timeout_ms = Some(2_500);
    spec.gpus = 1;
    spec.gpu_memory_mb = Some(1024);
    spec.not_before_us = Some(1_700_000_000_123_456);
    spec.depends_on = vec![Dependency::Task(TaskId(3))];
    spec.on_dependency_failure = OnDependencyFailure::Run;
    let mut record = TaskRecord::new(TaskId(42), spec, 1_700_000_000_000_001);
    record.status = TaskStatus::Failed;
    record.attempts = 2;
    record.failures = vec![AttemptFailure {
        attempt: 1,
        kind: FailureKind::TimedOut,
        message: "too slow".into(),
        worker: Some("worker-1".into()),
        at_us: 1_700_000_001_000_000,
    }];
    record.first_started_at_us = Some(1_700_000_000_500_000);
    record.started_at_us = Some(1_700_000_000_900_000);
    record.finished_at_us = Some(1_700_000_002_000_000);
    record.worker = Some("worker-2".into());
    record.error = Some("boom".into());
    record.log = Some(TaskLog {
        path: "/tmp/x.log".into(),
        bytes: 12,
        truncated: false,
        tail: "last line".into(),
        gpu_peak_memory_mb: Some(300),
    });
    record.gpu_ids = vec![0];
    record.held = false;
    record.cancelled_by = Some(TaskId(3));
    record.version = 9;
    record
}

#[test]
fn a_task_record_reads_back_as_it_was_written() {
    let record = full_record();
    assert_eq!(
        convert::task(&views::task(&record)).expect("record"),
        record
    );
    let mut plain = TaskRecord::new(TaskId(1), TaskSpec::new("noop", vec![]), 1_000_000);
    plain.held = true;
    plain.version = 1;
    assert_eq!(convert::task(&views::task(&plain)).expect("record"), plain);
    let mut with_waiting = views::task_waiting(&plain, None);
    with_waiting["waiting"] = json!({"code": "paused"});
    assert_eq!(convert::task(&with_waiting).expect("record"), plain);
}

#[test]
fn a_record_without_what_the_api_promises_is_an_error_naming_the_field() {
    let mut view = views::task(&full_record());
    view["status"] = json!("melted");
    let error = convert::task(&view)
        .expect_err("no such status")
        .to_string();
    assert!(error.contains("status"), "{error}");
    view = views::task(&full_record());
    view.as_object_mut().map(|o| o.remove("version"));
    assert!(convert::task(&view).is_err());
}

#[test]
fn task_events_carry_their_kind_and_record_and_summaries_are_skipped() {
    let record = full_record();
    let data = json!({"kind": "failed", "task": views::task(&record)});
    let event = convert::task_event(&data, 7)
        .expect("event")
        .expect("a record");
    assert_eq!(event.kind, crate::model::EventKind::Failed);
    assert_eq!(event.seq, 7);
    assert_eq!(*event.task, record);
    let gone = json!({"kind": "cancelled", "task": {"id": 5, "status": "cancelled"}});
    assert!(convert::task_event(&gone, 8).expect("event").is_none());
}

#[test]
fn reloaded_records_are_told_as_the_change_that_left_them_so() {
    use crate::model::EventKind;
    let mut record = TaskRecord::new(TaskId(1), TaskSpec::new("noop", vec![]), 1);
    assert_eq!(convert::kind_of(&record, false), EventKind::Submitted);
    assert_eq!(convert::kind_of(&record, true), EventKind::Requeued);
    record.held = true;
    assert_eq!(convert::kind_of(&record, true), EventKind::Held);
    record.status = TaskStatus::Completed;
    assert_eq!(convert::kind_of(&record, true), EventKind::Completed);
}

#[test]
fn queues_workers_and_counts_read_back() {
    let mut counts = [0usize; TaskStatus::ALL.len()];
    counts[TaskStatus::Running.index()] = 2;
    counts[TaskStatus::Failed.index()] = 5;
    let queue = QueueInfo {
        name: "gpu".into(),
        limit: Some(3),
        paused: true,
        counts,
    };
    assert_eq!(convert::queue(&views::queue(&queue)).expect("queue"), queue);

    let scheduler = crate::scheduler::Scheduler::start(
        crate::scheduler::SchedulerConfig {
            workers: 2,
            ..crate::scheduler::SchedulerConfig::in_memory()
        },
        crate::tasks::Registry::with_builtins(),
    )
    .expect("the scheduler should start");
    let stats = scheduler.stats();
    let workers = scheduler.workers();
    let workers_view = views::workers(&workers, &stats);
    let read = convert::stats(&views::report(&stats), &workers_view).expect("stats");
    assert_eq!(read.counts, stats.counts);
    assert_eq!(
        (read.workers_total, read.workers_target, read.paused),
        (stats.workers_total, stats.workers_target, stats.paused)
    );
    assert_eq!(read.metrics.total_latency, stats.metrics.total_latency);
    let read_workers: Vec<_> = workers_view["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| convert::worker(w).expect("worker"))
        .collect();
    assert_eq!(read_workers, workers);
    scheduler.shutdown().expect("the scheduler should stop");
}

#[test]
fn resource_samples_read_back_and_the_placeholder_is_none() {
    let sample = ResourceSample {
        at_us: 1_700_000_000_250_000,
        cpu_percent: 12.5,
        cpu_per_core: vec![10.0, 15.0],
        memory_used_bytes: 1 << 30,
        memory_total_bytes: 4 << 30,
        disks: vec![DiskSample {
            mount: "/".into(),
            used_bytes: 5,
            total_bytes: 10,
        }],
        gpus: GpuState::Unavailable {
            reason: "no NVML".into(),
        },
    };
    assert_eq!(
        convert::sample(&views::resources(&sample)).expect("sample"),
        Some(sample.clone())
    );
    let none_found = ResourceSample {
        gpus: GpuState::Available {
            devices: Vec::new(),
        },
        ..sample
    };
    assert_eq!(
        convert::sample(&views::resources(&none_found)).expect("sample"),
        Some(none_found)
    );
    let stats = crate::scheduler::Scheduler::start(
        crate::scheduler::SchedulerConfig::in_memory(),
        crate::tasks::Registry::with_builtins(),
    )
    .expect("the scheduler should start");
    let placeholder = views::monitoring(None, &stats.stats());
    assert_eq!(convert::sample(&placeholder).expect("placeholder"), None);
    stats.shutdown().expect("the scheduler should stop");
}

#[test]
fn task_types_read_back_as_the_registry_catalog() {
    let registry = crate::demo::registry();
    let view = views::task_types(&registry);
    assert_eq!(convert::task_types(&view).expect("types"), registry.types());
}

#[test]
fn a_submission_is_what_the_api_turns_back_into_the_spec() {
    let spec = full_record().spec;
    let body = convert::submission(&spec);
    let submission: views::Submission = serde_json::from_value(body).expect("a submission");
    assert_eq!(submission.into_spec().expect("valid"), spec);
    let plain = TaskSpec::new("noop", vec![json!(1)]);
    let submission: views::Submission =
        serde_json::from_value(convert::submission(&plain)).expect("a submission");
    assert_eq!(submission.into_spec().expect("valid"), plain);
}

#[test]
fn queue_changes_are_what_the_api_reads() {
    for change in [
        QueueChange {
            limit: Some(Some(3)),
            ..QueueChange::default()
        },
        QueueChange {
            limit: Some(None),
            ..QueueChange::default()
        },
        QueueChange {
            paused: Some(true),
            stop_running: true,
            ..QueueChange::default()
        },
    ] {
        let body = serde_json::to_vec(&convert::queue_change(change)).expect("json");
        assert_eq!(views::queue_change(&body).expect("valid"), change);
    }
}
