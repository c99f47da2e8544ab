//! The command line: one file per command group; `main.rs` only parses and
//! dispatches.
//!
//! - `stack`: the window and `serve` (the scheduler, its HTTP API and
//!   workers in this process), with the flags they share;
//! - `client`: the commands that talk to a running server over HTTP;
//! - `connect`: the window attached to a remote server (`--connect`);
//! - `flags`: the flags `serve`, the window and `worker` share;
//! - `queue`: named queues, their limits and pauses;
//! - `tls`: the TLS flags of `serve` and the window;
//! - `worker`: the `worker` command (distributed mode, the `broker` feature);
//! - `dashboard`: the web dashboard's link;
//! - `bench`: the benchmarks.

mod bench;
mod client;
mod connect;
mod dashboard;
mod flags;
mod logs;
mod queue;
mod stack;
mod tls;
#[cfg(feature = "broker")]
mod worker;

use clap::{Parser, Subcommand};

use bench::BenchArgs;
use client::{IdArgs, ListArgs, MockArgs, MonitorArgs, SubmitArgs, WaitArgs};
use stack::ServeArgs;
#[cfg(feature = "broker")]
use worker::WorkerArgs;

/// Taskdeck: a task scheduler with a durable queue, parallel workers,
/// retries and timeouts.
/// Without a command, `taskdeck` opens the desktop window, which runs the
/// scheduler, its workers and the HTTP API in one process (same flags as
/// `serve`); with `--connect URL` it shows a remote Taskdeck instead.
#[derive(Debug, Parser)]
#[command(name = "taskdeck", version, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    window: ServeArgs,
    #[command(flatten)]
    connect: connect::ConnectArgs,
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
    Retry(client::RetryArgs),
    /// Hold a queued or retrying task: it does not start until released.
    Hold(IdArgs),
    /// Release a held task: it may start again.
    Release(IdArgs),
    /// Pause the scheduler: no task starts until resumed (running ones go
    /// on, unless --stop-running).
    Pause(client::PauseArgs),
    /// Resume a paused scheduler.
    Resume(client::RemoteArgs),
    /// List the queues with their limits, states and counts.
    Queues(queue::QueuesArgs),
    /// Show or change one queue: its limit, pause or resume.
    Queue(queue::QueueArgs),
    /// Wait for a task to finish and show it; fails unless it completed.
    Wait(WaitArgs),
    /// Print a task's output log: whole, its last lines, or followed (-f).
    Logs(logs::LogsArgs),
    /// Show resources, workers, queue and latency.
    Monitor(MonitorArgs),
    /// Submit random mock ML/CV tasks, like the old demo script.
    Mock(MockArgs),
    /// Print the web dashboard's link, with this machine's secret in it.
    Dashboard(dashboard::DashboardArgs),
    /// Measure throughput and latency of no-op tasks; prints one JSON line.
    Bench(BenchArgs),
    #[cfg(feature = "broker")]
    /// Run a worker process that takes tasks from RabbitMQ until Ctrl-C or SIGTERM.
    Worker(WorkerArgs),
}

impl Cli {
    /// Runs the chosen command; without one, the window.
    pub(crate) fn run(self) -> anyhow::Result<()> {
        match self.command {
            None if self.connect.url().is_some() => {
                connect::window(self.connect, self.window.token())
            }
            None => stack::window(self.window),
            Some(command) => run_command(command),
        }
    }
}

/// Runs one subcommand.
fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => stack::serve(args),
        Command::Submit(args) => client::submit(args),
        Command::Status(args) => client::status(args),
        Command::List(args) => client::list(args),
        Command::Cancel(args) => client::cancel(args),
        Command::Retry(args) => client::retry(args),
        Command::Hold(args) => client::hold(args),
        Command::Release(args) => client::release(args),
        Command::Pause(args) => client::pause(args),
        Command::Resume(args) => client::resume(args),
        Command::Queues(args) => queue::queues(args),
        Command::Queue(args) => queue::queue(args),
        Command::Wait(args) => client::wait(args),
        Command::Logs(args) => logs::logs(args),
        Command::Monitor(args) => client::monitor(args),
        Command::Mock(args) => client::mock(args),
        Command::Dashboard(args) => dashboard::dashboard(args),
        Command::Bench(args) => bench::bench(args),
        #[cfg(feature = "broker")]
        Command::Worker(args) => worker::worker(args),
    }
}
