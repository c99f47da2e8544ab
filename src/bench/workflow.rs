//! `taskdeck bench --dependencies`: no-op tasks linked by dependencies,
//! in-process or through the broker. Two shapes, each submitted in one
//! batch: a chain (each task after the one before) and a fan-out/fan-in (a
//! root, `tasks` tasks after it, and one task after all of those). Reported:
//! how fast each is submitted and completed, and the time from a
//! dependency's completion to its dependent's start (from the records'
//! times, so the scheduler's own clock).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, BenchOptions, Latencies, LatencyReport, PHASE_TIMEOUT};
use crate::model::{TaskRecord, TaskSpec, TaskStatus};
use crate::scheduler::Scheduler;

/// A chain's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// Tasks in the chain.
    pub tasks: usize,
    /// Time to submit the batch.
    pub submit_ms: f64,
    /// Time from the submit to the last task's completion.
    pub complete_ms: f64,
    /// Tasks completed per second, over that time.
    pub tasks_per_s: f64,
    /// From a task's completion to the next one's start.
    pub handoff: LatencyReport,
}

/// A fan-out/fan-in's figures.
#[derive(Debug, Clone, Serialize)]
pub struct FanReport {
    /// Tasks between the root and the last one.
    pub width: usize,
    /// Time to submit the batch (`width` + 2 tasks).
    pub submit_ms: f64,
    /// Time from the submit to the last task's completion.
    pub complete_ms: f64,
    /// Tasks completed per second, over that time.
    pub tasks_per_s: f64,
    /// From the root's completion to each middle task's start (with more
    /// middle tasks than workers, mostly the wait for a free worker).
    pub fan_out: LatencyReport,
    /// From the root's completion to the first middle task's start,
    /// microseconds.
    pub fan_out_first_us: u64,
    /// From the last middle task's completion to the last task's start,
    /// microseconds.
    pub fan_in_us: u64,
}

/// One run's results; printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowReport {
    /// "memory" or "sqlite".
    pub store: &'static str,
    /// With "sqlite": "process" or "power".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<&'static str>,
    /// Worker threads or slots.
    pub workers: usize,
    /// The chain.
    pub chain: ChainReport,
    /// The fan-out/fan-in.
    pub fan: FanReport,
}

impl WorkflowReport {
    /// Tasks the run submitted.
    pub fn tasks(&self) -> usize {
        self.chain.tasks + self.fan.width + 2
    }
}

fn noop() -> TaskSpec {
    TaskSpec::new("noop", Vec::new())
}

/// Submits `specs` in one batch, waits for all, and returns the records
/// with the submit time and the time to the last completion.
fn run_batch(
    scheduler: &Scheduler,
    specs: Vec<TaskSpec>,
) -> Result<(Vec<TaskRecord>, Duration, Duration), BenchError> {
    let started = Instant::now();
    let ids = scheduler.submit_batch(specs)?;
    let submitted = started.elapsed();
    if !scheduler.wait_idle(PHASE_TIMEOUT) {
        return Err(BenchError::Stuck(
            "a workflow did not finish in time".into(),
        ));
    }
    let finished = started.elapsed();
    let records = ids
        .iter()
        .map(|id| match scheduler.task(*id) {
            Some(record) if record.status == TaskStatus::Completed => Ok(record),
            other => Err(BenchError::Stuck(format!(
                "task {id} ended as {:?}",
                other.map(|r| r.status)
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((records, submitted, finished))
}

/// Time from `dependency`'s completion to `dependent`'s start.
fn gap(dependency: &TaskRecord, dependent: &TaskRecord) -> Duration {
    let finished = dependency.finished_at_us.unwrap_or(0);
    let started = dependent.started_at_us.unwrap_or(finished);
    Duration::from_micros(u64::try_from(started - finished).unwrap_or(0))
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e5).round() / 100.0
}

fn per_second(tasks: usize, duration: Duration) -> f64 {
    (tasks as f64 / duration.as_secs_f64().max(1e-9)).round()
}

/// Runs the chain and the fan-out/fan-in of `options.tasks` tasks each.
pub fn measure(
    scheduler: &Scheduler,
    options: &BenchOptions,
) -> Result<WorkflowReport, BenchError> {
    let tasks = options.tasks.max(2);
    let chain: Vec<TaskSpec> = (0..tasks)
        .map(|i| match i {
            0 => noop(),
            _ => noop().after_batch(i - 1),
        })
        .collect();
    let (records, submitted, finished) = run_batch(scheduler, chain)?;
    let mut handoff = Latencies::new();
    for pair in records.windows(2) {
        handoff.record(gap(&pair[0], &pair[1]));
    }
    let chain = ChainReport {
        tasks,
        submit_ms: ms(submitted),
        complete_ms: ms(finished),
        tasks_per_s: per_second(tasks, finished),
        handoff: handoff.report(),
    };

    let mut fan = vec![noop()];
    fan.extend((0..tasks).map(|_| noop().after_batch(0)));
    fan.push((1..=tasks).fold(noop(), TaskSpec::after_batch));
    let (records, submitted, finished) = run_batch(scheduler, fan)?;
    let (root, rest) = records.split_first().ok_or_else(empty)?;
    let (last, middle) = rest.split_last().ok_or_else(empty)?;
    let mut fan_out = Latencies::new();
    let mut first = Duration::MAX;
    for record in middle {
        let waited = gap(root, record);
        first = first.min(waited);
        fan_out.record(waited);
    }
    let latest = middle
        .iter()
        .max_by_key(|record| record.finished_at_us)
        .ok_or_else(empty)?;
    let fan = FanReport {
        width: tasks,
        submit_ms: ms(submitted),
        complete_ms: ms(finished),
        tasks_per_s: per_second(tasks + 2, finished),
        fan_out: fan_out.report(),
        fan_out_first_us: u64::try_from(first.as_micros()).unwrap_or(u64::MAX),
        fan_in_us: u64::try_from(gap(latest, last).as_micros()).unwrap_or(u64::MAX),
    };
    Ok(WorkflowReport {
        store: if options.memory { "memory" } else { "sqlite" },
        durability: (!options.memory).then(|| options.durability.name()),
        workers: options.workers,
        chain,
        fan,
    })
}

fn empty() -> BenchError {
    BenchError::Stuck("a workflow came back without its tasks".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskId;
    use crate::scheduler::SchedulerConfig;
    use crate::tasks::Registry;

    #[test]
    fn a_small_run_reports_every_task_and_every_gap() {
        let mut config = SchedulerConfig::in_memory();
        config.workers = 2;
        let scheduler = Scheduler::start(config, Registry::with_builtins()).expect("starts");
        let options = BenchOptions {
            tasks: 50,
            workers: 2,
            memory: true,
            db: None,
            durability: crate::scheduler::Durability::default(),
            batch: 1,
            latency_tasks: 0,
            listers: 0,
            dependencies: true,
        };
        let report = measure(&scheduler, &options).expect("a report");
        assert_eq!(report.chain.handoff.samples, 49);
        assert_eq!(report.fan.fan_out.samples, 50);
        assert_eq!(report.tasks(), 102);
        let last = scheduler.task(TaskId(102)).expect("the fan-in");
        assert_eq!(last.spec.dependency_ids().count(), 50);
        scheduler.shutdown().expect("shutdown");
    }
}
