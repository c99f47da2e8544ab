//! The progress section of the details: the bar with the task's message,
//! fraction, rate and time left, one small plot per metric of the shown
//! attempt (at most [`PLOTTED`]), and the other metrics with their latest
//! value. It draws what [`LiveDetails`] read; it reads nothing itself.

use eframe::egui::{self, RichText, Ui, accesskit::Role};
use egui_plot::{HoverPosition, Line, Plot, PlotPoints};

use super::live::{LiveDetails, MetricSeries, PLOTTED};
use super::progress;
use super::theme::Theme;
use crate::model::{TaskRecord, TaskStatus};

/// Height of one metric's plot.
const PLOT_HEIGHT: f32 = 72.0;

/// A metric's value in a few characters: plain for ordinary sizes,
/// scientific for very large or small ones.
pub fn value_text(value: f64) -> String {
    let size = value.abs();
    if size != 0.0 && !(1e-3..1e6).contains(&size) {
        return format!("{value:.3e}");
    }
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// The label of a metric's plot, for screen readers (and tests).
pub fn plot_label(name: &str) -> String {
    format!("Plot of {name}")
}

/// Lays out the progress section of `record` when it reported any
/// (nothing otherwise): the latest attempt's bar from the record, an
/// earlier attempt's last fraction from its history, and the metrics of
/// the attempt `live` shows.
pub fn progress_ui(
    ui: &mut Ui,
    record: &TaskRecord,
    live: &LiveDetails,
    now_us: i64,
    theme: Theme,
) {
    let attempt = live.attempt().filter(|_| live.is_for(record.id));
    let latest = attempt == Some(record.attempts);
    let progress = record.progress.as_ref().filter(|_| latest);
    let series = if attempt.is_some() {
        live.series()
    } else {
        &[]
    };
    let earlier_fraction = live
        .history_fraction()
        .filter(|_| attempt.is_some() && !latest);
    if progress.is_none() && series.is_empty() && earlier_fraction.is_none() {
        return;
    }
    ui.label(RichText::new("Progress").strong());
    if let Some(progress) = progress {
        let running = record.status == TaskStatus::Running;
        progress::details_ui(ui, progress, running, now_us, theme);
    } else if let Some(fraction) = earlier_fraction {
        ui.horizontal(|ui| {
            progress::bar_ui(ui, fraction, 120.0, theme);
            ui.label(format!(
                "{} when attempt {} ended",
                progress::percent(fraction),
                attempt.unwrap_or_default()
            ));
        });
    }
    for metric in series.iter().take(PLOTTED) {
        metric_plot_ui(ui, metric, theme);
    }
    // Metrics beyond the plotted ones, and those the record holds without
    // a history (read back after a restart), with their latest value.
    let mut listed: Vec<(&str, f64)> = series
        .iter()
        .skip(PLOTTED)
        .filter_map(|metric| metric.latest().map(|value| (metric.name.as_str(), value)))
        .collect();
    if let Some(progress) = progress {
        for (name, value) in &progress.metrics {
            if !series.iter().any(|metric| metric.name == *name) {
                listed.push((name.as_str(), *value));
            }
        }
    }
    if !listed.is_empty() {
        egui::Grid::new("more_metrics")
            .num_columns(2)
            .show(ui, |ui| {
                for (name, value) in listed {
                    ui.label(name);
                    ui.label(value_text(value));
                    ui.end_row();
                }
            });
    }
    ui.separator();
}

/// One metric: its name and latest value, and a small plot over the
/// attempt that does not take the panel's scrolling.
fn metric_plot_ui(ui: &mut Ui, metric: &MetricSeries, theme: Theme) {
    let name = metric.name.as_str();
    let latest = metric.latest().map(value_text).unwrap_or_default();
    ui.label(format!("{name}: {latest}"));
    let response = Plot::new(("metric_plot", name))
        .height(PLOT_HEIGHT)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .allow_axis_zoom_drag(false)
        .allow_double_click_reset(false)
        .show_grid([false, true])
        .x_axis_formatter(|mark, _range| format!("{:.0} s", mark.value))
        .label_formatter(hover_text)
        .show(ui, |plot_ui| {
            plot_ui.line(
                Line::new(name, PlotPoints::Borrowed(&metric.points))
                    .color(theme.metric())
                    .width(1.5),
            );
        })
        .response;
    response.widget_info(|| egui::WidgetInfo::labeled(Role::Figure, true, plot_label(name)));
}

/// What hovering near the line shows: the metric, when and its value.
fn hover_text(position: &HoverPosition<'_>) -> Option<String> {
    match position {
        HoverPosition::NearDataPoint {
            plot_name,
            position,
            ..
        } => Some(format!(
            "{plot_name}\nat {:.0} s: {}",
            position.x,
            value_text(position.y)
        )),
        HoverPosition::Elsewhere { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::value_text;

    #[test]
    fn values_read_short() {
        assert_eq!(value_text(0.25), "0.25");
        assert_eq!(value_text(3.0), "3");
        assert_eq!(value_text(-0.00001), "-1.000e-5");
        assert_eq!(value_text(2_500_000.0), "2.500e6");
        assert_eq!(value_text(0.0), "0");
        assert_eq!(value_text(1.23456), "1.2346");
    }
}
