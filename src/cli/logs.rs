//! `taskdeck logs ID`: a task's output, whole, its last lines, or followed
//! while the task runs.

use std::io::Write;

use clap::Args;

use super::client::Remote;
use taskdeck::client::{LogQuery, PAGE_BYTES};
use taskdeck::model::TaskId;

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    remote: Remote,
    /// Task id.
    id: u64,
    /// Keep printing new output until the attempt ends (waits for a queued
    /// task to start).
    #[arg(short, long)]
    follow: bool,
    /// Which attempt (1 is the first); the latest by default.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    attempt: Option<u32>,
    /// Start at the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
}

/// `taskdeck logs ID [-f] [--attempt N] [--tail N]`: the bytes go to stdout
/// unchanged.
pub(crate) fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let LogsArgs {
        remote,
        id,
        follow,
        attempt,
        tail,
    } = args;
    let client = remote.client()?;
    let id = TaskId(id);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if follow {
        let query = LogQuery {
            attempt,
            tail,
            ..LogQuery::default()
        };
        client.follow_log(id, &query, &mut out)?;
        return Ok(());
    }
    let mut query = LogQuery {
        attempt,
        tail,
        limit: Some(PAGE_BYTES),
        ..LogQuery::default()
    };
    loop {
        let part = client.log_part(id, &query)?;
        if let Err(error) = out.write_all(&part.bytes).and_then(|()| out.flush()) {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(error.into());
        }
        if part.complete || part.bytes.is_empty() {
            return Ok(());
        }
        // The same attempt from where this part ended.
        query = LogQuery {
            attempt: Some(part.attempt),
            offset: Some(part.next_offset),
            tail: None,
            limit: Some(PAGE_BYTES),
        };
    }
}
