//! The commands that talk to a running server over HTTP: submit, status,
//! list, cancel, retry, hold, release, pause, resume, wait, monitor, mock.

use std::time::Duration;

use anyhow::bail;
use clap::Args;

use serde_json::Value;
use taskdeck::client::{Client, TlsOptions, commands};

/// Where the server is.
#[derive(Debug, Args)]
pub(crate) struct Remote {
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
    /// For an https:// server: PEM file of the authorities (or the very
    /// certificate) to trust instead of the system's.
    #[arg(
        long,
        value_name = "PEM",
        env = "TASKDECK_CA_FILE",
        global = true,
        conflicts_with = "tls_fingerprint"
    )]
    ca_file: Option<std::path::PathBuf>,
    /// For an https:// server: the SHA-256 fingerprint of its certificate,
    /// as `taskdeck serve` prints it (trusts that certificate alone).
    #[arg(
        long,
        value_name = "SHA256",
        env = "TASKDECK_TLS_FINGERPRINT",
        global = true
    )]
    tls_fingerprint: Option<String>,
}

impl Remote {
    /// A client of the server.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let tls = TlsOptions {
            ca_file: self.ca_file.clone(),
            fingerprint: self.tls_fingerprint.clone(),
        };
        Ok(Client::with_tls(
            &self.url,
            self.token.as_deref(),
            CLIENT_TIMEOUT,
            &tls,
        )?)
    }
}

/// Per-call limit of the CLI (a long poll lasts up to 300 s).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(330);

#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
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
    /// Start no sooner than this long from now, e.g. 90s, 2h, 1h30m.
    #[arg(long, value_name = "DURATION", conflicts_with = "at")]
    delay: Option<String>,
    /// Start no sooner than this time: 2026-12-02T03:00 (this machine's
    /// time zone) or RFC 3339 with an offset.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// The queue it goes to (each has its own limit and pause) [default: default].
    #[arg(long, value_name = "NAME")]
    queue: Option<String>,
    /// Start only after task ID completed (repeatable).
    #[arg(long = "after", value_name = "ID")]
    after: Vec<u64>,
    /// When a task it comes after fails or is cancelled: cancel (the
    /// default) or run anyway once they all finished.
    #[arg(long, value_name = "POLICY", value_parser = ["cancel", "run"], requires = "after")]
    on_dependency_failure: Option<String>,
    /// Wait for the task to finish and show it.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RetryArgs {
    #[command(flatten)]
    remote: Remote,
    /// Task id.
    id: u64,
    /// Also queue again the tasks that its failure cancelled (those that
    /// depend on it, and theirs).
    #[arg(long)]
    cascade: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PauseArgs {
    #[command(flatten)]
    remote: Remote,
    /// Also stop the running tasks; they go back to the queue without
    /// counting an attempt and start again after the resume.
    #[arg(long)]
    stop_running: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RemoteArgs {
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    #[command(flatten)]
    remote: Remote,
    /// Task id.
    id: u64,
}

#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    #[command(flatten)]
    remote: Remote,
    /// Task id.
    id: u64,
    /// Give up after this many seconds [default: wait forever].
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
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
pub(crate) struct MonitorArgs {
    #[command(flatten)]
    remote: Remote,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct MockArgs {
    #[command(flatten)]
    remote: Remote,
    /// Tasks to submit.
    #[arg(long, default_value_t = 5)]
    count: usize,
    /// Longest task duration in ms (they last 1,000 ms to this).
    #[arg(long, default_value_t = 20_000, value_name = "MS")]
    max_duration_ms: u64,
}

/// `taskdeck submit NAME ARGS...` (with `--wait`, waits for the result).
pub(crate) fn submit(args: SubmitArgs) -> anyhow::Result<()> {
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
    if let Some(delay) = &args.delay {
        submission["delay_s"] = serde_json::json!(commands::parse_delay(delay)?);
    }
    if let Some(at) = &args.at {
        submission["not_before"] = serde_json::json!(commands::parse_at(at)?);
    }
    if !args.after.is_empty() {
        submission["depends_on"] = serde_json::json!(args.after);
    }
    if let Some(queue) = &args.queue {
        taskdeck::model::check_queue_name(queue).map_err(anyhow::Error::msg)?;
        submission["queue"] = serde_json::json!(queue);
    }
    if let Some(policy) = &args.on_dependency_failure {
        submission["on_dependency_failure"] = serde_json::json!(policy);
    }
    let client = args.remote.client()?;
    let id = client.submit(&submission)?;
    if !args.wait {
        println!("submitted task {id}");
        return Ok(());
    }
    let task = commands::wait_for(&client, id, None)?;
    print!("{}", commands::describe(&task));
    commands::require_completed(&task)
}

/// `taskdeck list`.
pub(crate) fn list(args: ListArgs) -> anyhow::Result<()> {
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
    let answer = args.remote.client()?.list(&query)?;
    if args.json {
        println!("{answer}");
    } else {
        commands::print_list(&answer);
    }
    Ok(())
}

/// `taskdeck cancel ID`.
pub(crate) fn cancel(args: IdArgs) -> anyhow::Result<()> {
    let answer = args.remote.client()?.cancel(args.id)?;
    match answer["outcome"].as_str() {
        Some("removed") => println!("task {} cancelled; it will not run", args.id),
        _ => println!("task {} is running; asked it to stop", args.id),
    }
    Ok(())
}

/// `taskdeck wait ID`: fails unless the task completed.
pub(crate) fn wait(args: WaitArgs) -> anyhow::Result<()> {
    let timeout = match args.timeout {
        Some(secs) if !secs.is_finite() || secs < 0.0 => {
            bail!("--timeout must be zero or more seconds")
        }
        other => other.map(Duration::from_secs_f64),
    };
    let task = commands::wait_for(&args.remote.client()?, args.id, timeout)?;
    print!("{}", commands::describe(&task));
    commands::require_completed(&task)
}

/// `taskdeck monitor`.
pub(crate) fn monitor(args: MonitorArgs) -> anyhow::Result<()> {
    let answer = args.remote.client()?.monitoring()?;
    if args.json {
        println!("{answer}");
    } else {
        commands::print_monitoring(&answer);
    }
    Ok(())
}

/// `taskdeck status ID`.
pub(crate) fn status(args: IdArgs) -> anyhow::Result<()> {
    let task = args.remote.client()?.task(args.id)?;
    print!("{}", commands::describe(&task));
    Ok(())
}

/// `taskdeck retry ID [--cascade]`.
pub(crate) fn retry(args: RetryArgs) -> anyhow::Result<()> {
    let answer = args.remote.client()?.retry(args.id, args.cascade)?;
    let others: Vec<String> = answer["ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .filter(|id| *id != args.id)
        .map(|id| id.to_string())
        .collect();
    if others.is_empty() {
        println!("task {} queued again", args.id);
    } else {
        println!(
            "task {} queued again, and with it task {}",
            args.id,
            others.join(", ")
        );
    }
    Ok(())
}

/// `taskdeck hold ID`.
pub(crate) fn hold(args: IdArgs) -> anyhow::Result<()> {
    args.remote.client()?.hold(args.id)?;
    println!(
        "task {} held; it starts only after `taskdeck release {}`",
        args.id, args.id
    );
    Ok(())
}

/// `taskdeck release ID`.
pub(crate) fn release(args: IdArgs) -> anyhow::Result<()> {
    args.remote.client()?.release(args.id)?;
    println!("task {} released", args.id);
    Ok(())
}

/// `taskdeck pause [--stop-running]`.
pub(crate) fn pause(args: PauseArgs) -> anyhow::Result<()> {
    let answer = args.remote.client()?.pause(args.stop_running)?;
    if args.stop_running {
        println!(
            "scheduler paused: no task starts until `taskdeck resume`; {} running task(s) asked \
             to stop and put back in the queue",
            answer["stopped"]
        );
    } else {
        println!("scheduler paused: no task starts until `taskdeck resume`; running tasks go on");
    }
    Ok(())
}

/// `taskdeck resume`.
pub(crate) fn resume(args: RemoteArgs) -> anyhow::Result<()> {
    args.remote.client()?.resume()?;
    println!("scheduler resumed");
    Ok(())
}

/// `taskdeck mock`.
pub(crate) fn mock(args: MockArgs) -> anyhow::Result<()> {
    commands::mock(&args.remote.client()?, args.count, args.max_duration_ms)
}
