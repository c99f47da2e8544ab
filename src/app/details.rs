//! The details of the selected task: arguments, result or the error of every
//! attempt, the timeline and the worker.

use eframe::egui::{self, RichText, Ui};

use super::theme::Theme;
use crate::model::{TaskRecord, now_us};
use crate::scheduler::Waiting;

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

/// Lays out the details of `record`, or a hint when none is selected.
pub fn details_ui(
    ui: &mut Ui,
    record: Option<&TaskRecord>,
    waiting: Option<Waiting>,
    theme: Theme,
) {
    ui.heading("Details");
    let Some(r) = record else {
        ui.label(RichText::new("Select one task to see its details.").color(theme.weak()));
        return;
    };
    let now = now_us();
    ui.horizontal(|ui| {
        ui.strong(format!("Task {} · {}", r.id, r.spec.name));
        ui.label(RichText::new(r.status.as_str()).color(theme.status(r.status)));
    });
    if let Some(waiting) = waiting {
        ui.label(RichText::new(format!("Waiting: {}", waiting.message(now))).color(theme.weak()))
            .on_hover_text(waiting.code());
    }
    egui::Grid::new("details_grid")
        .num_columns(2)
        .show(ui, |ui| {
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
                ui.label(if ids.is_empty() {
                    format!("{} asked for, none assigned yet", r.spec.gpus)
                } else {
                    format!("device {}{peak}", ids.join(", "))
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
            match &r.log {
                Some(log) => {
                    ui.label(format!(
                        "Output: {} ({} bytes{})",
                        log.path,
                        log.bytes,
                        if log.truncated {
                            ", cut at the limit"
                        } else {
                            ""
                        }
                    ))
                    .on_hover_text(
                        "stdout and stderr of the latest attempt, on the machine that ran it",
                    );
                    if log.tail.is_empty() {
                        ui.label(RichText::new("(no output)").color(theme.weak()));
                    } else {
                        ui.code(log.tail.as_str());
                    }
                }
                None => {
                    ui.label(RichText::new("Output: none recorded").color(theme.weak()))
                        .on_hover_text("Only command and python tasks write an output log");
                }
            }
        });
}
