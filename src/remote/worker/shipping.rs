//! What a worker forwards about its running attempts besides their ends:
//! their progress, and their output logs in bounded pieces, so both can be
//! watched from the scheduler. Both go through the outbox in order, so an
//! attempt's last pieces reach the scheduler before its end.

use std::path::Path;

use base64::Engine as _;

use super::*;
use crate::tasks::logfile;

/// Bytes in one log piece.
const LOG_PIECE_BYTES: usize = 64 * 1024;

/// Most log bytes shipped per attempt per tick (4 a second), so a task
/// that prints without pause adds at most about 1 MiB/s to the broker.
const LOG_PER_TICK_BYTES: u64 = 256 * 1024;

/// Most log bytes shipped per attempt in all; the rest stays on this
/// machine (its record's log says where).
pub(super) const LOG_SHIP_CAP_BYTES: u64 = 64 * 1024 * 1024;

impl Worker {
    /// Keeps a report of a running attempt for the next tick.
    pub(super) fn took_progress(&mut self, task: TaskId, attempt: u32, report: ProgressReport) {
        let Some(run) = self
            .running
            .get_mut(&task)
            .filter(|run| run.attempt == attempt)
        else {
            return;
        };
        let ProgressReport {
            fraction,
            message,
            metrics,
        } = report;
        run.progress.push(WireProgress {
            fraction,
            message,
            metrics,
        });
    }

    /// Queues the progress and the new output of every running attempt,
    /// within the per-tick bound.
    pub(super) fn ship(&mut self) {
        let tasks: Vec<TaskId> = self.running.keys().copied().collect();
        for task in tasks {
            self.ship_attempt(task, LOG_PER_TICK_BYTES);
        }
    }

    /// Queues what is left of an attempt that ended (up to the cap).
    pub(super) fn ship_rest(&mut self, task: TaskId) {
        self.ship_attempt(task, LOG_SHIP_CAP_BYTES);
    }

    fn ship_attempt(&mut self, task: TaskId, budget: u64) {
        let name = self.config.name.clone();
        let dir = self.config.ship_logs.clone();
        let Some(run) = self.running.get_mut(&task) else {
            return;
        };
        let attempt = run.attempt;
        let mut events = Vec::new();
        if !run.progress.is_empty() {
            events.push(WorkerEvent::Progress {
                worker: name.clone(),
                task,
                attempt,
                reports: std::mem::take(&mut run.progress),
            });
        }
        if let Some(dir) = dir {
            let left = LOG_SHIP_CAP_BYTES.saturating_sub(run.log_shipped);
            for (offset, bytes) in pieces(&dir, task, attempt, run.log_shipped, budget.min(left)) {
                run.log_shipped = offset + bytes.len() as u64;
                events.push(WorkerEvent::Log {
                    worker: name.clone(),
                    task,
                    attempt,
                    offset,
                    data: base64::engine::general_purpose::STANDARD.encode(&bytes),
                });
            }
        }
        for event in events {
            self.report(event);
        }
    }
}

/// The log's bytes from `from`, at most `budget` of them, in pieces.
fn pieces(dir: &Path, task: TaskId, attempt: u32, from: u64, budget: u64) -> Vec<(u64, Vec<u8>)> {
    let path = logfile::log_path(dir, task, attempt);
    let mut out = Vec::new();
    let mut offset = from;
    let end = from.saturating_add(budget);
    while offset < end {
        let want =
            usize::try_from(end - offset).map_or(LOG_PIECE_BYTES, |n| n.min(LOG_PIECE_BYTES));
        let Ok(part) = logfile::read_log(&path, offset, want) else {
            // No log (not a process task) or not opened yet.
            break;
        };
        if part.bytes.is_empty() {
            break;
        }
        offset = part.next_offset();
        out.push((part.offset, part.bytes));
    }
    out
}
