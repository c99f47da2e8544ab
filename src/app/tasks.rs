//! The task table with its toolbar: create, remove, stop, retry, hold,
//! pause, clear, filters by status, queue and text, sortable columns,
//! why each waiting task waits, how far each running task is, and
//! selection by task id.

use eframe::egui::{self, Key, Label, RichText, Sense, Ui};
use egui_extras::{Column, TableBuilder};

use super::progress;
use super::state::{Action, AppState};
use super::task_view::{SelectMode, SortColumn, ViewSettings};
use super::theme::Theme;
use super::waiting::{ShownRow, WaitingRows, holds_back, short};
use crate::model::{TaskId, TaskRecord, TaskStatus};
use crate::scheduler::Waiting;

/// Height of one table row.
const ROW_HEIGHT: f32 = 20.0;
/// Space between two columns (tighter than egui's default, so that every
/// column fits the default window).
const COLUMN_GAP: f32 = 4.0;
/// Space left and right of a column title (tighter than a button's, so
/// that no title is cut short).
pub(super) const HEADER_PADDING: f32 = 2.0;
/// Title of the column that says why a waiting task waits.
const WHY: &str = "Why";
/// Title of the arguments column (short, so that it shows whole).
const ARGS: &str = "Args";
/// Width of the Tries column: its title with the sort arrow fits whole.
const TRIES_WIDTH: f32 = 50.0;
/// Title of the column that says how far a task is.
const PROGRESS: &str = "Progress";

fn duration(micros: Option<i64>) -> String {
    micros.map_or_else(String::new, duration_text)
}

/// A duration in the unit that reads best: µs, ms, s, then minutes and
/// hours (`850 µs`, `12.5 ms`, `3.20 s`, `2 min 05 s`, `1 h 04 min`). The
/// header's latencies use it too, so the window speaks one language.
pub(super) fn duration_text(micros: i64) -> String {
    let us = micros.max(0);
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        1_000_000..60_000_000 => format!("{:.2} s", us as f64 / 1e6),
        _ => {
            let secs = us / 1_000_000;
            if secs < 3600 {
                format!("{} min {:02} s", secs / 60, secs % 60)
            } else {
                format!("{} h {:02} min", secs / 3600, secs % 3600 / 60)
            }
        }
    }
}

/// What the Run column says: the latest attempt's duration once it ended,
/// and while it runs how long it has run so far (it ticks with the clock);
/// the flag is true for a running attempt.
pub(super) fn run_text(record: &TaskRecord, now_us: i64) -> Option<(String, bool)> {
    if record.status == TaskStatus::Running {
        let started = record.started_at_us?;
        return Some((duration_text(now_us - started), true));
    }
    record.run_time_us().map(|us| (duration_text(us), false))
}

pub(super) fn ago(at_us: i64, now_us: i64) -> String {
    let secs = (now_us - at_us).max(0) / 1_000_000;
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        _ => format!("{} h ago", secs / 3600),
    }
}

/// Lays out the toolbar and the table, scrolled to `reveal` when given;
/// returns the actions asked for, and adds to `shown_waiting` the waiting
/// rows laid out (whose reasons the window reads next).
pub fn tasks_ui(
    ui: &mut Ui,
    state: &AppState,
    reveal: Option<TaskId>,
    theme: Theme,
    shown_waiting: &mut Vec<ShownRow>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    toolbar_ui(ui, state, &mut actions);
    ui.separator();
    table_ui(ui, state, reveal, theme, &mut actions, shown_waiting);
    actions
}

fn toolbar_ui(ui: &mut Ui, state: &AppState, actions: &mut Vec<Action>) {
    let removable = state.removable();
    let stoppable = state.stoppable();
    let retryable = state.retryable();
    let holdable = state.holdable();
    let releasable = state.releasable();
    ui.horizontal_wrapped(|ui| {
        if ui.button("Create task").clicked() {
            actions.push(Action::OpenCreate);
        }
        if ui.button("Random mock task").clicked() {
            actions.push(Action::SubmitRandom(1));
        }
        if ui.button("Add 5 random").clicked() {
            actions.push(Action::SubmitRandom(5));
        }
        ui.separator();
        if ui
            .add_enabled(
                !removable.is_empty(),
                egui::Button::new("Remove from queue"),
            )
            .on_disabled_hover_text("Select queued or retrying tasks to remove them")
            .clicked()
        {
            actions.push(Action::Remove(removable.clone()));
        }
        if ui
            .add_enabled(!stoppable.is_empty(), egui::Button::new("Stop"))
            .on_disabled_hover_text("Select running tasks to stop them")
            .clicked()
        {
            actions.push(Action::Stop(stoppable));
        }
        if ui
            .add_enabled(!retryable.is_empty(), egui::Button::new("Retry"))
            .on_hover_text(
                "Refused for a task whose dependency failed: retry that one with its dependents",
            )
            .on_disabled_hover_text("Select failed or cancelled tasks to retry them")
            .clicked()
        {
            actions.push(Action::Retry(retryable.clone()));
        }
        if ui
            .add_enabled(
                !retryable.is_empty(),
                egui::Button::new("Retry with dependents"),
            )
            .on_hover_text(
                "Also queues again the tasks that depend on them and were cancelled by their end",
            )
            .on_disabled_hover_text("Select failed or cancelled tasks to retry them")
            .clicked()
        {
            actions.push(Action::RetryWithDependents(retryable));
        }
        if ui
            .add_enabled(!holdable.is_empty(), egui::Button::new("Hold"))
            .on_hover_text("Held tasks keep their place but do not start until released")
            .on_disabled_hover_text("Select queued or retrying tasks to hold them")
            .clicked()
        {
            actions.push(Action::Hold(holdable));
        }
        if ui
            .add_enabled(!releasable.is_empty(), egui::Button::new("Release"))
            .on_disabled_hover_text("Select held tasks to release them")
            .clicked()
        {
            actions.push(Action::Release(releasable));
        }
        pause_ui(ui, state, actions);
        if ui
            .button("Clear finished")
            .on_hover_text("Remove finished tasks from this table (their history stays)")
            .clicked()
        {
            actions.push(Action::ClearFinished);
        }
        ui.separator();
        let mut settings = state.tasks.settings().clone();
        egui::ComboBox::from_label("Status")
            .selected_text(settings.status.map_or("All statuses", TaskStatus::as_str))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut settings.status, None, "All statuses");
                for status in TaskStatus::ALL {
                    ui.selectable_value(&mut settings.status, Some(status), status.as_str());
                }
            });
        egui::ComboBox::from_label("Queue")
            .selected_text(settings.queue.as_deref().unwrap_or("All queues"))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut settings.queue, None, "All queues");
                for queue in state.queues.list() {
                    let name = Some(queue.name.clone());
                    ui.selectable_value(&mut settings.queue, name, queue.name.as_str());
                }
            });
        let filter = ui.label("Filter");
        ui.add(
            egui::TextEdit::singleline(&mut settings.text)
                .hint_text("name, argument or id")
                .desired_width(180.0),
        )
        .labelled_by(filter.id);
        if &settings != state.tasks.settings() {
            actions.push(Action::SetView(settings));
        }
        // Kept on one line: a count broken after "of" reads as two.
        ui.add(
            Label::new(format!(
                "{} of {} tasks",
                state.tasks.order().len(),
                state.tasks.len()
            ))
            .wrap_mode(egui::TextWrapMode::Extend),
        );
    });
    let typing = ui.ctx().egui_wants_keyboard_input();
    if !typing && !removable.is_empty() && ui.input(|i| i.key_pressed(Key::Delete)) {
        actions.push(Action::Remove(removable));
    }
}

/// The scheduler's Pause or Resume, and "Pause and stop running", which
/// also puts the running tasks back in the queue.
fn pause_ui(ui: &mut Ui, state: &AppState, actions: &mut Vec<Action>) {
    let paused = state.stats.paused;
    if ui
        .button(if paused { "Resume" } else { "Pause" })
        .on_hover_text(if paused {
            "Let queued tasks start again"
        } else {
            "No task starts until resumed; running tasks go on"
        })
        .clicked()
    {
        actions.push(Action::SetPaused(!paused));
    }
    let running = state.stats.counts.running;
    if ui
        .add_enabled(
            !paused || running > 0,
            egui::Button::new("Pause and stop running"),
        )
        .on_hover_text(
            "Pause, and ask the running tasks to stop: they go back to the queue without \
             counting an attempt and start again after the resume",
        )
        .on_disabled_hover_text("Paused, and no task runs")
        .clicked()
    {
        actions.push(Action::PauseAndStop);
    }
}

/// Column titles and the sort key each stands for.
pub(super) const COLUMNS: [(&str, Option<SortColumn>); 14] = [
    ("ID", Some(SortColumn::Id)),
    ("Task", Some(SortColumn::Name)),
    (ARGS, None),
    ("Pri", Some(SortColumn::Priority)),
    ("Status", Some(SortColumn::Status)),
    (WHY, None),
    (PROGRESS, None),
    ("Queue", Some(SortColumn::Queue)),
    ("Tries", Some(SortColumn::Attempts)),
    ("Worker", Some(SortColumn::Worker)),
    ("Submitted", Some(SortColumn::Submitted)),
    ("Wait", Some(SortColumn::QueueWait)),
    ("Run", Some(SortColumn::RunTime)),
    ("Total", Some(SortColumn::Total)),
];

fn table_ui(
    ui: &mut Ui,
    state: &AppState,
    reveal: Option<TaskId>,
    theme: Theme,
    actions: &mut Vec<Action>,
    shown_waiting: &mut Vec<ShownRow>,
) {
    let view = &state.tasks;
    let waiting = state.waiting_rows();
    let settings = view.settings().clone();
    let now_us = state.now_us();
    let modifiers = ui.input(|i| i.modifiers);
    let mode = if modifiers.shift {
        SelectMode::Range
    } else if modifiers.command {
        SelectMode::Toggle
    } else {
        SelectMode::Only
    };
    // The table is the last thing in its panel: the narrower gap ends with it.
    ui.spacing_mut().item_spacing.x = COLUMN_GAP;
    let mut table = TableBuilder::new(ui);
    if let Some(row) = reveal.and_then(|id| view.order().iter().position(|o| *o == id)) {
        table = table.scroll_to_row(row, Some(egui::Align::Center));
    }
    table
        .id_salt("task_table")
        .striped(true)
        .sense(Sense::click())
        .cell_layout(egui::Layout::left_to_right(egui::Align::Center))
        .column(Column::exact(54.0))
        .column(Column::initial(96.0).at_least(56.0).clip(true))
        .column(Column::remainder().at_least(44.0).clip(true))
        .column(Column::exact(29.0))
        .column(Column::exact(81.0))
        .column(Column::initial(70.0).at_least(56.0).clip(true))
        .column(Column::initial(104.0).at_least(60.0).clip(true))
        .column(Column::initial(50.0).at_least(40.0).clip(true))
        .column(Column::exact(TRIES_WIDTH))
        .column(Column::initial(54.0).clip(true))
        .column(Column::initial(70.0))
        .column(Column::initial(52.0))
        .column(Column::initial(52.0))
        .column(Column::initial(52.0))
        .header(ROW_HEIGHT, |mut header| {
            for (title, column) in COLUMNS {
                header.col(|ui| {
                    ui.spacing_mut().button_padding.x = HEADER_PADDING;
                    let Some(column) = column else {
                        let hint = match title {
                            WHY => Some(
                                "Why a queued or retrying task has not started yet; \
                                 hover a reason for the whole of it",
                            ),
                            ARGS => Some("Arguments: positional, then keyword ones"),
                            PROGRESS => Some(
                                "How far a task is and the time left, as it reports; \
                                 how long it has run when it reports nothing",
                            ),
                            _ => None,
                        };
                        let header = ui.strong(title);
                        if let Some(hint) = hint {
                            header.on_hover_text(hint);
                        }
                        return;
                    };
                    let active = settings.sort == column;
                    let arrow = match (active, settings.ascending) {
                        (false, _) => "",
                        (true, true) => " ^",
                        (true, false) => " v",
                    };
                    if ui
                        .selectable_label(active, format!("{title}{arrow}"))
                        .clicked()
                    {
                        actions.push(Action::SetView(ViewSettings {
                            sort: column,
                            ascending: if active {
                                !settings.ascending
                            } else {
                                column != SortColumn::Id
                            },
                            ..settings.clone()
                        }));
                    }
                });
            }
        })
        .body(|body| {
            let order = view.order();
            body.rows(ROW_HEIGHT, order.len(), |mut row| {
                let Some(record) = order.get(row.index()).and_then(|id| view.get(*id)) else {
                    return;
                };
                row.set_selected(view.is_selected(record.id));
                // Only waiting rows have a reason; the window reads the
                // reasons of those laid out, after the frame.
                let reason = match WaitingRows::row_of(record) {
                    Some(shown) => {
                        shown_waiting.push(shown);
                        waiting.reason(record.id)
                    }
                    None => None,
                };
                row_cells(&mut row, record, reason, now_us, theme);
                if row.response().clicked() {
                    actions.push(Action::Select(record.id, mode));
                }
            });
        });
}

fn cell(row: &mut egui_extras::TableRow<'_, '_>, text: impl Into<egui::WidgetText>) {
    row.col(|ui| {
        ui.add(Label::new(text).selectable(false).truncate());
    });
}

/// Shows why a task waits when the cell under the pointer is hovered: the
/// sentence is made only then.
fn reason_on_hover(response: egui::Response, waiting: Option<&Waiting>, now_us: i64) {
    let Some(waiting) = waiting else {
        return;
    };
    response.on_hover_ui(|ui| {
        // Keeps the tooltip from shrinking to its first word.
        ui.set_max_width(ui.spacing().tooltip_width);
        ui.label(waiting.message(now_us));
    });
}

fn row_cells(
    row: &mut egui_extras::TableRow<'_, '_>,
    r: &TaskRecord,
    reason: Option<&Waiting>,
    now_us: i64,
    theme: Theme,
) {
    cell(row, format!("#{}", r.id));
    cell(row, r.spec.name.as_str());
    let mut args = serde_json::Value::Array(r.spec.args.clone()).to_string();
    if !r.spec.kwargs.is_empty() {
        args.push(' ');
        args.push_str(&serde_json::Value::Object(r.spec.kwargs.clone()).to_string());
    }
    cell(row, args);
    cell(row, r.spec.priority.to_string());
    let status = if r.held {
        format!("{} (held)", r.status.as_str())
    } else {
        r.status.as_str().to_owned()
    };
    row.col(|ui| {
        let text = RichText::new(status).color(theme.status(r.status));
        let label = ui.add(Label::new(text).selectable(false).truncate());
        reason_on_hover(label, reason, now_us);
    });
    row.col(|ui| {
        let Some(waiting) = reason else {
            return;
        };
        let colour = if holds_back(waiting) {
            theme.warning()
        } else {
            theme.weak()
        };
        let text = RichText::new(short(waiting, now_us)).color(colour);
        let label = Label::new(text)
            .selectable(false)
            .truncate()
            .show_tooltip_when_elided(false);
        reason_on_hover(ui.add(label), reason, now_us);
    });
    row.col(|ui| progress::cell_ui(ui, r, now_us, theme));
    cell(row, r.spec.queue_name());
    cell(row, r.attempts.to_string());
    cell(row, r.worker.as_deref().unwrap_or(""));
    cell(row, ago(r.submitted_at_us, now_us));
    cell(row, duration(r.queue_wait_us()));
    match run_text(r, now_us) {
        Some((text, true)) => cell(
            row,
            RichText::new(text).color(theme.status(TaskStatus::Running)),
        ),
        Some((text, false)) => cell(row, text),
        None => cell(row, ""),
    }
    cell(row, duration(r.total_latency_us()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskSpec;

    #[test]
    fn durations_read_in_the_unit_that_fits() {
        assert_eq!(duration_text(850), "850 µs");
        assert_eq!(duration_text(12_525_600 / 1000), "12.5 ms");
        assert_eq!(duration_text(12_525_600), "12.53 s");
        assert_eq!(duration_text(125_000_000), "2 min 05 s");
        assert_eq!(duration_text(3_840_000_000), "1 h 04 min");
        assert_eq!(duration_text(-5), "0 µs");
    }

    #[test]
    fn a_running_row_shows_how_long_it_has_run_and_ticks() {
        let mut record = TaskRecord::new(TaskId(1), TaskSpec::new("sleep", vec![]), 0);
        assert_eq!(run_text(&record, 10_000_000), None);
        record.status = TaskStatus::Running;
        record.started_at_us = Some(1_000_000);
        assert_eq!(
            run_text(&record, 3_500_000),
            Some(("2.50 s".to_owned(), true))
        );
        assert_eq!(
            run_text(&record, 4_500_000),
            Some(("3.50 s".to_owned(), true))
        );
        record.status = TaskStatus::Completed;
        record.finished_at_us = Some(1_250_000);
        assert_eq!(
            run_text(&record, 9_000_000),
            Some(("250.0 ms".to_owned(), false))
        );
    }
}
