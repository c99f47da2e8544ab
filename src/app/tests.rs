//! Interaction tests of the whole window on an in-process scheduler,
//! driven through egui_kittest (no display, no GPU): task dependencies in
//! the create form, the details panel and retry. Named queues and the
//! pause that stops running tasks are tested in `queues`, why waiting
//! rows wait in `waiting`, progress, metric plots and the live log in
//! `live`.

use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use serde_json::json;

use super::{InProcess, Services, TaskdeckApp};
use crate::model::{Dependency, OnDependencyFailure, TaskId, TaskSpec, TaskStatus};
use crate::scheduler::{Scheduler, SchedulerConfig, Waiting};

mod live;
mod queues;
mod waiting;

/// Longest a test waits for the window to show something.
const WAIT: Duration = Duration::from_secs(10);

/// A scheduler without workers: tasks stay queued unless a test moves them.
fn scheduler() -> Scheduler {
    scheduler_with(0)
}

/// A scheduler with `workers` workers.
fn scheduler_with(workers: usize) -> Scheduler {
    let config = SchedulerConfig {
        workers,
        ..SchedulerConfig::in_memory()
    };
    Scheduler::start(config, crate::demo::registry()).expect("the scheduler should start")
}

fn harness(scheduler: &Scheduler) -> Harness<'static, TaskdeckApp> {
    harness_sized(scheduler, [1500.0, 900.0])
}

/// A window of `size` points on `scheduler`.
fn harness_sized(scheduler: &Scheduler, size: [f32; 2]) -> Harness<'static, TaskdeckApp> {
    harness_on(services(scheduler), size)
}

/// What the window is given in tests: the scheduler alone.
fn services(scheduler: &Scheduler) -> Services {
    Services {
        backend: std::sync::Arc::new(InProcess::new(scheduler.clone())),
        samples: None,
        past_samples: Vec::new(),
        http_url: None,
        data_dir: None,
    }
}

/// A window of `size` points on `services`.
fn harness_on(services: Services, size: [f32; 2]) -> Harness<'static, TaskdeckApp> {
    let app = TaskdeckApp::new(services, None, None);
    Harness::builder().with_size(size).build_ui_state(
        |ui, app: &mut TaskdeckApp| {
            app.step(ui.ctx());
            app.show(ui);
        },
        app,
    )
}

/// Runs frames until `done` holds (with a timeout), as a user would wait.
fn run_until(
    harness: &mut Harness<'_, TaskdeckApp>,
    mut done: impl FnMut(&mut Harness<'_, TaskdeckApp>) -> bool,
) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        harness.step();
        if done(harness) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Opens the create form on the `sleep` type and types its argument.
fn open_sleep_form(harness: &mut Harness<'_, TaskdeckApp>) {
    harness.get_by_label("Create task").click();
    assert!(
        run_until(harness, |h| h.query_by_label("Submit").is_some()),
        "the form opened"
    );
    harness.get_by_label("Task type").click();
    assert!(run_until(harness, |h| h.query_by_label("sleep").is_some()));
    harness.get_by_label("sleep").click();
    assert!(
        run_until(harness, |h| h.query_by_label("ms (u_int)").is_some()),
        "the sleep fields show"
    );
    type_into(harness, "ms (u_int)", "60000");
}

fn type_into(harness: &mut Harness<'_, TaskdeckApp>, label: &str, text: &str) {
    let field = harness.get_by_label(label);
    field.focus();
    field.type_text(text);
    harness.run_steps(2);
}

/// Clicks the table row of `id` and waits for its details.
fn select_row(harness: &mut Harness<'_, TaskdeckApp>, id: TaskId) {
    let row = format!("#{id}");
    assert!(
        run_until(harness, |h| h.query_by_label(&row).is_some()),
        "row {row} shows"
    );
    harness.get_by_label(&row).click();
    assert!(
        run_until(harness, |h| h
            .query_by_label_contains(&format!("Task {id} ·"))
            .is_some()),
        "the details of task {id} show"
    );
}

/// Asserts that a refused submit left the create form open and the
/// scheduler without a task.
fn assert_form_kept_and_nothing_submitted(
    harness: &Harness<'_, TaskdeckApp>,
    scheduler: &Scheduler,
) {
    assert!(
        harness.state().state().create.is_open,
        "the form stays open"
    );
    assert_eq!(
        scheduler.stats().counts,
        Default::default(),
        "nothing submitted"
    );
}

/// Submits a no-op task that starts only after `after`; its id.
pub(crate) fn noop_after(scheduler: &Scheduler, after: &[TaskId]) -> TaskId {
    let spec = after
        .iter()
        .fold(TaskSpec::new("noop", vec![]), |spec, id| spec.after(*id));
    scheduler.submit(spec).expect("submit")
}

fn focused(harness: &Harness<'_, TaskdeckApp>) -> Option<TaskId> {
    harness.state().state().focused()
}

#[test]
fn after_tasks_in_the_create_form_become_the_dependencies_of_the_task() {
    let scheduler = scheduler();
    let first = noop_after(&scheduler, &[]);
    let mut harness = harness(&scheduler);
    open_sleep_form(&mut harness);
    type_into(&mut harness, "After tasks", &format!("#{first},"));
    harness.get_by_label("Run even if one fails").click();
    harness.run_steps(2);
    harness.get_by_label("Submit").click();
    harness.run_steps(3);
    let record = scheduler.task(TaskId(2)).expect("the task was submitted");
    assert_eq!(record.spec.args, vec![json!(60000)]);
    assert_eq!(record.spec.depends_on, vec![Dependency::Task(first)]);
    assert_eq!(record.spec.on_dependency_failure, OnDependencyFailure::Run);
    assert!(matches!(
        scheduler.waiting(&[record.id]).pop().flatten(),
        Some(Waiting::Dependencies { count: 1, .. })
    ));
    assert!(!harness.state().state().create.is_open, "the form closed");
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn bad_or_unknown_after_tasks_show_inline_and_submit_nothing() {
    let scheduler = scheduler();
    let mut harness = harness(&scheduler);
    open_sleep_form(&mut harness);
    type_into(&mut harness, "After tasks", "1, two");
    harness.get_by_label("Submit").click();
    assert!(
        run_until(&mut harness, |h| h
            .query_by_label_contains("\"two\" is not a task id")
            .is_some()),
        "the error shows inline"
    );
    assert_form_kept_and_nothing_submitted(&harness, &scheduler);

    // Well-formed but unknown: the scheduler refuses, and says why inline.
    harness.state_mut().state_mut().create.after = "42".into();
    harness.run_steps(2);
    harness.get_by_label("Submit").click();
    assert!(
        run_until(&mut harness, |h| h
            .query_by_label_contains("depends on task 42, which is not known")
            .is_some()),
        "the scheduler's refusal shows inline"
    );
    assert_form_kept_and_nothing_submitted(&harness, &scheduler);
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn details_of_a_dependent_link_to_its_dependency_and_back() {
    let scheduler = scheduler();
    let first = noop_after(&scheduler, &[]);
    let second = scheduler
        .submit(
            TaskSpec::new("noop", vec![])
                .after(first)
                .on_dependency_failure(OnDependencyFailure::Run),
        )
        .expect("submit");
    let mut harness = harness(&scheduler);
    let queued = |h: &Harness<'_, TaskdeckApp>| h.query_all_by_label("queued").count();
    assert!(run_until(&mut harness, |h| queued(h) == 2), "two rows");
    select_row(&mut harness, second);
    assert!(
        run_until(&mut harness, |h| h
            .query_by_label(&format!(
                "Waiting: waits for 1 dependency to complete: task {first}"
            ))
            .is_some()),
        "the details say what it waits for"
    );
    harness.get_by_label("Depends on:");
    assert_eq!(
        queued(&harness),
        4,
        "besides the rows, the status of the task and of its dependency"
    );
    harness.get_by_label("If a dependency fails: this task runs anyway");
    assert!(harness.query_by_label("Dependents:").is_none());

    harness.get_by_label(&format!("task {first}")).click();
    assert!(
        run_until(&mut harness, |h| focused(h) == Some(first)),
        "a click on the dependency selects it"
    );
    assert!(
        run_until(&mut harness, |h| h.query_by_label("Dependents:").is_some()),
        "the dependency lists its dependents"
    );
    assert!(harness.query_by_label("Depends on:").is_none());
    harness.get_by_label(&format!("task {second}")).click();
    assert!(
        run_until(&mut harness, |h| focused(h) == Some(second)),
        "a click on the dependent selects it"
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn a_task_cancelled_by_its_dependency_says_so_and_retries_from_where_it_started() {
    let scheduler = scheduler();
    let first = noop_after(&scheduler, &[]);
    let second = noop_after(&scheduler, &[first]);
    let third = noop_after(&scheduler, &[second]);
    scheduler.remove(first).expect("remove");
    let record = scheduler.task(third).expect("known");
    assert_eq!(
        (record.status, record.cancelled_by),
        (TaskStatus::Cancelled, Some(second))
    );
    let mut harness = harness(&scheduler);
    select_row(&mut harness, third);
    assert!(
        run_until(&mut harness, |h| h
            .query_by_label("The cancellations started at")
            .is_some()),
        "the details say where the cancellations started"
    );
    harness.get_by_label("Cancelled because");
    harness.get_by_label("was cancelled");

    // A plain retry is refused, and the status bar says what to do.
    harness.get_by_label("Retry").click();
    harness.run_steps(2);
    let notice = harness.state().state().notice.clone().expect("a notice");
    assert!(notice.error, "{notice:?}");
    assert!(notice.text.contains("with cascade"), "{notice:?}");
    assert_eq!(
        scheduler.task(third).map(|r| r.status),
        Some(TaskStatus::Cancelled)
    );

    harness
        .get_by_label(&format!("Retry task {first} with dependents"))
        .click();
    harness.run_steps(2);
    for id in [first, second, third] {
        assert_eq!(
            scheduler.task(id).map(|r| r.status),
            Some(TaskStatus::Queued),
            "task {id} queued again"
        );
    }
    let notice = harness.state().state().notice.clone().expect("a notice");
    assert_eq!(
        (notice.error, notice.text.as_str()),
        (false, "3 task(s) queued again, dependents included")
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn the_toolbar_retries_a_selection_with_dependents_once_each() {
    let scheduler = scheduler();
    let first = noop_after(&scheduler, &[]);
    let second = noop_after(&scheduler, &[first]);
    scheduler.remove(first).expect("remove");
    let mut harness = harness(&scheduler);
    select_row(&mut harness, first);
    harness
        .state_mut()
        .state_mut()
        .tasks
        .select(second, super::SelectMode::Toggle);
    harness.run_steps(2);
    harness.get_by_label("Retry with dependents").click();
    harness.run_steps(2);
    let notice = harness.state().state().notice.clone().expect("a notice");
    assert_eq!(
        (notice.error, notice.text.as_str()),
        (false, "2 task(s) queued again, dependents included"),
        "the dependent was queued with its dependency, not refused after it"
    );
    assert_eq!(
        scheduler.task(second).map(|r| r.status),
        Some(TaskStatus::Queued)
    );
    scheduler.shutdown().expect("shutdown");
}
