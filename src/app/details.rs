//! The details of the selected task: why it waits, its dependencies and
//! dependents, its progress with a plot per metric and its live output
//! (of the attempt chosen), arguments, result or the error of every
//! attempt, the timeline and the worker. Task ids it names are links that
//! select that task (as an action).

use eframe::egui::{self, RichText, Ui};

use super::focus::{FocusInfo, Known, LISTED};
use super::live::{LiveAction, LiveDetails};
use super::state::Action;
use super::task_view::TaskView;
use super::theme::Theme;
use super::{log_view, metrics};
use crate::model::{OnDependencyFailure, TaskId, TaskRecord, TaskStatus, now_us};

/// A time as seconds ago.
fn ago(at_us: i64, now_us: i64) -> String {
    let secs = (now_us - at_us).max(0) as f64 / 1e6;
    if secs < 120.0 {
        format!("{secs:.1} s ago")
    } else {
        format!("{:.1} min ago", secs / 60.0)
    }
}

/// A start time relative to now: "in 1.5 min", or "passed 3.0 s ago".
fn until(at_us: i64, now_us: i64) -> String {
    if at_us <= now_us {
        return format!("passed {}", ago(at_us, now_us));
    }
    let secs = (at_us - now_us) as f64 / 1e6;
    if secs < 120.0 {
        format!("in {secs:.1} s")
    } else if secs < 7_200.0 {
        format!("in {:.1} min", secs / 60.0)
    } else {
        format!("in {:.1} h", secs / 3_600.0)
    }
}

fn duration(micros: Option<i64>) -> String {
    micros.map_or_else(|| "-".to_owned(), |us| format!("{:.3} s", us as f64 / 1e6))
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Lays out the details of `record`, or a hint when none is selected;
/// `view` and `focus` tell the status of the tasks it names, `live` holds
/// its progress history and output. Returns what the user asked for (a
/// click on a task id selects that task).
pub fn details_ui(
    ui: &mut Ui,
    record: Option<&TaskRecord>,
    view: &TaskView,
    (focus, live): (&FocusInfo, &LiveDetails),
    theme: Theme,
) -> Vec<Action> {
    let mut actions = Vec::new();
    ui.heading("Details");
    let Some(r) = record else {
        ui.label(RichText::new("Select one task to see its details.").color(theme.weak()));
        return actions;
    };
    let now = now_us();
    ui.horizontal(|ui| {
        ui.strong(format!("Task {} · {}", r.id, r.spec.name));
        ui.label(RichText::new(r.status.as_str()).color(theme.status(r.status)));
    });
    // What was read from the scheduler belongs to this task only once it
    // has been read for it (the frame the selection changes, it has not).
    let focus = focus.is_for(r.id).then_some(focus);
    if let Some(waiting) = focus.and_then(FocusInfo::waiting) {
        ui.label(RichText::new(format!("Waiting: {}", waiting.message(now))).color(theme.weak()))
            .on_hover_text(waiting.code());
    }
    if let Some(dependency) = r.cancelled_by {
        let known = |id| focus.map_or(Known::Unknown, |f| f.known(view, id));
        let first = focus.and_then(FocusInfo::first_cause).unwrap_or(dependency);
        cancelled_by_ui(ui, r, (dependency, first), known, theme, &mut actions);
    }
    dependencies_ui(ui, r, view, focus, theme, &mut actions);
    egui::Grid::new("details_grid")
        .num_columns(2)
        .show(ui, |ui| {
            ui.label("Queue");
            ui.label(r.spec.queue_name())
                .on_hover_text("Its queue's limit and pause apply to it");
            ui.end_row();
            ui.label("Priority");
            ui.label(r.spec.priority.to_string());
            ui.end_row();
            ui.label("Attempts");
            ui.label(format!(
                "{} of at most {}",
                r.attempts,
                r.spec.max_retries + 1
            ));
            ui.end_row();
            ui.label("Timeout");
            ui.label(r.spec.timeout_ms.map_or_else(
                || "none".to_owned(),
                |ms| format!("{:.3} s", ms as f64 / 1000.0),
            ));
            ui.end_row();
            if let Some(at_us) = r.spec.not_before_us {
                ui.label("Not before");
                ui.label(until(at_us, now));
                ui.end_row();
            }
            ui.label("Worker");
            ui.label(r.worker.as_deref().unwrap_or("-"));
            ui.end_row();
            if r.spec.gpus > 0 {
                ui.label("GPUs");
                let ids: Vec<String> = r.gpu_ids.iter().map(u32::to_string).collect();
                let peak = r
                    .log
                    .as_ref()
                    .and_then(|log| log.gpu_peak_memory_mb)
                    .map(|mb| format!(", peak {mb} MB"))
                    .unwrap_or_default();
                let asked = r
                    .spec
                    .gpu_memory_mb
                    .map(|mb| {
                        if r.spec.gpus == 1 {
                            format!(", a {mb} MB share")
                        } else {
                            format!(", {mb} MB each")
                        }
                    })
                    .unwrap_or_default();
                ui.label(if ids.is_empty() {
                    format!("{} asked for{asked}, none assigned yet", r.spec.gpus)
                } else {
                    format!("device {}{asked}{peak}", ids.join(", "))
                });
                ui.end_row();
            }
            ui.label("Submitted");
            ui.label(ago(r.submitted_at_us, now));
            ui.end_row();
            ui.label("Started");
            ui.label(
                r.started_at_us
                    .map_or_else(|| "-".to_owned(), |at| ago(at, now)),
            );
            ui.end_row();
            ui.label("Finished");
            ui.label(
                r.finished_at_us
                    .map_or_else(|| "-".to_owned(), |at| ago(at, now)),
            );
            ui.end_row();
            ui.label("Queue wait");
            ui.label(duration(r.queue_wait_us()));
            ui.end_row();
            ui.label("Run time");
            ui.label(duration(r.run_time_us()));
            ui.end_row();
            ui.label("Total");
            ui.label(duration(r.total_latency_us()));
            ui.end_row();
        });
    ui.separator();
    egui::ScrollArea::vertical()
        .id_salt("details_scroll")
        .show(ui, |ui| {
            attempt_ui(ui, r, live, &mut actions);
            metrics::progress_ui(ui, r, live, now, theme);
            actions.extend(log_view::log_ui(ui, r, live, theme));
            ui.separator();
            ui.label("Arguments");
            let args = serde_json::json!({ "args": r.spec.args, "kwargs": r.spec.kwargs });
            ui.code(pretty(&args));
            if let Some(result) = &r.result {
                ui.label("Result");
                ui.code(pretty(result));
            }
            if let Some(error) = &r.error {
                ui.label(RichText::new(format!("Error: {error}")).color(theme.error()));
            }
            if !r.failures.is_empty() {
                ui.label("Failed attempts");
                for failure in &r.failures {
                    ui.label(
                        RichText::new(format!(
                            "#{} {:?} on {}: {}",
                            failure.attempt,
                            failure.kind,
                            failure.worker.as_deref().unwrap_or("-"),
                            failure.message
                        ))
                        .color(theme.error()),
                    );
                }
            }
        });
    actions
}

/// Which attempt the progress and output are of, when there were several:
/// the latest (also when another starts) or one chosen.
fn attempt_ui(ui: &mut Ui, r: &TaskRecord, live: &LiveDetails, actions: &mut Vec<Action>) {
    if r.attempts < 2 || !live.is_for(r.id) {
        return;
    }
    let chosen = live.chosen().filter(|attempt| *attempt <= r.attempts);
    let mut choice = chosen;
    egui::ComboBox::from_label("Attempt")
        .selected_text(match chosen {
            Some(attempt) => format!("{attempt} of {}", r.attempts),
            None => format!("latest ({})", r.attempts),
        })
        .show_ui(ui, |ui| {
            ui.selectable_value(&mut choice, None, "latest");
            for attempt in (1..=r.attempts).rev() {
                ui.selectable_value(&mut choice, Some(attempt), format!("attempt {attempt}"));
            }
        });
    if choice != chosen {
        actions.push(Action::Live(LiveAction::ChooseAttempt(choice)));
    }
}

/// "Cancelled because task N failed", with N a link; where the chain of
/// cancellations started when that is another task; and a retry of that
/// first task with its dependents while it is still failed or cancelled.
fn cancelled_by_ui(
    ui: &mut Ui,
    r: &TaskRecord,
    (dependency, first): (TaskId, TaskId),
    known: impl Fn(TaskId) -> Known,
    theme: Theme,
    actions: &mut Vec<Action>,
) {
    let how = match known(dependency) {
        Known::Status(TaskStatus::Failed) => "failed".to_owned(),
        Known::Status(TaskStatus::Cancelled) => "was cancelled".to_owned(),
        Known::Status(status) => format!("did not complete (it is {status} now)"),
        Known::Gone | Known::Unknown => "failed or was cancelled".to_owned(),
    };
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing.x = 4.0;
        ui.label(RichText::new("Cancelled because").color(theme.error()));
        if ui
            .link(format!("task {dependency}"))
            .on_hover_text("Select it")
            .clicked()
        {
            actions.push(Action::Show(dependency));
        }
        ui.label(RichText::new(how).color(theme.error()));
    });
    if first != dependency {
        ui.horizontal_wrapped(|ui| {
            ui.spacing_mut().item_spacing.x = 4.0;
            ui.label("The cancellations started at");
            if ui
                .link(format!("task {first}"))
                .on_hover_text("Select it")
                .clicked()
            {
                actions.push(Action::Show(first));
            }
        });
    }
    let retryable = matches!(
        known(first),
        Known::Status(TaskStatus::Failed | TaskStatus::Cancelled)
    );
    if r.status == TaskStatus::Cancelled
        && retryable
        && ui
            .button(format!("Retry task {first} with dependents"))
            .on_hover_text(format!(
                "Queues task {first} again, and this task and the others its end cancelled"
            ))
            .clicked()
    {
        actions.push(Action::RetryWithDependents(vec![first]));
    }
}

/// "Depends on" and "Dependents": task links with their status, and the
/// policy when the task runs even if a dependency fails.
fn dependencies_ui(
    ui: &mut Ui,
    r: &TaskRecord,
    view: &TaskView,
    focus: Option<&FocusInfo>,
    theme: Theme,
    actions: &mut Vec<Action>,
) {
    let known = |id: TaskId| focus.map_or(Known::Unknown, |f| f.known(view, id));
    if !r.spec.depends_on.is_empty() {
        let listed: Vec<TaskId> = r.spec.dependency_ids().take(LISTED).collect();
        let total = r.spec.depends_on.len();
        task_links_ui(ui, "Depends on", &listed, total, known, theme, actions);
        if r.spec.on_dependency_failure == OnDependencyFailure::Run {
            ui.label("If a dependency fails: this task runs anyway")
                .on_hover_text("It starts once every dependency has finished, however it ended");
        }
    }
    let dependents = focus.map_or(&[][..], FocusInfo::dependents);
    if !dependents.is_empty() {
        let listed = dependents.get(..LISTED).unwrap_or(dependents);
        task_links_ui(
            ui,
            "Dependents",
            listed,
            dependents.len(),
            known,
            theme,
            actions,
        );
    }
}

/// A title and task ids as links, each with its status when known, and how
/// many more there are than `listed`.
fn task_links_ui(
    ui: &mut Ui,
    title: &str,
    listed: &[TaskId],
    total: usize,
    known: impl Fn(TaskId) -> Known,
    theme: Theme,
    actions: &mut Vec<Action>,
) {
    ui.horizontal_wrapped(|ui| {
        ui.label(format!("{title}:"));
        for (position, id) in listed.iter().enumerate() {
            if ui
                .link(format!("task {id}"))
                .on_hover_text("Select it")
                .clicked()
            {
                actions.push(Action::Show(*id));
            }
            let comma = if position + 1 < listed.len() { "," } else { "" };
            let status = match known(*id) {
                Known::Status(status) => {
                    Some(RichText::new(format!("{status}{comma}")).color(theme.status(status)))
                }
                Known::Gone => Some(
                    RichText::new(format!("no longer in the history{comma}")).color(theme.weak()),
                ),
                Known::Unknown if comma.is_empty() => None,
                Known::Unknown => Some(RichText::new(comma)),
            };
            if let Some(status) = status {
                ui.label(status);
            }
        }
        if total > listed.len() {
            ui.label(
                RichText::new(format!("and {} more", total - listed.len())).color(theme.weak()),
            );
        }
    });
}
