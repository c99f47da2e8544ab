//! `taskdeck bench --broker`: the same no-op phases as the in-process
//! benchmark, with tasks going through RabbitMQ to real `taskdeck worker`
//! processes started for the run.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{
    BenchError, BenchOptions, BenchReport, measure, remove_temp_db, retention_for, store_for,
};
use crate::remote::{
    self, Bridge, BridgeConfig, BridgeLink, BrokerKey, BrokerUrl, Names, Prefetch,
};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::tasks::Registry;

/// What to measure.
#[derive(Debug, Clone)]
pub struct RemoteBenchOptions {
    /// The broker.
    pub url: BrokerUrl,
    /// Worker processes to start.
    pub processes: usize,
    /// Slots of each.
    pub concurrency: usize,
    /// Attempts each may hold waiting for a slot (`worker --prefetch`).
    pub prefetch: Prefetch,
    /// The in-process phases' settings (`workers` is ignored).
    pub phases: BenchOptions,
}

/// What a benchmark measured, and how many tasks it ran doing so.
pub trait Measured: Serialize {
    /// Tasks the measured phases submitted.
    fn tasks(&self) -> usize;
}

impl Measured for BenchReport {
    fn tasks(&self) -> usize {
        self.tasks + usize::try_from(self.latency.samples).unwrap_or(usize::MAX)
    }
}

impl Measured for super::workflow::WorkflowReport {
    fn tasks(&self) -> usize {
        super::workflow::WorkflowReport::tasks(self)
    }
}

/// Results, printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteBenchReport<R> {
    /// Worker processes.
    pub processes: usize,
    /// Slots of each.
    pub concurrency: usize,
    /// Attempts each may hold waiting for a slot: a number or "auto".
    pub prefetch: String,
    /// Messages through the broker per task, counted at the scheduler's
    /// bridge over both phases (every message goes through it: placements,
    /// results, and the workers' heartbeats).
    pub broker_messages_per_task: f64,
    /// What was measured through the broker.
    #[serde(flatten)]
    pub phases: R,
}

/// Worker processes, stopped when dropped.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// Starts the scheduler with its bridge and the worker processes, measures
/// the throughput and latency phases, and removes the run's queues.
pub fn run(options: &RemoteBenchOptions) -> Result<RemoteBenchReport<BenchReport>, BenchError> {
    run_with(options, measure)
}

/// [`run`] with the dependency phases ([`super::workflow`]).
pub fn run_workflow(
    options: &RemoteBenchOptions,
) -> Result<RemoteBenchReport<super::workflow::WorkflowReport>, BenchError> {
    run_with(options, super::workflow::measure)
}

/// Starts the scheduler with its bridge and the worker processes, runs
/// `phases`, and removes the run's queues.
fn run_with<R: Measured>(
    options: &RemoteBenchOptions,
    phases: impl Fn(&Scheduler, &BenchOptions) -> Result<R, BenchError>,
) -> Result<RemoteBenchReport<R>, BenchError> {
    let namespace = format!("taskdeck-bench-{}", std::process::id());
    let names = Names::new(&namespace).map_err(|e| BenchError::Stuck(e.to_string()))?;
    // A key for this run only; the workers get it in their environment.
    let (key, secret) = BrokerKey::generate().map_err(|e| BenchError::Stuck(e.to_string()))?;
    let (store, temp_db) = store_for(&options.phases);
    let link = BridgeLink::new(
        BridgeConfig {
            url: options.url.clone(),
            names: names.clone(),
            lease: remote::DEFAULT_LEASE,
            log_dir: None,
            key,
        },
        0,
    );
    let mut config = SchedulerConfig::new(store);
    config.durability = options.phases.durability;
    config.retention = retention_for(&options.phases);
    let started = Scheduler::open_store(&config)
        .and_then(|opened| link.start(config, Registry::with_builtins(), opened));
    let (scheduler, bridge) = match started {
        Ok(started) => started,
        Err(error) => {
            remove_temp_db(temp_db.as_deref());
            return Err(error.into());
        }
    };
    let outcome = with_workers(&scheduler, &bridge, options, &namespace, &secret, phases);
    bridge.stop();
    let shutdown = scheduler.shutdown();
    remove_temp_db(temp_db.as_deref());
    let workers: Vec<String> = (0..options.processes).map(worker_name).collect();
    if let Err(error) = remote::delete_queues(&options.url, &names, &workers) {
        tracing::warn!(%error, "could not remove the benchmark's queues");
    }
    let (phases, messages) = outcome?;
    shutdown?;
    let tasks = phases.tasks().max(1);
    Ok(RemoteBenchReport {
        processes: options.processes,
        concurrency: options.concurrency,
        prefetch: options.prefetch.to_string(),
        broker_messages_per_task: (messages as f64 / tasks as f64 * 100.0).round() / 100.0,
        phases,
    })
}

fn worker_name(index: usize) -> String {
    format!("bench-{}-{index}", std::process::id())
}

/// Starts the worker processes, waits until they report, measures; the
/// report and the messages the bridge saw during the measured phases.
fn with_workers<R>(
    scheduler: &Scheduler,
    bridge: &Bridge,
    options: &RemoteBenchOptions,
    namespace: &str,
    key: &str,
    measure: impl Fn(&Scheduler, &BenchOptions) -> Result<R, BenchError>,
) -> Result<(R, u64), BenchError> {
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Stuck(format!("cannot find the taskdeck binary: {e}")))?;
    let mut workers = Workers(Vec::new());
    for index in 0..options.processes {
        let child = Command::new(&exe)
            .arg("worker")
            .env("TASKDECK_BROKER", options.url.secret_for_child_env())
            .env(remote::KEY_ENV, key)
            .env_remove(remote::KEY_FILE_ENV)
            .args(["--broker-namespace", namespace])
            .args(["--name", &worker_name(index)])
            .args(["--concurrency", &options.concurrency.to_string()])
            .args(["--prefetch", &options.prefetch.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| BenchError::Stuck(format!("cannot start a worker process: {e}")))?;
        workers.0.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while scheduler.stats().workers_total < options.processes * options.concurrency {
        if Instant::now() >= deadline {
            return Err(BenchError::Stuck(
                "the worker processes did not report within 60 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let phases = BenchOptions {
        workers: options.processes * options.concurrency,
        ..options.phases.clone()
    };
    let before = bridge.traffic();
    let report = measure(scheduler, &phases);
    let after = bridge.traffic();
    drop(workers);
    let messages = (after.published + after.consumed) - (before.published + before.consumed);
    Ok((report?, messages))
}
