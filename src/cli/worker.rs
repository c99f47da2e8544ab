//! The `worker` command: a worker process that takes tasks from RabbitMQ
//! (distributed mode, the `broker` feature).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use taskdeck::remote::{self, BrokerUrl, KeyFallback, Names, Prefetch, WorkerConfig, WorkerHandle};
use taskdeck::runtime::{self, DATA_DIR_ENV};
use taskdeck::scheduler::default_workers;

use super::flags::{BrokerArgs, ExecArgs, gpu_devices};
use super::stack::exit_now;

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// RabbitMQ URL, amqp://USER:PASS@HOST:5672/VHOST or amqps://... (the
    /// %2f vhost is "/"). Credentials only ever come from here or the
    /// environment, and are never logged.
    #[arg(
        long,
        env = "TASKDECK_BROKER",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(crate) broker: String,
    #[command(flatten)]
    pub(crate) names: BrokerArgs,
    /// Tasks run at once [default: logical CPUs].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) concurrency: Option<u16>,
    /// Unique worker name [default: HOST-PID].
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Seconds between heartbeats (0.05 or more); the worker sends them at
    /// least three times per scheduler --lease, which it learns from the
    /// scheduler.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub(crate) heartbeat: f64,
    /// Attempts that may wait on this worker for a free slot beyond those
    /// it runs, so that a slot that frees starts the next one without a
    /// round trip to the scheduler (they show as running from when they
    /// are placed). "auto": two per slot while its recent tasks ran under
    /// 0.1 s on average, none while they run longer.
    #[arg(long, default_value = "auto", value_name = "N|auto")]
    pub(crate) prefetch: Prefetch,
    /// Seconds running tasks get to finish at shutdown before they are stopped and handed back.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub(crate) grace: f64,
    #[command(flatten)]
    pub(crate) exec: ExecArgs,
    /// GPU device ids this worker offers, e.g. 0,1, each with its memory in
    /// MB where known, e.g. 0:24000 ("none" for none) [default: the NVIDIA
    /// GPUs NVML finds].
    #[arg(long, value_name = "IDS")]
    pub(crate) gpus: Option<String>,
    /// Directory for the logs of `command` and `python` tasks (under logs/),
    /// and where the broker key is looked for when none is given
    /// (broker.key) [default: the platform's user data directory].
    #[arg(long, value_name = "DIR", env = DATA_DIR_ENV)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Days a task's output log is kept on this machine after it was last
    /// written (the scheduler keeps its own copy of what was shipped).
    #[arg(
        long,
        default_value_t = runtime::LOG_DAYS_KEPT as u16,
        value_name = "DAYS",
        env = "TASKDECK_LOG_DAYS",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub(crate) log_days: u16,
}

/// How long a worker waits for the broker key in its data directory to
/// appear: a scheduler started beside it on its very first start creates
/// it a moment later.
const KEY_WAIT: Duration = Duration::from_secs(10);

/// The broker key as `names` and the data directory say; when the data
/// directory's key file does not exist yet, waits up to [`KEY_WAIT`] for it
/// (saying so), then fails with the advice to copy the scheduler's key.
fn key_in(names: &BrokerArgs, data_dir: &Path) -> anyhow::Result<remote::BrokerKey> {
    let first = names.key(KeyFallback::ReadIn(data_dir));
    let Err(remote::KeyError::Missing { path }) = &first else {
        return Ok(first?);
    };
    eprintln!(
        "taskdeck worker: no broker key at {} yet; waiting up to {} s for a scheduler on this \
         machine to create it on its first start",
        path.display(),
        KEY_WAIT.as_secs()
    );
    let deadline = Instant::now() + KEY_WAIT;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        match names.key(KeyFallback::ReadIn(data_dir)) {
            Err(remote::KeyError::Missing { .. }) if Instant::now() < deadline => {}
            other => return Ok(other?),
        }
    }
}

/// `taskdeck worker`: takes tasks from RabbitMQ until Ctrl-C or SIGTERM.
pub(crate) fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let WorkerArgs {
        broker,
        names,
        concurrency,
        name,
        heartbeat,
        prefetch,
        grace,
        exec,
        gpus,
        data_dir,
        log_days,
    } = args;
    if !heartbeat.is_finite() || heartbeat < 0.05 {
        bail!("--heartbeat must be a number of seconds, 0.05 or more");
    }
    if !grace.is_finite() || grace < 0.0 {
        bail!("--grace must be a number of seconds, zero or more");
    }
    let url: BrokerUrl = broker.parse()?;
    let data_dir = runtime::data_dir(data_dir.as_deref())?;
    // Without the key nothing is connected: the worker could neither trust
    // what it is sent nor be believed.
    let key = key_in(&names, &data_dir)?;
    let names = Names::new(&names.broker_namespace)?;
    let host = taskdeck::telemetry::host_name();
    let name = name.unwrap_or_else(|| remote::default_worker_name(&host));
    remote::check_name("the worker name", &name)?;
    let _log_guard = runtime::init_logging(None, "info")?;
    let signals = runtime::stop_signals()?;
    let telemetry = Arc::new(taskdeck::telemetry::Telemetry::start(
        taskdeck::telemetry::TelemetryConfig::default(),
    )?);
    let resources: remote::ResourceSource = {
        let telemetry = Arc::clone(&telemetry);
        Arc::new(move || telemetry.latest())
    };
    let concurrency = concurrency.map_or_else(default_workers, usize::from);
    let config = WorkerConfig {
        url: url.clone(),
        names,
        name: name.clone(),
        host,
        concurrency,
        prefetch,
        heartbeat: Duration::from_secs_f64(heartbeat),
        stop_grace: Duration::from_secs_f64(grace),
        registry: Arc::new(exec.registry(&data_dir)),
        resources: Some(resources),
        gpus: gpu_devices(gpus.as_deref())?,
        ship_logs: Some(super::flags::logs_dir(&data_dir)),
        key,
    };
    tracing::info!(key = %config.key.origin(), "broker messages are signed with the shared key");
    let handle = WorkerHandle::start(config, None).context("cannot start the worker")?;
    let kept = Duration::from_secs(u64::from(log_days) * 24 * 3600);
    let sweeper = runtime::log_sweep::LogSweeper::start(
        super::flags::logs_dir(&data_dir),
        runtime::log_sweep::KeepLogs::WrittenWithin(kept),
    )
    .map_err(|error| {
        // The worker runs without it; its tasks' logs are kept longer.
        tracing::warn!(%error, "cannot start removing old task output logs");
    })
    .ok();
    // The one line on stdout, for scripts and tests.
    println!("taskdeck worker {name} ({concurrency} slots) using the broker at {url}");
    std::io::stdout().flush().ok();
    runtime::wait_for_stop(&signals, Duration::from_secs_f64(grace), exit_now);
    handle.stop();
    if let Some(sweeper) = sweeper {
        sweeper.stop();
    }
    telemetry.stop();
    Ok(())
}
