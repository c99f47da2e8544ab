//! Wiring shared by the commands: where data lives, logging, and running
//! the scheduler headless until a stop signal.

use std::path::{Path, PathBuf};

use crossbeam_channel::Receiver;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use std::sync::Arc;

use crate::api::{ApiConfig, ApiServer, ApiStartError, HistorySource};
use crate::model::ResourceSample;
use crate::scheduler::{Scheduler, SchedulerConfig, ShutdownReport, StartError, StoreMode};
use crate::store::Store;
use crate::tasks::Registry;
use crate::telemetry::{Telemetry, TelemetryConfig, TelemetryError};

mod history;
pub mod log_sweep;
pub mod private;
pub mod secret;

pub use history::HistoryView;

#[cfg(feature = "broker")]
mod distributed;
#[cfg(not(feature = "broker"))]
#[path = "runtime/distributed_off.rs"]
mod distributed;

pub use distributed::BrokerSettings;

/// Environment variable that overrides the data directory.
pub const DATA_DIR_ENV: &str = "TASKDECK_DATA_DIR";
/// File name of the database inside the data directory.
pub const DB_FILE: &str = "taskdeck.db";
/// Process log files kept by default (one per day).
pub const LOG_DAYS_KEPT: usize = 7;

/// Errors of the runtime wiring.
///
/// A variant that wraps a cause says only what failed; the cause is its
/// `source`, which callers print after it (`{:#}` with anyhow), so the
/// reason appears once.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No home directory to put the data directory in.
    #[error("cannot find a data directory; set {DATA_DIR_ENV} or pass --db")]
    NoDataDir,
    /// The data directory cannot be created.
    #[error("cannot create data directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The log file cannot be opened.
    #[error("cannot open the log file in {path}: {detail}")]
    LogFile {
        /// The directory.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// Ctrl-C/SIGTERM handling cannot be installed.
    #[error("cannot install the signal handler")]
    Signal(#[from] ctrlc::Error),
    /// The scheduler did not start.
    #[error("cannot start the scheduler")]
    Scheduler(#[from] StartError),
    /// The HTTP listener did not start.
    #[error(transparent)]
    Api(#[from] ApiStartError),
    /// Resource sampling did not start.
    #[error("cannot start resource sampling")]
    Telemetry(#[from] TelemetryError),
    /// The resource history thread did not start.
    #[error("cannot start recording the resource history: {0}")]
    History(std::io::Error),
    /// A thread of the worker embedded in this process did not start.
    #[error("cannot start the embedded worker: {0}")]
    Broker(std::io::Error),
}

/// Longest wait for the first resource sample at start.
const FIRST_SAMPLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What [`Stack::start`] starts.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The engine.
    pub scheduler: SchedulerConfig,
    /// The HTTP listener; none runs without one.
    pub api: Option<ApiConfig>,
    /// Dispatch through RabbitMQ instead of the pool's threads.
    pub broker: Option<BrokerSettings>,
    /// The folder of the tasks' output logs, whose files follow their
    /// tasks' retention (see [`log_sweep`]); none leaves logs alone.
    pub task_logs: Option<PathBuf>,
}

/// The running parts of a Taskdeck process: scheduler, resource sampling
/// and the HTTP listener. `taskdeck serve` and the window both run one.
pub struct Stack {
    /// The engine.
    pub scheduler: Scheduler,
    /// Resource sampling.
    pub telemetry: Arc<Telemetry>,
    /// The HTTP listener, when running.
    pub server: Option<ApiServer>,
    /// The resource samples of the last hour that the store held at start,
    /// oldest first (none with a memory store).
    pub past_samples: Vec<ResourceSample>,
    /// The broker bridge and the embedded worker, in distributed mode.
    distributed: distributed::Running,
    /// The last hour of resource samples, for readers.
    pub history: HistoryView,
    /// Keeps the history and records it in the store.
    recorder: history::Recorder,
    /// Deletes the output logs of tasks no longer kept.
    log_sweeper: Option<log_sweep::LogSweeper>,
}

impl Stack {
    /// Starts telemetry, the scheduler (recovering its store) and the
    /// listener, in that order; on failure, stops what started.
    pub fn start(config: StackConfig, registry: Registry) -> Result<Self, RuntimeError> {
        let telemetry = Arc::new(Telemetry::start(TelemetryConfig::default())?);
        // The first sample comes after a short CPU warm-up; waiting for it
        // means the API never answers a monitoring call without numbers.
        let first = telemetry.subscribe();
        if first.recv_timeout(FIRST_SAMPLE_WAIT).is_err() {
            tracing::warn!("no resource sample yet; monitoring reports none until the first");
        }
        let StackConfig {
            scheduler: scheduler_config,
            api,
            broker,
            task_logs,
        } = config;
        let link = distributed::link(broker, &scheduler_config);
        // The stack opens the store itself: the scheduler keeps its tasks
        // there, and the stack records the resource history beside them.
        let (opened, past_samples) = match &scheduler_config.store {
            StoreMode::Memory => (None, Vec::new()),
            StoreMode::File(path) => {
                match Store::open(
                    path,
                    scheduler_config.retention,
                    scheduler_config.durability,
                ) {
                    Ok((store, mut recovered)) => {
                        let samples = std::mem::take(&mut recovered.samples);
                        (Some((Arc::new(store), recovered)), samples)
                    }
                    Err(error) => {
                        telemetry.stop();
                        return Err(StartError::Store(error).into());
                    }
                }
            }
        };
        let store = opened.as_ref().map(|(store, _)| Arc::clone(store));
        let (scheduler, distributed) =
            match distributed::start(link, scheduler_config, registry, opened, &telemetry) {
                Ok(started) => started,
                Err(error) => {
                    telemetry.stop();
                    return Err(error);
                }
            };
        let gpu_feed = gpu_share_feed(&scheduler);
        let (recorder, history) = match history::Recorder::start(
            telemetry.subscribe(),
            store,
            past_samples.clone(),
            gpu_feed,
        ) {
            Ok(started) => started,
            Err(error) => {
                distributed.stop();
                let _ = scheduler.shutdown();
                telemetry.stop();
                return Err(RuntimeError::History(error));
            }
        };
        let server = match api {
            None => None,
            Some(api) => {
                let source = {
                    let telemetry = Arc::clone(&telemetry);
                    Arc::new(move || telemetry.latest())
                };
                let history_source: HistorySource = {
                    let history = history.clone();
                    Arc::new(move || history.snapshot())
                };
                match ApiServer::start_with_history(
                    api,
                    scheduler.clone(),
                    source,
                    Some(history_source),
                ) {
                    Ok(server) => Some(server),
                    Err(error) => {
                        // Nothing ran yet; give the database back before reporting.
                        distributed.stop();
                        recorder.stop();
                        let _ = scheduler.shutdown();
                        telemetry.stop();
                        return Err(error.into());
                    }
                }
            }
        };
        let log_sweeper = match task_logs {
            None => None,
            Some(dir) => match log_sweep::LogSweeper::start(
                dir,
                log_sweep::KeepLogs::OfKnownTasks(scheduler.clone()),
            ) {
                Ok(sweeper) => Some(sweeper),
                Err(error) => {
                    // The tasks run without it; their logs are kept longer.
                    tracing::warn!(%error, "cannot start removing the output logs of tasks no longer kept");
                    None
                }
            },
        };
        Ok(Self {
            scheduler,
            telemetry,
            server,
            past_samples,
            history,
            distributed,
            recorder,
            log_sweeper,
        })
    }

    /// The URL HTTP clients should use, when the listener runs.
    pub fn url(&self) -> Option<String> {
        self.server.as_ref().map(ApiServer::url)
    }

    /// Stops in reverse order: the listener (answering waiting long polls),
    /// the scheduler (graceful, see [`Scheduler::shutdown`]), telemetry.
    pub fn shutdown(self) -> Result<ShutdownReport, crate::store::StoreError> {
        let Self {
            scheduler,
            telemetry,
            server,
            past_samples: _,
            history: _,
            distributed,
            recorder,
            log_sweeper,
        } = self;
        if let Some(server) = server {
            server.shutdown();
        }
        if let Some(sweeper) = log_sweeper {
            sweeper.stop();
        }
        // The local worker hands back what it cannot finish through the
        // bridge, so the bridge stops after it and before the scheduler.
        distributed.stop();
        recorder.stop();
        let report = scheduler.shutdown();
        telemetry.stop();
        report
    }
}

/// What feeds the scheduler, with each resource sample, the memory that
/// other programs use on this machine's GPUs (so shares of a device are
/// placed against what is left); none when its own threads run no GPU
/// tasks.
fn gpu_share_feed(scheduler: &Scheduler) -> Option<history::SampleObserver> {
    if scheduler.gpus().is_empty() || scheduler.transport_status().is_some() {
        return None;
    }
    let scheduler = scheduler.clone();
    Some(Box::new(move |sample: &ResourceSample| {
        let crate::model::GpuState::Available { devices } = &sample.gpus else {
            return;
        };
        let readings: Vec<(u32, u64)> = devices
            .iter()
            .filter_map(|gpu| Some((gpu.index, gpu.foreign_memory_bytes? / (1024 * 1024))))
            .collect();
        if !readings.is_empty() {
            scheduler.set_gpu_foreign(&readings);
        }
    }))
}

/// The data directory: the override if given, else the platform's user data
/// directory (e.g. ~/.local/share/taskdeck on Linux). Created if missing,
/// and private to this account from here on (see [`private`]).
pub fn data_dir(override_dir: Option<&Path>) -> Result<PathBuf, RuntimeError> {
    let dir = match override_dir {
        Some(dir) => dir.to_owned(),
        None => directories::ProjectDirs::from("", "", "taskdeck")
            .map(|dirs| dirs.data_dir().to_owned())
            .ok_or(RuntimeError::NoDataDir)?,
    };
    private::protect(&dir).map_err(|source| RuntimeError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// Where the process log goes besides stderr: a daily file
/// `taskdeck.YYYY-MM-DD.log` in `dir`, of which the newest `days_kept` stay.
#[derive(Debug, Clone, Copy)]
pub struct ProcessLog<'a> {
    /// The folder (the data directory).
    pub dir: &'a Path,
    /// Daily files kept; older ones are removed at start and at each new day.
    pub days_kept: usize,
}

/// Logs to stderr and, when `file` is given, to its daily files. The level
/// comes from RUST_LOG, else `default_level`. Keep the returned guard alive:
/// dropping it flushes the file.
pub fn init_logging(
    file: Option<ProcessLog<'_>>,
    default_level: &str,
) -> Result<Option<WorkerGuard>, RuntimeError> {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let colour = use_colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_filter(filter());
    let mut pruned = None;
    let (file, guard) = match file {
        Some(ProcessLog { dir, days_kept }) => {
            let days_kept = days_kept.max(1);
            // The appender prunes by the files' creation times, when a day
            // begins; by their dates, and at each start, is what a user
            // expects (a server started every morning never sees a day
            // begin). Today's file, which the appender opens, is one of
            // those kept.
            pruned = Some((dir, prune_process_logs(dir, days_kept - 1)));
            let appender = tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix(PROCESS_LOG_PREFIX)
                .filename_suffix(PROCESS_LOG_SUFFIX)
                .max_log_files(days_kept)
                .build(dir)
                .map_err(|error| RuntimeError::LogFile {
                    path: dir.to_owned(),
                    detail: error.to_string(),
                })?;
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(writer)
                .with_filter(filter());
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    // A subscriber set earlier (tests running several commands) stays.
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
    match pruned {
        Some((_, Ok(0))) | None => {}
        Some((_, Ok(removed))) => tracing::info!(removed, "removed process logs older than kept"),
        Some((dir, Err(error))) => {
            tracing::warn!(%error, dir = %dir.display(), "cannot remove old process logs");
        }
    }
    Ok(guard)
}

/// The process log's daily files are `taskdeck.YYYY-MM-DD.log`.
const PROCESS_LOG_PREFIX: &str = "taskdeck";
const PROCESS_LOG_SUFFIX: &str = "log";

/// Removes all but the newest `days_kept` daily process logs of the days
/// before today (UTC, as the files are named) in `dir`; returns how many
/// went. Today's and other files stay.
pub fn prune_process_logs(dir: &Path, days_kept: usize) -> std::io::Result<usize> {
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let mut daily: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix(PROCESS_LOG_PREFIX)
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|rest| rest.strip_suffix(PROCESS_LOG_SUFFIX))
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|date| date != today && date.parse::<jiff::civil::Date>().is_ok())
        })
        .map(|entry| entry.path())
        .collect();
    daily.sort_unstable();
    let surplus = daily.len().saturating_sub(days_kept);
    for path in &daily[..surplus] {
        std::fs::remove_file(path)?;
    }
    Ok(surplus)
}

/// Whether log lines on stderr get terminal colours: only when stderr is a
/// terminal, and never when `NO_COLOR` is set to anything but the empty
/// string (no-color.org), so files and pipes get plain text.
fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// A receiver that gets one message per Ctrl-C or SIGTERM.
pub fn stop_signals() -> Result<Receiver<()>, RuntimeError> {
    let (tx, rx) = crossbeam_channel::unbounded();
    ctrlc::set_handler(move || {
        // The receiver lives until the process exits.
        let _ = tx.send(());
    })?;
    Ok(rx)
}

/// Blocks until the first stop signal, then watches for a second one in the
/// background and calls `on_second` if it comes (the caller then exits at
/// once). `grace` is only reported.
pub fn wait_for_stop(
    signals: &Receiver<()>,
    grace: std::time::Duration,
    on_second: impl FnOnce() + Send + 'static,
) {
    // Only a dropped sender ends the wait without a signal; stop then too.
    let _ = signals.recv();
    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        "stop requested; finishing running tasks (press Ctrl-C again to exit at once)"
    );
    watch_second_signal(signals, on_second);
}

/// Calls `on_second` when another stop signal arrives.
pub fn watch_second_signal(signals: &Receiver<()>, on_second: impl FnOnce() + Send + 'static) {
    let second = signals.clone();
    let spawned = std::thread::Builder::new()
        .name("taskdeck-signal".into())
        .spawn(move || {
            if second.recv().is_ok() {
                on_second();
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot watch for a second stop signal");
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::use_colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
        assert!(!use_colour(false, Some(OsStr::new(""))));
    }
}
