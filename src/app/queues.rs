//! The queues panel: every named queue with its state, limit and counts,
//! and for the chosen queue the controls to set or clear its limit and to
//! pause it (optionally stopping its running tasks) or resume it.
//!
//! The list is the window's own copy, read from the scheduler at a bounded
//! rate (see [`QueuesPanel::refresh`]), never once per frame. The controls
//! return an [`Action`] that the window applies at the end of the frame;
//! the queue chosen for editing is kept by name, so it survives re-reads.

use std::time::{Duration, Instant};

use eframe::egui::{self, RichText, Ui};

use super::backend::Backend;
use super::state::Action;
use super::theme::Theme;
use crate::model::{DEFAULT_QUEUE, TaskStatus};
use crate::scheduler::{QueueChange, QueueInfo};

/// Shortest time between two reads while task events arrive (counts move).
pub const REREAD_EVERY: Duration = Duration::from_millis(500);

/// Longest time between two reads when no task event arrives, so that
/// settings changed elsewhere (over HTTP) show within it.
pub const REREAD_IDLE: Duration = Duration::from_secs(2);

/// Largest limit the control offers.
const MAX_LIMIT: usize = 100_000;

/// Longest queue name the list shows whole (names may have 64
/// characters); a longer one is cut, and shows whole on hover.
const NAME_SHOWN: usize = 16;

/// The queues as last read and what the controls are editing.
#[derive(Debug, Default)]
pub struct QueuesPanel {
    /// Every queue, by name, as last read.
    list: Vec<QueueInfo>,
    /// When it was read.
    read_at: Option<Instant>,
    /// Whether task events arrived since that read.
    events_since_read: bool,
    /// The queue the controls act on, by name (none: the default queue).
    chosen: Option<String>,
    /// The limit being edited.
    limit_edit: usize,
    /// The queue and limit the edited value was taken from; when either
    /// changes, the edit starts again from the queue's limit.
    edit_from: Option<(String, Option<usize>)>,
    /// Whether "Pause queue" also stops the queue's running tasks.
    stop_running: bool,
}

/// A queue's counts as the panel shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// Queued and retrying.
    pub waiting: usize,
    /// Running.
    pub running: usize,
    /// Completed, failed or cancelled.
    pub finished: usize,
}

impl QueueCounts {
    /// Sums `info`'s counts by status.
    pub fn of(info: &QueueInfo) -> Self {
        let count = |status: TaskStatus| info.counts.get(status.index()).copied().unwrap_or(0);
        Self {
            waiting: count(TaskStatus::Queued) + count(TaskStatus::Retrying),
            running: count(TaskStatus::Running),
            finished: count(TaskStatus::Completed)
                + count(TaskStatus::Failed)
                + count(TaskStatus::Cancelled),
        }
    }
}

impl QueuesPanel {
    /// Reads the queues again when due; returns whether it read.
    ///
    /// Rules:
    /// - the first call reads;
    /// - while task events arrive (`events`), at most every [`REREAD_EVERY`];
    /// - without events, every [`REREAD_IDLE`] (settings changed elsewhere).
    pub fn refresh(&mut self, backend: &dyn Backend, now: Instant, events: bool) -> bool {
        self.events_since_read |= events;
        let due = self.read_at.is_none_or(|at| {
            let since = now.saturating_duration_since(at);
            since >= REREAD_IDLE || (self.events_since_read && since >= REREAD_EVERY)
        });
        if !due {
            return false;
        }
        self.list = backend.queues();
        self.read_at = Some(now);
        self.events_since_read = false;
        true
    }

    /// Takes a queue as a change left it (the answer of `set_queue`), so
    /// the panel shows it at once rather than at the next read.
    pub fn updated(&mut self, info: QueueInfo) {
        match self
            .list
            .binary_search_by(|queue| queue.name.as_str().cmp(&info.name))
        {
            Ok(at) => self.list[at] = info,
            Err(at) => self.list.insert(at, info),
        }
    }

    /// Every queue, by name, as last read.
    pub fn list(&self) -> &[QueueInfo] {
        &self.list
    }

    /// One queue by name, as last read.
    pub fn get(&self, name: &str) -> Option<&QueueInfo> {
        self.list.iter().find(|queue| queue.name == name)
    }

    /// The queue the controls act on: the one chosen, else the default
    /// queue, else the first.
    pub fn chosen(&self) -> Option<&QueueInfo> {
        let name = self.chosen.as_deref().unwrap_or(DEFAULT_QUEUE);
        self.get(name).or_else(|| self.list.first())
    }

    /// Lays out the list and the controls of the chosen queue; returns the
    /// change asked for.
    pub fn ui(&mut self, ui: &mut Ui, theme: Theme) -> Option<Action> {
        ui.heading("Queues");
        if self.list.is_empty() {
            ui.label(RichText::new("No queue read yet.").color(theme.weak()));
            return None;
        }
        let chosen_name = self.chosen().map(|queue| queue.name.clone());
        let mut clicked = None;
        egui::Grid::new("queues_grid")
            .num_columns(6)
            .striped(true)
            .show(ui, |ui| {
                for title in ["Name", "State", "Limit", "Queued", "Running", "Finished"] {
                    ui.label(RichText::new(title).color(theme.weak()));
                }
                ui.end_row();
                for queue in &self.list {
                    let chosen = chosen_name.as_deref() == Some(queue.name.as_str());
                    if queue_row_ui(ui, queue, chosen, theme) {
                        clicked = Some(queue.name.clone());
                    }
                    ui.end_row();
                }
            });
        if let Some(name) = clicked
            && chosen_name.as_deref() != Some(name.as_str())
        {
            self.chosen = Some(name);
            self.stop_running = false;
        }
        let queue = self.chosen()?.clone();
        ui.add_space(4.0);
        self.controls_ui(ui, &queue)
    }

    /// The limit and pause controls of `queue`.
    fn controls_ui(&mut self, ui: &mut Ui, queue: &QueueInfo) -> Option<Action> {
        let source = Some((queue.name.clone(), queue.limit));
        if self.edit_from != source {
            self.limit_edit = queue.limit.unwrap_or(1);
            self.edit_from = source;
        }
        let name = &queue.name;
        let mut change = None;
        ui.add(egui::Label::new(RichText::new(format!("Queue {name}")).strong()).truncate());
        ui.horizontal(|ui| {
            let label = ui.label("At most");
            ui.add(egui::DragValue::new(&mut self.limit_edit).range(1..=MAX_LIMIT))
                .labelled_by(label.id)
                .on_hover_text("Most of its tasks running at once");
            ui.label("running");
            if ui
                .add_enabled(
                    queue.limit != Some(self.limit_edit),
                    egui::Button::new("Set limit"),
                )
                .on_disabled_hover_text("Change the limit first")
                .clicked()
            {
                change = Some(QueueChange {
                    limit: Some(Some(self.limit_edit)),
                    ..QueueChange::default()
                });
            }
            if ui
                .add_enabled(queue.limit.is_some(), egui::Button::new("No limit"))
                .on_hover_text("Only the worker pool and the GPUs limit it")
                .on_disabled_hover_text("It has no limit")
                .clicked()
            {
                change = Some(QueueChange {
                    limit: Some(None),
                    ..QueueChange::default()
                });
            }
        });
        let running = QueueCounts::of(queue).running;
        ui.horizontal(|ui| {
            if queue.paused {
                if ui
                    .button("Resume queue")
                    .on_hover_text("Let its tasks start again")
                    .clicked()
                {
                    change = Some(QueueChange {
                        paused: Some(false),
                        ..QueueChange::default()
                    });
                }
                if running > 0
                    && ui
                        .button("Stop its running tasks")
                        .on_hover_text(STOP_RUNNING_HINT)
                        .clicked()
                {
                    change = Some(pause(true));
                }
            } else {
                if ui
                    .button("Pause queue")
                    .on_hover_text(
                        "None of its tasks starts until it is resumed; \
                         running ones go on unless asked to stop",
                    )
                    .clicked()
                {
                    change = Some(pause(self.stop_running));
                    self.stop_running = false;
                }
                ui.checkbox(&mut self.stop_running, "Stop its running tasks")
                    .on_hover_text(STOP_RUNNING_HINT);
            }
        });
        change.map(|change| Action::SetQueue(name.clone(), change))
    }
}

/// What stopping a queue's running tasks does.
const STOP_RUNNING_HINT: &str = "With the pause, its running tasks are asked to stop; they go back \
     to the queue without counting an attempt and start again after the resume";

/// A pause, stopping the running tasks or not.
fn pause(stop_running: bool) -> QueueChange {
    QueueChange {
        paused: Some(true),
        stop_running,
        ..QueueChange::default()
    }
}

/// One row of the list; returns whether its name was clicked.
fn queue_row_ui(ui: &mut Ui, queue: &QueueInfo, chosen: bool, theme: Theme) -> bool {
    let clicked = ui
        .selectable_label(chosen, shown_name(&queue.name))
        .on_hover_text(format!("{}: choose it for the controls below", queue.name))
        .clicked();
    let counts = QueueCounts::of(queue);
    let at_limit = queue.limit.is_some_and(|limit| counts.running >= limit);
    let (state, colour, hint) = if queue.paused {
        (
            "paused",
            theme.error(),
            "None of its tasks starts until it is resumed",
        )
    } else if at_limit {
        (
            "at limit",
            theme.warning(),
            "As many of its tasks run as its limit allows; the next waits",
        )
    } else {
        ("open", theme.weak(), "Its tasks start as workers free up")
    };
    ui.label(RichText::new(state).color(colour))
        .on_hover_text(hint);
    ui.label(
        queue
            .limit
            .map_or_else(|| "none".to_owned(), |l| l.to_string()),
    );
    ui.label(counts.waiting.to_string());
    let running = RichText::new(counts.running.to_string());
    ui.label(if counts.running > 0 {
        running.color(theme.status(TaskStatus::Running))
    } else {
        running
    });
    ui.label(counts.finished.to_string());
    clicked
}

/// `name`, cut to [`NAME_SHOWN`] characters with an ellipsis.
fn shown_name(name: &str) -> String {
    if name.chars().count() <= NAME_SHOWN {
        return name.to_owned();
    }
    let mut shown: String = name.chars().take(NAME_SHOWN - 1).collect();
    shown.push('…');
    shown
}

/// The status-bar line after `change` left queue `info` as it is.
pub fn change_notice(info: &QueueInfo, change: QueueChange) -> String {
    let QueueChange {
        limit,
        paused,
        stop_running,
    } = change;
    let mut parts = Vec::new();
    match limit {
        Some(Some(limit)) => parts.push(format!("at most {limit} running")),
        Some(None) => parts.push("no limit".to_owned()),
        None => {}
    }
    match paused {
        Some(true) if stop_running => {
            parts.push("paused; its running tasks were asked to stop and go back to it".to_owned());
        }
        Some(true) => parts.push("paused: none of its tasks starts until it is resumed".to_owned()),
        Some(false) => parts.push("resumed".to_owned()),
        None => {}
    }
    format!("Queue {}: {}", info.name, parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::backend::InProcess;
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

    fn names(panel: &QueuesPanel) -> Vec<&str> {
        panel.list().iter().map(|q| q.name.as_str()).collect()
    }

    #[test]
    fn reads_at_once_then_at_a_bounded_rate() {
        let scheduler = scheduler();
        let mut panel = QueuesPanel::default();
        let start = Instant::now();
        assert!(
            panel.refresh(&InProcess::new(scheduler.clone()), start, false),
            "the first call reads"
        );
        assert_eq!(names(&panel), ["default"]);
        scheduler
            .submit(TaskSpec::new("noop", vec![]).queue("render"))
            .expect("submit");
        assert!(!panel.refresh(
            &InProcess::new(scheduler.clone()),
            start + Duration::from_millis(100),
            true
        ));
        assert!(
            !panel.refresh(
                &InProcess::new(scheduler.clone()),
                start + Duration::from_millis(400),
                false
            ),
            "not yet"
        );
        assert!(
            panel.refresh(
                &InProcess::new(scheduler.clone()),
                start + REREAD_EVERY,
                false
            ),
            "events arrived since the read"
        );
        assert_eq!(names(&panel), ["default", "render"]);
        let read = start + REREAD_EVERY;
        assert!(
            !panel.refresh(
                &InProcess::new(scheduler.clone()),
                read + REREAD_EVERY,
                false
            ),
            "no events"
        );
        assert!(panel.refresh(
            &InProcess::new(scheduler.clone()),
            read + REREAD_IDLE,
            false
        ));
        scheduler.shutdown().expect("shutdown");
    }

    #[test]
    fn a_change_shows_at_once_and_the_default_queue_is_chosen_first() {
        let mut panel = QueuesPanel::default();
        let queue = |name: &str, limit| QueueInfo {
            name: name.to_owned(),
            limit,
            paused: false,
            counts: [0; TaskStatus::ALL.len()],
        };
        panel.updated(queue("render", None));
        assert_eq!(panel.chosen().map(|q| q.name.as_str()), Some("render"));
        panel.updated(queue("default", None));
        panel.updated(queue("batch", None));
        assert_eq!(names(&panel), ["batch", "default", "render"]);
        assert_eq!(panel.chosen().map(|q| q.name.as_str()), Some("default"));
        panel.updated(queue("render", Some(2)));
        assert_eq!(panel.get("render").and_then(|q| q.limit), Some(2));
        assert_eq!(panel.list().len(), 3);
        let text = change_notice(
            &queue("render", Some(2)),
            QueueChange {
                limit: Some(Some(2)),
                paused: Some(true),
                stop_running: true,
            },
        );
        assert_eq!(
            text,
            "Queue render: at most 2 running; paused; its running tasks were asked to stop \
             and go back to it"
        );
    }

    #[test]
    fn long_names_are_cut_in_the_list() {
        assert_eq!(shown_name("render"), "render");
        assert_eq!(shown_name(&"a".repeat(16)), "a".repeat(16));
        assert_eq!(shown_name(&"a".repeat(64)), format!("{}…", "a".repeat(15)));
    }

    #[test]
    fn counts_sum_waiting_and_finished_statuses() {
        let info = QueueInfo {
            name: "q".into(),
            limit: None,
            paused: false,
            counts: [1, 2, 3, 4, 5, 6],
        };
        assert_eq!(
            QueueCounts::of(&info),
            QueueCounts {
                waiting: 4,
                running: 2,
                finished: 15
            }
        );
    }
}
