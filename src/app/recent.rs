//! The recent-finishes panel at the bottom of the monitor column: the
//! tasks that ended last, newest first, with their status, run time and how
//! long ago, so the eye sees what just happened without scrolling the
//! table. A click selects the task in the table.

use std::collections::VecDeque;

use eframe::egui::{self, Label, RichText, Sense, Ui};

use super::state::{Action, AppState};
use super::tasks::duration_text;
use super::theme::Theme;
use crate::model::TaskId;

/// Most finishes remembered.
pub const RECENT_KEPT: usize = 64;
/// Most finishes listed.
const RECENT_SHOWN: usize = 12;

/// Remembers that `id` just ended (newest last), once.
pub fn remember(recent: &mut VecDeque<TaskId>, id: TaskId) {
    recent.retain(|other| *other != id);
    recent.push_back(id);
    while recent.len() > RECENT_KEPT {
        recent.pop_front();
    }
}

/// Lays out the list; returns a selection when a row is clicked.
pub fn recent_ui(ui: &mut Ui, state: &AppState, theme: Theme) -> Option<Action> {
    ui.heading("Recently finished");
    let now_us = state.now_us();
    let shown: Vec<_> = state
        .recent
        .iter()
        .rev()
        .filter_map(|id| state.tasks.get(*id))
        .filter(|record| record.status.is_final())
        .take(RECENT_SHOWN)
        .collect();
    if shown.is_empty() {
        ui.label(RichText::new("No task has finished yet").color(theme.weak()));
        return None;
    }
    let mut action = None;
    egui::Grid::new("recent_grid")
        .num_columns(3)
        .striped(true)
        .show(ui, |ui| {
            for record in shown {
                let status = record.status;
                let text = RichText::new(format!("#{} {}", record.id, record.spec.name))
                    .color(theme.status(status));
                let name = ui
                    .add(Label::new(text).selectable(false).sense(Sense::click()))
                    .on_hover_text(format!(
                        "{}: click to show it in the table",
                        status.as_str()
                    ));
                if name.clicked() {
                    action = Some(Action::Show(record.id));
                }
                let run = record.run_time_us().map(duration_text).unwrap_or_default();
                ui.add(Label::new(run).selectable(false));
                let ago = record
                    .finished_at_us
                    .map(|at| super::tasks::ago(at, now_us))
                    .unwrap_or_default();
                ui.add(Label::new(RichText::new(ago).color(theme.weak())).selectable(false));
                ui.end_row();
            }
        });
    action
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finishes_are_kept_newest_last_once_and_bounded() {
        let mut recent = VecDeque::new();
        for id in 0..(RECENT_KEPT as u64 + 5) {
            remember(&mut recent, TaskId(id));
        }
        remember(&mut recent, TaskId(10));
        assert_eq!(recent.len(), RECENT_KEPT);
        assert_eq!(recent.back(), Some(&TaskId(10)));
        assert_eq!(recent.iter().filter(|id| **id == TaskId(10)).count(), 1);
        assert_eq!(recent.front(), Some(&TaskId(5)));
    }
}
