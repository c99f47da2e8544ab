//! The resource-history panel: CPU, memory, GPU and disk plots over a chosen
//! window, with task starts and finishes marked as thin vertical lines.
//!
//! It only lays out: it reads a [`History`] and the task markers, and changes
//! nothing but its own view settings. It is drawn every frame, so it builds
//! plot points only from the visible window, thins long windows to at most
//! [`MAX_POINTS_PER_SERIES`] samples and draws at most [`MAX_MARKERS`]
//! markers. Plots have fixed ranges, with time in seconds before now on the
//! x axis, and ignore dragging and zooming, so they never jitter.

use std::time::Duration;

use eframe::egui::{self, Color32, RichText, Ui};
use egui_plot::{GridInput, GridMark, HoverPosition, Line, Plot, PlotPoints, VLine};

use super::theme::Theme;
use crate::model::{GpuSample, GpuState, ResourceSample, percent};
use crate::telemetry::History;

mod series;

use series::{SECOND_US, duration_us, recent_markers, segments, visible};

/// Height of each plot, in points.
const PLOT_HEIGHT: f32 = 96.0;

/// Most task markers drawn: the most recent ones in the window.
const MAX_MARKERS: usize = 200;

/// Most samples per plotted line; longer windows are thinned to this.
const MAX_POINTS_PER_SERIES: usize = 600;

/// Most disks plotted, so a machine with many mounts stays readable.
const MAX_DISKS: usize = 8;

/// A sample older than this is called out as stale beside the values.
const STALE_AFTER_US: i64 = 5_000_000;

/// Bytes in a GiB.
const GIB: f64 = (1_u64 << 30) as f64;

/// How much history the plots show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum HistoryWindow {
    /// The last minute.
    Min1,
    /// The last five minutes.
    #[default]
    Min5,
    /// The last fifteen minutes.
    Min15,
    /// The last hour, all the history kept.
    Min60,
}

impl HistoryWindow {
    /// Every window, shortest first, as the selector lists them.
    pub const ALL: [Self; 4] = [Self::Min1, Self::Min5, Self::Min15, Self::Min60];

    /// The selector's text.
    pub fn label(self) -> &'static str {
        match self {
            Self::Min1 => "1 min",
            Self::Min5 => "5 min",
            Self::Min15 => "15 min",
            Self::Min60 => "60 min",
        }
    }

    /// How far back the plots reach.
    pub fn duration(self) -> Duration {
        let minutes = match self {
            Self::Min1 => 1,
            Self::Min5 => 5,
            Self::Min15 => 15,
            Self::Min60 => 60,
        };
        Duration::from_secs(minutes * 60)
    }
}

/// A task start or finish to mark on the plots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMarker {
    /// When it happened, µs since the epoch; markers are passed oldest first.
    pub at_us: i64,
    /// A finish (completed, failed or cancelled) rather than a start.
    pub finished: bool,
    /// Which task.
    pub task_id: u64,
    /// The task's type name.
    pub name: String,
}

/// The panel's own view settings (persisted by the app via serde).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ResourcesPanel {
    /// How much history the plots show.
    pub window: HistoryWindow,
    /// One CPU line per logical core instead of the overall one.
    pub per_core: bool,
}

impl ResourcesPanel {
    /// Lays out the selector, the current values and the plots.
    ///
    /// `markers` must be oldest first; `now_us` is the right edge of every
    /// plot (µs since the epoch), passed in so tests can fix it.
    pub fn ui(&mut self, ui: &mut Ui, history: &History, markers: &[TaskMarker], now_us: i64) {
        let Self { window, per_core } = self;
        ui.horizontal(|ui| {
            for choice in HistoryWindow::ALL {
                ui.selectable_value(window, choice, choice.label());
            }
            ui.checkbox(per_core, "per core");
        });
        let theme = Theme::new(ui.visuals().dark_mode);
        let Some(latest) = history.latest() else {
            ui.label(RichText::new("Waiting for the first resource sample…").color(theme.weak()));
            return;
        };
        let age_us = now_us.saturating_sub(latest.at_us);
        if age_us > STALE_AFTER_US {
            let text = format!("Last sample {:.0} s ago", age_us as f64 / SECOND_US);
            ui.label(RichText::new(text).color(theme.weak()));
        }
        let duration = window.duration();
        let covered_secs = history
            .oldest()
            .map_or(0.0, |oldest| (now_us - oldest.at_us) as f64 / SECOND_US);
        let span_secs = shown_span_secs(duration.as_secs_f64(), covered_secs);
        if covered_secs < duration.as_secs_f64() {
            let text = format!(
                "Collecting… {} of {} so far",
                covered_text(covered_secs),
                window.label()
            );
            ui.label(RichText::new(text).color(theme.weak()))
                .on_hover_text(
                    "The plots widen as history comes in, up to the window chosen above",
                );
        }
        let from_us = now_us.saturating_sub(duration_us(duration));
        let frame = Frame {
            window_secs: span_secs,
            now_us,
            samples: visible(history.window(duration), from_us, MAX_POINTS_PER_SERIES),
            markers: marker_lines(markers, from_us, now_us, theme),
        };
        cpu_ui(ui, &frame, latest, *per_core, theme);
        ram_ui(ui, &frame, latest, theme);
        gpu_ui(ui, &frame, latest, theme);
        disk_ui(ui, &frame, latest, theme);
    }
}

/// What every plot of one frame shares.
struct Frame<'a> {
    /// Seconds shown, left edge at minus this.
    window_secs: f64,
    /// The right edge, µs since the epoch.
    now_us: i64,
    /// The samples to plot, `None` where a line breaks.
    samples: Vec<Option<&'a ResourceSample>>,
    /// The task markers to draw.
    markers: Vec<MarkerLine>,
}

impl Frame<'_> {
    /// The line segments of one value over the visible samples.
    fn segments(&self, value: impl Fn(&ResourceSample) -> Option<f64>) -> Vec<Vec<[f64; 2]>> {
        segments(&self.samples, self.now_us, value)
    }
}

/// A task marker ready to draw.
struct MarkerLine {
    /// Seconds before now (negative).
    x: f64,
    /// Start or finish colour.
    color: Color32,
    /// Shown when hovered.
    name: String,
}

/// One named line of a plot, broken into segments at gaps.
struct Series {
    /// Shown when hovered.
    name: String,
    /// Line colour.
    color: Color32,
    /// Runs of `[seconds before now, value]` without a gap.
    segments: Vec<Vec<[f64; 2]>>,
}

/// The CPU value and plot: overall, or one line per core.
fn cpu_ui(ui: &mut Ui, frame: &Frame<'_>, latest: &ResourceSample, per_core: bool, theme: Theme) {
    let text = format!("CPU {:.1} %", latest.cpu_percent);
    ui.label(RichText::new(text).strong().color(theme.cpu()));
    let series = if per_core {
        let cores = latest.cpu_per_core.len();
        (0..cores)
            .map(|core| Series {
                name: format!("core {core}"),
                color: shade(theme.cpu(), core, cores),
                segments: frame
                    .segments(|sample| sample.cpu_per_core.get(core).map(|&v| f64::from(v))),
            })
            .collect()
    } else {
        vec![Series {
            name: "CPU".to_owned(),
            color: theme.cpu(),
            segments: frame.segments(|sample| Some(f64::from(sample.cpu_percent))),
        }]
    };
    plot_ui(ui, "cpu_plot", frame, 100.0, "%", series);
}

/// The memory value and plot, in GiB up to the installed total.
fn ram_ui(ui: &mut Ui, frame: &Frame<'_>, latest: &ResourceSample, theme: Theme) {
    let used_gib = latest.memory_used_bytes as f64 / GIB;
    let total_gib = latest.memory_total_bytes as f64 / GIB;
    let text = format!("RAM {used_gib:.1} / {total_gib:.1} GiB");
    ui.label(RichText::new(text).strong().color(theme.ram()));
    let series = vec![Series {
        name: "RAM".to_owned(),
        color: theme.ram(),
        segments: frame.segments(|sample| Some(sample.memory_used_bytes as f64 / GIB)),
    }];
    let top = if total_gib > 0.0 {
        total_gib
    } else {
        used_gib.max(1.0)
    };
    plot_ui(ui, "ram_plot", frame, top, "GiB", series);
}

/// Per GPU its current values and a plot of utilisation and memory use, or
/// why there is no GPU to show.
fn gpu_ui(ui: &mut Ui, frame: &Frame<'_>, latest: &ResourceSample, theme: Theme) {
    let devices = match &latest.gpus {
        GpuState::Unavailable { reason } => {
            ui.label(RichText::new(format!("No GPU: {reason}")).color(theme.weak()));
            return;
        }
        GpuState::Available { devices } if devices.is_empty() => {
            ui.label(RichText::new("No GPU: NVML lists no devices").color(theme.weak()));
            return;
        }
        GpuState::Available { devices } => devices,
    };
    for device in devices {
        ui.label(RichText::new(gpu_text(device)).strong().color(theme.gpu()));
        let index = device.index;
        let series = vec![
            Series {
                name: format!("GPU{index} utilisation"),
                color: theme.gpu(),
                segments: frame.segments(|sample| {
                    gpu_of(sample, index).map(|gpu| f64::from(gpu.utilization_percent))
                }),
            },
            Series {
                name: format!("GPU{index} memory"),
                color: theme.gpu_memory(),
                segments: frame.segments(|sample| {
                    gpu_of(sample, index)
                        .map(|gpu| percent(gpu.memory_used_bytes, gpu.memory_total_bytes))
                }),
            },
        ];
        plot_ui(ui, ("gpu_plot", index), frame, 100.0, "%", series);
    }
}

/// The current values of one GPU, e.g.
/// "GPU0 NVIDIA H200 45 % · 12.1 / 139.8 GiB · 51 °C".
fn gpu_text(device: &GpuSample) -> String {
    let GpuSample {
        index,
        name,
        utilization_percent,
        memory_used_bytes,
        memory_total_bytes,
        temperature_c,
        foreign_memory_bytes: _,
    } = device;
    let mut text = format!(
        "GPU{index} {name} {utilization_percent:.0} % · {:.1} / {:.1} GiB",
        *memory_used_bytes as f64 / GIB,
        *memory_total_bytes as f64 / GIB,
    );
    if let Some(celsius) = temperature_c {
        text.push_str(&format!(" · {celsius} °C"));
    }
    text
}

/// The reading of the GPU with NVML index `index` in `sample`, if any.
fn gpu_of(sample: &ResourceSample, index: u32) -> Option<&GpuSample> {
    match &sample.gpus {
        GpuState::Available { devices } => devices.iter().find(|gpu| gpu.index == index),
        GpuState::Unavailable { .. } => None,
    }
}

/// The used share of each disk now and as lines over time, in one plot.
fn disk_ui(ui: &mut Ui, frame: &Frame<'_>, latest: &ResourceSample, theme: Theme) {
    let disks = latest
        .disks
        .get(..MAX_DISKS.min(latest.disks.len()))
        .unwrap_or(&[]);
    if disks.is_empty() {
        ui.label(RichText::new("Disk: none reported").color(theme.weak()));
        return;
    }
    ui.horizontal_wrapped(|ui| {
        for disk in disks {
            let used = percent(disk.used_bytes, disk.total_bytes);
            let text = format!("Disk {} {used:.1} %", disk.mount);
            ui.label(RichText::new(text).strong().color(theme.disk()));
        }
    });
    let series = disks
        .iter()
        .enumerate()
        .map(|(position, disk)| Series {
            name: format!("Disk {}", disk.mount),
            color: shade(theme.disk(), position, disks.len()),
            segments: frame.segments(|sample| {
                sample
                    .disks
                    .iter()
                    .find(|other| other.mount == disk.mount)
                    .map(|other| percent(other.used_bytes, other.total_bytes))
            }),
        })
        .collect();
    plot_ui(ui, "disk_plot", frame, 100.0, "%", series);
}

/// Draws one fixed-range plot of `series` from minus the window to now,
/// with the task markers behind the lines.
fn plot_ui(
    ui: &mut Ui,
    id: impl egui::AsIdSalt,
    frame: &Frame<'_>,
    y_max: f64,
    unit: &'static str,
    series: Vec<Series>,
) {
    let window_secs = frame.window_secs;
    let markers = &frame.markers;
    Plot::new(id)
        .height(PLOT_HEIGHT)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .allow_axis_zoom_drag(false)
        .allow_double_click_reset(false)
        .show_grid([false, true])
        .x_grid_spacer(time_marks)
        .x_axis_formatter(|mark, range| axis_label(mark.value, range))
        .label_formatter(move |position| hover_text(position, unit))
        .show(ui, |plot_ui| {
            plot_ui.set_plot_bounds_x(-window_secs..=0.0);
            plot_ui.set_plot_bounds_y(0.0..=y_max);
            for marker in markers {
                plot_ui.vline(
                    VLine::new(marker.name.clone(), marker.x)
                        .color(marker.color)
                        .width(1.0),
                );
            }
            for Series {
                name,
                color,
                segments,
            } in series
            {
                for segment in segments {
                    plot_ui.line(
                        Line::new(name.clone(), PlotPoints::new(segment))
                            .color(color)
                            .width(1.5),
                    );
                }
            }
        });
}

/// How many seconds the plots span: the chosen window once the history
/// covers it; before that (a fresh start) what has been collected, rounded
/// up to the next half minute and at least a minute, so the lines fill the
/// plot from the start instead of hugging its right edge.
fn shown_span_secs(window_secs: f64, covered_secs: f64) -> f64 {
    if covered_secs >= window_secs {
        return window_secs;
    }
    let rounded = (covered_secs / 30.0).ceil() * 30.0;
    rounded.clamp(60.0_f64.min(window_secs), window_secs)
}

/// How much history was collected, in whole seconds or minutes.
fn covered_text(covered_secs: f64) -> String {
    let secs = covered_secs.max(0.0) as u64;
    if secs < 60 {
        format!("{secs} s")
    } else {
        format!("{} min {:02} s", secs / 60, secs % 60)
    }
}

/// Marks on the time axis at a round step (10 s to 15 min) that gives at
/// most five labels over the shown span, counted back from now, so labels
/// read `-4 min`, `-3 min` whatever the span.
fn time_marks(input: GridInput) -> Vec<GridMark> {
    const STEPS_SECS: [f64; 8] = [10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0];
    let (min, max) = input.bounds;
    let span = (max - min).max(1.0);
    let step = STEPS_SECS
        .into_iter()
        .find(|step| span / step <= 5.0)
        .unwrap_or(1800.0);
    let mut marks = Vec::new();
    let mut value = (max / step).floor() * step;
    while value >= min && marks.len() < 64 {
        marks.push(GridMark {
            value,
            step_size: step,
        });
        value -= step;
    }
    marks
}

/// The time axis' label at `value` seconds (negative: before now): `-30 s`,
/// `-4 min`. Labels at the plot's edges are left out: the edge would cut
/// them in half.
fn axis_label(value: f64, range: &std::ops::RangeInclusive<f64>) -> String {
    let span = range.end() - range.start();
    if value - range.start() < span * 0.05 || range.end() - value < span * 0.05 {
        // A blank of one line's height: the axis keeps its room.
        return " ".to_owned();
    }
    let secs = -value;
    if secs < 120.0 || secs % 60.0 != 0.0 {
        format!("-{secs:.0} s")
    } else {
        format!("-{:.0} min", secs / 60.0)
    }
}

/// What hovering near a line shows: its name, how long ago and the value.
fn hover_text(position: &HoverPosition<'_>, unit: &str) -> Option<String> {
    match position {
        HoverPosition::NearDataPoint {
            plot_name,
            position,
            ..
        } => Some(format!(
            "{plot_name}\n{:.0} s ago: {:.1} {unit}",
            -position.x, position.y
        )),
        HoverPosition::Elsewhere { .. } => None,
    }
}

/// The most recent [`MAX_MARKERS`] markers at or after `from_us`, as lines.
/// `markers` must be oldest first; the search is a bisection, so a long
/// list costs nothing per frame.
fn marker_lines(
    markers: &[TaskMarker],
    from_us: i64,
    now_us: i64,
    theme: Theme,
) -> Vec<MarkerLine> {
    recent_markers(markers, from_us, MAX_MARKERS)
        .iter()
        .map(|marker| MarkerLine {
            x: (marker.at_us - now_us) as f64 / SECOND_US,
            color: if marker.finished {
                theme.marker_finished()
            } else {
                theme.marker_started()
            },
            name: format!(
                "task {} {} {}",
                marker.task_id,
                marker.name,
                if marker.finished {
                    "finished"
                } else {
                    "started"
                }
            ),
        })
        .collect()
}

/// `base` with its hue turned by `position / count` of a turn (at most a
/// third, so lines stay near the theme's colour), to tell apart lines of
/// one kind such as CPU cores or disks.
fn shade(base: Color32, position: usize, count: usize) -> Color32 {
    if position == 0 || count < 2 {
        return base;
    }
    let mut hsva = egui::ecolor::Hsva::from(base);
    hsva.h = (hsva.h + position as f32 / count as f32 / 3.0).fract();
    hsva.into()
}

#[cfg(test)]
mod tests {
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable;

    use super::*;
    use crate::model::DiskSample;

    const NOW_US: i64 = 1_700_000_000_000_000;
    const S: i64 = 1_000_000;

    fn gpu(index: u32, name: &str, utilization_percent: f32, used_gib: u64) -> GpuSample {
        GpuSample {
            index,
            name: name.to_owned(),
            utilization_percent,
            memory_used_bytes: used_gib << 30,
            memory_total_bytes: 80 << 30,
            temperature_c: Some(40 + index),
            foreign_memory_bytes: None,
        }
    }

    fn sample(at_us: i64, cpu_percent: f32, gpus: GpuState) -> ResourceSample {
        ResourceSample {
            at_us,
            cpu_percent,
            cpu_per_core: vec![cpu_percent, 0.0],
            memory_used_bytes: 3 << 30,
            memory_total_bytes: 24 << 30,
            disks: vec![DiskSample {
                mount: "/".to_owned(),
                used_bytes: 703,
                total_bytes: 1000,
            }],
            gpus,
        }
    }

    fn no_gpu() -> GpuState {
        GpuState::Unavailable {
            reason: "no NVIDIA driver found".to_owned(),
        }
    }

    /// A history of one-second samples at these seconds before `NOW_US`.
    fn history(seconds_ago: &[i64], gpus: &GpuState) -> History {
        let mut history = History::default();
        for &ago in seconds_ago {
            history.push(sample(NOW_US - ago * S, ago as f32, gpus.clone()));
        }
        history
    }

    #[test]
    fn a_fresh_start_spans_what_was_collected_then_the_window() {
        assert_eq!(shown_span_secs(300.0, 0.0), 60.0);
        assert_eq!(shown_span_secs(300.0, 14.0), 60.0);
        assert_eq!(shown_span_secs(300.0, 95.0), 120.0);
        assert_eq!(shown_span_secs(300.0, 299.0), 300.0);
        assert_eq!(shown_span_secs(300.0, 3600.0), 300.0);
        assert_eq!(shown_span_secs(60.0, 5.0), 60.0);
        assert_eq!(covered_text(14.4), "14 s");
        assert_eq!(covered_text(125.0), "2 min 05 s");
    }

    #[test]
    fn time_labels_read_as_before_now_and_none_is_cut_at_the_edge() {
        let range = -300.0..=0.0;
        assert_eq!(axis_label(-300.0, &range).trim(), "");
        assert_eq!(axis_label(-240.0, &range), "-4 min");
        assert_eq!(axis_label(-90.0, &range), "-90 s");
        assert_eq!(axis_label(0.0, &range).trim(), "");
        let marks = time_marks(GridInput {
            bounds: (-300.0, 0.0),
            base_step_size: 1.0,
        });
        let values: Vec<f64> = marks.iter().map(|mark| mark.value).collect();
        assert_eq!(values, [0.0, -60.0, -120.0, -180.0, -240.0, -300.0]);
    }

    #[test]
    fn a_young_history_says_it_is_collecting() {
        let harness = harness(history(&[3, 2, 1], &no_gpu()), false);
        harness.get_by_label("Collecting… 3 s of 1 min so far");
    }

    #[test]
    fn windows_have_labels_durations_and_a_five_minute_default() {
        assert_eq!(HistoryWindow::default(), HistoryWindow::Min5);
        let seconds: Vec<u64> = HistoryWindow::ALL.map(|w| w.duration().as_secs()).to_vec();
        assert_eq!(seconds, [60, 300, 900, 3600]);
        assert_eq!(HistoryWindow::Min15.label(), "15 min");
        assert_eq!(ResourcesPanel::default().window, HistoryWindow::Min5);
    }

    fn harness(history: History, per_core: bool) -> Harness<'static> {
        let markers = vec![TaskMarker {
            at_us: NOW_US - 2 * S,
            finished: false,
            task_id: 1,
            name: "noop".to_owned(),
        }];
        let mut panel = ResourcesPanel {
            window: HistoryWindow::Min1,
            per_core,
        };
        let mut harness = Harness::builder()
            .with_size(egui::vec2(800.0, 900.0))
            .build_ui(move |ui| panel.ui(ui, &history, &markers, NOW_US));
        harness.run();
        harness
    }

    #[test]
    fn without_a_gpu_the_panel_says_why_and_shows_the_rest() {
        let harness = harness(history(&[3, 2, 1], &no_gpu()), true);
        harness.get_by_label_contains("No GPU:");
        harness.get_by_label("No GPU: no NVIDIA driver found");
        harness.get_by_label("CPU 1.0 %");
        harness.get_by_label("RAM 3.0 / 24.0 GiB");
        harness.get_by_label("Disk / 70.3 %");
        harness.get_by_label("per core");
    }

    #[test]
    fn two_gpus_show_their_current_values() {
        let gpus = GpuState::Available {
            devices: vec![
                gpu(0, "NVIDIA H200", 45.0, 12),
                gpu(1, "NVIDIA H100", 7.4, 3),
            ],
        };
        let harness = harness(history(&[3, 2, 1], &gpus), false);
        harness.get_by_label("GPU0 NVIDIA H200 45 % · 12.0 / 80.0 GiB · 40 °C");
        harness.get_by_label("GPU1 NVIDIA H100 7 % · 3.0 / 80.0 GiB · 41 °C");
        assert!(harness.query_by_label_contains("No GPU:").is_none());
    }
}
