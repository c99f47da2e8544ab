//! GPU placement with declared devices (no NVIDIA hardware needed): tasks
//! get distinct device ids, wait while their GPUs are busy without holding
//! up CPU tasks, see their ids in CUDA_VISIBLE_DEVICES, share a device by
//! memory without over-committing it, and impossible requests are refused
//! at submit.

use crate::common;

use std::time::Duration;

use serde_json::json;

use common::{WAIT, config, wait_until};
use taskdeck::model::{TaskId, TaskSpec, TaskStatus};
use taskdeck::scheduler::{GpuDevice, Scheduler, StoreMode, SubmitError};
use taskdeck::tasks::{ExecSettings, Registry, SpecError, register_exec_tasks};

fn scheduler(dir: &std::path::Path, devices: &[(u32, Option<u64>)]) -> Scheduler {
    let mut registry = Registry::with_builtins();
    register_exec_tasks(&mut registry, ExecSettings::new(dir.join("logs")));
    let mut config = config(StoreMode::Memory, 4);
    config.gpus = devices
        .iter()
        .map(|(id, memory_mb)| GpuDevice {
            id: *id,
            memory_mb: *memory_mb,
        })
        .collect();
    Scheduler::start(config, registry).expect("scheduler should start")
}

/// A command that prints the GPUs it sees, then waits for `release` to
/// exist (at most a minute).
fn gated(release: &std::path::Path, gpus: u32) -> TaskSpec {
    let script = format!(
        "echo \"gpus=[$CUDA_VISIBLE_DEVICES]\"; i=0; while [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
        release.display()
    );
    TaskSpec::new("command", vec![json!(["sh", "-c", script])]).gpus(gpus)
}

fn status(scheduler: &Scheduler, id: TaskId) -> Option<TaskStatus> {
    scheduler.task(id).map(|r| r.status)
}

#[test]
fn gpu_tasks_get_distinct_devices_wait_for_them_and_let_cpu_tasks_pass() {
    let dir = tempfile::tempdir().expect("temp dir");
    let release = dir.path().join("release");
    let scheduler = scheduler(dir.path(), &[(0, None), (1, None)]);
    let first = scheduler.submit(gated(&release, 1)).expect("submit");
    let second = scheduler.submit(gated(&release, 1)).expect("submit");
    let third = scheduler.submit(gated(&release, 1)).expect("submit");
    let cpu = scheduler
        .submit(TaskSpec::new(
            "command",
            vec![json!(["sh", "-c", "echo \"gpus=[$CUDA_VISIBLE_DEVICES]\""])],
        ))
        .expect("submit");
    assert!(wait_until(WAIT, || {
        status(&scheduler, first) == Some(TaskStatus::Running)
            && status(&scheduler, second) == Some(TaskStatus::Running)
    }));
    let ids = |id| scheduler.task(id).map(|r| r.gpu_ids).unwrap_or_default();
    let mut held = [ids(first), ids(second)].concat();
    held.sort_unstable();
    assert_eq!(
        held,
        vec![0, 1],
        "two 1-GPU tasks run at once on different devices"
    );
    // The CPU task behind the waiting third one runs, and sees no GPU.
    let cpu_record = scheduler.wait(cpu, WAIT).expect("cpu task");
    assert_eq!(cpu_record.status, TaskStatus::Completed, "{cpu_record:?}");
    assert!(cpu_record.gpu_ids.is_empty());
    let tail = cpu_record.log.map(|log| log.tail).unwrap_or_default();
    assert!(
        tail.contains("gpus=[]"),
        "an empty CUDA_VISIBLE_DEVICES: {tail:?}"
    );
    assert_eq!(
        status(&scheduler, third),
        Some(TaskStatus::Queued),
        "the third waits for a GPU"
    );
    std::fs::write(&release, b"go").expect("release");
    for id in [first, second, third] {
        let record = scheduler.wait(id, WAIT).expect("gpu task");
        assert_eq!(record.status, TaskStatus::Completed, "{record:?}");
        assert_eq!(record.gpu_ids.len(), 1);
        let seen = record.log.map(|log| log.tail).unwrap_or_default();
        assert!(
            seen.contains(&format!("gpus=[{}]", record.gpu_ids[0])),
            "CUDA_VISIBLE_DEVICES matches the assignment: {seen:?} vs {:?}",
            record.gpu_ids
        );
    }
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn a_large_gpu_request_is_not_starved_by_smaller_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let release = dir.path().join("release");
    let scheduler = scheduler(dir.path(), &[(0, None), (1, None)]);
    let holder = scheduler.submit(gated(&release, 1)).expect("submit");
    assert!(wait_until(WAIT, || status(&scheduler, holder)
        == Some(TaskStatus::Running)));
    let big = scheduler.submit(gated(&release, 2)).expect("submit");
    let small = scheduler.submit(gated(&release, 1)).expect("submit");
    // One device is free, but the small task must not take it ahead of the
    // big one that came first.
    assert!(!wait_until(Duration::from_millis(300), || {
        status(&scheduler, small) != Some(TaskStatus::Queued)
    }));
    assert_eq!(status(&scheduler, big), Some(TaskStatus::Queued));
    std::fs::write(&release, b"go").expect("release");
    let big_record = scheduler.wait(big, WAIT).expect("big");
    let small_record = scheduler.wait(small, WAIT).expect("small");
    assert_eq!(big_record.gpu_ids, vec![0, 1]);
    assert!(
        big_record.first_started_at_us <= small_record.first_started_at_us,
        "the 2-GPU task started first"
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn impossible_gpu_requests_are_refused_at_submit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scheduler = scheduler(dir.path(), &[(0, Some(8_000)), (1, Some(24_000))]);
    let refused = scheduler
        .submit(TaskSpec::new("sleep", vec![json!(1)]).gpus(3))
        .expect_err("three GPUs of two");
    assert!(
        matches!(
            refused,
            SubmitError::Invalid {
                source: SpecError::Gpus {
                    asked: 3,
                    available: 2,
                    ..
                },
                ..
            }
        ),
        "{refused}"
    );
    let mut big_memory = TaskSpec::new("sleep", vec![json!(1)]).gpus(2);
    big_memory.gpu_memory_mb = Some(16_000);
    let refused = scheduler
        .submit(big_memory)
        .expect_err("one device has 16 GB");
    assert!(
        refused.to_string().contains("at least 16000 MB"),
        "{refused}"
    );
    let mut fits = TaskSpec::new("sleep", vec![json!(1)]).gpus(1);
    fits.gpu_memory_mb = Some(16_000);
    let id = scheduler.submit(fits).expect("the 24 GB device fits");
    let record = scheduler.wait(id, WAIT).expect("task");
    assert_eq!(
        record.gpu_ids,
        vec![1],
        "placed on the device with enough memory"
    );
    assert_eq!(
        scheduler.stats().counts.queued,
        0,
        "nothing else was accepted"
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn tasks_share_a_device_by_memory_and_never_over_commit_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let release = dir.path().join("release");
    let scheduler = scheduler(dir.path(), &[(0, Some(24_000)), (1, Some(24_000))]);
    let share = |mb: u64| {
        let mut spec = gated(&release, 1);
        spec.gpu_memory_mb = Some(mb);
        spec
    };
    // Two 10 GB shares fit one 24 GB device; a whole-device task takes the
    // other; a third share must wait for room.
    let first = scheduler.submit(share(10_000)).expect("submit");
    let second = scheduler.submit(share(10_000)).expect("submit");
    let whole = scheduler.submit(gated(&release, 1)).expect("submit");
    let third = scheduler.submit(share(10_000)).expect("submit");
    assert!(wait_until(WAIT, || {
        [first, second, whole]
            .iter()
            .all(|id| status(&scheduler, *id) == Some(TaskStatus::Running))
    }));
    let ids = |id| scheduler.task(id).map(|r| r.gpu_ids).unwrap_or_default();
    assert_eq!(ids(first), ids(second), "the shares are on one device");
    assert_ne!(ids(first), ids(whole), "the whole device is its own");
    let why = scheduler
        .waiting(&[third])
        .pop()
        .flatten()
        .expect("it waits");
    assert_eq!(why.code(), "waiting_for_gpu_memory", "{why:?}");
    assert_eq!(status(&scheduler, third), Some(TaskStatus::Queued));
    // A share larger than any device is refused at submit.
    let too_big = scheduler.submit(share(30_000));
    assert!(
        matches!(too_big, Err(SubmitError::Invalid { .. })),
        "{too_big:?}"
    );
    std::fs::write(&release, b"go").expect("release");
    for id in [first, second, whole, third] {
        let record = scheduler.wait(id, WAIT).expect("gpu task");
        assert_eq!(record.status, TaskStatus::Completed, "{record:?}");
        assert_eq!(record.gpu_ids.len(), 1, "{record:?}");
    }
    // The third ran only once room came free: one of the others ended
    // (the whole-device task may end first, leaving its device to it).
    let record = |id| scheduler.task(id).expect("known");
    let third_started = record(third).started_at_us.expect("started");
    let first_end = [first, second, whole]
        .iter()
        .filter_map(|id| record(*id).finished_at_us)
        .min()
        .expect("finished");
    assert!(third_started >= first_end);
    scheduler.shutdown().expect("shutdown");
}
