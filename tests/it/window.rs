//! The window's real app state driven through egui_kittest (no display, no
//! GPU): create, validation, remove, stop, total times, the GPU panel,
//! the worker control, and a command task's progress and live output.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use serde_json::json;

use common::{WAIT, config};
use taskdeck::app::{InProcess, Services, TaskdeckApp};
use taskdeck::model::{TaskId, TaskSpec, TaskStatus};
use taskdeck::scheduler::{
    ExternalDispatch, ExternalHooks, Heartbeat, Scheduler, StopRequest, StoreMode,
};
use taskdeck::tasks::{ExecSettings, register_exec_tasks};
use taskdeck::telemetry::{Telemetry, TelemetryConfig};

fn scheduler(workers: usize) -> Scheduler {
    Scheduler::start(
        config(StoreMode::Memory, workers),
        taskdeck::demo::registry(),
    )
    .expect("scheduler should start")
}

fn services(scheduler: &Scheduler) -> Services {
    Services {
        backend: std::sync::Arc::new(InProcess::new(scheduler.clone())),
        samples: None,
        past_samples: Vec::new(),
        http_url: Some("http://127.0.0.1:5000".into()),
        data_dir: None,
    }
}

fn harness(services: Services) -> Harness<'static, TaskdeckApp> {
    let app = TaskdeckApp::new(services, None, None);
    Harness::builder()
        .with_size([1500.0, 900.0])
        .build_ui_state(
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

/// Opens the Create form and chooses `task` in its type box, as a user
/// would, until the parameter field `first_field` shows.
fn open_create_form(harness: &mut Harness<'_, TaskdeckApp>, task: &str, first_field: &str) {
    harness.get_by_label("Create task").click();
    assert!(
        run_until(harness, |h| h.query_by_label("Submit").is_some()),
        "the form opened"
    );
    harness.get_by_label("Task type").click();
    assert!(run_until(harness, |h| h.query_by_label(task).is_some()));
    harness.get_by_label(task).click();
    assert!(
        run_until(harness, |h| h.query_by_label(first_field).is_some()),
        "the {task} fields show"
    );
}

fn status(scheduler: &Scheduler, id: u64) -> Option<TaskStatus> {
    scheduler.task(TaskId(id)).map(|r| r.status)
}

#[test]
fn create_with_valid_input_queues_a_task() {
    let scheduler = scheduler(0);
    let mut harness = harness(services(&scheduler));
    // Choose the task type and type its argument as a user would.
    open_create_form(&mut harness, "sleep", "ms (u_int)");
    let field = harness.get_by_label("ms (u_int)");
    field.focus();
    field.type_text("60000");
    harness.run_steps(2);
    harness.state_mut().state_mut().create.priority = 8;
    harness.run_steps(2);
    harness.get_by_label("Submit").click();
    harness.run_steps(3);
    let record = scheduler.task(TaskId(1)).expect("the task was submitted");
    assert_eq!(
        (record.status, record.spec.priority),
        (TaskStatus::Queued, 8)
    );
    assert_eq!(record.spec.args, vec![json!(60000)]);
    assert!(
        run_until(&mut harness, |h| h.query_by_label("#1").is_some()),
        "the row shows"
    );
    assert!(!harness.state().state().create.is_open, "the form closed");
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn invalid_input_shows_the_error_and_adds_nothing() {
    let scheduler = scheduler(0);
    let mut harness = harness(services(&scheduler));
    open_create_form(&mut harness, "mock_ml_task", "duration_ms (u_int)");
    for (label, text) in [
        ("duration_ms (u_int)", "soon"),
        ("algorithm (string)", "Random Forest"),
    ] {
        let field = harness.get_by_label(label);
        field.focus();
        field.type_text(text);
        harness.run_steps(2);
    }
    harness.get_by_label("Submit").click();
    harness.run_steps(3);
    assert!(
        harness
            .query_by_label_contains("must be a non-negative integer")
            .is_some(),
        "the error shows inline"
    );
    assert!(
        harness.state().state().create.is_open,
        "the form stays open"
    );
    assert_eq!(
        scheduler.stats().counts,
        Default::default(),
        "nothing was submitted"
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn removing_a_selected_queued_task_cancels_it_and_it_never_runs() {
    let scheduler = scheduler(0);
    let queued = scheduler
        .submit(TaskSpec::new("noop", vec![]))
        .expect("submit");
    let kept = scheduler
        .submit(TaskSpec::new("noop", vec![]))
        .expect("submit");
    let mut harness = harness(services(&scheduler));
    assert!(run_until(&mut harness, |h| h
        .query_by_label(&format!("#{queued}"))
        .is_some()));
    harness.get_by_label(&format!("#{queued}")).click();
    harness.run_steps(2);
    let remove = harness.get_by_label("Remove from queue");
    assert!(!remove.accesskit_node().is_disabled());
    remove.click();
    harness.run_steps(2);
    assert_eq!(status(&scheduler, queued.0), Some(TaskStatus::Cancelled));

    // The Delete key removes selected queued tasks too.
    harness.get_by_label(&format!("#{kept}")).click();
    harness.run_steps(2);
    harness.key_press(eframe::egui::Key::Delete);
    harness.run_steps(2);
    assert_eq!(status(&scheduler, kept.0), Some(TaskStatus::Cancelled));

    scheduler.set_workers(2);
    assert!(scheduler.wait_idle(WAIT));
    let record = scheduler.task(queued).expect("task");
    assert_eq!(
        (record.status, record.attempts),
        (TaskStatus::Cancelled, 0),
        "it never ran"
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn remove_is_disabled_for_a_running_task_which_can_be_stopped() {
    let scheduler = scheduler(1);
    let running = scheduler
        .submit(TaskSpec::new("sleep", vec![json!(60_000)]))
        .expect("submit");
    assert!(common::wait_until(WAIT, || status(&scheduler, running.0)
        == Some(TaskStatus::Running)));
    let mut harness = harness(services(&scheduler));
    assert!(run_until(&mut harness, |h| h
        .query_by_label(&format!("#{running}"))
        .is_some()));
    harness.get_by_label(&format!("#{running}")).click();
    harness.run_steps(2);
    assert!(
        harness
            .get_by_label("Remove from queue")
            .accesskit_node()
            .is_disabled()
    );
    harness.key_press(eframe::egui::Key::Delete);
    harness.run_steps(2);
    assert_eq!(
        status(&scheduler, running.0),
        Some(TaskStatus::Running),
        "Delete left it alone"
    );
    harness.get_by_label("Stop").click();
    harness.run_steps(2);
    let record = scheduler.wait(running, WAIT).expect("task");
    assert_eq!(record.status, TaskStatus::Cancelled);
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn finished_rows_show_their_total_time_and_details() {
    let scheduler = scheduler(1);
    let id = scheduler
        .submit(TaskSpec::new("sleep", vec![json!(40)]))
        .expect("submit");
    let record = scheduler.wait(id, WAIT).expect("task");
    assert_eq!(record.status, TaskStatus::Completed);
    let total_ms = record.total_latency_us().expect("a total") as f64 / 1000.0;
    let mut harness = harness(services(&scheduler));
    let text = format!("{total_ms:.1} ms");
    // The run time can round to the same text as the total; either way the
    // total must show.
    assert!(
        run_until(&mut harness, |h| h
            .query_all_by_label(&text)
            .next()
            .is_some()),
        "the row shows its total time {text}"
    );
    harness.get_by_label(&format!("#{id}")).click();
    harness.run_steps(2);
    assert!(
        harness.query_by_label_contains("slept_ms").is_some(),
        "the details show the result"
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn the_gpu_panel_says_plainly_when_there_is_no_gpu() {
    let scheduler = scheduler(1);
    let telemetry = Arc::new(Telemetry::start(TelemetryConfig::default()).expect("telemetry"));
    let mut services = services(&scheduler);
    services.samples = Some(telemetry.subscribe());
    let mut harness = harness(services);
    assert!(
        run_until(&mut harness, |h| h
            .query_by_label_contains("No GPU:")
            .is_some()),
        "without an NVIDIA driver the GPU panel says so"
    );
    assert!(harness.query_by_label_contains("CPU").is_some());
    telemetry.stop();
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn the_worker_control_resizes_the_pool() {
    let scheduler = scheduler(2);
    let mut harness = harness(services(&scheduler));
    harness.run_steps(2);
    assert!(
        harness.get_by_label("Apply").accesskit_node().is_disabled(),
        "nothing to apply yet"
    );
    harness.state_mut().state_mut().worker_target = 4;
    harness.run_steps(2);
    harness.get_by_label("Apply").click();
    harness.run_steps(2);
    assert!(common::wait_until(WAIT, || scheduler.workers().len() == 4));
    assert!(run_until(&mut harness, |h| h
        .query_by_label_contains("4 total")
        .is_some()));
    harness.state_mut().state_mut().worker_target = 1;
    harness.run_steps(2);
    harness.get_by_label("Apply").click();
    harness.run_steps(2);
    assert!(common::wait_until(WAIT, || scheduler.workers().len() == 1));
    scheduler.shutdown().expect("shutdown");
}

/// The transport's side of distributed mode, recording what the scheduler
/// asks of it.
#[derive(Default)]
struct RecordingHooks {
    stops: std::sync::Mutex<Vec<StopRequest>>,
    sizes: std::sync::Mutex<Vec<usize>>,
}

impl ExternalHooks for RecordingHooks {
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
    fn work(&self) {}
    fn stop(&self, request: StopRequest) {
        self.stops.lock().expect("lock").push(request);
    }
    fn resize(&self, workers: usize) {
        self.sizes.lock().expect("lock").push(workers);
    }
    fn local_workers(&self) -> usize {
        self.sizes
            .lock()
            .expect("lock")
            .last()
            .copied()
            .unwrap_or(2)
    }
}

#[test]
fn worker_processes_show_with_their_host_and_stop_reaches_them() {
    let hooks = Arc::new(RecordingHooks::default());
    let external = ExternalDispatch {
        lease: Duration::from_secs(30),
        hooks: Arc::clone(&hooks) as Arc<dyn ExternalHooks>,
    };
    let (scheduler, link) = Scheduler::start_external(
        config(StoreMode::Memory, 2),
        taskdeck::demo::registry(),
        None,
        external,
    )
    .expect("scheduler");
    // Stands in for the bridge: a worker process says it has two slots,
    // and the task is placed on it.
    let beat = |running: Vec<(TaskId, u32)>| Heartbeat {
        session: 1,
        worker: "gpu-box-1".into(),
        host: "gpu-box".into(),
        concurrency: 2,
        prefetch: 0,
        takes_placements: true,
        running,
        resources: None,
        gpus: Vec::new(),
        refused_messages: 0,
    };
    link.heartbeat(&beat(Vec::new()));
    let id = scheduler
        .submit(TaskSpec::new("sleep", vec![json!(60_000)]))
        .expect("submit");
    let placed = link.place(10);
    assert_eq!(placed.runs.len(), 1);
    assert_eq!(
        (placed.runs[0].record.id, placed.runs[0].worker.as_str()),
        (id, "gpu-box-1")
    );
    link.heartbeat(&beat(vec![(id, 1)]));
    let mut harness = harness(services(&scheduler));
    assert!(run_until(&mut harness, |h| h
        .query_by_label("gpu-box-1 @ gpu-box")
        .is_some()));
    assert!(harness.query_by_label("Broker connected").is_some());
    assert!(
        harness
            .query_by_label(&format!("1/2 busy: task {id}"))
            .is_some()
    );
    harness.get_by_label(&format!("#{id}")).click();
    harness.run_steps(2);
    harness.get_by_label("Stop").click();
    harness.run_steps(2);
    let stops = hooks.stops.lock().expect("lock").clone();
    assert_eq!(stops.len(), 1, "the stop went to the transport");
    assert_eq!(
        (stops[0].worker.as_str(), stops[0].task, stops[0].attempt),
        ("gpu-box-1", id, 1)
    );
    // The pool control sizes the local worker process.
    harness.state_mut().state_mut().worker_target = 3;
    harness.run_steps(2);
    harness.get_by_label("Apply").click();
    harness.run_steps(2);
    assert_eq!(hooks.sizes.lock().expect("lock").last(), Some(&3));
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn a_command_created_in_the_window_runs_and_its_output_shows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut registry = taskdeck::demo::registry();
    register_exec_tasks(&mut registry, ExecSettings::new(dir.path().join("logs")));
    let scheduler =
        Scheduler::start(config(StoreMode::Memory, 1), registry).expect("scheduler should start");
    let mut harness = harness(services(&scheduler));
    open_create_form(&mut harness, "command", "argv (array)");
    let field = harness.get_by_label("argv (array)");
    field.focus();
    field.type_text(r#"["sh", "-c", "echo from-the-window"]"#);
    harness.run_steps(2);
    harness.get_by_label("Submit").click();
    harness.run_steps(3);
    let record = scheduler
        .wait(TaskId(1), WAIT)
        .expect("the task was submitted");
    assert_eq!(record.status, TaskStatus::Completed, "{record:?}");
    assert!(run_until(&mut harness, |h| h
        .query_by_label("#1")
        .is_some()));
    harness.get_by_label("#1").click();
    assert!(
        run_until(&mut harness, |h| h
            .query_by_label_contains("from-the-window")
            .is_some()),
        "the details show the command's output"
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn a_command_tasks_progress_and_output_show_live_in_the_table_and_the_details() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut registry = taskdeck::demo::registry();
    register_exec_tasks(&mut registry, ExecSettings::new(dir.path().join("logs")));
    let scheduler =
        Scheduler::start(config(StoreMode::Memory, 1), registry).expect("scheduler should start");
    // Reports through the progress file, prints, and runs until stopped.
    let script = r#"echo starting
echo '{"fraction": 0.25, "message": "step 1 of 4", "metrics": {"loss": 0.5}}' >> "$TASKDECK_PROGRESS"
echo '{"fraction": 0.5, "metrics": {"loss": 0.25}}' >> "$TASKDECK_PROGRESS"
echo step-two-done
sleep 30"#;
    let id = scheduler
        .submit(TaskSpec::new("command", vec![json!(["sh", "-c", script])]))
        .expect("submit");
    let mut window = services(&scheduler);
    // The window finds logs in DATA_DIR/logs, as the program sets it up.
    window.data_dir = Some(dir.path().to_owned());
    let mut harness = harness(window);
    assert!(
        run_until(&mut harness, |h| h.query_by_label("50%").is_some()),
        "the table shows how far the task is"
    );
    harness.get_by_label(&format!("#{id}")).click();
    assert!(
        run_until(&mut harness, |h| h.query_by_label("step 1 of 4").is_some()
            && h.query_by_label("Plot of loss").is_some()
            && h.query_by_label("loss: 0.25").is_some()),
        "the details show the message, and the loss with its plot"
    );
    assert!(
        run_until(&mut harness, |h| h.query_by_label("starting").is_some()
            && h.query_by_label("step-two-done").is_some()),
        "the details show the output while the task runs"
    );
    let search = harness.get_by_label("Search output");
    search.focus();
    search.type_text("two");
    assert!(
        run_until(&mut harness, |h| h.query_by_label("starting").is_none()),
        "the search leaves out the lines without its text"
    );
    harness.get_by_label("step-two-done");
    assert_eq!(status(&scheduler, id.0), Some(TaskStatus::Running));
    scheduler.cancel(id).expect("cancel");
    scheduler.shutdown().expect("shutdown");
}

/// Set in the child process that runs the full-disk test inside its own
/// mount namespace; names the tmpfs mounted there.
const TMPFS_ENV: &str = "TASKDECK_TEST_TMPFS";

/// The window on a real full disk: the header says so, a submit from the
/// window is refused with the reason in the status bar, and both clear by
/// themselves once there is room. The test runs itself again in a child
/// process inside `unshare --user --map-root-user --mount`, on an 8 MB tmpfs
/// mounted there (see tests/it/storage.rs for the same sandbox with the binary).
#[test]
fn a_full_disk_shows_in_the_header_and_clears_by_itself() {
    let Ok(mount) = std::env::var(TMPFS_ENV) else {
        if !cfg!(target_os = "linux") {
            eprintln!("skipped: needs Linux mount namespaces");
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let script = r#"mount -t tmpfs -o size=8m tmpfs "$1" || exit 97; shift; exec "$@""#;
        let output = common::in_own_mount_namespace(script)
            .arg(dir.path())
            .arg(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "window::a_full_disk_shows_in_the_header_and_clears_by_itself",
            ])
            .args(["--nocapture", "--test-threads", "1"])
            .env(TMPFS_ENV, dir.path())
            .output();
        let required = common::tmpfs_required();
        let ran = output
            .as_ref()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("running 1 test"));
        match output {
            Ok(output) if ran => assert!(
                output.status.success()
                    && String::from_utf8_lossy(&output.stdout).contains("1 passed"),
                "the test in its tmpfs failed:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            other => {
                let why = match other {
                    Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
                    Err(error) => error.to_string(),
                };
                assert!(
                    !required,
                    "TASKDECK_REQUIRE_TMPFS=1 but no tmpfs sandbox could start: {why}"
                );
                eprintln!("skipped: no tmpfs in a user namespace here: {why}");
            }
        }
        return;
    };

    let mount = std::path::PathBuf::from(mount);
    let scheduler = Scheduler::start(
        config(StoreMode::File(mount.join("tasks.db")), 2),
        taskdeck::demo::registry(),
    )
    .expect("scheduler should start");
    let mut harness = harness(services(&scheduler));
    harness.run_steps(2);
    assert!(harness.query_by_label_contains("Disk full").is_none());

    let filler = mount.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).expect("the filler should be creatable");
        let chunk = vec![0u8; 16 * 1024];
        while file.write(&chunk).is_ok_and(|n| n > 0) {}
    }
    // Space SQLite already holds may take a few more; then it refuses.
    assert!(
        common::wait_until(WAIT, || scheduler
            .submit(TaskSpec::new("noop", vec![]))
            .is_err()),
        "submits should be refused on a full disk"
    );
    assert!(
        run_until(&mut harness, |h| h
            .query_by_label("Disk full: new tasks refused")
            .is_some()),
        "the header should say the disk is full"
    );
    harness.get_by_label("Random mock task").click();
    assert!(
        run_until(&mut harness, |h| h
            .query_by_label_contains("is full")
            .is_some()),
        "the refusal and its reason should show in the status bar"
    );

    std::fs::remove_file(&filler).expect("the filler should be removable");
    assert!(
        run_until(&mut harness, |h| h
            .query_by_label("Disk full: new tasks refused")
            .is_none()),
        "the header should clear once there is room"
    );
    let id = scheduler
        .submit(TaskSpec::new("noop", vec![json!(1)]))
        .expect("submits work again");
    assert_eq!(
        scheduler.wait(id, WAIT).expect("the task is known").status,
        TaskStatus::Completed
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn hold_keeps_a_queued_task_from_starting_and_release_lets_it_run() {
    let scheduler = scheduler(0);
    let id = scheduler
        .submit(TaskSpec::new("noop", vec![]))
        .expect("submit");
    let mut harness = harness(services(&scheduler));
    assert!(run_until(&mut harness, |h| h
        .query_by_label(&format!("#{id}"))
        .is_some()));
    assert!(
        harness
            .get_by_label("Release")
            .accesskit_node()
            .is_disabled(),
        "nothing held is selected"
    );
    harness.get_by_label(&format!("#{id}")).click();
    harness.run_steps(2);
    harness.get_by_label("Hold").click();
    assert!(run_until(&mut harness, |h| h
        .query_by_label("queued (held)")
        .is_some()));
    assert!(
        run_until(&mut harness, |h| h
            .query_by_label("Waiting: held; it starts only after a release")
            .is_some()),
        "the details say why it waits"
    );
    assert!(scheduler.task(id).is_some_and(|r| r.held));
    scheduler.set_workers(2);
    assert!(
        !scheduler.wait_idle(std::time::Duration::from_millis(300)),
        "held: nothing runs"
    );
    let release = harness.get_by_label("Release");
    assert!(!release.accesskit_node().is_disabled());
    release.click();
    harness.run_steps(2);
    assert!(scheduler.wait_idle(WAIT));
    assert_eq!(status(&scheduler, id.0), Some(TaskStatus::Completed));
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn pause_stops_tasks_from_starting_shows_in_the_header_and_resume_lets_them_run() {
    let scheduler = scheduler(2);
    let mut harness = harness(services(&scheduler));
    harness.run_steps(2);
    harness.get_by_label("Pause").click();
    assert!(run_until(&mut harness, |h| h
        .query_by_label("Paused")
        .is_some()));
    assert!(scheduler.is_paused());
    let id = scheduler
        .submit(TaskSpec::new("noop", vec![]))
        .expect("submit");
    assert!(
        !scheduler.wait_idle(std::time::Duration::from_millis(300)),
        "paused: nothing starts"
    );
    harness.get_by_label("Resume").click();
    harness.run_steps(2);
    assert!(!scheduler.is_paused());
    assert!(scheduler.wait_idle(WAIT));
    assert_eq!(status(&scheduler, id.0), Some(TaskStatus::Completed));
    scheduler.shutdown().expect("shutdown");
}
