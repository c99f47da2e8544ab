//! The output logs of a remote server's attempts, for the window's log
//! follower: parts read by offset through the API's log route
//! (`GET /api/v1/tasks/{id}/log?attempt=N&offset=..&limit=..`), with the
//! same answers a log file here gives.
//!
//! - A part starts where the follower is, or [`crate::app::read_start`]
//!   before the end when the follower is that far behind (the server says
//!   the log's size with each part; a jump costs one more request).
//! - 404 (no task, an attempt not started, or a task type that writes no
//!   log) is a missing log, as a file that does not exist is; any other
//!   error is a failed read, tried again while the attempt runs.
//!
//! It runs on the window's log reader thread, never on the window's.

use crate::app::{LogReader, LogSource, READ_BYTES, ReadOutcome, read_start};
use crate::client::{Client, ClientError, LogQuery};
use crate::tasks::logfile;

/// Reads the logs of the server `client` talks to.
pub struct RemoteLogs {
    client: Client,
}

impl RemoteLogs {
    /// Logs read through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn part(&self, source: &LogSource, offset: u64) -> Result<crate::client::LogPart, ClientError> {
        let query = LogQuery {
            attempt: Some(source.attempt),
            offset: Some(offset),
            tail: None,
            limit: Some(READ_BYTES),
        };
        self.client.log_part(source.task, &query)
    }
}

impl LogReader for RemoteLogs {
    fn read(&self, source: &LogSource, offset: Option<u64>) -> ReadOutcome {
        let first = match self.part(source, offset.unwrap_or(0)) {
            Ok(part) => part,
            Err(error) => return outcome_of(&error),
        };
        let (start, gap) = read_start(offset, first.size);
        let part = if start == first.offset {
            first
        } else {
            match self.part(source, start) {
                Ok(part) => part,
                Err(error) => return outcome_of(&error),
            }
        };
        ReadOutcome::Read {
            origin: format!(
                "{}/api/v1/tasks/{}/log?attempt={}",
                self.client.url(),
                source.task,
                source.attempt
            ),
            gap,
            part: logfile::LogPart {
                offset: part.offset,
                bytes: part.bytes,
                size: part.size,
            },
        }
    }
}

/// A missing log for a 404, else a failed read in words.
fn outcome_of(error: &ClientError) -> ReadOutcome {
    match error {
        ClientError::Server { status: 404, .. } => ReadOutcome::Missing,
        error => ReadOutcome::Failed(format!("cannot read the log from the server: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_is_a_missing_log_and_other_errors_fail() {
        let not_found = ClientError::Server {
            status: 404,
            code: "not_found".into(),
            message: "attempt 1 of task 3 has no output log".into(),
        };
        assert_eq!(outcome_of(&not_found), ReadOutcome::Missing);
        let refused = ClientError::Connect {
            url: "http://127.0.0.1:1".into(),
            detail: "connection refused".into(),
        };
        assert!(
            matches!(outcome_of(&refused), ReadOutcome::Failed(text) if text.contains("refused"))
        );
    }
}
