//! The workers panel: busy/idle/total, each worker's current task and tasks
//! run, and a control to change the pool size.

use eframe::egui::{self, RichText, Ui};

use super::state::{Action, AppState};
use super::theme::Theme;
use crate::model::{GpuState, TaskStatus, percent};
use crate::scheduler::{WorkerInfo, WorkerKind, WorkerState};

/// Largest pool the control offers.
const MAX_WORKERS: usize = 256;

/// What the panel says instead of the pool size control when the backend
/// cannot resize the pool.
pub const FIXED_POOL: &str = "Pool sized where the server runs";
/// Why, on hover.
const FIXED_POOL_WHY: &str = "The API cannot resize a server's worker pool: \
     start `taskdeck serve --workers N` there with another size";

/// Lays out the panel; returns a resize when asked for.
pub fn workers_ui(ui: &mut Ui, state: &mut AppState, theme: Theme) -> Option<Action> {
    let stats = &state.stats;
    ui.heading("Workers");
    ui.label(format!(
        "{} busy · {} idle · {} total",
        stats.workers_busy, stats.workers_idle, stats.workers_total
    ));
    let mut action = None;
    if !state.services().backend.can_resize_workers() {
        ui.label(RichText::new(FIXED_POOL).color(theme.weak()))
            .on_hover_text(FIXED_POOL_WHY);
    } else {
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
    }
    egui::Grid::new("workers_grid")
        .num_columns(3)
        .striped(true)
        .show(ui, |ui| {
            for worker in &state.workers {
                worker_row_ui(ui, worker, theme);
                ui.end_row();
            }
        });
    action
}

/// One worker: its name (and host), what it runs, and its tally; a worker
/// process also shows its slots and its host's load.
fn worker_row_ui(ui: &mut Ui, worker: &WorkerInfo, theme: Theme) {
    let name = match &worker.host {
        Some(host) => format!("{} @ {host}", worker.name),
        None => worker.name.clone(),
    };
    ui.label(name);
    match worker.state {
        WorkerState::Busy => {
            let tasks: Vec<String> = worker.running.iter().map(|id| id.to_string()).collect();
            let text = if worker.kind == WorkerKind::Process {
                format!(
                    "{}/{} busy: task {}",
                    worker.running.len(),
                    worker.concurrency,
                    tasks.join(", ")
                )
            } else {
                format!("task {}", tasks.join(", "))
            };
            ui.label(RichText::new(text).color(theme.status(TaskStatus::Running)));
        }
        WorkerState::Idle if worker.kind == WorkerKind::Process => {
            ui.label(
                RichText::new(format!("idle, {} slots", worker.concurrency)).color(theme.weak()),
            );
        }
        WorkerState::Idle => {
            ui.label(RichText::new("idle").color(theme.weak()));
        }
        WorkerState::Silent => {
            ui.label(RichText::new("not heard from").color(theme.error()))
                .on_hover_text("No heartbeat for a lease period; its tasks run again elsewhere");
        }
        WorkerState::Stopped => {
            ui.label(RichText::new("stopped").color(theme.weak()));
        }
    }
    let tally = ui
        .label(format!("{} run", worker.tasks_run))
        .on_hover_text(format!("{} of them failed", worker.tasks_failed));
    if let Some(resources) = &worker.resources {
        let gpus = match &resources.gpus {
            GpuState::Available { devices } if !devices.is_empty() => devices
                .iter()
                .map(|gpu| format!("GPU {} {:.0} %", gpu.index, gpu.utilization_percent))
                .collect::<Vec<_>>()
                .join(", "),
            _ => "no GPU".to_owned(),
        };
        tally.on_hover_text(format!(
            "CPU {:.0} % of {} cores · RAM {:.0} % · {gpus}",
            resources.cpu_percent,
            resources.cpu_count,
            percent(resources.memory_used_bytes, resources.memory_total_bytes),
        ));
    }
}
