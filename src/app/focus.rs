//! What the details panel shows about the one focused task beyond its
//! record: why it waits, which tasks depend on it, and the status of its
//! dependencies that are no longer rows of the table. No egui here.
//!
//! The scheduler is asked only when the focused task or its record's
//! version changes, and otherwise at most every [`REREAD_EVERY`] (a queue
//! position or a new dependent changes nothing in the record), so an idle
//! panel costs no lock per frame. Statuses of dependencies that are rows
//! come from the window's own copy of the table, also without a lock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::task_view::TaskView;
use crate::model::{TaskId, TaskRecord, TaskStatus};
use crate::scheduler::Waiting;

/// How often the focused task's reasons and dependents are read again
/// while its record does not change.
pub const REREAD_EVERY: Duration = Duration::from_millis(500);

/// How many dependencies or dependents the panel lists by id; the rest are
/// counted ("and 12 more").
pub const LISTED: usize = 20;

/// The longest chain of cancellations followed back to where it started.
const CHAIN_FOLLOWED: usize = 10_000;

/// The last read about the focused task.
#[derive(Debug, Default)]
pub struct FocusInfo {
    /// The task and record version it was read for.
    key: Option<(TaskId, u64)>,
    /// When it was read.
    read_at: Option<Instant>,
    /// Why the task waits, as last read.
    waiting: Option<Waiting>,
    /// Tasks that depend on it, lowest id first.
    dependents: Vec<TaskId>,
    /// Statuses of listed dependencies, of the task that cancelled it and
    /// of where that chain of cancellations started, for those that were
    /// not rows of the table when read; none when the scheduler no longer
    /// knows the task.
    elsewhere: HashMap<TaskId, Option<TaskStatus>>,
    /// For a task cancelled by a dependency: where the chain of
    /// cancellations started, as far as the table tells.
    first_cause: Option<TaskId>,
}

/// What the panel knows of a task it names (a dependency, a dependent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Its status, from the table or the scheduler.
    Status(TaskStatus),
    /// The scheduler no longer holds it (dropped from the history).
    Gone,
    /// Not read (yet).
    Unknown,
}

impl FocusInfo {
    /// Reads again from the scheduler when `focused` or its record changed,
    /// or when the last read is older than [`REREAD_EVERY`].
    /// Forgets everything when no single task is focused.
    pub fn refresh(
        &mut self,
        backend: &dyn Backend,
        view: &TaskView,
        focused: Option<TaskId>,
        now: Instant,
    ) {
        let Some(record) = focused.and_then(|id| view.get(id)) else {
            *self = Self::default();
            return;
        };
        let key = Some((record.id, record.version));
        let fresh = self
            .read_at
            .is_some_and(|at| now.saturating_duration_since(at) < REREAD_EVERY);
        if key == self.key && fresh {
            return;
        }
        let id = record.id;
        self.first_cause = first_cause(view, record);
        let missing: Vec<TaskId> = named_by(record)
            .chain(self.first_cause)
            .filter(|named| view.get(*named).is_none())
            .collect();
        let read = backend.records(&missing);
        self.elsewhere = missing
            .into_iter()
            .zip(read)
            .map(|(named, record)| (named, record.map(|r| r.status)))
            .collect();
        self.waiting = backend.waiting(&[id]).pop().flatten();
        self.dependents = backend.dependents(id);
        self.key = key;
        self.read_at = Some(now);
    }

    /// Whether the last read is about `id` (the panel shows the rest only
    /// then).
    pub fn is_for(&self, id: TaskId) -> bool {
        self.key.is_some_and(|(read, _)| read == id)
    }

    /// Why the task waits, as last read.
    pub fn waiting(&self) -> Option<&Waiting> {
        self.waiting.as_ref()
    }

    /// For a task cancelled by a dependency: the task whose end started
    /// the chain of cancellations (the one to retry with its dependents).
    pub fn first_cause(&self) -> Option<TaskId> {
        self.first_cause
    }

    /// Tasks that depend on it, lowest id first.
    pub fn dependents(&self) -> &[TaskId] {
        &self.dependents
    }

    /// What is known of task `id`: its row in `view` first (kept current
    /// by events), else the status read from the scheduler.
    pub fn known(&self, view: &TaskView, id: TaskId) -> Known {
        if let Some(record) = view.get(id) {
            return Known::Status(record.status);
        }
        match self.elsewhere.get(&id) {
            Some(Some(status)) => Known::Status(*status),
            Some(None) => Known::Gone,
            None => Known::Unknown,
        }
    }
}

/// Follows `cancelled_by` from `record` through the rows of `view` to the
/// first task that was not itself cancelled by a dependency.
fn first_cause(view: &TaskView, record: &TaskRecord) -> Option<TaskId> {
    let mut cause = record.cancelled_by?;
    for _ in 0..CHAIN_FOLLOWED {
        match view.get(cause) {
            Some(TaskRecord {
                status: TaskStatus::Cancelled,
                cancelled_by: Some(earlier),
                ..
            }) => cause = *earlier,
            _ => break,
        }
    }
    Some(cause)
}

/// The tasks a record names whose status the panel shows: its first
/// [`LISTED`] dependencies and the task that cancelled it.
fn named_by(record: &TaskRecord) -> impl Iterator<Item = TaskId> + '_ {
    record
        .spec
        .dependency_ids()
        .take(LISTED)
        .chain(record.cancelled_by)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::app::backend::InProcess;
    use crate::app::tests::noop_after;
    use crate::model::TaskSpec;
    use crate::scheduler::Scheduler;
    use crate::scheduler::SchedulerConfig;

    fn scheduler() -> Scheduler {
        let config = SchedulerConfig {
            workers: 0,
            ..SchedulerConfig::in_memory()
        };
        Scheduler::start(config, crate::demo::registry()).expect("the scheduler should start")
    }

    #[test]
    fn reads_on_a_change_of_focus_or_record_and_otherwise_at_most_every_reread() {
        let scheduler = scheduler();
        let first = noop_after(&scheduler, &[]);
        let second = noop_after(&scheduler, &[first]);
        let mut view = TaskView::default();
        for id in [first, second] {
            view.upsert(scheduler.task_shared(id).expect("known"));
        }
        let mut focus = FocusInfo::default();
        let start = Instant::now();
        focus.refresh(
            &InProcess::new(scheduler.clone()),
            &view,
            Some(first),
            start,
        );
        assert!(focus.is_for(first));
        assert_eq!(focus.dependents(), &[second]);
        assert!(matches!(
            focus.waiting(),
            Some(Waiting::Behind { ahead: 0, .. })
        ));

        // A new dependent shows at the next timed read, not before.
        let third = noop_after(&scheduler, &[first]);
        focus.refresh(
            &InProcess::new(scheduler.clone()),
            &view,
            Some(first),
            start,
        );
        assert_eq!(focus.dependents(), &[second], "not read again yet");
        focus.refresh(
            &InProcess::new(scheduler.clone()),
            &view,
            Some(first),
            start + REREAD_EVERY,
        );
        assert_eq!(focus.dependents(), &[second, third]);

        // Another focus is read at once.
        focus.refresh(
            &InProcess::new(scheduler.clone()),
            &view,
            Some(second),
            start,
        );
        assert!(focus.is_for(second));
        assert!(focus.dependents().is_empty());
        assert!(matches!(
            focus.waiting(),
            Some(Waiting::Dependencies { count: 1, .. })
        ));
        focus.refresh(&InProcess::new(scheduler.clone()), &view, None, start);
        assert!(!focus.is_for(second));
        scheduler.shutdown().expect("shutdown");
    }

    #[test]
    fn a_dependency_outside_the_table_is_read_from_the_scheduler() {
        let scheduler = scheduler();
        let first = noop_after(&scheduler, &[]);
        let second = noop_after(&scheduler, &[first]);
        let mut view = TaskView::default();
        view.upsert(scheduler.task_shared(second).expect("known"));
        let mut dependent = TaskRecord::new(TaskId(99), TaskSpec::new("noop", vec![]), 0);
        dependent.spec = dependent.spec.after(TaskId(98));
        view.upsert(Arc::new(dependent));
        let mut focus = FocusInfo::default();
        focus.refresh(
            &InProcess::new(scheduler.clone()),
            &view,
            Some(second),
            Instant::now(),
        );
        assert_eq!(focus.known(&view, first), Known::Status(TaskStatus::Queued));
        assert_eq!(focus.known(&view, TaskId(7)), Known::Unknown);
        focus.refresh(
            &InProcess::new(scheduler.clone()),
            &view,
            Some(TaskId(99)),
            Instant::now(),
        );
        assert_eq!(focus.known(&view, TaskId(98)), Known::Gone);
        scheduler.shutdown().expect("shutdown");
    }

    #[test]
    fn a_chain_of_cancellations_is_followed_to_where_it_started() {
        let mut view = TaskView::default();
        let cancelled = |id: u64, by: Option<u64>| {
            let mut record = TaskRecord::new(TaskId(id), TaskSpec::new("noop", vec![]), 0);
            record.status = TaskStatus::Cancelled;
            record.cancelled_by = by.map(TaskId);
            Arc::new(record)
        };
        view.upsert(cancelled(1, None));
        view.upsert(cancelled(2, Some(1)));
        view.upsert(cancelled(3, Some(2)));
        view.upsert(cancelled(5, Some(4)));
        assert_eq!(first_cause(&view, &cancelled(3, Some(2))), Some(TaskId(1)));
        assert_eq!(first_cause(&view, &cancelled(2, Some(1))), Some(TaskId(1)));
        assert_eq!(first_cause(&view, &cancelled(1, None)), None);
        assert_eq!(
            first_cause(&view, &cancelled(5, Some(4))),
            Some(TaskId(4)),
            "a task not in the table ends the chain"
        );
    }
}
