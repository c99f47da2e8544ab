//! The live parts of the focused task's details, beyond its record: the
//! progress history of the chosen attempt as one series per metric (for
//! the plots), and that attempt's output log, followed by offset. No
//! layout here: the panels read this and return [`LiveAction`]s.
//!
//! - The history is read from the backend when the task or attempt
//!   changes, and otherwise at most every [`HISTORY_EVERY`] while new
//!   progress arrives or the backend had none to give yet; never every
//!   frame.
//! - The log is read by [`LogFollower`] on its own thread, through the
//!   backend's [`super::log_reader::LogReader`] (files here, or the
//!   server's log route): only new bytes, every
//!   [`super::log_reader::POLL_EVERY`] while the attempt runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egui_plot::PlotPoint;

use super::backend::Backend;
use super::log_reader::{LogFollower, LogSource};
use super::task_view::TaskView;
use crate::model::{ProgressPoint, TaskId, TaskRecord, TaskStatus};
use crate::scheduler::Waker;
use crate::tasks::logfile;

/// Most metrics drawn as plots; the others are listed with their latest
/// value.
pub const PLOTTED: usize = 6;
/// Shortest time between two reads of the progress history while the
/// task reports.
pub const HISTORY_EVERY: Duration = Duration::from_secs(1);
pub use crate::tasks::logfile::LOGS_FOLDER;

/// A change to the live details the user asked for.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveAction {
    /// Show this attempt's metrics and output (none: the latest, also
    /// when a new one starts).
    ChooseAttempt(Option<u32>),
    /// Keep the log scrolled to its end as output comes, or stop.
    Follow(bool),
    /// Look for this text in the log.
    Search(String),
    /// Show only the lines the search finds (or all, highlighted).
    OnlyMatching(bool),
}

/// One metric's points over the attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSeries {
    /// The metric's name.
    pub name: String,
    /// Seconds since the attempt started (or its first report), and the
    /// value then.
    pub points: Vec<PlotPoint>,
}

impl MetricSeries {
    /// The latest value.
    pub fn latest(&self) -> Option<f64> {
        self.points.last().map(|point| point.y)
    }
}

/// The live details of the focused task.
pub struct LiveDetails {
    task: Option<TaskId>,
    /// The attempt the user chose; none follows the latest.
    chosen: Option<u32>,
    /// The attempt shown, once the task has started.
    attempt: Option<u32>,
    /// The task and attempt the history was read for, when, and the
    /// record's latest report time then.
    history_key: Option<(TaskId, u32)>,
    history_read_at: Option<Instant>,
    history_seen_us: Option<i64>,
    /// The last read got no history: read again when due.
    history_pending: bool,
    series: Vec<MetricSeries>,
    /// The last fraction in the history (for attempts before the latest).
    history_fraction: Option<f64>,
    follower: LogFollower,
    /// The log followed, and the record version it was made for (the
    /// record may name the log once the attempt ends).
    source: Option<(u64, LogSource)>,
    search: String,
    only_matching: bool,
    follow: bool,
    waker: Option<Waker>,
    /// The window's log directory, when it has one.
    log_dir: Option<PathBuf>,
}

impl LiveDetails {
    /// Nothing focused yet; `waker` wakes the window when log output was
    /// read; logs are looked for in `log_dir` first.
    pub fn new(waker: Option<Waker>, log_dir: Option<PathBuf>) -> Self {
        Self {
            task: None,
            chosen: None,
            attempt: None,
            history_key: None,
            history_read_at: None,
            history_seen_us: None,
            history_pending: false,
            series: Vec::new(),
            history_fraction: None,
            follower: LogFollower::default(),
            source: None,
            search: String::new(),
            only_matching: true,
            follow: true,
            waker,
            log_dir,
        }
    }

    /// Brings the live parts up to date with the focused task: reads the
    /// history when due, takes what the log reader read and asks for more.
    /// Returns true when anything shown changed.
    pub fn refresh(
        &mut self,
        backend: &dyn Backend,
        view: &TaskView,
        focused: Option<TaskId>,
        now: Instant,
    ) -> bool {
        let Some(record) = focused.and_then(|id| view.get(id)) else {
            let changed = self.task.is_some();
            if changed {
                self.forget();
            }
            return self.follower.poll(None, false, now, None) || changed;
        };
        let mut changed = false;
        if self.task != Some(record.id) {
            self.forget();
            self.task = Some(record.id);
            changed = true;
        }
        let latest = record.attempts;
        let attempt = self
            .chosen
            .filter(|chosen| (1..=latest).contains(chosen))
            .unwrap_or(latest);
        if attempt == 0 {
            self.attempt = None;
            return self.follower.poll(None, false, now, None) || changed;
        }
        self.attempt = Some(attempt);
        changed |= self.refresh_history(backend, record, attempt, now);
        let current = self.source.as_ref().is_some_and(|(version, source)| {
            (*version, source.task, source.attempt) == (record.version, record.id, attempt)
        });
        if !current {
            let source = LogSource {
                task: record.id,
                attempt,
                candidates: candidates(record, attempt, self.log_dir.as_deref()),
            };
            self.source = Some((record.version, source));
        }
        let live = record.status == TaskStatus::Running && attempt == latest;
        let reader = backend.log_reader();
        let source = self.source.as_ref().map(|(_, source)| (source, &reader));
        changed |= self.follower.poll(source, live, now, self.waker.as_ref());
        self.follower.tail_mut().set_search(&self.search);
        changed
    }

    /// Reads the history of `attempt` when it is another than the one
    /// read, or when the last read is [`HISTORY_EVERY`] old and the record
    /// reports newer progress or the backend had no history to give (a
    /// remote backend's copy comes after the read that asked for it). A
    /// read that gets none keeps the series shown for the same attempt.
    fn refresh_history(
        &mut self,
        backend: &dyn Backend,
        record: &TaskRecord,
        attempt: u32,
        now: Instant,
    ) -> bool {
        let key = (record.id, attempt);
        let latest = attempt == record.attempts;
        let reported_us = record
            .progress
            .as_ref()
            .filter(|_| latest)
            .map(|p| p.updated_at_us);
        let due = self
            .history_read_at
            .is_none_or(|at| now.saturating_duration_since(at) >= HISTORY_EVERY);
        let same = self.history_key == Some(key);
        let newer = reported_us != self.history_seen_us || self.history_pending;
        if same && (!newer || !due) {
            return false;
        }
        let answer = backend.progress_history(record.id, Some(attempt));
        self.history_pending = answer.is_none();
        self.history_key = Some(key);
        self.history_read_at = Some(now);
        self.history_seen_us = reported_us;
        let Some((_, points)) = answer else {
            if same {
                return false;
            }
            self.series = Vec::new();
            self.history_fraction = None;
            return true;
        };
        let start_us = record.started_at_us.filter(|_| latest);
        self.series = series(&points, start_us);
        self.history_fraction = points.iter().rev().find_map(|point| point.fraction);
        true
    }

    fn forget(&mut self) {
        let waker = self.waker.take();
        let log_dir = self.log_dir.take();
        let follower = std::mem::take(&mut self.follower);
        *self = Self {
            follower,
            ..Self::new(waker, log_dir)
        };
    }

    /// Applies what the user asked for.
    pub fn apply(&mut self, action: LiveAction) {
        match action {
            LiveAction::ChooseAttempt(attempt) => {
                self.chosen = attempt;
                self.follow = true;
            }
            LiveAction::Follow(follow) => self.follow = follow,
            LiveAction::Search(text) => {
                self.follower.tail_mut().set_search(&text);
                self.search = text;
            }
            LiveAction::OnlyMatching(only) => self.only_matching = only,
        }
    }

    /// How long until the log is read again, while it will be.
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        self.follower.due_in(now)
    }

    /// Whether this is about task `id` (the panel shows it only then).
    pub fn is_for(&self, id: TaskId) -> bool {
        self.task == Some(id)
    }

    /// The attempt shown, once the task has started.
    pub fn attempt(&self) -> Option<u32> {
        self.attempt
    }

    /// The attempt the user chose (none: the latest).
    pub fn chosen(&self) -> Option<u32> {
        self.chosen
    }

    /// Each metric of the attempt's history, by name.
    pub fn series(&self) -> &[MetricSeries] {
        &self.series
    }

    /// The last fraction the attempt's history holds.
    pub fn history_fraction(&self) -> Option<f64> {
        self.history_fraction
    }

    /// The log as read.
    pub fn log(&self) -> &LogFollower {
        &self.follower
    }

    /// The search text.
    pub fn search(&self) -> &str {
        &self.search
    }

    /// Whether only the lines the search finds show.
    pub fn only_matching(&self) -> bool {
        self.only_matching
    }

    /// Whether the log keeps to its end.
    pub fn follow(&self) -> bool {
        self.follow
    }
}

/// Where the log of `attempt` may be: in the window's log directory, and
/// beside the log the record names (the directory of the process that ran
/// the latest attempt), and that file itself.
fn candidates(record: &TaskRecord, attempt: u32, log_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(dir) = log_dir {
        paths.push(logfile::log_path(dir, record.id, attempt));
    }
    if let Some(log) = &record.log {
        let recorded = PathBuf::from(&log.path);
        if let Some(dir) = recorded.parent() {
            paths.push(logfile::log_path(dir, record.id, attempt));
        }
        if attempt == record.attempts {
            paths.push(recorded);
        }
    }
    let mut unique = Vec::with_capacity(paths.len());
    for path in paths {
        if !unique.contains(&path) {
            unique.push(path);
        }
    }
    unique
}

/// One series per metric, by name, in seconds from `start_us` (or the
/// first point).
fn series(points: &[ProgressPoint], start_us: Option<i64>) -> Vec<MetricSeries> {
    let Some(first) = points.first() else {
        return Vec::new();
    };
    let start_us = start_us.unwrap_or(first.at_us);
    let mut by_name: BTreeMap<&str, Vec<PlotPoint>> = BTreeMap::new();
    for point in points {
        let x = (point.at_us - start_us) as f64 / 1e6;
        for (name, value) in &point.metrics {
            by_name
                .entry(name.as_str())
                .or_default()
                .push(PlotPoint::new(x, *value));
        }
    }
    by_name
        .into_iter()
        .map(|(name, points)| MetricSeries {
            name: name.to_owned(),
            points,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TaskLog, TaskSpec};

    fn point(at_us: i64, metrics: &[(&str, f64)]) -> ProgressPoint {
        ProgressPoint {
            at_us,
            fraction: None,
            metrics: metrics.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect(),
        }
    }

    #[test]
    fn each_metric_becomes_a_series_in_seconds_since_the_start() {
        let points = [
            point(3_000_000, &[("loss", 1.0)]),
            point(4_000_000, &[("loss", 0.5), ("acc", 0.7)]),
        ];
        let series = series(&points, Some(2_000_000));
        let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["acc", "loss"]);
        let loss = &series[1];
        assert_eq!(
            loss.points.iter().map(|p| (p.x, p.y)).collect::<Vec<_>>(),
            [(1.0, 1.0), (2.0, 0.5)]
        );
        assert_eq!(series[0].latest(), Some(0.7));
        assert!(super::series(&[], None).is_empty());
    }

    #[test]
    fn logs_are_looked_for_in_the_log_dir_then_beside_the_recorded_one() {
        let mut record = TaskRecord::new(TaskId(7), TaskSpec::new("command", vec![]), 0);
        record.attempts = 2;
        assert_eq!(
            candidates(&record, 1, Some(Path::new("/data/logs"))),
            [PathBuf::from("/data/logs/task-7-attempt-1.log")]
        );
        record.log = Some(TaskLog {
            path: "/elsewhere/task-7-attempt-2.log".into(),
            bytes: 0,
            truncated: false,
            tail: String::new(),
            gpu_peak_memory_mb: None,
        });
        assert_eq!(
            candidates(&record, 1, None),
            [PathBuf::from("/elsewhere/task-7-attempt-1.log")]
        );
        assert_eq!(
            candidates(&record, 2, Some(Path::new("/data/logs"))),
            [
                PathBuf::from("/data/logs/task-7-attempt-2.log"),
                PathBuf::from("/elsewhere/task-7-attempt-2.log")
            ]
        );
    }
}
