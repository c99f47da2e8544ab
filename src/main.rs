//! The `taskdeck` command: parses arguments, sets up logging and runs the
//! chosen command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use taskdeck::bench::{self, BenchOptions};
use taskdeck::runtime::{self, DATA_DIR_ENV, DB_FILE};
use taskdeck::scheduler::{Backoff, Scheduler, SchedulerConfig, StoreMode, default_workers};
use taskdeck::store::Retention;
use taskdeck::tasks::Registry;

/// Taskdeck: a task scheduler with a durable queue, parallel workers,
/// retries and timeouts.
#[derive(Debug, Parser)]
#[command(name = "taskdeck", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the scheduler headless until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Measure throughput and latency of no-op tasks in-process; prints one JSON line.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// SQLite database file [default: DATA_DIR/taskdeck.db].
    #[arg(long, value_name = "PATH", conflicts_with = "memory")]
    db: Option<PathBuf>,
    /// Keep tasks in memory only: nothing survives a restart.
    #[arg(long)]
    memory: bool,
    /// Directory for the database and log files [default: the platform's user data directory].
    #[arg(long, value_name = "DIR", env = DATA_DIR_ENV)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
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
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Tasks in the throughput phase.
    #[arg(long, default_value_t = 200_000)]
    tasks: usize,
    /// Worker threads [default: logical CPUs].
    #[arg(long)]
    workers: Option<usize>,
    /// Keep nothing on disk (otherwise a fresh temporary SQLite file, or --db).
    #[arg(long, conflicts_with = "db")]
    memory: bool,
    /// SQLite file to use instead of a temporary one (it must be new or a Taskdeck database).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Tasks per submit call in the throughput phase.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Tasks in the closed-loop latency phase.
    #[arg(long, default_value_t = 2_000)]
    latency_tasks: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Bench(args) => bench(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("taskdeck: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        store,
        workers,
        grace,
        keep_finished,
        keep_days,
        retry_delay_ms,
    } = args;
    if !grace.is_finite() || grace < 0.0 {
        bail!("--grace must be a number of seconds, zero or more");
    }
    let data_dir = runtime::data_dir(store.data_dir.as_deref())?;
    let _log_guard = runtime::init_logging(Some(&data_dir), "info")?;
    let mode = if store.memory {
        StoreMode::Memory
    } else {
        StoreMode::File(store.db.unwrap_or_else(|| data_dir.join(DB_FILE)))
    };
    let mut config = SchedulerConfig::new(mode);
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
    let signals = runtime::stop_signals()?;
    let scheduler = Scheduler::start(config, Registry::with_builtins())
        .context("cannot start the scheduler")?;
    tracing::info!(
        workers = scheduler.config().workers,
        db = %scheduler.db_path().map_or("(memory)".into(), |p| p.display().to_string()),
        data_dir = %data_dir.display(),
        "taskdeck serving; press Ctrl-C to stop"
    );
    let report = runtime::serve_until_stopped(&scheduler, &signals, || {
        eprintln!(
            "taskdeck: second stop signal; exiting now (unfinished tasks run again at the next start)"
        );
        std::process::exit(130);
    })?;
    tracing::info!(
        put_back = report.put_back,
        left_queued = report.left_queued,
        "taskdeck stopped"
    );
    Ok(())
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let _log_guard = runtime::init_logging(None, "warn")?;
    let options = BenchOptions {
        tasks: args.tasks,
        workers: args.workers.unwrap_or_else(default_workers),
        memory: args.memory,
        db: args.db,
        batch: args.batch,
        latency_tasks: args.latency_tasks,
    };
    let report = bench::run(&options)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
