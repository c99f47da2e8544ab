//! Why the waiting rows of the task table wait: reasons read from the
//! scheduler for the queued and retrying rows the table shows, kept by
//! task id, and the short text the table's "Why" column gives them. No
//! egui here.
//!
//! The table hands over the waiting rows it laid out each frame; the
//! scheduler is asked about them all in one call ([`Scheduler::waiting`]
//! makes one pass over the ready queue), never per row, and at a bounded
//! rate: at most every [`READ_GAP`] while those rows or the tasks change,
//! every [`REREAD_IDLE`] otherwise. Laying out the table only looks the
//! reasons up here, without a lock.
//!
//! [`Scheduler::waiting`]: crate::scheduler::Scheduler::waiting

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::model::{TaskId, TaskRecord, TaskStatus};
use crate::scheduler::Waiting;

/// Shortest time between two reads while the waiting rows shown change
/// (scrolling, sorting, a row's record) or task events arrive.
pub const READ_GAP: Duration = Duration::from_millis(250);

/// How often the reasons are read again while nothing the window sees
/// changes (a queue paused from elsewhere, a queue position).
pub const REREAD_IDLE: Duration = Duration::from_secs(1);

/// A waiting row as the table showed it: the task and its record version.
pub type ShownRow = (TaskId, u64);

/// The reasons of the waiting rows the table shows, as last read.
#[derive(Debug, Default)]
pub struct WaitingRows {
    /// The waiting rows the table showed at its last frame.
    shown: Vec<ShownRow>,
    /// The rows the reasons were last read for.
    read_for: Vec<ShownRow>,
    /// When they were read.
    read_at: Option<Instant>,
    /// Whether task events arrived, or the window changed something,
    /// since that read.
    changed_since_read: bool,
    /// Why each of those tasks waits (none for one that no longer waits).
    reasons: HashMap<TaskId, Waiting>,
}

impl WaitingRows {
    /// The row of `record` when it waits (queued or retrying), for the
    /// table to hand over.
    pub fn row_of(record: &TaskRecord) -> Option<ShownRow> {
        is_waiting(record.status).then_some((record.id, record.version))
    }

    /// Takes the waiting rows the table laid out this frame.
    pub fn set_shown(&mut self, rows: Vec<ShownRow>) {
        self.shown = rows;
    }

    /// Notes that task events arrived or the window changed something, so
    /// the next read comes after [`READ_GAP`] rather than [`REREAD_IDLE`].
    pub fn changed(&mut self) {
        self.changed_since_read = true;
    }

    /// Reads the reasons again through `read` (one call for all the rows)
    /// when due; returns whether it read.
    ///
    /// Rules:
    /// - no waiting row shown: nothing is read, and the reasons are
    ///   forgotten;
    /// - the first read for rows shown is at once;
    /// - when the rows shown differ from those read (or their records
    ///   changed) or [`WaitingRows::changed`] was called: at most every
    ///   [`READ_GAP`];
    /// - otherwise every [`REREAD_IDLE`].
    pub fn refresh(
        &mut self,
        now: Instant,
        read: impl FnOnce(&[TaskId]) -> Vec<Option<Waiting>>,
    ) -> bool {
        if self.shown.is_empty() {
            self.read_for.clear();
            self.reasons.clear();
            return false;
        }
        if !self.due(now) {
            return false;
        }
        let ids: Vec<TaskId> = self.shown.iter().map(|(id, _)| *id).collect();
        let answers = read(&ids);
        self.reasons = ids
            .into_iter()
            .zip(answers)
            .filter_map(|(id, waiting)| Some((id, waiting?)))
            .collect();
        self.read_for.clone_from(&self.shown);
        self.read_at = Some(now);
        self.changed_since_read = false;
        true
    }

    /// How long until a read falls due for a change already seen (the
    /// window asks for a frame then); none when nothing waits for one.
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        if self.shown.is_empty() || !self.stale() {
            return None;
        }
        let since = self
            .read_at
            .map_or(READ_GAP, |at| now.saturating_duration_since(at));
        Some(READ_GAP.saturating_sub(since))
    }

    /// Why task `id` waits, as last read.
    pub fn reason(&self, id: TaskId) -> Option<&Waiting> {
        self.reasons.get(&id)
    }

    fn stale(&self) -> bool {
        self.changed_since_read || self.shown != self.read_for
    }

    fn due(&self, now: Instant) -> bool {
        let Some(at) = self.read_at else {
            return true;
        };
        let since = now.saturating_duration_since(at);
        since >= REREAD_IDLE || (self.stale() && since >= READ_GAP)
    }
}

/// Whether a task of this status waits to start (and so has a reason).
pub fn is_waiting(status: TaskStatus) -> bool {
    matches!(status, TaskStatus::Queued | TaskStatus::Retrying)
}

/// Whether the reason holds the task back until someone acts or a worker
/// connects (shown as a warning), rather than a wait that ends by itself.
pub fn holds_back(waiting: &Waiting) -> bool {
    match waiting {
        Waiting::Held
        | Waiting::Paused
        | Waiting::QueuePaused { .. }
        | Waiting::QueueAtLimit { .. }
        | Waiting::NoWorker
        | Waiting::ShuttingDown => true,
        Waiting::Dependencies { .. }
        | Waiting::RetryBackoff { .. }
        | Waiting::NotBefore { .. }
        | Waiting::Behind { .. }
        | Waiting::GpuMemory { .. } => false,
    }
}

/// A few words for the table's narrow column, with times relative to
/// `now_us`; [`Waiting::message`] gives the full sentence.
pub fn short(waiting: &Waiting, now_us: i64) -> String {
    match *waiting {
        Waiting::Dependencies { count, ref ids } => match ids.first() {
            Some(first) if count > 1 => format!("after #{first} +{}", count - 1),
            Some(first) => format!("after #{first}"),
            None => format!("after {count} tasks"),
        },
        Waiting::RetryBackoff { until_us } => format!("retry in {}", until(until_us, now_us)),
        Waiting::Held => "held".to_owned(),
        Waiting::NotBefore { until_us } => format!("due in {}", until(until_us, now_us)),
        Waiting::Paused => "all paused".to_owned(),
        Waiting::QueuePaused { .. } => "queue paused".to_owned(),
        Waiting::QueueAtLimit { limit, .. } => format!("queue full ({limit})"),
        Waiting::ShuttingDown => "shutdown".to_owned(),
        Waiting::Behind { ahead: 0, gpus: 0 } => "next".to_owned(),
        Waiting::Behind { ahead, gpus: 0 } => format!("{ahead} ahead"),
        Waiting::Behind { gpus: 1, .. } => "needs a GPU".to_owned(),
        Waiting::Behind { gpus, .. } => format!("needs {gpus} GPUs"),
        Waiting::GpuMemory { memory_mb, .. } => format!("GPU {memory_mb} MB"),
        Waiting::NoWorker => "no worker".to_owned(),
    }
}

/// Time from `now_us` to `until_us`, rounded up, in the largest unit that
/// keeps it above one.
fn until(until_us: i64, now_us: i64) -> String {
    let micros = u64::try_from(until_us.saturating_sub(now_us)).unwrap_or(0);
    let secs = micros.div_ceil(1_000_000);
    match secs {
        0..120 => format!("{secs} s"),
        120..7_200 => format!("{} min", secs.div_ceil(60)),
        _ => format!("{} h", secs.div_ceil(3_600)),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Answers every id as held and counts the calls.
    fn counting(calls: &Cell<usize>) -> impl FnOnce(&[TaskId]) -> Vec<Option<Waiting>> + '_ {
        move |ids| {
            calls.set(calls.get() + 1);
            ids.iter().map(|_| Some(Waiting::Held)).collect()
        }
    }

    #[test]
    fn reads_at_once_then_at_a_bounded_rate_however_many_frames() {
        let calls = Cell::new(0);
        let mut rows = WaitingRows::default();
        let start = Instant::now();
        assert!(!rows.refresh(start, counting(&calls)), "nothing shown");
        assert_eq!(calls.get(), 0);

        let shown = vec![(TaskId(1), 1), (TaskId(2), 1)];
        rows.set_shown(shown.clone());
        assert!(rows.refresh(start, counting(&calls)), "first rows: at once");
        assert_eq!(rows.reason(TaskId(2)), Some(&Waiting::Held));
        assert_eq!(rows.due_in(start), None, "nothing new to read");

        // A frame every millisecond for almost a second, rows unchanged:
        // no read until REREAD_IDLE.
        for ms in 1..1_000 {
            rows.set_shown(shown.clone());
            rows.refresh(start + Duration::from_millis(ms), counting(&calls));
        }
        assert_eq!(calls.get(), 1, "one read for a thousand frames");
        rows.refresh(start + REREAD_IDLE, counting(&calls));
        assert_eq!(calls.get(), 2, "read again after REREAD_IDLE");

        // A row's record changes: read again once READ_GAP has passed.
        let later = start + REREAD_IDLE;
        rows.set_shown(vec![(TaskId(1), 2), (TaskId(2), 1)]);
        assert_eq!(
            rows.due_in(later + Duration::from_millis(50)),
            Some(READ_GAP - Duration::from_millis(50))
        );
        for ms in 1..250 {
            rows.refresh(later + Duration::from_millis(ms), counting(&calls));
        }
        assert_eq!(calls.get(), 2, "not within READ_GAP");
        assert!(rows.refresh(later + READ_GAP, counting(&calls)));
        assert_eq!(calls.get(), 3);

        // Task events count as a change too, under the same gap.
        rows.changed();
        let last = later + READ_GAP;
        assert!(!rows.refresh(last + Duration::from_millis(100), counting(&calls)));
        assert!(rows.refresh(last + READ_GAP, counting(&calls)));
        assert_eq!(calls.get(), 4);
    }

    #[test]
    fn rows_no_longer_shown_or_waiting_are_forgotten() {
        let mut rows = WaitingRows::default();
        let start = Instant::now();
        rows.set_shown(vec![(TaskId(1), 1), (TaskId(2), 1)]);
        rows.refresh(start, |ids| {
            assert_eq!(ids, [TaskId(1), TaskId(2)], "all rows in one call");
            vec![Some(Waiting::Held), None]
        });
        assert_eq!(rows.reason(TaskId(1)), Some(&Waiting::Held));
        assert_eq!(rows.reason(TaskId(2)), None, "it no longer waits");
        rows.set_shown(Vec::new());
        assert!(!rows.refresh(start + READ_GAP, |_| unreachable!("nothing to ask")));
        assert_eq!(rows.reason(TaskId(1)), None);
    }

    #[test]
    fn short_texts_name_the_dependency_the_queue_state_and_times() {
        let now_us = 1_000_000_000;
        let dependencies = |count, ids: &[u64]| Waiting::Dependencies {
            count,
            ids: ids.iter().copied().map(TaskId).collect(),
        };
        let cases = [
            (dependencies(1, &[7]), "after #7"),
            (dependencies(3, &[7, 8, 9]), "after #7 +2"),
            (Waiting::Held, "held"),
            (Waiting::Paused, "all paused"),
            (
                Waiting::QueuePaused {
                    queue: "render".into(),
                },
                "queue paused",
            ),
            (
                Waiting::QueueAtLimit {
                    queue: "render".into(),
                    limit: 2,
                },
                "queue full (2)",
            ),
            (Waiting::Behind { ahead: 0, gpus: 0 }, "next"),
            (Waiting::Behind { ahead: 4, gpus: 0 }, "4 ahead"),
            (Waiting::Behind { ahead: 4, gpus: 2 }, "needs 2 GPUs"),
            (
                Waiting::GpuMemory {
                    ahead: 0,
                    memory_mb: 8000,
                },
                "GPU 8000 MB",
            ),
            (
                Waiting::RetryBackoff {
                    until_us: now_us + 2_500_000,
                },
                "retry in 3 s",
            ),
            (
                Waiting::NotBefore {
                    until_us: now_us + 600_000_000,
                },
                "due in 10 min",
            ),
            (Waiting::NoWorker, "no worker"),
        ];
        for (waiting, text) in cases {
            assert_eq!(short(&waiting, now_us), text, "{waiting:?}");
        }
        assert!(holds_back(&Waiting::Held) && !holds_back(&dependencies(1, &[7])));
    }
}
