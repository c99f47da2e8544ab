//! Task output logs follow their tasks: a log whose task the scheduler no
//! longer knows (removed by a user, or dropped by the retention of finished
//! tasks) is deleted, so the logs folder does not grow without bound. A
//! worker process's host cannot ask the scheduler: there a log goes once
//! nothing was written to it for the days the worker keeps logs.
//!
//! Rules:
//! - only files named like an attempt's log (`task-{id}-attempt-{n}.log`)
//!   are touched; anything else a user put there stays;
//! - beside a scheduler ([`KeepLogs::OfKnownTasks`]), a log goes when the
//!   scheduler has no task of its id; a task's log exists only once an
//!   attempt of it ran, and the task is known from its submission on, so a
//!   live task's log is never taken;
//! - on a worker's host ([`KeepLogs::WrittenWithin`]), a log goes when it
//!   was last written longer ago than the age kept; a running attempt's
//!   log is written as it runs, and an attempt that prints nothing for
//!   days keeps its open file (the process still writes through it);
//! - the folder is looked at shortly after start and then every
//!   [`SWEEP_EVERY`], the records looked up in slices of [`LOOKUP_SLICE`]
//!   ids so no look-up holds the scheduler's lock for long.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::model::TaskId;
use crate::scheduler::Scheduler;

/// Time between two looks at the logs folder.
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// The first look, after start (recovery and the first purge are done).
const FIRST_SWEEP_AFTER: Duration = Duration::from_secs(5);

/// Ids looked up under one turn of the scheduler's lock.
const LOOKUP_SLICE: usize = 1_000;

/// Which attempt logs stay.
#[derive(Debug)]
pub enum KeepLogs {
    /// Those of tasks this scheduler still has.
    OfKnownTasks(Scheduler),
    /// Those written to within this long (a worker process's host: its
    /// copies of the logs it shipped, and what it did not ship beyond the
    /// shipping cap).
    WrittenWithin(Duration),
}

/// The sweeping thread.
pub struct LogSweeper {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl LogSweeper {
    /// Starts sweeping `dir` for logs `keep` does not keep.
    pub fn start(dir: PathBuf, keep: KeepLogs) -> std::io::Result<Self> {
        let (stop, stopped) = bounded(1);
        let thread = std::thread::Builder::new()
            .name("taskdeck-log-sweep".into())
            .spawn(move || run(&dir, &keep, &stopped))?;
        Ok(Self { stop, thread })
    }

    /// Stops the thread and waits for it.
    pub fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the log sweeping thread panicked");
        }
    }
}

fn run(dir: &Path, keep: &KeepLogs, stopped: &Receiver<()>) {
    let mut wait = FIRST_SWEEP_AFTER;
    while stopped.recv_timeout(wait).is_err() {
        wait = SWEEP_EVERY;
        let swept = match keep {
            KeepLogs::OfKnownTasks(scheduler) => sweep(dir, |ids| {
                scheduler.records(ids).iter().map(Option::is_some).collect()
            }),
            KeepLogs::WrittenWithin(age) => sweep_older(dir, *age, SystemTime::now()),
        };
        match swept {
            Ok(0) => {}
            Ok(removed) => {
                tracing::debug!(removed, "removed the output logs of tasks no longer kept")
            }
            Err(error) => {
                tracing::warn!(%error, dir = %dir.display(), "cannot look through the task logs");
            }
        }
    }
}

/// Deletes the attempt logs in `dir` whose task `known` says is gone
/// (`known` answers for a slice of ids, in order); returns how many went.
pub fn sweep(dir: &Path, known: impl Fn(&[TaskId]) -> Vec<bool>) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    let mut logs: Vec<(TaskId, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let id = task_of(&entry.file_name().to_string_lossy())?;
            Some((id, entry.path()))
        })
        .collect();
    logs.sort_unstable_by_key(|(id, _)| *id);
    let mut ids: Vec<TaskId> = logs.iter().map(|(id, _)| *id).collect();
    ids.dedup();
    let mut gone = std::collections::HashSet::new();
    for slice in ids.chunks(LOOKUP_SLICE) {
        for (id, kept) in slice.iter().zip(known(slice)) {
            if !kept {
                gone.insert(*id);
            }
        }
    }
    let mut removed = 0;
    for (id, path) in logs {
        if gone.contains(&id) {
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(removed)
}

/// Deletes the attempt logs in `dir` last written more than `age` before
/// `now`; returns how many went.
pub fn sweep_older(dir: &Path, age: Duration, now: SystemTime) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if task_of(&entry.file_name().to_string_lossy()).is_none() {
            continue;
        }
        let Ok(written) = entry.metadata().and_then(|meta| meta.modified()) else {
            continue;
        };
        if now.duration_since(written).is_ok_and(|since| since > age) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(removed)
}

/// The task of an attempt log's file name (`task-{id}-attempt-{n}.log`).
fn task_of(name: &str) -> Option<TaskId> {
    let rest = name.strip_prefix("task-")?.strip_suffix(".log")?;
    let (id, attempt) = rest.split_once("-attempt-")?;
    attempt.parse::<u32>().ok()?;
    id.parse::<u64>().ok().map(TaskId)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::logfile::log_path;

    #[test]
    fn logs_of_tasks_no_longer_kept_go_and_everything_else_stays() {
        let dir = tempfile::tempdir().expect("temp dir");
        let kept = [
            log_path(dir.path(), TaskId(2), 1),
            log_path(dir.path(), TaskId(2), 2),
        ];
        let gone = [
            log_path(dir.path(), TaskId(1), 1),
            log_path(dir.path(), TaskId(3), 4),
        ];
        let other = [
            dir.path().join("notes.txt"),
            dir.path().join("task-x-attempt-1.log"),
        ];
        for path in kept.iter().chain(&gone).chain(&other) {
            std::fs::write(path, "output").expect("write");
        }
        let removed = sweep(dir.path(), |ids| {
            ids.iter().map(|id| *id == TaskId(2)).collect()
        })
        .expect("sweep");
        assert_eq!(removed, 2);
        for path in kept.iter().chain(&other) {
            assert!(path.exists(), "{} stays", path.display());
        }
        for path in &gone {
            assert!(!path.exists(), "{} goes", path.display());
        }
        assert_eq!(
            sweep(&dir.path().join("missing"), |_| panic!(
                "nothing to look up"
            ))
            .expect("sweep"),
            0
        );
    }

    #[test]
    fn on_a_worker_s_host_logs_go_once_not_written_for_the_age_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = log_path(dir.path(), TaskId(5), 1);
        let notes = dir.path().join("notes.txt");
        std::fs::write(&log, "output").expect("write");
        std::fs::write(&notes, "mine").expect("write");
        let week = Duration::from_secs(7 * 24 * 3600);
        let now = SystemTime::now();
        assert_eq!(sweep_older(dir.path(), week, now).expect("sweep"), 0);
        assert!(log.exists(), "a log written just now stays");
        let later = now + week + Duration::from_secs(60);
        assert_eq!(sweep_older(dir.path(), week, later).expect("sweep"), 1);
        assert!(!log.exists(), "a log not written for longer than kept goes");
        assert!(notes.exists(), "other files stay");
        let missing = dir.path().join("missing");
        assert_eq!(sweep_older(&missing, week, later).expect("sweep"), 0);
    }

    #[test]
    fn only_attempt_log_names_name_a_task() {
        assert_eq!(task_of("task-17-attempt-3.log"), Some(TaskId(17)));
        assert_eq!(task_of("task-17-attempt-x.log"), None);
        assert_eq!(task_of("task-17.log"), None);
        assert_eq!(task_of("taskdeck.2026-12-01.log"), None);
    }
}
