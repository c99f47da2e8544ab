//! The window and `serve`: the scheduler, its HTTP API and workers in this
//! process, with the flags they share.

use std::io::Write as _;
use std::path::PathBuf;
#[cfg(feature = "window")]
use std::sync::Arc;
#[cfg(feature = "window")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use anyhow::bail;
use clap::Args;

use taskdeck::api::{self, ApiConfig};
#[cfg(feature = "window")]
use taskdeck::app::{self, Services};
use taskdeck::runtime::{self, DATA_DIR_ENV, DB_FILE, ProcessLog, Stack, StackConfig};
use taskdeck::scheduler::{Backoff, Durability, SchedulerConfig, StoreMode, default_workers};
use taskdeck::store::Retention;
use taskdeck::tasks::Registry;

#[cfg(feature = "broker")]
use super::flags::DistributedArgs;
use super::flags::{ExecArgs, gpu_devices};
use super::tls::TlsArgs;

#[derive(Debug, Args)]
struct StoreArgs {
    /// SQLite database file [default: DATA_DIR/taskdeck.db].
    #[arg(long, value_name = "PATH", conflicts_with = "memory")]
    db: Option<PathBuf>,
    /// Keep tasks in memory only: nothing survives a restart.
    #[arg(long)]
    memory: bool,
    /// What an accepted task survives: "process" (Taskdeck crashing or
    /// being killed) or "power" (also an OS crash or power loss: one fsync
    /// per commit, slower for single submits).
    #[arg(
        long,
        default_value = "process",
        value_name = "LEVEL",
        env = "TASKDECK_DURABILITY"
    )]
    durability: Durability,
    /// Directory for the database and log files [default: the platform's user data directory].
    #[arg(long, value_name = "DIR", env = DATA_DIR_ENV)]
    data_dir: Option<PathBuf>,
    /// Days of the process log kept: a file a day (taskdeck.YYYY-MM-DD.log
    /// in the data directory); older files are removed.
    #[arg(
        long,
        default_value_t = runtime::LOG_DAYS_KEPT as u16,
        value_name = "DAYS",
        env = "TASKDECK_LOG_DAYS",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    log_days: u16,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address of the HTTP API; anything but loopback requires --token,
    /// and speaks HTTPS unless --no-tls.
    #[arg(long, default_value = api::DEFAULT_LISTEN, value_name = "ADDR")]
    listen: String,
    /// Bearer token clients must send (every route but /healthz).
    #[arg(long, env = "TASKDECK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Threads answering HTTP requests.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    http_threads: u16,
    /// Worker threads [default: logical CPUs]; 0 accepts tasks without running them.
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..=1024))]
    workers: Option<u16>,
    /// Seconds running tasks get to finish at shutdown before they are stopped and put back.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    grace: f64,
    /// Finished tasks kept in history.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    keep_finished: usize,
    /// Days finished tasks are kept (0 keeps them by count alone).
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    keep_days: u64,
    /// Delay after a task's first failed attempt; it doubles with each further one.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    retry_delay_ms: u64,
    #[cfg(feature = "broker")]
    #[command(flatten)]
    distributed: DistributedArgs,
    /// Accept `command` and `python` tasks (they run programs and code) over
    /// HTTP, from clients that send the token or the local secret. The
    /// window and the library may always submit them.
    #[arg(long)]
    allow_code_tasks: bool,
    /// Turn off the routes the older scripts call (/submit_task,
    /// /task_status, /get_tasks, /remove_task, /monitoring_data), which
    /// loopback clients may use without the secret.
    #[arg(long)]
    no_legacy_routes: bool,
    #[command(flatten)]
    exec: ExecArgs,
    /// GPU device ids tasks may be given, e.g. 0,1, each with its memory in
    /// MB where known, e.g. 0:24000 (declares them where NVML cannot find
    /// them; "none" for no GPUs) [default: the NVIDIA GPUs NVML finds].
    #[arg(long, value_name = "IDS")]
    gpus: Option<String>,
}

impl ServeArgs {
    /// The token given (also what an attached window sends).
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// Everything `serve` and the window share, from their flags.
struct Prepared {
    stack: StackConfig,
    /// The local secret clients of this account use.
    secret: String,
    data_dir: PathBuf,
    /// Daily process log files kept.
    log_days: usize,
    /// The HTTPS certificate's fingerprint, and whether it was made now.
    tls_fingerprint: Option<(String, bool)>,
    grace: Duration,
    registry: Registry,
}

/// Turns the shared flags into the stack's configuration.
fn prepare(args: ServeArgs, window: bool) -> anyhow::Result<Prepared> {
    let ServeArgs {
        store,
        listen,
        token,
        tls,
        http_threads,
        workers,
        grace,
        keep_finished,
        keep_days,
        retry_delay_ms,
        #[cfg(feature = "broker")]
        distributed,
        allow_code_tasks,
        no_legacy_routes,
        exec,
        gpus,
    } = args;
    if !grace.is_finite() || grace < 0.0 {
        bail!("--grace must be a number of seconds, zero or more");
    }
    let data_dir = runtime::data_dir(store.data_dir.as_deref())?;
    let log_days = usize::from(store.log_days);
    let tls = tls.choose(&listen, &data_dir)?;
    let tls_fingerprint = tls
        .tls
        .as_ref()
        .map(|server| (server.fingerprint().to_owned(), tls.generated));
    let secret = runtime::secret::local_secret(&data_dir).with_context(|| {
        format!(
            "cannot read or create the secret in {}",
            data_dir.join(runtime::secret::SECRET_FILE).display()
        )
    })?;
    #[cfg(feature = "broker")]
    let broker = distributed
        .settings(window || workers != Some(0), &data_dir)?
        .map(|settings| settings.with_log_dir(super::flags::logs_dir(&data_dir)));
    #[cfg(not(feature = "broker"))]
    let broker = {
        // Only distributed mode's embedded worker depends on it.
        let _ = window;
        None
    };
    let mode = if store.memory {
        StoreMode::Memory
    } else {
        StoreMode::File(store.db.unwrap_or_else(|| data_dir.join(DB_FILE)))
    };
    let mut config = SchedulerConfig::new(mode);
    config.durability = store.durability;
    config.workers = workers.map_or_else(default_workers, usize::from);
    config.shutdown_grace = Duration::from_secs_f64(grace);
    config.retention = Retention {
        max_finished: keep_finished,
        max_age: (keep_days > 0).then(|| Duration::from_secs(keep_days * 24 * 3600)),
    };
    config.backoff = Backoff {
        base: Duration::from_millis(retry_delay_ms),
        ..Backoff::default()
    };
    config.gpus = gpu_devices(gpus.as_deref())?;
    let api = ApiConfig {
        listen,
        token,
        threads: usize::from(http_threads),
        allow_code_tasks,
        local_secret: Some(secret.clone()),
        legacy_routes: !no_legacy_routes,
        log_dir: Some(super::flags::logs_dir(&data_dir)),
        tls: tls.tls,
        plain_beyond_loopback: tls.plain_beyond_loopback,
        // The dashboard's one-click task: a random mock ML or CV task, as
        // `taskdeck mock` and the old demo script make them.
        example_task: Some(std::sync::Arc::new(|| {
            taskdeck::demo::random_mock_spec(
                &mut fastrand::Rng::new(),
                taskdeck::demo::RANDOM_MAX_MS,
            )
        })),
        ..ApiConfig::default()
    };
    let registry = exec.registry(&data_dir);
    Ok(Prepared {
        stack: StackConfig {
            scheduler: config,
            api: Some(api),
            broker,
            task_logs: Some(super::flags::logs_dir(&data_dir)),
        },
        grace: Duration::from_secs_f64(grace),
        secret,
        log_days,
        tls_fingerprint,
        data_dir,
        registry,
    })
}

/// Logs to stderr and to the daily files in `data_dir`, keeping `days`.
fn log_to(
    data_dir: &std::path::Path,
    days: usize,
) -> anyhow::Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    Ok(runtime::init_logging(
        Some(ProcessLog {
            dir: data_dir,
            days_kept: days,
        }),
        "info",
    )?)
}

/// Leaves the secret where this account's clients find it by the port
/// (see `runtime::secret`); without it they pass `--token` or the secret.
fn advertise(stack: &Stack, secret: &str) -> Option<runtime::secret::Advertised> {
    let port = stack.server.as_ref()?.local_addr().port();
    match runtime::secret::Advertised::publish(port, secret) {
        Ok(advertised) => Some(advertised),
        Err(error) => {
            tracing::warn!(%error, "cannot leave the secret for this account's clients; they need --token or the data directory's secret file");
            None
        }
    }
}

/// Tells the HTTPS certificate's fingerprint, which clients of a
/// self-signed certificate pin: a second line on stdout (after the
/// address) and the log.
fn announce_certificate(fingerprint: Option<&(String, bool)>, data_dir: &std::path::Path) {
    let Some((fingerprint, generated)) = fingerprint else {
        return;
    };
    println!("taskdeck certificate SHA-256 fingerprint {fingerprint}");
    if *generated {
        tracing::info!(
            dir = %data_dir.join(super::tls::GENERATED_DIR).display(),
            "made a self-signed HTTPS certificate; clients pin it with \
             `--tls-fingerprint {fingerprint}` (Python: TaskClient(url, fingerprint=...))"
        );
    } else {
        tracing::info!(%fingerprint, "HTTPS certificate");
    }
}

/// Leaves at once at a second Ctrl-C; the next start recovers as after a crash.
pub(crate) fn exit_now() {
    eprintln!(
        "taskdeck: second stop signal; exiting now (unfinished tasks run again at the next start)"
    );
    std::process::exit(130);
}

/// `taskdeck serve`: runs the stack until Ctrl-C or SIGTERM.
pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let Prepared {
        stack,
        secret,
        data_dir,
        log_days,
        tls_fingerprint,
        grace,
        registry,
    } = prepare(args, false)?;
    let _log_guard = log_to(&data_dir, log_days)?;
    let signals = runtime::stop_signals()?;
    let stack = Stack::start(stack, registry)?;
    let _advertised = advertise(&stack, &secret);
    let url = stack.url().unwrap_or_default();
    // The one line on stdout: scripts and tests read the address from it.
    println!("taskdeck listening on {url}");
    announce_certificate(tls_fingerprint.as_ref(), &data_dir);
    std::io::stdout().flush().ok();
    tracing::info!(
        workers = stack.scheduler.config().workers,
        db = %stack.scheduler.db_path().map_or("(memory)".into(), |p| p.display().to_string()),
        data_dir = %data_dir.display(),
        %url,
        "taskdeck serving; press Ctrl-C to stop"
    );
    runtime::wait_for_stop(&signals, grace, exit_now);
    let report = stack.shutdown()?;
    tracing::info!(
        put_back = report.put_back,
        left_queued = report.left_queued,
        "taskdeck stopped"
    );
    Ok(())
}

/// A flag the first Ctrl-C or SIGTERM sets, which closes the window
/// gracefully; a second one exits at once.
#[cfg(feature = "window")]
pub(crate) fn close_on_first_signal(
    signals: crossbeam_channel::Receiver<()>,
) -> anyhow::Result<Arc<AtomicBool>> {
    let close = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&close);
    let signals_for_second = signals.clone();
    std::thread::Builder::new()
        .name("taskdeck-signal-first".into())
        .spawn(move || {
            if signals.recv().is_ok() {
                flag.store(true, Ordering::Release);
                runtime::watch_second_signal(&signals_for_second, exit_now);
            }
        })
        .context("cannot watch for stop signals")?;
    Ok(close)
}

#[cfg(feature = "window")]
/// Plain `taskdeck`: the stack and the window on it.
pub(crate) fn window(args: ServeArgs) -> anyhow::Result<()> {
    let Prepared {
        stack,
        secret,
        data_dir,
        log_days,
        tls_fingerprint,
        registry,
        ..
    } = prepare(args, true)?;
    let _log_guard = log_to(&data_dir, log_days)?;
    let signals = runtime::stop_signals()?;
    let mut stack = Stack::start(stack, registry)?;
    let _advertised = advertise(&stack, &secret);
    let close = close_on_first_signal(signals)?;
    let services = Services {
        backend: Arc::new(app::InProcess::new(stack.scheduler.clone())),
        samples: Some(stack.telemetry.subscribe()),
        past_samples: std::mem::take(&mut stack.past_samples),
        http_url: stack.url(),
        data_dir: Some(data_dir.clone()),
    };
    if let Some(url) = stack.url() {
        // As with `serve`, one line on stdout tells scripts where the API is.
        println!("taskdeck listening on {url}");
        std::io::stdout().flush().ok();
    }
    announce_certificate(tls_fingerprint.as_ref(), &data_dir);
    tracing::info!(url = ?stack.url(), "taskdeck window open");
    let shown = app::run(services, close);
    // Closing the window stops like Ctrl-C on `taskdeck serve`.
    let report = stack.shutdown()?;
    tracing::info!(
        put_back = report.put_back,
        left_queued = report.left_queued,
        "taskdeck stopped"
    );
    shown.map_err(Into::into)
}

/// Plain `taskdeck` in a build without the `window` feature: says so, and
/// how to get a window or run headless.
#[cfg(not(feature = "window"))]
pub(crate) fn window(_args: ServeArgs) -> anyhow::Result<()> {
    bail!(
        "this build of taskdeck has no window (it was built without the `window` feature); \
         run `taskdeck serve` for the scheduler and its HTTP API without one, or build with \
         the default features (`cargo build --release`) for the window"
    )
}
