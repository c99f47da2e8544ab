//! The window's own copy of the task table, updated from scheduler events:
//! filtering, sorting and selection by task id. No egui here.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{TaskId, TaskRecord, TaskStatus};

/// Columns the table can sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SortColumn {
    /// Task id (arrival order).
    Id,
    /// Task name.
    Name,
    /// Priority.
    Priority,
    /// Status.
    Status,
    /// Queue name.
    Queue,
    /// Attempts.
    Attempts,
    /// Worker.
    Worker,
    /// Submission time.
    Submitted,
    /// Queue wait.
    QueueWait,
    /// Run time.
    RunTime,
    /// Submission to completion.
    Total,
}

/// Which rows show and in what order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ViewSettings {
    /// Sort column.
    pub sort: SortColumn,
    /// Ascending or descending.
    pub ascending: bool,
    /// Only these statuses (none: all).
    pub status: Option<TaskStatus>,
    /// Only tasks of this queue (none: all).
    #[serde(default)]
    pub queue: Option<String>,
    /// Rows whose name, arguments or id contain this text.
    pub text: String,
}

impl Default for ViewSettings {
    fn default() -> Self {
        Self {
            sort: SortColumn::Id,
            ascending: false,
            status: None,
            queue: None,
            text: String::new(),
        }
    }
}

/// How a click changes the selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectMode {
    /// Select only this row.
    Only,
    /// Add or remove this row (ctrl/cmd).
    Toggle,
    /// Select the range from the last clicked row (shift).
    Range,
}

/// Shortest pause between two re-sorts while rows keep changing, so a flood
/// of events costs at most a few sorts a second.
const REBUILD_EVERY: Duration = Duration::from_millis(250);

/// The task rows, their visible order and the selection.
#[derive(Debug, Default)]
pub struct TaskView {
    rows: BTreeMap<TaskId, Arc<TaskRecord>>,
    order: Vec<TaskId>,
    settings: ViewSettings,
    dirty: bool,
    last_rebuild: Option<Instant>,
    selected: HashSet<TaskId>,
    anchor: Option<TaskId>,
}

impl TaskView {
    /// An empty view with these settings.
    pub fn new(settings: ViewSettings) -> Self {
        Self {
            settings,
            dirty: true,
            ..Self::default()
        }
    }

    /// Takes a record; an older version than the one held is ignored
    /// (events from different threads may arrive out of order).
    pub fn upsert(&mut self, record: Arc<TaskRecord>) {
        match self.rows.get(&record.id) {
            Some(held) if held.version >= record.version => {}
            _ => {
                self.rows.insert(record.id, record);
                self.dirty = true;
            }
        }
    }

    /// Takes a record whose progress changed. While its status, attempts
    /// and worker are those of the row held, no sort key or filter can
    /// have changed, so the row is replaced without a re-sort (running
    /// tasks may report ten times a second each); otherwise as
    /// [`TaskView::upsert`].
    pub fn update_progress(&mut self, record: Arc<TaskRecord>) {
        match self.rows.get_mut(&record.id) {
            Some(held) if held.version >= record.version => {}
            Some(held)
                if (held.status, held.attempts, held.held, &held.worker)
                    == (record.status, record.attempts, record.held, &record.worker) =>
            {
                *held = record;
            }
            _ => self.upsert(record),
        }
    }

    /// Drops finished rows from the view (the tasks stay in the scheduler
    /// and its store); returns how many went.
    pub fn clear_finished(&mut self) -> usize {
        let before = self.rows.len();
        self.rows.retain(|_, record| !record.status.is_final());
        self.selected.retain(|id| self.rows.contains_key(id));
        self.dirty = true;
        before - self.rows.len()
    }

    /// The current settings.
    pub fn settings(&self) -> &ViewSettings {
        &self.settings
    }

    /// Changes the settings; the order is rebuilt at the next frame.
    pub fn set_settings(&mut self, settings: ViewSettings) {
        if settings != self.settings {
            self.settings = settings;
            self.dirty = true;
            self.last_rebuild = None;
        }
    }

    /// Rebuilds the visible order when rows or settings changed, at most
    /// every [`REBUILD_EVERY`] unless `force`.
    pub fn refresh(&mut self, now: Instant, force: bool) {
        let due = self
            .last_rebuild
            .is_none_or(|last| now.saturating_duration_since(last) >= REBUILD_EVERY);
        if !self.dirty || !(due || force) {
            return;
        }
        let needle = self.settings.text.to_lowercase();
        let status = self.settings.status;
        let queue = self.settings.queue.as_deref();
        let mut visible: Vec<&TaskRecord> = self
            .rows
            .values()
            .map(|r| &**r)
            .filter(|r| status.is_none_or(|s| r.status == s))
            .filter(|r| queue.is_none_or(|q| r.spec.queue_name() == q))
            .filter(|r| needle.is_empty() || matches_text(r, &needle))
            .collect();
        let column = self.settings.sort;
        let mut order: Vec<TaskId> = match numeric_key(column) {
            // Rows come in id order already.
            _ if column == SortColumn::Id => visible.into_iter().map(|r| r.id).collect(),
            // Numbers sort as plain (key, id) pairs: a few milliseconds for
            // 100,000 rows. Ties keep id order.
            Some(key) => {
                let mut keyed: Vec<(i64, TaskId)> =
                    visible.into_iter().map(|r| (key(r), r.id)).collect();
                keyed.sort_unstable();
                keyed.into_iter().map(|(_, id)| id).collect()
            }
            None => {
                visible.sort_unstable_by(|a, b| compare(column, a, b).then(a.id.cmp(&b.id)));
                visible.into_iter().map(|r| r.id).collect()
            }
        };
        if !self.settings.ascending {
            order.reverse();
        }
        self.order = order;
        self.dirty = false;
        self.last_rebuild = Some(now);
    }

    /// Visible rows in order.
    pub fn order(&self) -> &[TaskId] {
        &self.order
    }

    /// A row by id.
    pub fn get(&self, id: TaskId) -> Option<&TaskRecord> {
        self.rows.get(&id).map(|r| &**r)
    }

    /// Rows held (visible or not).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Applies a click on `id`.
    pub fn select(&mut self, id: TaskId, mode: SelectMode) {
        match mode {
            SelectMode::Only => {
                self.selected.clear();
                self.selected.insert(id);
                self.anchor = Some(id);
            }
            SelectMode::Toggle => {
                if !self.selected.remove(&id) {
                    self.selected.insert(id);
                }
                self.anchor = Some(id);
            }
            SelectMode::Range => {
                let position = |x: TaskId| self.order.iter().position(|o| *o == x);
                match (self.anchor.and_then(position), position(id)) {
                    (Some(a), Some(b)) => {
                        let (from, to) = if a <= b { (a, b) } else { (b, a) };
                        self.selected.extend(self.order[from..=to].iter().copied());
                    }
                    _ => {
                        self.selected.insert(id);
                        self.anchor = Some(id);
                    }
                }
            }
        }
    }

    /// Forgets the selection.
    pub fn clear_selection(&mut self) {
        self.selected.clear();
        self.anchor = None;
    }

    /// True when `id` is selected.
    pub fn is_selected(&self, id: TaskId) -> bool {
        self.selected.contains(&id)
    }

    /// Selected ids that still exist, in id order.
    pub fn selected(&self) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self
            .selected
            .iter()
            .copied()
            .filter(|id| self.rows.contains_key(id))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The selected records whose status passes `keep`.
    pub fn selected_where(&self, keep: impl Fn(TaskStatus) -> bool) -> Vec<TaskId> {
        self.selected_records_where(|record| keep(record.status))
    }

    /// Selected tasks whose record passes `keep`.
    pub fn selected_records_where(&self, keep: impl Fn(&TaskRecord) -> bool) -> Vec<TaskId> {
        self.selected()
            .into_iter()
            .filter(|id| self.rows.get(id).is_some_and(|r| keep(r)))
            .collect()
    }
}

fn matches_text(record: &TaskRecord, needle: &str) -> bool {
    record.spec.name.to_lowercase().contains(needle)
        || record.id.0.to_string() == needle
        || serde_json::Value::Array(record.spec.args.clone())
            .to_string()
            .to_lowercase()
            .contains(needle)
}

/// The sort key of numeric columns (missing durations sort first).
fn numeric_key(column: SortColumn) -> Option<fn(&TaskRecord) -> i64> {
    let key: fn(&TaskRecord) -> i64 = match column {
        SortColumn::Priority => |r| i64::from(r.spec.priority),
        SortColumn::Status => |r| r.status.index() as i64,
        SortColumn::Attempts => |r| i64::from(r.attempts),
        SortColumn::Submitted => |r| r.submitted_at_us,
        SortColumn::QueueWait => |r| r.queue_wait_us().unwrap_or(i64::MIN),
        SortColumn::RunTime => |r| r.run_time_us().unwrap_or(i64::MIN),
        SortColumn::Total => |r| r.total_latency_us().unwrap_or(i64::MIN),
        SortColumn::Id | SortColumn::Name | SortColumn::Queue | SortColumn::Worker => {
            return None;
        }
    };
    Some(key)
}

fn compare(column: SortColumn, a: &TaskRecord, b: &TaskRecord) -> Ordering {
    match column {
        SortColumn::Id => a.id.cmp(&b.id),
        SortColumn::Name => a.spec.name.cmp(&b.spec.name),
        SortColumn::Priority => a.spec.priority.cmp(&b.spec.priority),
        SortColumn::Status => a.status.index().cmp(&b.status.index()),
        SortColumn::Queue => a.spec.queue_name().cmp(b.spec.queue_name()),
        SortColumn::Attempts => a.attempts.cmp(&b.attempts),
        SortColumn::Worker => a.worker.cmp(&b.worker),
        SortColumn::Submitted => a.submitted_at_us.cmp(&b.submitted_at_us),
        SortColumn::QueueWait => a.queue_wait_us().cmp(&b.queue_wait_us()),
        SortColumn::RunTime => a.run_time_us().cmp(&b.run_time_us()),
        SortColumn::Total => a.total_latency_us().cmp(&b.total_latency_us()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskSpec;
    use serde_json::json;

    fn record(id: u64, name: &str, priority: u8, status: TaskStatus) -> Arc<TaskRecord> {
        let mut r = TaskRecord::new(
            TaskId(id),
            TaskSpec::new(name, vec![json!(id)]).priority(priority),
            0,
        );
        r.status = status;
        Arc::new(r)
    }

    fn ids(view: &TaskView) -> Vec<u64> {
        view.order().iter().map(|id| id.0).collect()
    }

    #[test]
    fn newest_first_by_default_and_sortable_by_any_column() {
        let mut view = TaskView::new(ViewSettings::default());
        view.upsert(record(1, "b", 1, TaskStatus::Queued));
        view.upsert(record(2, "a", 9, TaskStatus::Running));
        view.upsert(record(3, "c", 5, TaskStatus::Failed));
        view.refresh(Instant::now(), true);
        assert_eq!(ids(&view), vec![3, 2, 1]);
        view.set_settings(ViewSettings {
            sort: SortColumn::Priority,
            ascending: true,
            ..ViewSettings::default()
        });
        view.refresh(Instant::now(), false);
        assert_eq!(ids(&view), vec![1, 3, 2]);
        view.set_settings(ViewSettings {
            sort: SortColumn::Name,
            ascending: true,
            ..ViewSettings::default()
        });
        view.refresh(Instant::now(), false);
        assert_eq!(ids(&view), vec![2, 1, 3]);
    }

    #[test]
    fn filters_by_status_and_text_and_ignores_stale_versions() {
        let mut view = TaskView::new(ViewSettings::default());
        let mut newer = TaskRecord::clone(&record(1, "mock_ml_task", 5, TaskStatus::Completed));
        newer.version = 5;
        view.upsert(Arc::new(newer));
        view.upsert(record(1, "mock_ml_task", 5, TaskStatus::Queued));
        view.upsert(record(2, "noop", 5, TaskStatus::Queued));
        view.set_settings(ViewSettings {
            status: Some(TaskStatus::Completed),
            ..ViewSettings::default()
        });
        view.refresh(Instant::now(), true);
        assert_eq!(ids(&view), vec![1], "the older queued version was ignored");
        view.set_settings(ViewSettings {
            text: "NOOP".into(),
            ..ViewSettings::default()
        });
        view.refresh(Instant::now(), true);
        assert_eq!(ids(&view), vec![2]);
    }

    #[test]
    fn sorts_and_filters_by_queue() {
        let mut view = TaskView::new(ViewSettings::default());
        let queued = |id: u64, queue: Option<&str>| {
            let mut r = TaskRecord::clone(&record(id, "t", 5, TaskStatus::Queued));
            if let Some(queue) = queue {
                r.spec = r.spec.queue(queue);
            }
            Arc::new(r)
        };
        view.upsert(queued(1, Some("render")));
        view.upsert(queued(2, None));
        view.upsert(queued(3, Some("batch")));
        view.set_settings(ViewSettings {
            sort: SortColumn::Queue,
            ascending: true,
            ..ViewSettings::default()
        });
        view.refresh(Instant::now(), true);
        assert_eq!(ids(&view), vec![3, 2, 1], "batch, default, render");
        view.set_settings(ViewSettings {
            queue: Some("default".into()),
            ..ViewSettings::default()
        });
        view.refresh(Instant::now(), true);
        assert_eq!(
            ids(&view),
            vec![2],
            "a task naming no queue is in the default one"
        );
    }

    #[test]
    fn re_sorting_is_rate_limited_unless_forced() {
        let mut view = TaskView::new(ViewSettings::default());
        let start = Instant::now();
        view.upsert(record(1, "a", 5, TaskStatus::Queued));
        view.refresh(start, false);
        view.upsert(record(2, "a", 5, TaskStatus::Queued));
        view.refresh(start + Duration::from_millis(10), false);
        assert_eq!(ids(&view), vec![1], "not yet");
        view.refresh(start + Duration::from_millis(300), false);
        assert_eq!(ids(&view), vec![2, 1]);
    }

    #[test]
    fn selection_is_by_id_and_survives_re_sorting() {
        let mut view = TaskView::new(ViewSettings::default());
        for id in 1..=5 {
            view.upsert(record(id, "t", id as u8, TaskStatus::Queued));
        }
        view.refresh(Instant::now(), true);
        view.select(TaskId(4), SelectMode::Only);
        view.select(TaskId(2), SelectMode::Range);
        assert_eq!(view.selected(), vec![TaskId(2), TaskId(3), TaskId(4)]);
        view.select(TaskId(3), SelectMode::Toggle);
        assert_eq!(view.selected(), vec![TaskId(2), TaskId(4)]);
        view.set_settings(ViewSettings {
            sort: SortColumn::Priority,
            ascending: true,
            ..ViewSettings::default()
        });
        view.refresh(Instant::now(), true);
        assert!(view.is_selected(TaskId(2)) && view.is_selected(TaskId(4)));
        view.upsert(record(6, "t", 1, TaskStatus::Completed));
        view.select(TaskId(6), SelectMode::Toggle);
        assert_eq!(view.clear_finished(), 1);
        assert_eq!(view.selected(), vec![TaskId(2), TaskId(4)]);
        assert_eq!(
            view.selected_where(|s| s == TaskStatus::Running),
            Vec::<TaskId>::new()
        );
    }
}
