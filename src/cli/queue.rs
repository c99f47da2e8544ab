//! `taskdeck queues` and `taskdeck queue NAME`: named queues, their limits
//! and pauses, on a running server.

use anyhow::bail;
use clap::Args;
use serde_json::{Value, json};

use super::client::Remote;

#[derive(Debug, Args)]
pub(crate) struct QueuesArgs {
    #[command(flatten)]
    remote: Remote,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct QueueArgs {
    #[command(flatten)]
    remote: Remote,
    /// The queue's name.
    name: String,
    /// Most of its tasks running at once, or "none" for no limit.
    #[arg(long, value_name = "N|none")]
    limit: Option<String>,
    /// Start none of its tasks until it is resumed (running ones go on).
    #[arg(long, conflicts_with = "resume")]
    pause: bool,
    /// With --pause: also stop its running tasks; they go back to the
    /// queue without counting an attempt.
    #[arg(long, requires = "pause")]
    stop_running: bool,
    /// Start its tasks again.
    #[arg(long)]
    resume: bool,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
}

/// `taskdeck queues`.
pub(crate) fn queues(args: QueuesArgs) -> anyhow::Result<()> {
    let answer = args.remote.client()?.queues()?;
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    println!(
        "{:<20}  {:>6}  {:<7}  {:>7}  {:>7}  {:>8}  {:>9}  {:>6}  {:>9}",
        "QUEUE",
        "LIMIT",
        "STATE",
        "QUEUED",
        "RUNNING",
        "RETRYING",
        "COMPLETED",
        "FAILED",
        "CANCELLED"
    );
    for queue in answer["queues"].as_array().into_iter().flatten() {
        print_row(queue);
    }
    Ok(())
}

fn print_row(queue: &Value) {
    let count = |status: &str| queue[status].as_u64().unwrap_or(0);
    println!(
        "{:<20}  {:>6}  {:<7}  {:>7}  {:>7}  {:>8}  {:>9}  {:>6}  {:>9}",
        queue["name"].as_str().unwrap_or("?"),
        queue["limit"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        if queue["paused"] == true {
            "paused"
        } else {
            "open"
        },
        count("queued"),
        count("running"),
        count("retrying"),
        count("completed"),
        count("failed"),
        count("cancelled"),
    );
}

/// `taskdeck queue NAME [--limit N|none] [--pause [--stop-running] | --resume]`.
pub(crate) fn queue(args: QueueArgs) -> anyhow::Result<()> {
    taskdeck::model::check_queue_name(&args.name).map_err(anyhow::Error::msg)?;
    let mut change = serde_json::Map::new();
    if let Some(limit) = &args.limit {
        let value = match limit.as_str() {
            "none" => Value::Null,
            text => match text.parse::<u64>() {
                Ok(n) if n >= 1 => json!(n),
                _ => bail!("--limit must be a whole number of at least 1, or none; got {text:?}"),
            },
        };
        change.insert("limit".into(), value);
    }
    if args.pause {
        change.insert("paused".into(), json!(true));
        if args.stop_running {
            change.insert("stop_running".into(), json!(true));
        }
    }
    if args.resume {
        change.insert("paused".into(), json!(false));
    }
    let client = args.remote.client()?;
    let answer = if change.is_empty() {
        client.call("GET", &format!("/api/v1/queues/{}", args.name), None)?
    } else {
        client.set_queue(&args.name, &Value::Object(change))?
    };
    if args.json {
        println!("{answer}");
    } else {
        print_row(&answer);
    }
    Ok(())
}
