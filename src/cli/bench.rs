//! `taskdeck bench`: in-process, over HTTP, or through RabbitMQ.

use std::path::PathBuf;

use clap::Args;

use taskdeck::bench::http::HttpBenchOptions;
use taskdeck::bench::{self, BenchOptions};
use taskdeck::runtime;
use taskdeck::scheduler::{Durability, default_workers};

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
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
    /// Event stream followers connected while the clients submit, each
    /// reading every event (with --http).
    #[arg(long, default_value_t = 0, requires = "http")]
    followers: usize,
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
    /// Attempts each worker process may hold waiting for a slot, a number
    /// or "auto" (with --broker; see `worker --prefetch`).
    #[arg(
        long,
        default_value = "auto",
        value_name = "N|auto",
        requires = "broker"
    )]
    prefetch: String,
    /// Measure dependencies instead: a chain of --tasks tasks and a
    /// fan-out/fan-in of --tasks tasks, each submitted in one batch
    /// (in-process, or with --broker).
    #[arg(long, conflicts_with_all = ["http", "listers"])]
    dependencies: bool,
}

/// `taskdeck bench`: runs the chosen benchmark and prints its JSON line.
pub(crate) fn bench(args: BenchArgs) -> anyhow::Result<()> {
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
            followers: args.followers,
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
            dependencies: args.dependencies,
        };
        match args.broker {
            None if args.dependencies => serde_json::to_string(&bench::run_workflow(&options)?)?,
            None => serde_json::to_string(&bench::run(&options)?)?,
            #[cfg(feature = "broker")]
            Some(url) => {
                let options = bench::remote::RemoteBenchOptions {
                    url: url.parse()?,
                    processes: args.processes.max(1),
                    concurrency: args.concurrency.unwrap_or_else(default_workers).max(1),
                    prefetch: args
                        .prefetch
                        .parse()
                        .map_err(|error| anyhow::anyhow!("--prefetch: {error}"))?,
                    phases: options,
                };
                if args.dependencies {
                    serde_json::to_string(&bench::remote::run_workflow(&options)?)?
                } else {
                    serde_json::to_string(&bench::remote::run(&options)?)?
                }
            }
            #[cfg(not(feature = "broker"))]
            Some(_) => anyhow::bail!(
                "this build of taskdeck has no distributed mode (built without the `broker` feature); \
                 build it with default features for `bench --broker`"
            ),
        }
    };
    println!("{line}");
    Ok(())
}
