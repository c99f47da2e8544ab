//! Sharing a GPU by memory, tested in both ways a task starts: on this
//! machine's devices by a thread of the pool, and on a worker process's
//! devices by placement. A device's memory is never over-committed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{AttemptResult, Core, GpuDevice, Heartbeat};
use crate::model::{GpuSample, GpuState, HostSummary, TaskId, TaskRecord, TaskSpec};
use crate::scheduler::policy::Backoff;
use crate::store::Retention;

const LEASE: Duration = Duration::from_secs(30);
const DEVICE: GpuDevice = GpuDevice {
    id: 0,
    memory_mb: Some(80_000),
};

#[derive(Debug, Clone, Copy)]
enum Mode {
    Pool,
    Workers,
}

/// A core with one 80 GB device (its own, or a worker process's with four
/// slots that reports `foreign_mb` used by other programs) and tasks of
/// (id, GPUs, memory).
fn core_with(mode: Mode, foreign_mb: u64, tasks: &[(u64, u32, Option<u64>)]) -> Core {
    let backoff = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_secs(1),
    };
    let retention = Retention {
        max_finished: 100,
        max_age: None,
    };
    let mut core = Core::new(0, retention, backoff);
    match mode {
        Mode::Pool => {
            core.set_gpus(&[DEVICE]);
            core.set_gpu_foreign(&[(0, foreign_mb)]);
        }
        Mode::Workers => {
            core.heartbeat(&beat(foreign_mb), LEASE, Instant::now());
        }
    }
    let records = tasks
        .iter()
        .map(|(id, gpus, memory)| {
            let mut spec = TaskSpec::new("noop", vec![]).gpus(*gpus);
            spec.gpu_memory_mb = *memory;
            Arc::new(TaskRecord::new(TaskId(*id), spec, 0))
        })
        .collect();
    core.insert_queued(records, 0);
    core
}

fn beat(foreign_mb: u64) -> Heartbeat {
    Heartbeat {
        worker: "gpu-box".into(),
        host: "gpu-box".into(),
        concurrency: 4,
        prefetch: 0,
        takes_placements: true,
        running: Vec::new(),
        resources: Some(HostSummary {
            cpu_percent: 0.0,
            cpu_count: 4,
            memory_used_bytes: 0,
            memory_total_bytes: 1 << 34,
            gpus: GpuState::Available {
                devices: vec![GpuSample {
                    index: 0,
                    name: "NVIDIA H200".into(),
                    utilization_percent: 0.0,
                    memory_used_bytes: foreign_mb << 20,
                    memory_total_bytes: 80_000 << 20,
                    temperature_c: None,
                    foreign_memory_bytes: Some(foreign_mb << 20),
                }],
            },
        }),
        gpus: vec![DEVICE],
        session: 1,
        refused_messages: 0,
    }
}

/// Starts what may start; the ids and the devices each got.
fn start_all(core: &mut Core, mode: Mode) -> Vec<(u64, Vec<u32>)> {
    let mut started = Vec::new();
    loop {
        let next = match mode {
            Mode::Pool => {
                core.target_workers += 1;
                let (worker, _) = core.add_worker();
                core.next_job(worker, 1).map(|job| job.started.record)
            }
            Mode::Workers => {
                let placed = core.place(1, LEASE, Instant::now(), 1);
                placed.runs.first().map(|run| Arc::clone(&run.record))
            }
        };
        let Some(record) = next else {
            return started;
        };
        started.push((record.id.0, record.gpu_ids.clone()));
    }
}

fn finish(core: &mut Core, mode: Mode, id: u64) {
    let id = TaskId(id);
    let run = core.tasks[&id].run.as_ref().expect("it runs");
    let (worker, attempt) = (run.worker, run.attempt);
    let done = AttemptResult::Completed(json!(null));
    match mode {
        Mode::Pool => core.finish_attempt(worker, id, attempt, done, Instant::now(), 2),
        Mode::Workers => {
            core.finish_remote("gpu-box", id, attempt, done, None, 1, Instant::now(), 2)
        }
    };
}

#[test]
fn shares_of_one_device_never_over_commit_its_memory_in_either_mode() {
    for mode in [Mode::Pool, Mode::Workers] {
        let tasks = [
            (1, 1, Some(30_000)),
            (2, 1, Some(30_000)),
            (3, 1, Some(30_000)),
            (4, 0, None),
        ];
        let mut core = core_with(mode, 0, &tasks);
        // Two shares fit in 80 GB, the third waits; CPU tasks pass it.
        assert_eq!(
            start_all(&mut core, mode),
            vec![(1, vec![0]), (2, vec![0]), (4, vec![])],
            "{mode:?}"
        );
        finish(&mut core, mode, 1);
        assert_eq!(start_all(&mut core, mode), vec![(3, vec![0])], "{mode:?}");
    }
}

#[test]
fn memory_other_programs_use_is_left_alone_in_either_mode() {
    for mode in [Mode::Pool, Mode::Workers] {
        let mut core = core_with(mode, 30_000, &[(1, 1, Some(30_000)), (2, 1, Some(30_000))]);
        assert_eq!(start_all(&mut core, mode), vec![(1, vec![0])], "{mode:?}");
        match mode {
            Mode::Pool => core.set_gpu_foreign(&[(0, 10_000)]),
            Mode::Workers => {
                core.heartbeat(&beat(10_000), LEASE, Instant::now());
            }
        }
        assert_eq!(start_all(&mut core, mode), vec![(2, vec![0])], "{mode:?}");
    }
}

#[test]
fn a_whole_device_request_waits_for_the_shares_and_then_holds_it_alone() {
    for mode in [Mode::Pool, Mode::Workers] {
        let tasks = [(1, 1, Some(10_000)), (2, 1, None), (3, 1, Some(10_000))];
        let mut core = core_with(mode, 0, &tasks);
        // The whole request is first in line among GPU tasks once 1 runs:
        // the later share does not overtake it.
        assert_eq!(start_all(&mut core, mode), vec![(1, vec![0])], "{mode:?}");
        finish(&mut core, mode, 1);
        assert_eq!(start_all(&mut core, mode), vec![(2, vec![0])], "{mode:?}");
        finish(&mut core, mode, 2);
        assert_eq!(start_all(&mut core, mode), vec![(3, vec![0])], "{mode:?}");
    }
}
