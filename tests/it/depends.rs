//! Dependencies between tasks against the real scheduler, its HTTP API and
//! the real `taskdeck serve` binary: order, fan-in, cascade cancel, retry
//! with cascade, refusals, and kill -9 with tasks waiting in every way.

use crate::common;

use serde_json::{Value, json};

use common::{Api, WAIT, start_memory, wait_until};
use taskdeck::model::{OnDependencyFailure, TaskId, TaskRecord, TaskSpec, TaskStatus};

fn noop() -> TaskSpec {
    TaskSpec::new("noop", vec![])
}

fn record(scheduler: &taskdeck::scheduler::Scheduler, id: TaskId) -> TaskRecord {
    scheduler.task(id).expect("the task is known")
}

/// Asserts that `dependent` first started after `dependency` finished.
fn started_after(dependent: &TaskRecord, dependency: &TaskRecord) {
    let finished = dependency.finished_at_us.expect("the dependency finished");
    let started = dependent.first_started_at_us.expect("the dependent ran");
    assert!(
        started >= finished,
        "task {} started at {started}, before task {} finished at {finished}",
        dependent.id,
        dependency.id
    );
}

#[test]
fn a_chain_of_1000_runs_in_order_and_a_fan_in_on_1000_runs_once() {
    let scheduler = start_memory(4, |_| {});
    let chain: Vec<TaskSpec> = (0..1_000)
        .map(|i| {
            if i == 0 {
                noop()
            } else {
                noop().after_batch(i - 1)
            }
        })
        .collect();
    let chain = scheduler
        .submit_batch(chain)
        .expect("the chain is accepted");
    let mut fan: Vec<TaskSpec> = (0..1_000).map(|_| noop()).collect();
    fan.push((0..1_000).fold(noop(), TaskSpec::after_batch));
    let fan = scheduler.submit_batch(fan).expect("the fan-in is accepted");
    assert!(scheduler.wait_idle(WAIT), "everything finishes");

    let chain: Vec<TaskRecord> = chain.iter().map(|id| record(&scheduler, *id)).collect();
    for pair in chain.windows(2) {
        assert_eq!(
            pair[1].spec.dependency_ids().collect::<Vec<_>>(),
            [pair[0].id]
        );
        started_after(&pair[1], &pair[0]);
    }
    let fan: Vec<TaskRecord> = fan.iter().map(|id| record(&scheduler, *id)).collect();
    let (last, sources) = fan.split_last().expect("a fan-in");
    assert_eq!(last.status, TaskStatus::Completed);
    assert_eq!(last.attempts, 1, "it ran once");
    for source in sources {
        assert_eq!(source.status, TaskStatus::Completed);
        started_after(last, source);
    }
    assert!(
        chain
            .iter()
            .all(|r| r.status == TaskStatus::Completed && r.attempts == 1)
    );
    scheduler.shutdown().expect("shutdown");
}

#[test]
fn a_failed_dependency_cancels_its_dependents_and_a_policy_runs_one_anyway() {
    let scheduler = start_memory(2, |_| {});
    let ids = scheduler
        .submit_batch(vec![
            TaskSpec::new("fail", vec![json!(5)]).max_retries(0),
            noop().after_batch(0),
            noop().after_batch(1),
            noop()
                .after_batch(0)
                .on_dependency_failure(OnDependencyFailure::Run),
        ])
        .expect("accepted");
    assert!(scheduler.wait_idle(WAIT));
    let [failed, child, grandchild, anyway] = [0, 1, 2, 3].map(|i| record(&scheduler, ids[i]));
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(child.status, TaskStatus::Cancelled);
    assert_eq!(child.cancelled_by, Some(failed.id));
    assert_eq!(child.attempts, 0, "it never started");
    assert!(
        child
            .error
            .as_deref()
            .is_some_and(|e| e.contains(&format!("task {}", failed.id))),
        "{:?}",
        child.error
    );
    assert_eq!(grandchild.status, TaskStatus::Cancelled);
    assert_eq!(grandchild.cancelled_by, Some(child.id));
    assert_eq!(anyway.status, TaskStatus::Completed);
    started_after(&anyway, &failed);
    scheduler.shutdown().expect("shutdown");
}

fn call(api: &Api, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    match api.client(None).call(method, path, body) {
        Ok(value) => (200, value),
        Err(taskdeck::client::ClientError::Server {
            status, message, ..
        }) => (status, json!({ "error": { "message": message } })),
        Err(other) => panic!("{method} {path}: {other}"),
    }
}

#[test]
fn over_http_a_pipeline_waits_says_why_and_retry_with_cascade_brings_it_back() {
    let api = Api::start(2, None);
    let (_, paused) = call(&api, "POST", "/api/v1/pause", None);
    assert_eq!(paused["paused"], true);
    let batch = json!({"tasks": [
        {"task": "noop"},
        {"task": "noop", "depends_on": [{"batch_index": 0}]},
        {"task": "noop", "depends_on": [{"batch_index": 1}, {"batch_index": 0}]},
    ]});
    let (status, submitted) = call(&api, "POST", "/api/v1/tasks/batch", Some(&batch));
    assert_eq!(status, 200, "{submitted}");
    let ids: Vec<u64> = submitted["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let task = |id: u64| call(&api, "GET", &format!("/api/v1/tasks/{id}"), None).1;
    let last = task(ids[2]);
    assert_eq!(last["depends_on"], json!([ids[1], ids[0]]), "{last}");
    assert_eq!(
        last["waiting"]["code"], "waiting_for_dependencies",
        "{last}"
    );
    assert_eq!(last["waiting"]["count"], 2, "{last}");
    assert_eq!(task(ids[0])["dependents"], json!([ids[1], ids[2]]));

    // Cancelling the first takes the others down with it.
    let (status, _) = call(
        &api,
        "POST",
        &format!("/api/v1/tasks/{}/cancel", ids[0]),
        None,
    );
    assert_eq!(status, 200);
    for id in &ids[1..] {
        let record = task(*id);
        assert_eq!(record["status"], "cancelled", "{record}");
        assert!(record["cancelled_by"].is_u64(), "{record}");
    }
    // Without cascade a dependent cannot come back on its own.
    let (status, refused) = call(
        &api,
        "POST",
        &format!("/api/v1/tasks/{}/retry", ids[1]),
        None,
    );
    assert_eq!(status, 409, "{refused}");
    let (status, retried) = call(
        &api,
        "POST",
        &format!("/api/v1/tasks/{}/retry?cascade=true", ids[0]),
        None,
    );
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["ids"], json!(ids));
    call(&api, "POST", "/api/v1/resume", None);
    assert!(wait_until(WAIT, || {
        ids.iter().all(|id| task(*id)["status"] == "completed")
    }));
    let times: Vec<(f64, f64)> = ids
        .iter()
        .map(|id| {
            let record = task(*id);
            (
                record["started_at"].as_f64().expect("started"),
                record["finished_at"].as_f64().expect("finished"),
            )
        })
        .collect();
    assert!(
        times[1].0 >= times[0].1 && times[2].0 >= times[1].1,
        "{times:?}"
    );
}

#[test]
fn over_http_bad_dependencies_are_refused_and_nothing_of_the_batch_is_accepted() {
    let api = Api::start(1, None);
    let (_, first) = call(
        &api,
        "POST",
        "/api/v1/tasks",
        Some(&json!({"task": "noop"})),
    );
    let first = first["id"].as_u64().expect("an id");
    let bad: [(Value, &str); 5] = [
        (json!({"task": "noop", "depends_on": [999]}), "not known"),
        (
            json!({"task": "noop", "depends_on": [{"batch_index": 0}]}),
            "batch position 0",
        ),
        (json!({"task": "noop", "depends_on": ["x"]}), "invalid"),
        (
            json!({"task": "noop", "depends_on": [first], "on_dependency_failure": "maybe"}),
            "invalid",
        ),
        (json!({"task": "noop", "depends_on": 3}), "invalid"),
    ];
    for (body, expected) in bad {
        let (status, answer) = call(&api, "POST", "/api/v1/tasks", Some(&body));
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let batch = json!({"tasks": [
        {"task": "noop"},
        {"task": "noop", "depends_on": [{"batch_index": 0}]},
        {"task": "noop", "depends_on": [{"batch_index": 2}]},
    ]});
    let (status, answer) = call(&api, "POST", "/api/v1/tasks/batch", Some(&batch));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("task 2 of the batch")),
        "{answer}"
    );
    let (_, list) = call(&api, "GET", "/api/v1/tasks", None);
    assert_eq!(list["count"], 1, "only the first task exists: {list}");
}

/// The id a `taskdeck submit` printed.
fn submitted(output: &std::process::Output) -> u64 {
    crate::cli::text(output)
        .trim()
        .strip_prefix("submitted task ")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not a submit: {}", crate::cli::text(output)))
}

#[test]
fn the_cli_submits_after_tasks_and_kill_9_keeps_every_waiting_task_waiting() {
    use crate::cli::{Server, text};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start_in(dir.path(), &[]);
    let first = submitted(&server.run(&["submit", "sleep", "1500"]));
    let first_text = first.to_string();
    let second = submitted(&server.run(&["submit", "noop", "--after", &first_text]));
    let third = submitted(&server.run(&[
        "submit",
        "noop",
        "--after",
        &second.to_string(),
        "--after",
        &first_text,
    ]));
    let delayed =
        submitted(&server.run(&["submit", "noop", "--after", &first_text, "--delay", "3s"]));
    let held = submitted(&server.run(&["submit", "noop", "--after", &first_text]));
    let hold = server.run(&["hold", &held.to_string()]);
    assert!(hold.status.success(), "{}", text(&hold));
    let status = text(&server.run(&["status", &third.to_string()]));
    assert!(status.contains("after:"), "{status}");
    assert!(status.contains("waits for 2 dependencies"), "{status}");
    let unknown = server.run(&["submit", "noop", "--after", "9999"]);
    assert!(!unknown.status.success());
    assert!(text(&unknown).contains("not known"), "{}", text(&unknown));

    let client = taskdeck::client::Client::new(&server.url, None, WAIT);
    assert!(wait_until(WAIT, || {
        client.task(first).is_ok_and(|t| t["status"] == "running")
    }));
    let _ = server.child.kill();
    let _ = server.child.wait();

    let server = Server::start_in(dir.path(), &[]);
    let client = taskdeck::client::Client::new(&server.url, None, WAIT);
    for id in [second, third, delayed, held] {
        let record = client.task(id).expect("it survived");
        assert_eq!(record["status"], "queued", "{record}");
    }
    assert_eq!(client.task(held).expect("held")["held"], true);
    assert!(wait_until(WAIT, || {
        [first, second, third, delayed]
            .iter()
            .all(|id| client.task(*id).is_ok_and(|t| t["status"] == "completed"))
    }));
    let task = |id: u64| client.task(id).expect("known");
    let finished = |id: u64| task(id)["finished_at"].as_f64().expect("finished");
    let started = |id: u64| task(id)["first_started_at"].as_f64().expect("started");
    assert!(started(second) >= finished(first));
    assert!(started(third) >= finished(second));
    assert!(started(delayed) >= task(delayed)["not_before"].as_f64().expect("a time"));
    for id in [second, third, delayed] {
        assert_eq!(task(id)["attempts"], 1, "exactly once: {}", task(id));
    }
    assert_eq!(task(held)["status"], "queued", "still held");
    let release = server.run(&["release", &held.to_string()]);
    assert!(release.status.success(), "{}", text(&release));
    assert!(wait_until(WAIT, || task(held)["status"] == "completed"));
    assert_eq!(task(held)["attempts"], 1);
}

#[test]
fn the_cli_retries_with_cascade() {
    use crate::cli::{Server, text};
    let server = Server::start(&[]);
    let client = taskdeck::client::Client::new(&server.url, None, WAIT);
    let paused = server.run(&["pause"]);
    assert!(paused.status.success(), "{}", text(&paused));
    let first = submitted(&server.run(&["submit", "noop"]));
    let second = submitted(&server.run(&["submit", "noop", "--after", &first.to_string()]));
    let cancel = server.run(&["cancel", &first.to_string()]);
    assert!(cancel.status.success(), "{}", text(&cancel));
    assert!(wait_until(WAIT, || {
        client
            .task(second)
            .is_ok_and(|t| t["status"] == "cancelled")
    }));
    let status = text(&server.run(&["status", &second.to_string()]));
    assert!(
        status.contains(&format!("its dependency, task {first}")),
        "{status}"
    );
    let alone = server.run(&["retry", &second.to_string()]);
    assert!(!alone.status.success(), "{}", text(&alone));
    assert!(text(&alone).contains("cascade"), "{}", text(&alone));
    let retried = server.run(&["retry", &first.to_string(), "--cascade"]);
    assert!(retried.status.success(), "{}", text(&retried));
    assert!(
        text(&retried).contains(&format!("task {second}")),
        "{}",
        text(&retried)
    );
    let resumed = server.run(&["resume"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(wait_until(WAIT, || {
        client
            .task(second)
            .is_ok_and(|t| t["status"] == "completed")
    }));
}
