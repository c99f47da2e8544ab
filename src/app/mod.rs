//! The desktop window (eframe/egui): resource history, workers, named
//! queues, the task table with its actions, progress and why its waiting
//! tasks wait, task details (with metric plots and the live output log)
//! and the create form.
//!
//! Only this module uses egui, eframe, egui_plot and egui_extras. It reads
//! the scheduler through one seam, [`Backend`] (`InProcess` wraps the
//! scheduler's public handle), keeps its own view of the tasks from the
//! backend's events, and applies the actions its panels return once per
//! frame as backend commands.
//! The UI thread never waits: `logic` takes events within a small budget,
//! `ui` only lays out. Core threads wake it through a waker closure.

mod backend;
mod create;
mod details;
mod focus;
mod header;
mod live;
mod log_reader;
mod log_tail;
mod log_view;
mod metrics;
mod progress;
mod queues;
mod recent;
pub mod resources;
mod state;
mod task_view;
mod tasks;
#[cfg(test)]
mod tests;
pub mod theme;
mod waiting;
mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use eframe::egui::{self, RichText, Ui};

pub use backend::{
    Backend, Command, Connection, ConnectionState, InProcess, Outcome, pause_and_stop_text,
    paused_text, queued_text, report,
};
pub use create::CreateForm;
pub use log_reader::{LogReader, LogSource, READ_BYTES, ReadOutcome, read_start};
pub use state::{Action, AppState, Notice, Services};
pub use task_view::{SelectMode, SortColumn, TaskView, ViewSettings};
#[cfg(test)]
pub(crate) use workers::FIXED_POOL;

use resources::ResourcesPanel;
use theme::Theme;

/// How often the window repaints when nothing happens (clocks, plots).
const IDLE_REPAINT: Duration = Duration::from_secs(1);
/// The window's size when it first opens (every table column fits).
const WINDOW_SIZE: [f32; 2] = [1500.0, 860.0];
/// Key of the persisted view settings.
const STORAGE_KEY: &str = "taskdeck-view";

/// What the window remembers between runs (besides its size and panel
/// layout, which eframe keeps).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Persisted {
    view: ViewSettings,
    resources: ResourcesPanel,
}

/// The window's app: state plus frame logic.
pub struct TaskdeckApp {
    state: AppState,
    close_requested: Arc<AtomicBool>,
}

impl TaskdeckApp {
    /// Builds the app; `storage` brings back the last view settings, and
    /// `ctx`, when given, is woken by scheduler events.
    pub fn new(
        services: Services,
        storage: Option<&dyn eframe::Storage>,
        ctx: Option<&egui::Context>,
    ) -> Self {
        let persisted: Persisted = storage
            .and_then(|s| eframe::get_value(s, STORAGE_KEY))
            .unwrap_or_default();
        let wake_pending = Arc::new(AtomicBool::new(false));
        let waker = ctx.map(|ctx| {
            let pending = Arc::clone(&wake_pending);
            let ctx = ctx.clone();
            Arc::new(move || {
                // One repaint request per frame, however many events come.
                if !pending.swap(true, Ordering::AcqRel) {
                    ctx.request_repaint();
                }
            }) as crate::scheduler::Waker
        });
        Self {
            state: AppState::new(
                services,
                persisted.view,
                persisted.resources,
                waker,
                wake_pending,
            ),
            close_requested: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The state, for tests and the program.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The state, mutable, for tests.
    pub fn state_mut(&mut self) -> &mut AppState {
        &mut self.state
    }

    /// A flag that closes the window gracefully when set (Ctrl-C, SIGTERM).
    pub fn close_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.close_requested)
    }

    /// Frame logic: takes events and samples, schedules the next repaint.
    pub fn step(&mut self, ctx: &egui::Context) {
        if self.close_requested.load(Ordering::Acquire) {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        let now = Instant::now();
        self.state.receive(now);
        if self.state.more_pending() {
            ctx.request_repaint();
        } else {
            ctx.request_repaint_after(IDLE_REPAINT);
        }
        if let Some(due_in) = self.state.live_due_in(now) {
            // The focused task's log is read again then.
            ctx.request_repaint_after(due_in);
        }
    }

    /// Lays out the whole window and applies what the panels asked for.
    pub fn show(&mut self, ui: &mut Ui) {
        let theme = Theme::new(ui.visuals().dark_mode);
        let mut actions = Vec::new();
        let state = &mut self.state;
        egui::Panel::top("header").show(ui, |ui| header::header_ui(ui, state, theme));
        egui::Panel::bottom("status").show(ui, |ui| {
            ui.horizontal(|ui| match &state.notice {
                Some(notice) => {
                    let colour = if notice.error {
                        theme.error()
                    } else {
                        theme.success()
                    };
                    ui.label(RichText::new(&notice.text).color(colour));
                }
                None => {
                    ui.label(RichText::new("Ready").color(theme.weak()));
                }
            });
        });
        egui::Panel::left("monitor")
            .default_size(380.0)
            .resizable(true)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("monitor_scroll")
                    .show(ui, |ui| {
                        let now_us = state.now_us();
                        let markers = state.markers.make_contiguous();
                        state.resources.ui(ui, &state.history, markers, now_us);
                        ui.separator();
                        actions.extend(workers::workers_ui(ui, state, theme));
                        ui.separator();
                        actions.extend(state.queues.ui(ui, theme));
                        ui.separator();
                        actions.extend(recent::recent_ui(ui, state, theme));
                    });
            });
        egui::Panel::right("details")
            .default_size(320.0)
            .resizable(true)
            .show(ui, |ui| {
                let focused = state.focused().and_then(|id| state.tasks.get(id));
                actions.extend(details::details_ui(
                    ui,
                    focused,
                    &state.tasks,
                    (state.focus(), state.live()),
                    theme,
                ));
            });
        let reveal = state.take_reveal();
        let mut shown_waiting = Vec::new();
        egui::CentralPanel::default().show(ui, |ui| {
            actions.extend(tasks::tasks_ui(
                ui,
                state,
                reveal,
                theme,
                &mut shown_waiting,
            ));
        });
        actions.extend(state.create_ui(ui, theme));
        self.state.apply(actions);
        if let Some(due_in) = self.state.shown_waiting(shown_waiting, Instant::now()) {
            // Rows newly shown or changed get their reasons without waiting
            // for input or the idle repaint.
            ui.ctx().request_repaint_after(due_in);
        }
    }
}

impl eframe::App for TaskdeckApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.step(ctx);
    }

    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        let persisted = Persisted {
            view: self.state.tasks.settings().clone(),
            resources: self.state.resources.clone(),
        };
        eframe::set_value(storage, STORAGE_KEY, &persisted);
    }
}

/// Why the window could not run.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the window: {0} (on a machine without a display, use `taskdeck serve`)")]
pub struct WindowError(String);

/// Opens the window and runs until it is closed or `close` is set (a stop
/// signal); the caller then shuts the scheduler down.
pub fn run(services: Services, close: Arc<AtomicBool>) -> Result<(), WindowError> {
    let mut viewport = egui::ViewportBuilder::default()
        .with_title("Taskdeck")
        .with_app_id("taskdeck")
        .with_inner_size(WINDOW_SIZE)
        .with_min_inner_size([800.0, 500.0]);
    match eframe::icon_data::from_png_bytes(include_bytes!("../../assets/icon.png")) {
        Ok(icon) => viewport = viewport.with_icon(icon),
        Err(error) => tracing::warn!(%error, "the app icon could not be read"),
    }
    let options = eframe::NativeOptions {
        viewport,
        persist_window: true,
        ..eframe::NativeOptions::default()
    };
    eframe::run_native(
        "Taskdeck",
        options,
        Box::new(move |cc| {
            let mut app = TaskdeckApp::new(services, cc.storage, Some(&cc.egui_ctx));
            app.close_requested = close;
            Ok(Box::new(app))
        }),
    )
    .map_err(|error| WindowError(error.to_string()))
}
