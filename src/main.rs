//! The `taskdeck` command: parses arguments, sets up logging and runs the
//! chosen command.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use taskdeck::api::{self, ApiConfig};
use taskdeck::app::{self, Services};
use taskdeck::bench::http::HttpBenchOptions;
use taskdeck::bench::{self, BenchOptions};
use taskdeck::client::{Client, commands};
use taskdeck::remote::{self, Names};
use taskdeck::runtime::{self, BrokerSettings, DATA_DIR_ENV, DB_FILE, Stack, StackConfig};
use taskdeck::scheduler::{Backoff, Durability, SchedulerConfig, StoreMode, default_workers};
use taskdeck::store::Retention;
use taskdeck::tasks::Registry;

mod worker_command;
use worker_command::{BrokerArgs, ExecArgs, WorkerArgs, gpu_devices, worker};

/// Taskdeck: a task scheduler with a durable queue, parallel workers,
/// retries and timeouts.
/// Without a command, `taskdeck` opens the desktop window, which runs the
/// scheduler, its workers and the HTTP API in one process (same flags as
/// `serve`).
#[derive(Debug, Parser)]
#[command(name = "taskdeck", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    window: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the scheduler and its HTTP API headless until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Submit a task to a running server: NAME then its arguments (JSON or plain text).
    Submit(SubmitArgs),
    /// Show one task.
    Status(IdArgs),
    /// List tasks, newest first.
    List(ListArgs),
    /// Cancel a queued task (it never runs) or stop a running one.
    Cancel(IdArgs),
    /// Queue a failed or cancelled task again.
    Retry(IdArgs),
    /// Wait for a task to finish and show it; fails unless it completed.
    Wait(WaitArgs),
    /// Show resources, workers, queue and latency.
    Monitor(MonitorArgs),
    /// Submit random mock ML/CV tasks, like the old demo script.
    Mock(MockArgs),
    /// Measure throughput and latency of no-op tasks; prints one JSON line.
    Bench(BenchArgs),
    /// Run a worker process that takes tasks from RabbitMQ until Ctrl-C or SIGTERM.
    Worker(WorkerArgs),
}

/// Where the server is.
#[derive(Debug, Args)]
struct Remote {
    /// Server URL.
    #[arg(
        long,
        env = "TASKDECK_URL",
        default_value = "http://127.0.0.1:5000",
        global = true
    )]
    url: String,
    /// Bearer token, when the server requires one.
    #[arg(long, env = "TASKDECK_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

impl Remote {
    fn client(&self) -> Client {
        Client::new(&self.url, self.token.as_deref(), CLIENT_TIMEOUT)
    }
}

/// Per-call limit of the CLI (a long poll lasts up to 300 s).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(330);

#[derive(Debug, Args)]
struct SubmitArgs {
    #[command(flatten)]
    remote: Remote,
    /// Registered task name, e.g. mock_ml_task.
    name: String,
    /// Positional arguments; each is read as JSON when it is JSON, else as text.
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
    /// Keyword argument KEY=VALUE (repeatable).
    #[arg(long = "kwarg", value_name = "KEY=VALUE")]
    kwargs: Vec<String>,
    /// 0-9; higher runs first [default: 5].
    #[arg(long)]
    priority: Option<u8>,
    /// Retries after a failed attempt [default: 3].
    #[arg(long)]
    retries: Option<u32>,
    /// Seconds one attempt may take.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// GPUs the task needs; the server assigns device ids (CUDA_VISIBLE_DEVICES).
    #[arg(long, value_name = "N")]
    gpus: Option<u32>,
    /// Memory each of its GPUs must have, in MB.
    #[arg(long, value_name = "MB", requires = "gpus")]
    gpu_memory_mb: Option<u64>,
    /// Wait for the task to finish and show it.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, Args)]
struct IdArgs {
    #[command(flatten)]
    remote: Remote,
    /// Task id.
    id: u64,
}

#[derive(Debug, Args)]
struct WaitArgs {
    #[command(flatten)]
    remote: Remote,
    /// Task id.
    id: u64,
    /// Give up after this many seconds [default: wait forever].
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    remote: Remote,
    /// Only tasks in this status (queued, running, retrying, completed, failed, cancelled).
    #[arg(long)]
    status: Option<String>,
    /// Only tasks with this name.
    #[arg(long)]
    task: Option<String>,
    /// Most tasks shown (1-1000).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct MonitorArgs {
    #[command(flatten)]
    remote: Remote,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct MockArgs {
    #[command(flatten)]
    remote: Remote,
    /// Tasks to submit.
    #[arg(long, default_value_t = 5)]
    count: usize,
    /// Longest task duration in ms (they last 1,000 ms to this).
    #[arg(long, default_value_t = 20_000, value_name = "MS")]
    max_duration_ms: u64,
}

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
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address of the HTTP API; anything but loopback requires --token.
    #[arg(long, default_value = api::DEFAULT_LISTEN, value_name = "ADDR")]
    listen: String,
    /// Bearer token clients must send (every route but /healthz).
    #[arg(long, env = "TASKDECK_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
    /// RabbitMQ URL (amqp:// or amqps://): publish tasks to the broker for
    /// `taskdeck worker` processes instead of the in-process queue; this
    /// process's own workers then take tasks from the broker too.
    #[arg(
        long,
        env = "TASKDECK_BROKER",
        hide_env_values = true,
        value_name = "URL"
    )]
    broker: Option<String>,
    #[command(flatten)]
    names: BrokerArgs,
    /// Accept `command` and `python` tasks (they run programs and code) over
    /// HTTP, from loopback clients or with the token. The window and the
    /// library may always submit them.
    #[arg(long)]
    allow_code_tasks: bool,
    #[command(flatten)]
    exec: ExecArgs,
    /// GPU device ids tasks may be given, e.g. 0,1 (declares them where NVML
    /// cannot find them; "none" for no GPUs) [default: the NVIDIA GPUs NVML finds].
    #[arg(long, value_name = "IDS")]
    gpus: Option<String>,
    /// Seconds an attempt stays with a worker process that stopped sending
    /// heartbeats before it counts as lost and runs again (with --broker).
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    lease: f64,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Tasks in each throughput phase.
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
    /// What a commit survives: "process" or "power" (see `serve --help`).
    #[arg(long, default_value = "process", value_name = "LEVEL")]
    durability: Durability,
    /// Tasks per submit call [default: 1 in-process, 1000 for the HTTP batch phase].
    #[arg(long)]
    batch: Option<usize>,
    /// Tasks in the closed-loop latency phase.
    #[arg(long, default_value_t = 2_000)]
    latency_tasks: usize,
    /// Threads that list 10,000 tasks in a loop meanwhile (in-process only).
    #[arg(long, default_value_t = 0, conflicts_with_all = ["http", "broker"])]
    listers: usize,
    /// Load the HTTP API instead: latency of submit + wait from one client,
    /// then submission throughput of --clients clients, single and batched.
    #[arg(long)]
    http: bool,
    /// Concurrent HTTP clients (with --http).
    #[arg(long, default_value_t = 8, requires = "http")]
    clients: usize,
    /// Server to load (with --http) [default: one started in-process on a free port].
    #[arg(long, requires = "http")]
    url: Option<String>,
    /// Bearer token for --url.
    #[arg(long, env = "TASKDECK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Run the tasks through RabbitMQ at this URL on --processes fresh
    /// `taskdeck worker` processes (queues under a namespace of their own,
    /// removed afterwards).
    #[arg(long, value_name = "URL", conflicts_with = "http")]
    broker: Option<String>,
    /// Worker processes (with --broker).
    #[arg(long, default_value_t = 2, requires = "broker")]
    processes: usize,
    /// Slots of each worker process (with --broker) [default: logical CPUs].
    #[arg(long, requires = "broker")]
    concurrency: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => window(cli.window),
        Some(command) => run_command(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("taskdeck: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args),
        Command::Submit(args) => submit(args),
        Command::Status(args) => {
            let task = args.remote.client().task(args.id);
            task.map(|t| print!("{}", commands::describe(&t)))
                .map_err(Into::into)
        }
        Command::List(args) => list(args),
        Command::Cancel(args) => cancel(args),
        Command::Retry(args) => {
            let answer = args.remote.client().retry(args.id);
            answer
                .map(|_| println!("task {} queued again", args.id))
                .map_err(Into::into)
        }
        Command::Wait(args) => wait(args),
        Command::Monitor(args) => monitor(args),
        Command::Mock(args) => {
            commands::mock(&args.remote.client(), args.count, args.max_duration_ms)
        }
        Command::Bench(args) => bench(args),
        Command::Worker(args) => worker(args),
    }
}

/// Everything `serve` and the window share, from their flags.
struct Prepared {
    stack: StackConfig,
    data_dir: PathBuf,
    grace: Duration,
    registry: Registry,
}

fn prepare(args: ServeArgs, window: bool) -> anyhow::Result<Prepared> {
    let ServeArgs {
        store,
        listen,
        token,
        http_threads,
        workers,
        grace,
        keep_finished,
        keep_days,
        retry_delay_ms,
        broker,
        names,
        allow_code_tasks,
        exec,
        gpus,
        lease,
    } = args;
    if !grace.is_finite() || grace < 0.0 {
        bail!("--grace must be a number of seconds, zero or more");
    }
    let broker = match broker {
        None => None,
        Some(url) => {
            if !lease.is_finite() || lease < 0.1 {
                bail!("--lease must be a number of seconds, 0.1 or more");
            }
            let lease = Duration::from_secs_f64(lease);
            Some(BrokerSettings {
                url: url.parse()?,
                names: Names::new(&names.broker_namespace)?,
                lease,
                publish_wait: remote::DEFAULT_PUBLISH_WAIT,
                local_worker: window || workers != Some(0),
                worker_name: remote::default_worker_name(&taskdeck::telemetry::host_name()),
            })
        }
    };
    let data_dir = runtime::data_dir(store.data_dir.as_deref())?;
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
        ..ApiConfig::default()
    };
    let registry = exec.registry(&data_dir);
    Ok(Prepared {
        stack: StackConfig {
            scheduler: config,
            api: Some(api),
            broker,
        },
        grace: Duration::from_secs_f64(grace),
        data_dir,
        registry,
    })
}

fn exit_now() {
    eprintln!(
        "taskdeck: second stop signal; exiting now (unfinished tasks run again at the next start)"
    );
    std::process::exit(130);
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let Prepared {
        stack,
        data_dir,
        grace,
        registry,
    } = prepare(args, false)?;
    let _log_guard = runtime::init_logging(Some(&data_dir), "info")?;
    let signals = runtime::stop_signals()?;
    let stack = Stack::start(stack, registry)?;
    let url = stack.url().unwrap_or_default();
    // The one line on stdout: scripts and tests read the address from it.
    println!("taskdeck listening on {url}");
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

fn window(args: ServeArgs) -> anyhow::Result<()> {
    let Prepared {
        stack,
        data_dir,
        registry,
        ..
    } = prepare(args, true)?;
    let _log_guard = runtime::init_logging(Some(&data_dir), "info")?;
    let signals = runtime::stop_signals()?;
    let stack = Stack::start(stack, registry)?;
    let close = Arc::new(AtomicBool::new(false));
    {
        // The first Ctrl-C closes the window gracefully, a second exits.
        let close = Arc::clone(&close);
        let signals_for_second = signals.clone();
        std::thread::Builder::new()
            .name("taskdeck-signal-first".into())
            .spawn(move || {
                if signals.recv().is_ok() {
                    close.store(true, Ordering::Release);
                    runtime::watch_second_signal(&signals_for_second, exit_now);
                }
            })
            .context("cannot watch for stop signals")?;
    }
    let services = Services {
        scheduler: stack.scheduler.clone(),
        samples: Some(stack.telemetry.subscribe()),
        past_samples: stack.scheduler.take_past_resource_samples(),
        http_url: stack.url(),
        data_dir: Some(data_dir),
    };
    if let Some(url) = stack.url() {
        // As with `serve`, one line on stdout tells scripts where the API is.
        println!("taskdeck listening on {url}");
        std::io::stdout().flush().ok();
    }
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

fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let mut submission = commands::submission(
        &args.name,
        &args.args,
        &args.kwargs,
        args.priority,
        args.retries,
        args.timeout,
    )?;
    if let Some(gpus) = args.gpus {
        submission["gpus"] = serde_json::json!(gpus);
    }
    if let Some(mb) = args.gpu_memory_mb {
        submission["gpu_memory_mb"] = serde_json::json!(mb);
    }
    let client = args.remote.client();
    let id = client.submit(&submission)?;
    if !args.wait {
        println!("submitted task {id}");
        return Ok(());
    }
    let task = commands::wait_for(&client, id, None)?;
    print!("{}", commands::describe(&task));
    commands::require_completed(&task)
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut query = format!("limit={}", args.limit);
    if let Some(status) = &args.status {
        query.push_str(&format!("&status={status}"));
    }
    if let Some(task) = &args.task {
        query.push_str(&format!(
            "&task={}",
            task.replace('%', "%25")
                .replace('&', "%26")
                .replace(' ', "%20")
        ));
    }
    let answer = args.remote.client().list(&query)?;
    if args.json {
        println!("{answer}");
    } else {
        commands::print_list(&answer);
    }
    Ok(())
}

fn cancel(args: IdArgs) -> anyhow::Result<()> {
    let answer = args.remote.client().cancel(args.id)?;
    match answer["outcome"].as_str() {
        Some("removed") => println!("task {} cancelled; it will not run", args.id),
        _ => println!("task {} is running; asked it to stop", args.id),
    }
    Ok(())
}

fn wait(args: WaitArgs) -> anyhow::Result<()> {
    let timeout = match args.timeout {
        Some(secs) if !secs.is_finite() || secs < 0.0 => {
            bail!("--timeout must be zero or more seconds")
        }
        other => other.map(Duration::from_secs_f64),
    };
    let task = commands::wait_for(&args.remote.client(), args.id, timeout)?;
    print!("{}", commands::describe(&task));
    commands::require_completed(&task)
}

fn monitor(args: MonitorArgs) -> anyhow::Result<()> {
    let answer = args.remote.client().monitoring()?;
    if args.json {
        println!("{answer}");
    } else {
        commands::print_monitoring(&answer);
    }
    Ok(())
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let _log_guard = runtime::init_logging(None, "warn")?;
    let workers = args.workers.unwrap_or_else(default_workers);
    let line = if args.http {
        let options = HttpBenchOptions {
            url: args.url,
            token: args.token,
            tasks: args.tasks,
            clients: args.clients,
            batch: args.batch.unwrap_or(1_000),
            workers,
            latency_tasks: args.latency_tasks,
        };
        serde_json::to_string(&bench::http::run(&options)?)?
    } else {
        let options = BenchOptions {
            tasks: args.tasks,
            workers,
            memory: args.memory,
            db: args.db,
            durability: args.durability,
            batch: args.batch.unwrap_or(1),
            latency_tasks: args.latency_tasks,
            listers: args.listers,
        };
        match args.broker {
            None => serde_json::to_string(&bench::run(&options)?)?,
            Some(url) => {
                let options = bench::remote::RemoteBenchOptions {
                    url: url.parse()?,
                    processes: args.processes.max(1),
                    concurrency: args.concurrency.unwrap_or_else(default_workers).max(1),
                    phases: options,
                };
                serde_json::to_string(&bench::remote::run(&options)?)?
            }
        }
    };
    println!("{line}");
    Ok(())
}
