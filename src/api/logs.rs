//! `GET /api/v1/tasks/{id}/log`: an attempt's output, read in parts or
//! followed while the attempt runs. Files are read in bounded pieces, so a
//! task that printed gigabytes costs no more memory than one that printed
//! a line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tiny_http::Request;

use super::error::ApiError;
use super::routes::LogParams;
use super::streams::Chunked;
use crate::model::{TaskRecord, TaskStatus};
use crate::scheduler::Scheduler;
use crate::tasks::logfile::{self, LogPart};

/// Bytes read at a time while following.
const FOLLOW_CHUNK: usize = 64 * 1024;

/// How often a followed log is looked at for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The log of one attempt, found.
#[derive(Debug)]
pub struct Located {
    /// The attempt.
    pub attempt: u32,
    /// Its file.
    pub path: PathBuf,
}

/// Whether attempt `attempt` of the task can still write to its log.
fn attempt_ended(record: &TaskRecord, attempt: u32) -> bool {
    attempt < record.attempts || record.status != TaskStatus::Running
}

/// Finds the log the request names: the given attempt, else the latest.
pub fn locate(
    scheduler: &Scheduler,
    log_dir: Option<&Path>,
    params: &LogParams,
) -> Result<Located, ApiError> {
    let record = scheduler
        .task_shared(params.id)
        .ok_or_else(|| ApiError::not_found(format!("no task {}", params.id)))?;
    let attempt = params.attempt.unwrap_or(record.attempts);
    if attempt == 0 {
        return Err(ApiError::not_found(format!(
            "task {} has not started, so it has no log yet",
            params.id
        )));
    }
    if attempt > record.attempts {
        return Err(ApiError::not_found(format!(
            "task {} has had {} attempts, not {attempt}",
            params.id, record.attempts
        )));
    }
    // This server's log directory holds the logs of attempts it ran and
    // those shipped from worker processes; an older record may name a file
    // elsewhere for its latest attempt.
    let local = log_dir.map(|dir| logfile::log_path(dir, params.id, attempt));
    let recorded = record
        .log
        .as_ref()
        .filter(|_| attempt == record.attempts)
        .map(|log| PathBuf::from(&log.path));
    local
        .into_iter()
        .chain(recorded)
        .find(|path| path.is_file())
        .map(|path| Located { attempt, path })
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "attempt {attempt} of task {} has no output log (only tasks that run a \
                 process write one)",
                params.id
            ))
        })
}

/// One part of the log, and whether it is the end of a finished attempt.
pub fn read(
    scheduler: &Scheduler,
    located: &Located,
    params: &LogParams,
) -> Result<(LogPart, bool), ApiError> {
    // Whether the attempt ended is read before the file, so a complete
    // answer never misses output written after it.
    let ended = scheduler
        .task_shared(params.id)
        .is_none_or(|record| attempt_ended(&record, located.attempt));
    let offset = match params.tail {
        Some(lines) => logfile::tail_offset(&located.path, lines),
        None => Ok(params.offset),
    }
    .map_err(|error| read_error(&located.path, &error))?;
    let part = logfile::read_log(&located.path, offset, params.limit)
        .map_err(|error| read_error(&located.path, &error))?;
    let complete = ended && part.next_offset() >= part.size;
    Ok((part, complete))
}

fn read_error(path: &Path, error: &std::io::Error) -> ApiError {
    ApiError::internal(format!("cannot read the log {}: {error}", path.display()))
}

/// The headers that say which part of which attempt's log an answer holds.
pub fn headers(attempt: u32, part: &LogPart, complete: bool) -> Vec<(&'static str, String)> {
    vec![
        ("X-Taskdeck-Attempt", attempt.to_string()),
        ("X-Taskdeck-Offset", part.offset.to_string()),
        ("X-Taskdeck-Next-Offset", part.next_offset().to_string()),
        ("X-Taskdeck-Log-Size", part.size.to_string()),
        ("X-Taskdeck-Log-Complete", complete.to_string()),
    ]
}

/// Streams the log from the request's offset (or tail) as it grows, until
/// the attempt has ended and every byte went out, the client leaves or
/// `stopping` is set. A task that has not started yet (or whose attempt has
/// not opened its log yet) is waited for.
pub fn follow(
    scheduler: &Scheduler,
    log_dir: Option<&Path>,
    params: &LogParams,
    request: Request,
    stopping: &AtomicBool,
) {
    let located = loop {
        match locate(scheduler, log_dir, params) {
            Ok(located) => break located,
            Err(error) if error.status != 404 => {
                return super::server::respond(request, Err(error));
            }
            Err(error) => {
                // Not found yet: wait while the task may still produce it
                // (only tasks that run a process write one).
                let pending = scheduler.task_shared(params.id).is_some_and(|record| {
                    !record.status.is_final()
                        && params
                            .attempt
                            .is_none_or(|attempt| attempt >= record.attempts)
                        && scheduler
                            .registry()
                            .get(&record.spec.name)
                            .is_none_or(|task| task.runs_code)
                });
                if !pending || stopping.load(Ordering::Acquire) {
                    return super::server::respond(request, Err(error));
                }
                std::thread::sleep(FOLLOW_POLL);
            }
        }
    };
    let located = &located;
    let offset = match params.tail {
        Some(lines) => logfile::tail_offset(&located.path, lines),
        None => Ok(params.offset),
    };
    let mut offset = match offset {
        Ok(offset) => offset,
        Err(error) => {
            return super::server::respond(request, Err(read_error(&located.path, &error)));
        }
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
         X-Taskdeck-Attempt: {}\r\nX-Taskdeck-Offset: {offset}\r\n\
         Cache-Control: no-cache\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        located.attempt
    );
    let Ok(mut out) = Chunked::start(request.into_writer(), &head) else {
        return;
    };
    let record =
        |scheduler: &Scheduler| -> Option<Arc<TaskRecord>> { scheduler.task_shared(params.id) };
    loop {
        let ended = record(scheduler).is_none_or(|r| attempt_ended(&r, located.attempt));
        let part = match logfile::read_log(&located.path, offset, FOLLOW_CHUNK) {
            Ok(part) => part,
            Err(error) => {
                tracing::warn!(%error, path = %located.path.display(), "reading a followed log failed");
                let _ = out.finish();
                return;
            }
        };
        if !part.bytes.is_empty() {
            offset = part.next_offset();
            if out.send(&part.bytes).is_err() {
                return;
            }
            continue;
        }
        if ended || stopping.load(Ordering::Acquire) {
            let _ = out.finish();
            return;
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}
