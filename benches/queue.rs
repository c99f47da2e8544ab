//! Criterion benchmarks of the ready queue and of submit-to-completion
//! through the in-process scheduler.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use taskdeck::model::{TaskId, TaskSpec};
use taskdeck::scheduler::queue::{GpuNeed, ReadyQueue};
use taskdeck::scheduler::{Scheduler, SchedulerConfig};
use taskdeck::tasks::Registry;

const QUEUED: u64 = 10_000;

fn filled() -> ReadyQueue {
    let mut queue = ReadyQueue::new();
    for id in 0..QUEUED {
        queue.push(0, (id % 10) as u8, TaskId(id), GpuNeed::default());
    }
    queue
}

fn queue_benches(c: &mut Criterion) {
    c.bench_function("queue/push 10k mixed priorities", |b| {
        b.iter(|| black_box(filled()));
    });
    c.bench_function("queue/pop 10k", |b| {
        b.iter_batched(
            filled,
            |mut queue| {
                while let Some(id) = queue.pop() {
                    black_box(id);
                }
            },
            BatchSize::LargeInput,
        );
    });
    c.bench_function("queue/remove one of 10k", |b| {
        b.iter_batched_ref(
            filled,
            |queue| black_box(queue.remove(0, 7, TaskId(QUEUED / 2 + 7))),
            BatchSize::LargeInput,
        );
    });
}

fn scheduler_benches(c: &mut Criterion) {
    let mut config = SchedulerConfig::in_memory();
    config.workers = 2;
    let scheduler =
        Scheduler::start(config, Registry::with_builtins()).expect("scheduler should start");
    c.bench_function("scheduler/submit and wait for a noop", |b| {
        b.iter(|| {
            let id = scheduler
                .submit(TaskSpec::new("noop", Vec::new()))
                .expect("submit should succeed");
            black_box(scheduler.wait(id, Duration::from_secs(10)))
        });
    });
    scheduler.shutdown().expect("shutdown should succeed");
}

criterion_group!(benches, queue_benches, scheduler_benches);
criterion_main!(benches);
