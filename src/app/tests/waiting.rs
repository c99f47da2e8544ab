//! Interaction tests of why waiting rows wait: the task table's "Why"
//! column says it in a few words for each queued or retrying row (held, a
//! dependency, a paused queue or scheduler), the whole sentence shows on
//! hover, and every column still fits the window's first size. That the
//! reasons are read at a bounded rate is tested beside the logic, in
//! `app::waiting`.

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use super::queues::{choose_queue, click};
use super::{harness, harness_sized, noop_after, run_until, scheduler, select_row};
use crate::app::tasks::{COLUMNS, HEADER_PADDING};
use crate::app::{SortColumn, TaskdeckApp, WINDOW_SIZE};
use crate::model::TaskSpec;
use crate::scheduler::Waiting;

/// Runs frames until a widget reads exactly `text`.
fn shows(harness: &mut Harness<'_, TaskdeckApp>, text: &str) -> bool {
    run_until(harness, |h| h.query_by_label(text).is_some())
}

/// How many widgets read exactly `text`.
fn count(harness: &Harness<'_, TaskdeckApp>, text: &str) -> usize {
    harness.query_all_by_label(text).count()
}

#[test]
fn a_held_row_says_it_is_held_and_moves_on_when_released() {
    let scheduler = scheduler();
    let id = noop_after(&scheduler, &[]);
    scheduler.hold(id).expect("hold");
    let mut harness = harness(&scheduler);
    assert!(shows(&mut harness, "held"), "the row says it is held");

    harness.get_by_label("held").hover();
    assert!(
        shows(&mut harness, "held; it starts only after a release"),
        "the whole reason shows on hover"
    );

    select_row(&mut harness, id);
    harness.get_by_label("Release").click();
    assert!(
        shows(&mut harness, "next"),
        "released, it is the next to start"
    );
    assert_eq!(count(&harness, "held"), 0);
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn a_row_waiting_for_a_dependency_names_it() {
    let scheduler = scheduler();
    let first = noop_after(&scheduler, &[]);
    let second = noop_after(&scheduler, &[first]);
    let third = noop_after(&scheduler, &[first, second]);
    let mut harness = harness(&scheduler);
    let after_first = format!("after #{first}");
    assert!(
        shows(&mut harness, &after_first),
        "the dependent says which task it waits for"
    );
    assert!(
        shows(&mut harness, &format!("after #{first} +1")),
        "a task with two dependencies names the first and counts the other"
    );
    assert_eq!(count(&harness, "next"), 1, "the dependency is next");

    harness.get_by_label(&after_first).hover();
    assert!(
        shows(
            &mut harness,
            &format!("waits for 1 dependency to complete: task {first}")
        ),
        "the whole reason shows on hover"
    );
    assert!(
        matches!(
            harness.state().state().waiting_rows().reason(third),
            Some(Waiting::Dependencies { count: 2, .. })
        ),
        "the reasons are kept by task id"
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn rows_of_a_paused_queue_or_scheduler_say_so() {
    let scheduler = scheduler();
    scheduler
        .submit(TaskSpec::new("noop", vec![]).queue("render"))
        .expect("submit");
    noop_after(&scheduler, &[]);
    let mut harness = harness(&scheduler);
    assert!(
        run_until(&mut harness, |h| count(h, "next") == 1
            && count(h, "1 ahead") == 1),
        "the render task is next, the other behind it"
    );

    choose_queue(&mut harness, "render");
    click(&mut harness, "Pause queue");
    assert!(
        run_until(&mut harness, |h| count(h, "queue paused") == 1
            && count(h, "next") == 1),
        "the render task's row says its queue is paused; the other is next"
    );
    click(&mut harness, "Resume queue");
    assert!(
        run_until(&mut harness, |h| count(h, "queue paused") == 0),
        "resumed, the row no longer says so"
    );

    harness.get_by_label("Pause").click();
    assert!(
        run_until(&mut harness, |h| count(h, "all paused") == 2),
        "with the scheduler paused, both rows say so"
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn every_column_fits_the_window_at_its_first_size() {
    let scheduler = scheduler();
    let id = scheduler
        .submit(TaskSpec::new("noop", vec![]).queue("render"))
        .expect("submit");
    scheduler.hold(id).expect("hold");
    let mut harness = harness_sized(&scheduler, WINDOW_SIZE);
    assert!(shows(&mut harness, "held"));
    // The details panel's content starts one panel margin right of the
    // table's end.
    let table_end = harness.get_by_label("Details").rect().min.x - 8.0;
    // The table is sorted by id, newest first, at first.
    let titles: Vec<(String, bool)> = COLUMNS
        .iter()
        .map(|(title, sort)| match sort {
            Some(SortColumn::Id) => (format!("{title} v"), true),
            Some(_) => ((*title).to_owned(), true),
            None => ((*title).to_owned(), false),
        })
        .collect();
    let natural = natural_widths(&titles);
    let header_y = harness.get_by_label("ID v").rect().center().y;
    let mut left = f32::MIN;
    for ((title, _), natural) in titles.iter().zip(natural) {
        let header = harness
            .query_all_by_label(title)
            .map(|node| node.rect())
            .find(|rect| (rect.center().y - header_y).abs() < 1.0)
            .unwrap_or_else(|| panic!("the {title} header shows"));
        assert!(header.min.x > left, "{title} comes after the one before");
        assert!(
            header.max.x <= table_end,
            "{title} ends at {} beyond the table's end at {table_end}",
            header.max.x
        );
        assert!(
            header.width() >= natural - 0.5,
            "{title} is cut short: {} of {natural} points",
            header.width()
        );
        left = header.min.x;
    }
    let held = harness.get_by_label("held").rect();
    assert!(held.max.x <= table_end, "the reason shows whole");
    scheduler.shutdown().expect("shutdown");
}

/// The width each column title takes when nothing cuts it short, laid out
/// as the table's header does: a sort button, or strong text.
fn natural_widths(titles: &[(String, bool)]) -> Vec<f32> {
    let mut harness = Harness::builder().with_size([800.0, 800.0]).build_ui(|ui| {
        ui.spacing_mut().button_padding.x = HEADER_PADDING;
        for (title, sorts) in titles {
            if *sorts {
                let _ = ui.selectable_label(false, title.as_str());
            } else {
                ui.strong(title.as_str());
            }
        }
    });
    harness.run();
    titles
        .iter()
        .map(|(title, _)| harness.get_by_label(title).rect().width())
        .collect()
}
