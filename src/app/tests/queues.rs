//! Interaction tests of named queues in the window: the queues panel
//! (limit, pause with or without stopping running tasks, resume), the
//! queue in the table, the details and the create form, and the pause of
//! the whole scheduler that stops running tasks.

use eframe::egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use serde_json::json;

use super::{
    assert_form_kept_and_nothing_submitted, harness, open_sleep_form, run_until, scheduler,
    scheduler_with, select_row,
};
use crate::app::TaskdeckApp;
use crate::model::{TaskId, TaskSpec, TaskStatus};
use crate::scheduler::Scheduler;

/// Scrolls to the widget labelled `label` (the left panel scrolls) and
/// clicks it.
pub(super) fn click(harness: &mut Harness<'_, TaskdeckApp>, label: &str) {
    harness.get_by_label(label).scroll_to_me();
    harness.run_steps(2);
    harness.get_by_label(label).click();
    harness.run_steps(2);
}

/// Chooses queue `name` in the queues panel and waits for its controls.
pub(super) fn choose_queue(harness: &mut Harness<'_, TaskdeckApp>, name: &str) {
    assert!(
        run_until(harness, |h| h
            .query_by_role_and_label(Role::Button, name)
            .is_some()),
        "the queues panel lists {name}"
    );
    harness
        .get_by_role_and_label(Role::Button, name)
        .scroll_to_me();
    harness.run_steps(2);
    harness.get_by_role_and_label(Role::Button, name).click();
    let title = format!("Queue {name}");
    assert!(
        run_until(harness, |h| h.query_by_label(&title).is_some()),
        "the controls of {name} show"
    );
}

fn notice(harness: &Harness<'_, TaskdeckApp>) -> (bool, String) {
    let notice = harness.state().state().notice.clone().expect("a notice");
    (notice.error, notice.text)
}

fn status(scheduler: &Scheduler, id: TaskId) -> Option<TaskStatus> {
    scheduler.task(id).map(|record| record.status)
}

#[test]
fn the_queues_panel_sets_and_clears_a_queue_limit() {
    let scheduler = scheduler();
    scheduler
        .submit(TaskSpec::new("noop", vec![]).queue("render"))
        .expect("submit");
    let mut harness = harness(&scheduler);
    choose_queue(&mut harness, "render");
    assert!(
        harness
            .get_by_label("No limit")
            .accesskit_node()
            .is_disabled(),
        "no limit to clear yet"
    );
    harness.get_by_label("At most").set_value_accesskit(3.0);
    harness.run_steps(2);
    click(&mut harness, "Set limit");
    let queue = scheduler.queue("render").expect("a queue");
    assert_eq!((queue.limit, queue.paused), (Some(3), false));
    assert_eq!(
        notice(&harness),
        (false, "Queue render: at most 3 running".to_owned())
    );
    assert!(
        harness
            .get_by_label("Set limit")
            .accesskit_node()
            .is_disabled(),
        "the limit in force is the one shown"
    );
    assert_eq!(
        scheduler.queue("default").map(|q| q.limit).ok(),
        Some(None),
        "other queues keep theirs"
    );

    click(&mut harness, "No limit");
    assert_eq!(scheduler.queue("render").map(|q| q.limit).ok(), Some(None));
    assert_eq!(
        notice(&harness),
        (false, "Queue render: no limit".to_owned())
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn pausing_a_queue_shows_it_paused_and_resuming_clears_it() {
    let scheduler = scheduler();
    let id = scheduler
        .submit(TaskSpec::new("noop", vec![]).queue("render"))
        .expect("submit");
    let mut harness = harness(&scheduler);
    choose_queue(&mut harness, "render");
    assert!(harness.query_by_label("paused").is_none());
    click(&mut harness, "Pause queue");
    assert!(scheduler.queue("render").is_ok_and(|q| q.paused));
    assert!(!scheduler.queue("default").is_ok_and(|q| q.paused));
    assert!(
        run_until(&mut harness, |h| h.query_by_label("paused").is_some()),
        "the panel shows it paused"
    );
    select_row(&mut harness, id);
    assert!(
        run_until(&mut harness, |h| h
            .query_by_label_contains("queue render is paused")
            .is_some()),
        "the details say why the task waits"
    );

    click(&mut harness, "Resume queue");
    assert!(scheduler.queue("render").is_ok_and(|q| !q.paused));
    assert!(
        run_until(&mut harness, |h| h.query_by_label("paused").is_none()),
        "the panel no longer shows it paused"
    );
    assert_eq!(
        notice(&harness),
        (false, "Queue render: resumed".to_owned())
    );
    harness.get_by_label("Pause queue");
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn pausing_a_queue_can_stop_its_running_tasks_and_put_them_back() {
    let scheduler = scheduler_with(1);
    let id = scheduler
        .submit(TaskSpec::new("sleep", vec![json!(60_000)]).queue("render"))
        .expect("submit");
    let mut harness = harness(&scheduler);
    assert!(
        run_until(&mut harness, |_| status(&scheduler, id)
            == Some(TaskStatus::Running)),
        "the task runs"
    );
    choose_queue(&mut harness, "render");
    click(&mut harness, "Stop its running tasks");
    click(&mut harness, "Pause queue");
    assert!(
        run_until(&mut harness, |_| status(&scheduler, id)
            == Some(TaskStatus::Queued)),
        "the running task went back to the queue"
    );
    let record = scheduler.task(id).expect("known");
    assert!(record.failures.is_empty(), "no failed attempt: {record:?}");
    assert!(scheduler.queue("render").is_ok_and(|q| q.paused));
    assert!(!scheduler.is_paused(), "only the queue is paused");
    assert_eq!(
        harness
            .state()
            .state()
            .queues
            .chosen()
            .map(|q| q.name.as_str()),
        Some("render"),
        "the choice stays on render"
    );
    scheduler.cancel(id).expect("cancel");
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn pause_and_stop_running_puts_the_running_tasks_back() {
    let scheduler = scheduler_with(1);
    let id = scheduler
        .submit(TaskSpec::new("sleep", vec![json!(60_000)]))
        .expect("submit");
    let mut harness = harness(&scheduler);
    assert!(
        run_until(&mut harness, |_| status(&scheduler, id)
            == Some(TaskStatus::Running)),
        "the task runs"
    );
    harness.get_by_label("Pause and stop running").click();
    harness.run_steps(2);
    assert!(scheduler.is_paused());
    assert!(
        run_until(&mut harness, |_| status(&scheduler, id)
            == Some(TaskStatus::Queued)),
        "the running task went back to the queue"
    );
    assert_eq!(
        notice(&harness),
        (
            false,
            "Scheduler paused; 1 running task(s) asked to stop and go back to the queue".to_owned()
        )
    );
    assert!(
        run_until(&mut harness, |h| h
            .get_by_label("Pause and stop running")
            .accesskit_node()
            .is_disabled()),
        "paused with nothing running: nothing more to stop"
    );
    harness.get_by_label("Resume");
    scheduler.cancel(id).expect("cancel");
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn the_create_form_submits_a_task_to_the_queue_typed() {
    let scheduler = scheduler();
    let mut harness = harness(&scheduler);
    open_sleep_form(&mut harness);
    let field = harness.get_by_role_and_label(Role::TextInput, "Queue");
    field.focus();
    field.type_text("render");
    harness.run_steps(2);
    harness.get_by_label("Submit").click();
    harness.run_steps(3);
    let record = scheduler.task(TaskId(1)).expect("the task was submitted");
    assert_eq!(record.spec.queue.as_deref(), Some("render"));
    assert!(!harness.state().state().create.is_open, "the form closed");
    assert!(
        run_until(&mut harness, |h| h
            .query_by_role_and_label(Role::Button, "render")
            .is_some()),
        "the queues panel lists the new queue"
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn a_bad_queue_name_shows_inline_and_submits_nothing() {
    let scheduler = scheduler();
    let mut harness = harness(&scheduler);
    open_sleep_form(&mut harness);
    let field = harness.get_by_role_and_label(Role::TextInput, "Queue");
    field.focus();
    field.type_text("no spaces");
    harness.run_steps(2);
    let error = "queue name \"no spaces\" must be 1 to 64 letters, digits, '_', '-' or '.'";
    assert!(
        harness.query_by_label(error).is_some(),
        "the error shows as it is typed"
    );
    harness.get_by_label("Submit").click();
    harness.run_steps(3);
    assert!(
        harness.query_by_label(error).is_some(),
        "the error shows once after the submit"
    );
    assert_form_kept_and_nothing_submitted(&harness, &scheduler);
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn the_table_shows_each_tasks_queue_and_sorts_by_it() {
    let scheduler = scheduler();
    let render = scheduler
        .submit(TaskSpec::new("noop", vec![]).queue("render"))
        .expect("submit");
    let plain = scheduler
        .submit(TaskSpec::new("noop", vec![]))
        .expect("submit");
    let batch = scheduler
        .submit(TaskSpec::new("noop", vec![]).queue("batch"))
        .expect("submit");
    let mut harness = harness(&scheduler);
    let cells = |h: &Harness<'_, TaskdeckApp>, name: &str| {
        h.query_all_by_role_and_label(Role::Label, name).count()
    };
    assert!(
        run_until(&mut harness, |h| cells(h, "render") == 1
            && cells(h, "batch") == 1
            && cells(h, "default") == 1),
        "each row shows its queue"
    );
    harness.get_by_role_and_label(Role::Button, "Queue").click();
    harness.run_steps(2);
    assert_eq!(
        harness.state().state().tasks.order(),
        [batch, plain, render],
        "sorted by queue name"
    );
    select_row(&mut harness, render);
    assert_eq!(
        cells(&harness, "render"),
        2,
        "the details name the queue too"
    );
    scheduler.shutdown().expect("shutdown");
}
