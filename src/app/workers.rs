//! The workers panel: busy/idle/total, each worker's current task and tasks
//! run, and a control to change the pool size.

use eframe::egui::{self, RichText, Ui};

use super::state::{Action, AppState};
use super::theme::Theme;
use crate::model::TaskStatus;
use crate::scheduler::WorkerState;

/// Largest pool the control offers.
const MAX_WORKERS: usize = 256;

/// Lays out the panel; returns a resize when asked for.
pub fn workers_ui(ui: &mut Ui, state: &mut AppState, theme: Theme) -> Option<Action> {
    let stats = &state.stats;
    ui.heading("Workers");
    ui.label(format!(
        "{} busy · {} idle · {} total",
        stats.workers_busy, stats.workers_idle, stats.workers_total
    ));
    let mut action = None;
    ui.horizontal(|ui| {
        let label = ui.label("Pool size");
        ui.add(egui::DragValue::new(&mut state.worker_target).range(0..=MAX_WORKERS))
            .labelled_by(label.id);
        let changed = state.worker_target != stats.workers_target;
        if ui
            .add_enabled(changed, egui::Button::new("Apply"))
            .on_disabled_hover_text("Change the pool size first")
            .clicked()
        {
            action = Some(Action::SetWorkers(state.worker_target));
        }
    });
    egui::Grid::new("workers_grid")
        .num_columns(3)
        .striped(true)
        .show(ui, |ui| {
            for worker in &state.workers {
                ui.label(&worker.name);
                match (worker.state, worker.current_task) {
                    (WorkerState::Busy, Some(task)) => {
                        ui.label(
                            RichText::new(format!("task {task}"))
                                .color(theme.status(TaskStatus::Running)),
                        );
                    }
                    _ => {
                        ui.label(RichText::new("idle").color(theme.weak()));
                    }
                }
                ui.label(format!("{} run", worker.tasks_run))
                    .on_hover_text(format!("{} of them failed", worker.tasks_failed));
                ui.end_row();
            }
        });
    action
}
