//! The status bar at the top: queue, running, finished counts, throughput,
//! latency, the HTTP address, the broker connection, the database's write
//! status, the data directory, and the connection of a window attached
//! to a remote server.

use eframe::egui::{RichText, Ui};

use super::backend::{Connection, ConnectionState};
use super::state::AppState;
use super::theme::Theme;
use crate::model::TaskStatus;

fn ms(us: u64) -> String {
    super::tasks::duration_text(i64::try_from(us).unwrap_or(i64::MAX))
}

/// The remote server and where the window stands with it.
fn connection_ui(ui: &mut Ui, connection: &Connection, theme: Theme) {
    let (text, colour, hover) = match &connection.state {
        ConnectionState::Connecting => (
            format!("Connecting to {}", connection.url),
            theme.weak(),
            "The first connection is being made".to_owned(),
        ),
        ConnectionState::Connected => (
            format!("Connected to {}", connection.url),
            theme.success(),
            "Tasks, workers, queues and resources follow the server's event stream".to_owned(),
        ),
        ConnectionState::Reconnecting { reason, tries } => (
            format!("Reconnecting to {}: {reason}", connection.url),
            theme.error(),
            format!(
                "Tried {tries} time(s); trying again by itself. \
                 What is shown is as it was when the connection broke"
            ),
        ),
    };
    ui.label(RichText::new(text).color(colour))
        .on_hover_text(hover);
}

/// Lays out the header; it changes nothing.
pub fn header_ui(ui: &mut Ui, state: &AppState, theme: Theme) {
    let stats = &state.stats;
    let counts = &stats.counts;
    ui.horizontal_wrapped(|ui| {
        ui.strong("Taskdeck");
        ui.separator();
        let count = |ui: &mut Ui, label: &str, n: usize, status: TaskStatus| {
            ui.label(RichText::new(format!("{label} {n}")).color(theme.status(status)));
        };
        // Counted by status: the ready queue leaves out tasks that wait for
        // dependencies (they show as queued in the table all the same).
        let waiting = counts.queued + counts.retrying;
        ui.label(
            RichText::new(format!("Queued {waiting}")).color(theme.status(TaskStatus::Queued)),
        )
        .on_hover_text(
            "Queued and retrying tasks, including those held, not yet due \
             or waiting for dependencies",
        );
        count(ui, "Running", counts.running, TaskStatus::Running);
        count(ui, "Completed", counts.completed, TaskStatus::Completed);
        count(ui, "Failed", counts.failed, TaskStatus::Failed);
        ui.separator();
        ui.label(format!("{:.1} tasks/s", stats.metrics.throughput_per_s))
            .on_hover_text("Tasks finished per second over the last minute");
        let latency = &stats.metrics.total_latency;
        ui.label(format!(
            "p50 {} · p95 {}",
            ms(latency.p50_us),
            ms(latency.p95_us)
        ))
        .on_hover_text("Submission-to-completion latency of finished tasks");
        ui.separator();
        let services = state.services();
        if let Some(connection) = services.backend.connection() {
            connection_ui(ui, &connection, theme);
            ui.separator();
        }
        match &services.http_url {
            Some(url) => {
                ui.label("API");
                ui.code(url.as_str())
                    .on_hover_text("Point HTTP clients and the Python client here");
            }
            None => {
                ui.label(RichText::new("API off").color(theme.weak()));
            }
        }
        if stats.paused {
            ui.separator();
            ui.label(RichText::new("Paused").color(theme.error()))
                .on_hover_text("No task starts until the scheduler is resumed; running ones go on");
        }
        match &state.broker {
            None => {}
            Some(Ok(())) => {
                ui.separator();
                ui.label(RichText::new("Broker connected").color(theme.success()))
                    .on_hover_text("Tasks go through RabbitMQ to worker processes");
            }
            Some(Err(error)) => {
                ui.separator();
                ui.label(RichText::new("Broker unavailable").color(theme.error()))
                    .on_hover_text(format!("{error}\nSubmits are refused until it is back"));
            }
        }
        if let Some(storage) = state.storage.as_ref().filter(|storage| !storage.is_ok()) {
            ui.separator();
            let label = if storage.full {
                "Disk full: new tasks refused"
            } else {
                "Database not writable: new tasks refused"
            };
            ui.label(RichText::new(label).color(theme.error()))
                .on_hover_text(format!(
                    "{}\n{} task changes wait in memory and are written once there is room; \
                     Taskdeck resumes by itself",
                    storage
                        .error
                        .as_deref()
                        .unwrap_or("writing to the task database failed"),
                    storage.pending_updates
                ));
        }
        if let Some(dir) = &services.data_dir {
            ui.separator();
            ui.label(RichText::new(format!("Data {}", dir.display())).color(theme.weak()));
        }
    });
}
