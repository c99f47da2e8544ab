//! Interaction tests of what running tasks report: progress in the table
//! and the details, a plot per metric, and the live output log of a
//! command task with its search and "Follow". How the log is read (by
//! offset, bounded) is tested beside the reader, in `app::log_reader`
//! and `app::log_tail`; the texts of the progress cell in
//! `app::progress`.

use std::path::Path;

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use serde_json::json;

use super::{WAIT, harness, harness_on, run_until, select_row, services};
use crate::app::TaskdeckApp;
use crate::app::log_view::SEARCH_LABEL;
use crate::app::metrics::plot_label;
use crate::model::{TaskSpec, TaskStatus};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::tasks::{ExecSettings, Registry, Signature, register_exec_tasks};

/// A scheduler with one worker whose registry also has `train`, a task
/// that reports half-way with a message and a loss, then waits until it
/// is stopped; and `command`, logging into `logs`.
fn scheduler_with_reporter(logs: &Path) -> Scheduler {
    let mut registry: Registry = crate::demo::registry();
    registry.register(
        "train",
        "reports progress, then waits to be stopped",
        Signature::default(),
        |ctx, _args| {
            ctx.progress(Some(0.5), Some("epoch 5/10"), &[("loss", 0.25)])
                .map_err(crate::tasks::TaskError::fatal)?;
            ctx.sleep(WAIT * 6)?;
            Ok(json!(null))
        },
    );
    register_exec_tasks(&mut registry, ExecSettings::new(logs.to_owned()));
    let config = SchedulerConfig {
        workers: 1,
        ..SchedulerConfig::in_memory()
    };
    Scheduler::start(config, registry).expect("the scheduler should start")
}

/// Runs frames until a widget reads exactly `text`.
fn shows(harness: &mut Harness<'_, TaskdeckApp>, text: &str) -> bool {
    run_until(harness, |h| h.query_by_label(text).is_some())
}

#[test]
fn progress_a_running_task_reports_shows_in_the_table_and_the_details() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scheduler = scheduler_with_reporter(&dir.path().join("logs"));
    let id = scheduler
        .submit(TaskSpec::new("train", vec![]))
        .expect("submit");
    let mut harness = harness(&scheduler);
    assert!(
        shows(&mut harness, "50%"),
        "the table's progress column shows how far it is"
    );
    select_row(&mut harness, id);
    assert!(
        shows(&mut harness, "epoch 5/10"),
        "the details show the task's message"
    );
    assert_eq!(
        harness.query_all_by_label("50%").count(),
        2,
        "the fraction shows in the table and in the details"
    );
    assert!(
        shows(&mut harness, &plot_label("loss")),
        "the details plot the loss"
    );
    harness.get_by_label("loss: 0.25");
    let live = harness.state().state().live();
    assert_eq!(live.series().len(), 1, "one metric, one series");
    assert_eq!(live.series()[0].latest(), Some(0.25));

    scheduler.cancel(id).expect("cancel");
    assert_eq!(
        scheduler.wait(id, WAIT).map(|r| r.status),
        Some(TaskStatus::Cancelled)
    );
    assert!(
        run_until(&mut harness, |h| h.query_by_label("epoch 5/10").is_some()
            && h.state().state().tasks.get(id).map(|r| r.status)
                == Some(TaskStatus::Cancelled)),
        "a stopped task keeps how far it got"
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn a_command_tasks_output_shows_live_in_the_details_and_the_search_filters_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = dir.path().join("logs");
    let scheduler = scheduler_with_reporter(&logs);
    let go = dir.path().join("go");
    // Prints two lines, waits for the test, prints two more.
    let script = "echo alpha-line; echo needle-one; \
                  while [ ! -e \"$0\" ]; do sleep 0.02; done; \
                  echo needle-two; echo beta-line; sleep 30";
    let argv = json!(["sh", "-c", script, go.display().to_string()]);
    let id = scheduler
        .submit(TaskSpec::new("command", vec![argv]))
        .expect("submit");
    let mut window = services(&scheduler);
    window.data_dir = Some(dir.path().to_owned());
    let mut harness = harness_on(window, [1500.0, 900.0]);
    select_row(&mut harness, id);
    assert!(
        run_until(&mut harness, |h| h.query_by_label("alpha-line").is_some()
            && h.query_by_label("needle-one").is_some()),
        "the output so far shows while the task runs"
    );
    std::fs::write(&go, b"").expect("the go file");
    assert!(
        run_until(&mut harness, |h| h.query_by_label("beta-line").is_some()),
        "output printed later is read and shows"
    );
    assert_eq!(
        scheduler.task(id).map(|r| r.status),
        Some(TaskStatus::Running)
    );

    let search = harness.get_by_label(SEARCH_LABEL);
    search.focus();
    search.type_text("NEEDLE");
    assert!(
        run_until(&mut harness, |h| h.query_by_label("alpha-line").is_none()
            && h.query_by_label("beta-line").is_none()),
        "lines without the text are filtered out"
    );
    harness.get_by_label("needle-one");
    harness.get_by_label("needle-two");

    harness.get_by_label("Only matching").click();
    assert!(
        shows(&mut harness, "alpha-line"),
        "without the filter every line shows again (the found ones highlighted)"
    );
    harness.get_by_label("needle-one");
    scheduler.cancel(id).expect("cancel");
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn scrolling_up_in_a_long_log_stops_following_and_the_toggle_resumes_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scheduler = scheduler_with_reporter(&dir.path().join("logs"));
    let script = "i=0; while [ $i -lt 400 ]; do echo line-$i; i=$((i+1)); done; sleep 30";
    let id = scheduler
        .submit(TaskSpec::new("command", vec![json!(["sh", "-c", script])]))
        .expect("submit");
    let mut window = services(&scheduler);
    window.data_dir = Some(dir.path().to_owned());
    let mut harness = harness_on(window, [1500.0, 900.0]);
    select_row(&mut harness, id);
    assert!(
        shows(&mut harness, "line-399"),
        "following, the last line shows"
    );
    assert!(
        harness.query_by_label("line-0").is_none(),
        "only the lines in view are laid out"
    );
    assert!(harness.state().state().live().follow());

    let area = harness.get_by_label("line-399").rect();
    harness.hover_at(area.center());
    harness.step();
    harness.event(egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Point,
        delta: egui::vec2(0.0, 20_000.0),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Unknown,
        modifiers: egui::Modifiers::NONE,
    });
    assert!(
        run_until(&mut harness, |h| !h.state().state().live().follow()),
        "scrolling up stops following"
    );
    assert!(
        shows(&mut harness, "line-0"),
        "the view stays where the user scrolled"
    );

    harness.get_by_label("Follow").click();
    assert!(
        shows(&mut harness, "line-399"),
        "following again goes back to the end"
    );
    assert!(harness.state().state().live().follow());
    scheduler.cancel(id).expect("cancel");
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn a_task_without_a_log_says_so_and_another_attempt_can_be_chosen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scheduler = scheduler_with_reporter(&dir.path().join("logs"));
    let id = scheduler
        .submit(TaskSpec::new("fail", vec![json!(1)]))
        .expect("submit");
    let record = scheduler.wait(id, WAIT).expect("the task is known");
    assert_eq!(
        (record.status, record.attempts),
        (TaskStatus::Completed, 2),
        "{record:?}"
    );
    let mut harness = harness(&scheduler);
    select_row(&mut harness, id);
    assert!(
        shows(&mut harness, "Output: none recorded"),
        "a task that ran no process has no log"
    );
    harness.get_by_label("Attempt").click();
    assert!(shows(&mut harness, "attempt 1"), "the attempts are listed");
    harness.get_by_label("attempt 1").click();
    assert!(
        run_until(&mut harness, |h| h.state().state().live().attempt()
            == Some(1)),
        "the first attempt is shown"
    );
    scheduler.shutdown().expect("shutdown");
}
