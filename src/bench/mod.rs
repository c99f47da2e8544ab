//! `taskdeck bench`: throughput and closed-loop latency of no-op tasks
//! through the real scheduler, in-process, and (`http`) through the HTTP
//! API.

mod followers;
pub mod http;
#[cfg(feature = "broker")]
pub mod remote;
mod wire;
pub mod workflow;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::model::{TaskSpec, TaskStatus};
use crate::scheduler::{Durability, Scheduler, SchedulerConfig, StoreMode, TaskQuery};
use crate::store::Retention;
use crate::tasks::Registry;

/// How long one benchmark phase may take before it is reported as stuck.
pub(crate) const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Tasks in the throughput phase.
    pub tasks: usize,
    /// Worker threads.
    pub workers: usize,
    /// Keep nothing on disk.
    pub memory: bool,
    /// Database file for the durable runs; a fresh temporary file if none.
    pub db: Option<PathBuf>,
    /// What a commit survives in the durable runs.
    pub durability: Durability,
    /// Tasks per submit call in the throughput phase (1 = single submits).
    pub batch: usize,
    /// Tasks in the closed-loop latency phase.
    pub latency_tasks: usize,
    /// Threads listing up to [`LISTED`] tasks in a loop while both phases
    /// run, as dashboards and scripts do.
    pub listers: usize,
    /// Measure dependencies instead ([`workflow`]): a chain and a
    /// fan-out/fan-in of `tasks` tasks each.
    pub dependencies: bool,
}

/// Tasks each lister asks for per call.
pub const LISTED: usize = 10_000;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// Tasks measured.
    pub samples: u64,
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
}

/// Closed-loop latency samples, shared by both benchmarks.
pub(crate) struct Latencies(Histogram<u64>);

impl Latencies {
    pub(crate) fn new() -> Self {
        Self(
            Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("constant histogram bounds should be valid"),
        )
    }

    pub(crate) fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub(crate) fn report(&self) -> LatencyReport {
        let h = &self.0;
        LatencyReport {
            samples: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }
}

/// One benchmark run's results; printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// "memory" or "sqlite".
    pub store: &'static str,
    /// With "sqlite": "process" or "power" (see [`Durability`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<&'static str>,
    /// Tasks in the throughput phase.
    pub tasks: usize,
    /// Worker threads.
    pub workers: usize,
    /// Tasks per submit call.
    pub batch: usize,
    /// Tasks from first submit to last completion, per second.
    pub throughput_tasks_per_s: f64,
    /// Tasks submitted per second (submission alone).
    pub submit_tasks_per_s: f64,
    /// Listing threads that ran alongside.
    pub listers: usize,
    /// Listings of up to [`LISTED`] tasks they finished per second.
    pub lists_per_s: f64,
    /// Closed-loop submit-to-completion latency.
    pub latency: LatencyReport,
}

/// Why a benchmark could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The scheduler did not start.
    #[error(transparent)]
    Start(#[from] crate::scheduler::StartError),
    /// A submit was refused.
    #[error(transparent)]
    Submit(#[from] crate::scheduler::SubmitError),
    /// Shutdown could not flush the store.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Tasks did not finish in time.
    #[error("{0}")]
    Stuck(String),
}

/// Runs the dependency phases ([`workflow`]) on a scheduler of its own.
pub fn run_workflow(options: &BenchOptions) -> Result<workflow::WorkflowReport, BenchError> {
    let (store, temp_db) = store_for(options);
    let mut config = SchedulerConfig::new(store);
    config.durability = options.durability;
    config.workers = options.workers;
    config.retention = retention_for(options);
    let scheduler = Scheduler::start(config, Registry::with_builtins())?;
    let result = workflow::measure(&scheduler, options);
    let shutdown = scheduler.shutdown();
    remove_temp_db(temp_db.as_deref());
    let report = result?;
    shutdown?;
    Ok(report)
}

/// Runs both phases on one scheduler and reports.
pub fn run(options: &BenchOptions) -> Result<BenchReport, BenchError> {
    let (store, temp_db) = store_for(options);
    let mut config = SchedulerConfig::new(store);
    config.durability = options.durability;
    config.workers = options.workers;
    config.retention = retention_for(options);
    let scheduler = Scheduler::start(config, Registry::with_builtins())?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listers: Vec<_> = (0..options.listers)
        .map(|_| {
            let scheduler = scheduler.clone();
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let query = TaskQuery {
                    limit: LISTED,
                    ..TaskQuery::default()
                };
                let mut lists = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::black_box(scheduler.list(&query));
                    lists += 1;
                }
                lists
            })
        })
        .collect();
    let begun = Instant::now();
    let result = measure(&scheduler, options);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let lists: u64 = listers.into_iter().map(|l| l.join().unwrap_or(0)).sum();
    let listed_for = begun.elapsed();
    let result = result.map(|mut report| {
        report.listers = options.listers;
        report.lists_per_s = (lists as f64 / listed_for.as_secs_f64().max(1e-9)).round();
        report
    });
    let shutdown = scheduler.shutdown();
    remove_temp_db(temp_db.as_deref());
    let report = result?;
    shutdown?;
    Ok(report)
}

/// The store a run uses, and the temporary file to remove afterwards.
pub(crate) fn store_for(options: &BenchOptions) -> (StoreMode, Option<PathBuf>) {
    let temp_db = (!options.memory && options.db.is_none()).then(|| {
        std::env::temp_dir().join(format!(
            "taskdeck-bench-{}-{}.db",
            std::process::id(),
            fastrand::u64(..)
        ))
    });
    let store = if options.memory {
        StoreMode::Memory
    } else {
        StoreMode::File(
            options
                .db
                .clone()
                .or_else(|| temp_db.clone())
                .unwrap_or_default(),
        )
    };
    (store, temp_db)
}

/// Keeps every task of a run queryable until it ends.
pub(crate) fn retention_for(options: &BenchOptions) -> Retention {
    let tasks = if options.dependencies {
        // The chain and the fan-out/fan-in.
        options.tasks.saturating_mul(2).saturating_add(2)
    } else {
        options.tasks
    };
    Retention {
        max_finished: tasks.max(options.latency_tasks).max(1),
        max_age: None,
    }
}

/// Removes a temporary database and its side files.
pub(crate) fn remove_temp_db(path: Option<&std::path::Path>) {
    let Some(path) = path else {
        return;
    };
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let mut file = path.to_owned().into_os_string();
        file.push(suffix);
        // A leftover temporary file is harmless.
        let _ = std::fs::remove_file(file);
    }
}

pub(crate) fn measure(
    scheduler: &Scheduler,
    options: &BenchOptions,
) -> Result<BenchReport, BenchError> {
    let batch = options.batch.max(1);
    let noop = || TaskSpec::new("noop", Vec::new());

    let started = Instant::now();
    let mut remaining = options.tasks;
    while remaining > 0 {
        let n = remaining.min(batch);
        if n == 1 {
            scheduler.submit(noop())?;
        } else {
            scheduler.submit_batch((0..n).map(|_| noop()).collect())?;
        }
        remaining -= n;
    }
    let submitted = started.elapsed();
    if !scheduler.wait_idle(PHASE_TIMEOUT) {
        return Err(BenchError::Stuck(
            "throughput phase did not finish in time".into(),
        ));
    }
    let finished = started.elapsed();

    let mut latencies = Latencies::new();
    for _ in 0..options.latency_tasks {
        let begun = Instant::now();
        let id = scheduler.submit(noop())?;
        let record = scheduler.wait(id, PHASE_TIMEOUT);
        let elapsed = begun.elapsed();
        if record.map(|r| r.status) != Some(TaskStatus::Completed) {
            return Err(BenchError::Stuck(format!(
                "latency task {id} did not complete"
            )));
        }
        latencies.record(elapsed);
    }

    let per_second = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    Ok(BenchReport {
        store: if options.memory { "memory" } else { "sqlite" },
        durability: (!options.memory).then(|| options.durability.name()),
        tasks: options.tasks,
        workers: options.workers,
        batch,
        throughput_tasks_per_s: per_second(options.tasks, finished).round(),
        submit_tasks_per_s: per_second(options.tasks, submitted).round(),
        listers: 0,
        lists_per_s: 0.0,
        latency: latencies.report(),
    })
}
