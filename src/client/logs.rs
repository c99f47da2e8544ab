//! Reading task output logs: a part at a time, or followed as it grows.

use std::io::{Read, Write};

use serde_json::Value;

use super::{Client, ClientError};
use crate::model::TaskId;

/// Largest part asked for at a time when paging through a log.
pub const PAGE_BYTES: usize = 1024 * 1024;

/// Which part of which attempt's log to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// The attempt; the latest when none.
    pub attempt: Option<u32>,
    /// First byte (not with `tail`).
    pub offset: Option<u64>,
    /// Start at the last this many lines instead.
    pub tail: Option<usize>,
    /// Most bytes in one answer (not with follow).
    pub limit: Option<usize>,
}

impl LogQuery {
    fn target(&self, id: TaskId, follow: bool) -> String {
        let Self {
            attempt,
            offset,
            tail,
            limit,
        } = self;
        let mut target = format!("/api/v1/tasks/{id}/log?follow={follow}");
        let pairs = [
            ("attempt", attempt.map(u64::from)),
            ("offset", *offset),
            ("tail", tail.map(|n| n as u64)),
            ("limit", limit.map(|n| n as u64).filter(|_| !follow)),
        ];
        for (name, value) in pairs {
            if let Some(value) = value {
                target.push_str(&format!("&{name}={value}"));
            }
        }
        target
    }
}

/// A part of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPart {
    /// The attempt it belongs to.
    pub attempt: u32,
    /// Where the bytes start.
    pub offset: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The log's size when it was read.
    pub size: u64,
    /// Where the next part starts.
    pub next_offset: u64,
    /// The attempt has ended and this part reaches the end of its log.
    pub complete: bool,
}

impl Client {
    /// Reads one part of a task's output log.
    pub fn log_part(&self, id: TaskId, query: &LogQuery) -> Result<LogPart, ClientError> {
        let mut response = self.get_raw(&self.agent, &query.target(id, false))?;
        let header = |name: &str| -> Option<String> {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let number = |name: &str| -> Result<u64, ClientError> {
            header(name)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| ClientError::Decode(format!("no {name} header in the log answer")))
        };
        let attempt = u32::try_from(number("X-Taskdeck-Attempt")?)
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let next_offset = number("X-Taskdeck-Next-Offset")?;
        let complete = header("X-Taskdeck-Log-Complete").as_deref() == Some("true");
        let offset = number("X-Taskdeck-Offset").ok();
        let size = number("X-Taskdeck-Log-Size").ok();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(super::MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|e| self.connect_error(&e))?;
        // Servers that predate the offset and size headers: the part ends
        // where the next starts, and the log is known to reach that far.
        let offset = offset.unwrap_or_else(|| next_offset.saturating_sub(bytes.len() as u64));
        let size = size.unwrap_or(next_offset);
        Ok(LogPart {
            attempt,
            offset,
            bytes,
            size,
            next_offset,
            complete,
        })
    }

    /// Copies a task's output log to `out` as it is written, until the
    /// attempt ends (or waits for the task to start first). The stream has
    /// no overall time limit; a server that goes away ends it with an error.
    pub fn follow_log(
        &self,
        id: TaskId,
        query: &LogQuery,
        out: &mut dyn Write,
    ) -> Result<(), ClientError> {
        // The client's own agent bounds how long a body may take; a follow
        // lasts as long as the task.
        let agent = self.agent(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(std::time::Duration::from_secs(10)))
                .build(),
        );
        let response = self.get_raw(&agent, &query.target(id, true))?;
        let mut reader = response.into_body().into_reader();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buffer).map_err(|e| ClientError::Connect {
                url: self.base.clone(),
                detail: e.to_string(),
            })?;
            if n == 0 {
                return Ok(());
            }
            let chunk = buffer.get(..n).unwrap_or_default();
            if let Err(error) = out.write_all(chunk).and_then(|()| out.flush()) {
                // The reader went away (a closed pipe): that ends the follow.
                if error.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(ClientError::Decode(format!(
                    "cannot write the log: {error}"
                )));
            }
        }
    }

    /// A GET whose successful answer is not JSON; an error answer becomes a
    /// [`ClientError::Server`].
    fn get_raw(
        &self,
        agent: &ureq::Agent,
        path: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        let url = format!("{}{path}", self.base);
        let (mut response, status) = self.authorized(|| {
            self.authorize(agent.get(&url))
                .call()
                .map_err(|e| self.connect_error(&e))
        })?;
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| self.connect_error(&e))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Err(ClientError::Server {
            status,
            code: value["error"]["code"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned(),
            message: value["error"]["message"]
                .as_str()
                .map_or(text, str::to_owned),
        })
    }

    pub(super) fn connect_error(&self, error: &ureq::Error) -> ClientError {
        ClientError::Connect {
            url: self.base.clone(),
            detail: super::connect_detail(error),
        }
    }
}
