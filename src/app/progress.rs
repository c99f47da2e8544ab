//! Progress as short text (a percentage, the time left, a rate, a running
//! time) and as a slim bar, shared by the task table and the details.
//! The text functions are pure and take the current time, so tests pin it.

use eframe::egui::{self, Label, RichText, Ui};

use super::theme::Theme;
use crate::model::{Progress, TaskRecord, TaskStatus};

/// Microseconds in a second.
const SECOND_US: i64 = 1_000_000;

/// A fraction from 0 to 1 as a whole percentage, rounded down so that a
/// task that is not done never reads "100%".
pub fn percent(fraction: f64) -> String {
    let whole = (fraction.clamp(0.0, 1.0) * 100.0).floor();
    format!("{whole:.0}%")
}

/// A duration in seconds, compact: "12 s", "3m 12s", "1h 05m", "2d 3h".
pub fn compact(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..3_600 => format!("{}m {}s", secs / 60, secs % 60),
        3_600..86_400 => format!("{}h {:02}m", secs / 3_600, (secs % 3_600) / 60),
        _ => format!("{}d {}h", secs / 86_400, (secs % 86_400) / 3_600),
    }
}

/// The time left until the expected end `eta_at_us`:
///
/// - under a minute: "12 s left" (rounded up, so it never reads "0 s"
///   while time is left);
/// - longer: "ETA 3m 12s" (or hours and minutes);
/// - passed: "ETA passed" (the task is slower than its rate promised).
pub fn eta(eta_at_us: i64, now_us: i64) -> String {
    let left_us = eta_at_us - now_us;
    if left_us <= 0 {
        return "ETA passed".to_owned();
    }
    let secs = (left_us + SECOND_US - 1) / SECOND_US;
    if secs < 60 {
        format!("{secs} s left")
    } else {
        format!("ETA {}", compact(secs))
    }
}

/// A smoothed rate (fraction per second) as percent per second, minute or
/// hour, whichever reads best.
pub fn rate(rate_per_s: f64) -> String {
    let per_s = rate_per_s * 100.0;
    if per_s >= 1.0 {
        format!("{per_s:.1} %/s")
    } else if per_s * 60.0 >= 1.0 {
        format!("{:.1} %/min", per_s * 60.0)
    } else {
        format!("{:.2} %/h", per_s * 3_600.0)
    }
}

/// How long a running task has run, for tasks that report no progress.
pub fn elapsed(started_at_us: i64, now_us: i64) -> String {
    compact((now_us - started_at_us).max(0) / SECOND_US)
}

/// What the table's progress cell says about a task, when anything.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A fraction with, while it runs and one is known, the time left.
    Fraction {
        /// How far, 0 to 1.
        fraction: f64,
        /// "ETA 3m 12s", "12 s left".
        eta: Option<String>,
    },
    /// A running task that reports no fraction: how long it has run.
    Elapsed(String),
}

/// The progress cell of `record` at `now_us`:
///
/// - a reported fraction shows as a bar with its percentage, and while the
///   task runs, with the time left when an end is expected;
/// - a running task without a fraction shows how long it has run;
/// - anything else shows nothing.
pub fn cell(record: &TaskRecord, now_us: i64) -> Option<Cell> {
    let running = record.status == TaskStatus::Running;
    let fraction = record.progress.as_ref().and_then(|p| p.fraction);
    match (fraction, running) {
        (Some(fraction), _) => Some(Cell::Fraction {
            fraction,
            eta: running
                .then(|| record.progress.as_ref().and_then(|p| p.eta_at_us))
                .flatten()
                .map(|at| eta(at, now_us)),
        }),
        (None, true) => record
            .started_at_us
            .map(|at| Cell::Elapsed(elapsed(at, now_us))),
        (None, false) => None,
    }
}

/// A slim bar of `fraction`, `width` points wide.
pub fn bar_ui(ui: &mut Ui, fraction: f64, width: f32, theme: Theme) -> egui::Response {
    ui.add(
        egui::ProgressBar::new(fraction.clamp(0.0, 1.0) as f32)
            .desired_width(width)
            .desired_height(6.0)
            .fill(theme.progress())
            .animate(false),
    )
}

/// The table cell: a slim bar, the percentage and the time left, or the
/// running time. Nothing is selectable, so a click selects the row.
pub fn cell_ui(ui: &mut Ui, record: &TaskRecord, now_us: i64, theme: Theme) {
    match cell(record, now_us) {
        Some(Cell::Fraction { fraction, eta }) => {
            bar_ui(ui, fraction, 28.0, theme);
            ui.add(Label::new(percent(fraction)).selectable(false));
            if let Some(eta) = eta {
                ui.add(
                    Label::new(RichText::new(eta).color(theme.weak()))
                        .selectable(false)
                        .truncate(),
                );
            }
        }
        Some(Cell::Elapsed(text)) => {
            ui.add(
                Label::new(RichText::new(text).color(theme.weak()))
                    .selectable(false)
                    .truncate(),
            )
            .on_hover_text("Running for this long; the task reports no progress");
        }
        None => {}
    }
}

/// The progress line of the details: the bar with its percentage and the
/// message, then the rate and the time left.
pub fn details_ui(ui: &mut Ui, progress: &Progress, running: bool, now_us: i64, theme: Theme) {
    if let Some(fraction) = progress.fraction {
        ui.horizontal(|ui| {
            bar_ui(ui, fraction, 120.0, theme);
            ui.label(percent(fraction));
        });
    }
    if let Some(message) = &progress.message {
        ui.label(message.as_str());
    }
    let mut facts = Vec::new();
    if let Some(rate_per_s) = progress.rate_per_s.filter(|r| *r > 0.0) {
        facts.push(rate(rate_per_s));
    }
    if running && let Some(at) = progress.eta_at_us {
        facts.push(eta(at, now_us));
    }
    facts.push(format!(
        "updated {} ago",
        compact((now_us - progress.updated_at_us).max(0) / SECOND_US)
    ));
    ui.label(RichText::new(facts.join(" · ")).color(theme.weak()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TaskId, TaskSpec};

    #[test]
    fn the_time_left_reads_as_seconds_left_or_an_eta() {
        let now = 1_000 * SECOND_US;
        assert_eq!(eta(now + 12 * SECOND_US, now), "12 s left");
        assert_eq!(
            eta(now + 11 * SECOND_US + 1, now),
            "12 s left",
            "rounded up"
        );
        assert_eq!(eta(now + 192 * SECOND_US, now), "ETA 3m 12s");
        assert_eq!(eta(now + 3_900 * SECOND_US, now), "ETA 1h 05m");
        assert_eq!(eta(now, now), "ETA passed");
        assert_eq!(eta(now - SECOND_US, now), "ETA passed");
    }

    #[test]
    fn percentages_round_down_and_rates_pick_a_unit() {
        assert_eq!(percent(0.5), "50%");
        assert_eq!(percent(0.999), "99%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(1.5), "100%");
        assert_eq!(rate(0.02), "2.0 %/s");
        assert_eq!(rate(0.001), "6.0 %/min");
        assert_eq!(rate(0.000_01), "3.60 %/h");
        assert_eq!(compact(59), "59 s");
        assert_eq!(compact(2 * 86_400 + 3 * 3_600), "2d 3h");
    }

    #[test]
    fn the_cell_shows_a_fraction_the_running_time_or_nothing() {
        let now = 100 * SECOND_US;
        let mut record = TaskRecord::new(TaskId(1), TaskSpec::new("noop", vec![]), 0);
        assert_eq!(cell(&record, now), None, "queued: nothing");
        record.status = TaskStatus::Running;
        record.started_at_us = Some(now - 75 * SECOND_US);
        assert_eq!(cell(&record, now), Some(Cell::Elapsed("1m 15s".into())));
        record.progress = Some(Progress {
            fraction: Some(0.25),
            message: None,
            metrics: Default::default(),
            updated_at_us: now,
            rate_per_s: Some(0.01),
            eta_at_us: Some(now + 75 * SECOND_US),
        });
        assert_eq!(
            cell(&record, now),
            Some(Cell::Fraction {
                fraction: 0.25,
                eta: Some("ETA 1m 15s".into())
            })
        );
        record.status = TaskStatus::Failed;
        assert_eq!(
            cell(&record, now),
            Some(Cell::Fraction {
                fraction: 0.25,
                eta: None
            }),
            "a finished task keeps how far it got, without an end"
        );
    }
}
