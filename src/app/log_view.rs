//! The live log of the details: the shown attempt's output as the reader
//! took it in, only the visible lines laid out, kept at its end while
//! "Follow" is on (scrolling up turns it off, scrolling back to the end
//! on again), with a search that filters the lines or highlights what it
//! finds. It draws what [`LiveDetails`] holds and returns actions.

use std::ops::Range;

use eframe::egui::{self, Label, Rect, RichText, TextStyle, Ui};
use egui::text::{LayoutJob, TextFormat};

use super::live::{LiveAction, LiveDetails};
use super::log_reader::FileState;
use super::log_tail::LogTail;
use super::state::Action;
use super::theme::Theme;
use crate::model::{TaskRecord, TaskStatus};

/// Most height the log's lines take before they scroll.
const LOG_HEIGHT: f32 = 260.0;
/// What the view says when older lines are not shown.
pub const EARLIER_NOT_SHOWN: &str = "earlier output not shown";
/// The search box's label.
pub const SEARCH_LABEL: &str = "Search output";

/// Lays out the output of the attempt `live` shows. Returns what the user
/// asked for.
pub fn log_ui(ui: &mut Ui, record: &TaskRecord, live: &LiveDetails, theme: Theme) -> Vec<Action> {
    let mut actions = Vec::new();
    let attempt = live.attempt().filter(|_| live.is_for(record.id));
    let Some(attempt) = attempt else {
        ui.label(RichText::new("Output: none yet, the task has not started").color(theme.weak()));
        return actions;
    };
    let log = live.log();
    let running = record.status == TaskStatus::Running && attempt == record.attempts;
    if let Some(error) = log.thread_error() {
        ui.label(RichText::new(error).color(theme.error()));
        return actions;
    }
    match log.file() {
        FileState::Unknown => {
            ui.label(RichText::new("Output: looking for the log…").color(theme.weak()));
            return actions;
        }
        FileState::Missing => {
            missing_ui(ui, record, attempt, running, theme);
            return actions;
        }
        FileState::Failed(error) => {
            ui.label(RichText::new(error.as_str()).color(theme.error()));
            return actions;
        }
        FileState::Found { origin, size } => {
            let cut = record
                .log
                .as_ref()
                .is_some_and(|log| log.truncated && attempt == record.attempts);
            let state = match (running, cut) {
                (true, _) => "",
                (false, false) => ", ended",
                (false, true) => ", ended, cut at the limit",
            };
            ui.label(format!("Output of attempt {attempt} ({size} bytes{state})"))
                .on_hover_text(origin.as_str());
        }
    }
    controls_ui(ui, live, &mut actions);
    let tail = log.tail();
    if tail.earlier_dropped() {
        ui.label(
            RichText::new(EARLIER_NOT_SHOWN)
                .color(theme.weak())
                .italics(),
        );
    }
    if tail.is_empty() {
        ui.label(RichText::new("(no output yet)").color(theme.weak()));
        return actions;
    }
    lines_ui(ui, tail, live, theme, &mut actions);
    actions
}

/// No log where the window looks: none yet while it runs; else the last
/// lines the record kept (a log on another machine), or none at all.
fn missing_ui(ui: &mut Ui, record: &TaskRecord, attempt: u32, running: bool, theme: Theme) {
    if running {
        ui.label(RichText::new("Output: none yet").color(theme.weak()))
            .on_hover_text("Only command and python tasks write an output log");
        return;
    }
    match record.log.as_ref().filter(|_| attempt == record.attempts) {
        Some(log) => {
            ui.label(format!(
                "Output: {} ({} bytes), its last lines",
                log.path, log.bytes
            ))
            .on_hover_text("The log is not on this machine; the record keeps its end");
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
}

/// "Follow", the search box and "Only matching".
fn controls_ui(ui: &mut Ui, live: &LiveDetails, actions: &mut Vec<Action>) {
    ui.horizontal_wrapped(|ui| {
        let mut follow = live.follow();
        if ui
            .checkbox(&mut follow, "Follow")
            .on_hover_text("Keep to the end as output comes; scrolling up stops it")
            .changed()
        {
            actions.push(Action::Live(LiveAction::Follow(follow)));
        }
        let mut search = live.search().to_owned();
        let label = ui.label(SEARCH_LABEL);
        let edit = ui
            .add(
                egui::TextEdit::singleline(&mut search)
                    .hint_text("text in a line")
                    .desired_width(120.0),
            )
            .labelled_by(label.id);
        if edit.changed() {
            actions.push(Action::Live(LiveAction::Search(search)));
        }
        let mut only = live.only_matching();
        if ui
            .checkbox(&mut only, "Only matching")
            .on_hover_text("Show only the lines the search finds; off, it highlights them")
            .changed()
        {
            actions.push(Action::Live(LiveAction::OnlyMatching(only)));
        }
    });
}

/// The lines, only those in view laid out, kept at the end while
/// following.
fn lines_ui(
    ui: &mut Ui,
    tail: &LogTail,
    live: &LiveDetails,
    theme: Theme,
    actions: &mut Vec<Action>,
) {
    let only = live.only_matching();
    let rows = tail.shown_len(only);
    if rows == 0 {
        ui.label(RichText::new("No line matches the search").color(theme.weak()));
        return;
    }
    let row_height = ui.text_style_height(&TextStyle::Monospace);
    let spacing = ui.spacing().item_spacing.y;
    // As `show_rows` sizes it.
    let content_height = rows as f32 * (row_height + spacing) - spacing;
    // Where the lines were last frame: input there is the user scrolling.
    let rect_id = ui.make_persistent_id("log_rows_rect");
    let last_rect = ui.ctx().data(|d| d.get_temp::<Rect>(rect_id));
    let scrolling = last_rect
        .filter(|rect| ui.rect_contains_pointer(*rect))
        .map(|_| ui.input(|i| (i.smooth_scroll_delta.y, i.pointer.primary_down())))
        .filter(|(delta, down)| *delta != 0.0 || *down);
    let follow = live.follow();
    let mut area = egui::ScrollArea::vertical()
        .id_salt("log_rows")
        .max_height(LOG_HEIGHT)
        .auto_shrink([false, true])
        .stick_to_bottom(follow);
    if follow && scrolling.is_none() {
        // Exactly the end (the rows in view are chosen from this offset
        // before the area clamps it), with the height the area had.
        let view_height = last_rect.map_or(LOG_HEIGHT, |rect| rect.height());
        area = area.vertical_scroll_offset((content_height - view_height).max(0.0));
    }
    let output = area.show_rows(ui, row_height, rows, |ui, range| {
        for index in range {
            let Some(line) = tail.shown(index, only) else {
                continue;
            };
            let found = tail.found_in(line);
            let text: egui::WidgetText = if found.is_empty() {
                RichText::new(line).monospace().into()
            } else {
                highlighted(ui, line, &found, theme).into()
            };
            ui.add(Label::new(text).truncate());
        }
    });
    ui.ctx()
        .data_mut(|d| d.insert_temp(rect_id, output.inner_rect));
    let end = (output.content_size.y - output.inner_rect.height()).max(0.0);
    let at_end = output.state.clamped_offset().y >= end - 1.0;
    if let Some((delta, _)) = scrolling {
        if follow && !at_end {
            actions.push(Action::Live(LiveAction::Follow(false)));
        } else if !follow && at_end && delta < 0.0 {
            actions.push(Action::Live(LiveAction::Follow(true)));
        }
    }
}

/// `line` in the log's font with the `found` ranges on the highlight.
fn highlighted(ui: &Ui, line: &str, found: &[Range<usize>], theme: Theme) -> LayoutJob {
    let font = TextStyle::Monospace.resolve(ui.style());
    let plain = TextFormat::simple(font, ui.visuals().text_color());
    let marked = TextFormat {
        background: theme.highlight(),
        ..plain.clone()
    };
    let mut job = LayoutJob::default();
    let mut at = 0;
    for range in found {
        job.append(
            line.get(at..range.start).unwrap_or_default(),
            0.0,
            plain.clone(),
        );
        job.append(
            line.get(range.clone()).unwrap_or_default(),
            0.0,
            marked.clone(),
        );
        at = range.end;
    }
    job.append(line.get(at..).unwrap_or_default(), 0.0, plain);
    job
}
