//! The window's interaction tests run over both backends: the scheduler
//! in this process, and the same scheduler behind a real HTTP API on
//! 127.0.0.1:0 with the window attached to it. The panels must behave the
//! same; over the connection, what the window does lands a little later,
//! so every check waits for its condition (with a timeout).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use serde_json::json;

use super::Attached;
use crate::api::{ApiConfig, ApiServer};
use crate::app::{ConnectionState, Services, TaskdeckApp};
use crate::client::Client;
use crate::model::{TaskId, TaskSpec, TaskStatus};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::tasks::logfile::LOGS_FOLDER;
use crate::tasks::{ExecSettings, register_exec_tasks};

/// Longest a test waits for something to show or happen.
const WAIT: Duration = Duration::from_secs(15);

/// Which backend the window is on.
#[derive(Debug, Clone, Copy)]
enum Side {
    InProcess,
    Remote,
}

/// A window on a scheduler, over one side; what it needs stays alive here.
struct Window {
    scheduler: Scheduler,
    harness: Harness<'static, TaskdeckApp>,
    remote: Option<(ApiServer, Attached)>,
}

fn scheduler(workers: usize) -> Scheduler {
    let config = SchedulerConfig {
        workers,
        ..SchedulerConfig::in_memory()
    };
    Scheduler::start(config, crate::demo::registry()).expect("the scheduler should start")
}

/// A scheduler with one worker that also runs `command` tasks, whose logs
/// go to `data_dir`'s log folder.
fn scheduler_with_commands(data_dir: &Path) -> Scheduler {
    let mut registry = crate::demo::registry();
    register_exec_tasks(&mut registry, ExecSettings::new(data_dir.join(LOGS_FOLDER)));
    let config = SchedulerConfig {
        workers: 1,
        ..SchedulerConfig::in_memory()
    };
    Scheduler::start(config, registry).expect("the scheduler should start")
}

/// Waits for `done`, with a timeout; true when it held.
fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

impl Window {
    fn open(side: Side, scheduler: Scheduler) -> Self {
        Self::open_with_data(side, scheduler, None)
    }

    /// A window whose task logs are under `data_dir` (the window's own
    /// data directory in-process, the server's when attached).
    fn open_with_data(side: Side, scheduler: Scheduler, data_dir: Option<&Path>) -> Self {
        let (services, remote) = match side {
            Side::InProcess => {
                let mut services = Services::local(&scheduler);
                services.data_dir = data_dir.map(Path::to_owned);
                (services, None)
            }
            Side::Remote => {
                let config = ApiConfig {
                    listen: "127.0.0.1:0".into(),
                    log_dir: data_dir.map(|dir| dir.join(LOGS_FOLDER)),
                    ..ApiConfig::default()
                };
                let server = ApiServer::start(config, scheduler.clone(), Arc::new(|| None))
                    .expect("the API should start");
                let client = Client::new(&server.url(), None, super::CALL_TIMEOUT);
                let mut attached = Attached::start(client).expect("attach");
                let backend = attached.remote();
                assert!(
                    wait_for(|| {
                        crate::app::Backend::connection(backend.as_ref())
                            .is_some_and(|c| c.state == ConnectionState::Connected)
                    }),
                    "the window connects: {:?}",
                    crate::app::Backend::connection(backend.as_ref())
                );
                (attached.services(), Some((server, attached)))
            }
        };
        let app = TaskdeckApp::new(services, None, None);
        let harness = Harness::builder()
            .with_size([1500.0, 900.0])
            .build_ui_state(
                |ui, app: &mut TaskdeckApp| {
                    app.step(ui.ctx());
                    app.show(ui);
                },
                app,
            );
        Self {
            scheduler,
            harness,
            remote,
        }
    }

    /// Runs frames until `done` holds (with a timeout).
    fn run_until(&mut self, mut done: impl FnMut(&Harness<'static, TaskdeckApp>) -> bool) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            self.harness.step();
            if done(&self.harness) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Runs frames until the scheduler's record of `id` satisfies `done`.
    fn run_until_task(&mut self, id: TaskId, done: impl Fn(TaskStatus) -> bool) -> bool {
        let scheduler = self.scheduler.clone();
        self.run_until(|_| scheduler.task(id).is_some_and(|r| done(r.status)))
    }

    /// Runs frames until the window's own copy of `id` shows `status`.
    fn run_until_shown(&mut self, id: TaskId, status: TaskStatus) -> bool {
        self.run_until(|h| {
            h.state()
                .state()
                .tasks
                .get(id)
                .is_some_and(|r| r.status == status)
        })
    }

    fn click(&mut self, label: &str) {
        assert!(
            self.run_until(|h| h.query_by_label(label).is_some()),
            "{label:?} shows"
        );
        self.harness.get_by_label(label).click();
        self.harness.run_steps(2);
    }

    fn select_row(&mut self, id: TaskId) {
        self.click(&format!("#{id}"));
        assert!(
            self.run_until(|h| h.query_by_label_contains(&format!("Task {id} ·")).is_some()),
            "the details of task {id} show"
        );
    }

    fn close(self) {
        let Self {
            scheduler,
            harness,
            remote,
        } = self;
        drop(harness);
        if let Some((server, attached)) = remote {
            server.shutdown();
            attached.shutdown();
        }
        scheduler.shutdown().expect("shutdown");
    }
}

fn submitting_from_the_form_queues_the_task(side: Side) {
    let mut window = Window::open(side, scheduler(0));
    window.click("Create task");
    window.click("Task type");
    window.click("sleep");
    assert!(window.run_until(|h| h.query_by_label("ms (u_int)").is_some()));
    let field = window.harness.get_by_label("ms (u_int)");
    field.focus();
    field.type_text("60000");
    window.harness.run_steps(2);
    window.click("Submit");
    let scheduler = window.scheduler.clone();
    assert!(
        window.run_until(|_| scheduler.task(TaskId(1)).is_some()),
        "the task was submitted"
    );
    let record = scheduler.task(TaskId(1)).expect("known");
    assert_eq!(
        (record.spec.name.as_str(), record.spec.args.clone()),
        ("sleep", vec![json!(60000)])
    );
    assert!(
        window.run_until(|h| !h.state().state().create.is_open
            && h.state().state().notice.as_ref().map(|n| n.text.as_str()) == Some("Task 1 queued")),
        "the form closed and the status bar says so"
    );
    assert!(
        window.run_until(|h| h.query_by_label("#1").is_some()),
        "the row shows"
    );
    window.close();
}

fn the_table_follows_the_scheduler_live(side: Side) {
    let mut window = Window::open(side, scheduler(1));
    let id = window
        .scheduler
        .submit(TaskSpec::new("sleep", vec![json!(150)]))
        .expect("submit");
    let row = format!("#{id}");
    assert!(
        window.run_until(|h| h.query_by_label(&row).is_some()),
        "the row shows"
    );
    assert!(
        window.run_until_shown(id, TaskStatus::Completed),
        "the row completes"
    );
    assert!(
        window.run_until(|h| h.state().state().stats.counts.completed == 1),
        "the header counts it"
    );
    window.close();
}

fn stop_then_retry_from_the_toolbar(side: Side) {
    let mut window = Window::open(side, scheduler(1));
    let id = window
        .scheduler
        .submit(TaskSpec::new("sleep", vec![json!(60_000)]))
        .expect("submit");
    assert!(window.run_until_task(id, |s| s == TaskStatus::Running));
    window.select_row(id);
    assert!(
        window.run_until_shown(id, TaskStatus::Running),
        "the window shows it running"
    );
    window.click("Stop");
    assert!(
        window.run_until_task(id, |s| s == TaskStatus::Cancelled),
        "the task stopped"
    );
    assert!(
        window.run_until_shown(id, TaskStatus::Cancelled),
        "the window shows it cancelled"
    );
    window.click("Retry");
    assert!(
        window.run_until_task(id, |s| s == TaskStatus::Running),
        "the task runs again"
    );
    assert!(
        window.run_until(
            |h| h.state().state().notice.as_ref().map(|n| n.text.as_str())
                == Some("1 task(s) queued again")
        ),
        "the status bar says so"
    );
    window.close();
}

fn details_show_the_focused_task(side: Side) {
    let mut window = Window::open(side, scheduler(0));
    let first = window
        .scheduler
        .submit(TaskSpec::new("noop", vec![]))
        .expect("submit");
    let second = window
        .scheduler
        .submit(TaskSpec::new("noop", vec![]).after(first))
        .expect("submit");
    window.select_row(second);
    assert!(
        window.run_until(|h| h.query_by_label("Depends on:").is_some()),
        "the details list its dependency"
    );
    window.click(&format!("task {first}"));
    assert!(
        window.run_until(|h| h.state().state().focused() == Some(first)),
        "a click on the dependency selects it"
    );
    assert!(
        window.run_until(|h| h.query_by_label("Dependents:").is_some()),
        "the dependency lists its dependents"
    );
    window.close();
}

fn a_command_tasks_output_shows_in_the_details(side: Side) {
    let dir = tempfile::tempdir().expect("temp dir");
    let scheduler = scheduler_with_commands(dir.path());
    let script = "echo alpha-line; echo beta-line; sleep 30";
    let id = scheduler
        .submit(TaskSpec::new("command", vec![json!(["sh", "-c", script])]))
        .expect("submit");
    let mut window = Window::open_with_data(side, scheduler, Some(dir.path()));
    assert!(window.run_until_task(id, |s| s == TaskStatus::Running));
    window.select_row(id);
    assert!(
        window
            .run_until(|h| h.query_by_label("alpha-line").is_some()
                && h.query_by_label("beta-line").is_some()),
        "the output shows while the task runs"
    );
    assert!(
        window.run_until(|h| h.query_by_label_contains("Output of attempt 1 (").is_some()),
        "the details say which attempt's output it is"
    );
    window.scheduler.cancel(id).expect("cancel");
    assert!(window.run_until_task(id, |s| s == TaskStatus::Cancelled));
    window.close();
}

fn a_task_that_writes_no_log_says_so(side: Side) {
    let dir = tempfile::tempdir().expect("temp dir");
    let scheduler = scheduler_with_commands(dir.path());
    let id = scheduler
        .submit(TaskSpec::new("noop", vec![]))
        .expect("submit");
    let mut window = Window::open_with_data(side, scheduler, Some(dir.path()));
    assert!(window.run_until_task(id, |s| s == TaskStatus::Completed));
    window.select_row(id);
    assert!(
        window.run_until(|h| h.query_by_label("Output: none recorded").is_some()),
        "the details say there is no output log"
    );
    window.close();
}

fn the_pool_size_control_shows_only_where_it_works(side: Side) {
    let mut window = Window::open(side, scheduler(1));
    let fixed = crate::app::FIXED_POOL;
    let (shown, hidden) = match side {
        Side::InProcess => ("Pool size", fixed),
        Side::Remote => (fixed, "Pool size"),
    };
    assert!(
        window.run_until(|h| h.query_by_label(shown).is_some()),
        "{shown:?} shows"
    );
    assert!(
        window.harness.query_by_label(hidden).is_none(),
        "{hidden:?} does not"
    );
    window.close();
}

fn the_header_names_the_api_the_window_talks_to(side: Side) {
    let mut window = Window::open(side, scheduler(0));
    let shown = match &window.remote {
        // The in-process window of these tests starts no listener.
        None => "API off".to_owned(),
        Some((server, _)) => server.url(),
    };
    assert!(
        window.run_until(|h| h.query_by_label(&shown).is_some()),
        "the header shows {shown:?}"
    );
    if window.remote.is_some() {
        assert!(window.harness.query_by_label("API off").is_none());
    }
    window.close();
}

fn why_a_queued_task_waits_shows_in_the_table(side: Side) {
    let mut window = Window::open(side, scheduler(0));
    for _ in 0..3 {
        window
            .scheduler
            .submit(TaskSpec::new("noop", vec![]))
            .expect("submit");
    }
    assert!(
        window.run_until(|h| h.query_by_label("2 ahead").is_some()),
        "the third task's row says two start before it"
    );
    window.close();
}

fn the_progress_history_of_the_selected_task_is_plotted(side: Side) {
    let mut registry = crate::demo::registry();
    registry.register(
        "train",
        "reports a loss, then waits to be stopped",
        crate::tasks::Signature::default(),
        |ctx, _args| {
            ctx.progress(Some(0.5), None, &[("loss", 0.25)])
                .map_err(crate::tasks::TaskError::fatal)?;
            ctx.sleep(WAIT * 6)?;
            Ok(json!(null))
        },
    );
    let config = SchedulerConfig {
        workers: 1,
        ..SchedulerConfig::in_memory()
    };
    let scheduler = Scheduler::start(config, registry).expect("the scheduler should start");
    let id = scheduler
        .submit(TaskSpec::new("train", vec![]))
        .expect("submit");
    let mut window = Window::open(side, scheduler);
    assert!(window.run_until_task(id, |s| s == TaskStatus::Running));
    window.select_row(id);
    assert!(
        window.run_until(|h| {
            let series = h.state().state().live().series();
            series.len() == 1 && series[0].latest() == Some(0.25)
        }),
        "the details have the loss's history"
    );
    window.scheduler.cancel(id).expect("cancel");
    assert!(window.run_until_task(id, |s| s == TaskStatus::Cancelled));
    window.close();
}

/// Each test, once per side.
macro_rules! both_sides {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $(#[test] fn $name() { super::$name(super::Side::InProcess) })*
        }
        mod remote {
            $(#[test] fn $name() { super::$name(super::Side::Remote) })*
        }
    };
}

both_sides!(
    submitting_from_the_form_queues_the_task,
    the_table_follows_the_scheduler_live,
    stop_then_retry_from_the_toolbar,
    details_show_the_focused_task,
    a_command_tasks_output_shows_in_the_details,
    a_task_that_writes_no_log_says_so,
    the_pool_size_control_shows_only_where_it_works,
    the_header_names_the_api_the_window_talks_to,
    why_a_queued_task_waits_shows_in_the_table,
    the_progress_history_of_the_selected_task_is_plotted,
);
