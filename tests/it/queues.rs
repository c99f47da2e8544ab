//! Named queues against the real scheduler, its HTTP API and the real
//! `taskdeck serve` binary: a limit is never exceeded (checked from the
//! records' start and end times), a paused queue runs nothing while the
//! others run, and settings survive kill -9.

use crate::common;

use serde_json::{Value, json};

use common::{Api, WAIT, most_at_once, wait_until};

fn call(api: &Api, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    match api.client(None).call(method, path, body) {
        Ok(value) => (200, value),
        Err(taskdeck::client::ClientError::Server {
            status, message, ..
        }) => (status, json!({ "error": { "message": message } })),
        Err(other) => panic!("{method} {path}: {other}"),
    }
}

fn submit(api: &Api, body: Value) -> u64 {
    let (status, answer) = call(api, "POST", "/api/v1/tasks", Some(&body));
    assert_eq!(status, 200, "{answer}");
    answer["id"].as_u64().expect("an id")
}

fn task(api: &Api, id: u64) -> Value {
    call(api, "GET", &format!("/api/v1/tasks/{id}"), None).1
}

#[test]
fn a_queue_limit_is_never_exceeded_while_other_queues_use_the_pool() {
    let api = Api::start(6, None);
    let (status, train) = call(
        &api,
        "PATCH",
        "/api/v1/queues/train",
        Some(&json!({"limit": 2})),
    );
    assert_eq!(status, 200, "{train}");
    assert_eq!(train["limit"], 2);
    let trains: Vec<u64> = (0..8)
        .map(|_| {
            submit(
                &api,
                json!({"task": "sleep", "args": [60], "queue": "train"}),
            )
        })
        .collect();
    let preps: Vec<u64> = (0..8)
        .map(|_| {
            submit(
                &api,
                json!({"task": "sleep", "args": [60], "queue": "prep"}),
            )
        })
        .collect();
    let (_, waiting) = call(&api, "GET", &format!("/api/v1/tasks/{}", trains[7]), None);
    if waiting["status"] == "queued" {
        assert_eq!(waiting["waiting"]["code"], "queue_at_limit", "{waiting}");
    }
    assert!(wait_until(WAIT, || {
        trains
            .iter()
            .chain(&preps)
            .all(|id| task(&api, *id)["status"] == "completed")
    }));
    let intervals = |ids: &[u64]| -> Vec<(f64, f64)> {
        ids.iter()
            .map(|id| {
                let record = task(&api, *id);
                (
                    record["started_at"].as_f64().expect("started"),
                    record["finished_at"].as_f64().expect("finished"),
                )
            })
            .collect()
    };
    assert_eq!(
        most_at_once(&intervals(&trains)),
        2,
        "the limit, and no more"
    );
    assert!(
        most_at_once(&intervals(&preps)) > 2,
        "the other queue used the rest of the pool"
    );
    let (_, queues) = call(&api, "GET", "/api/v1/queues", None);
    let train = queues["queues"]
        .as_array()
        .and_then(|list| list.iter().find(|q| q["name"] == "train").cloned())
        .expect("listed");
    assert_eq!(train["completed"], 8, "{queues}");
    assert_eq!(train["running"], 0, "{queues}");
}

#[test]
fn a_paused_queue_runs_nothing_while_the_others_run_and_bad_settings_are_refused() {
    let api = Api::start(2, None);
    let (status, _) = call(
        &api,
        "PATCH",
        "/api/v1/queues/gpu",
        Some(&json!({"paused": true})),
    );
    assert_eq!(status, 200);
    let frozen = submit(&api, json!({"task": "noop", "queue": "gpu"}));
    let free: Vec<u64> = (0..5)
        .map(|_| submit(&api, json!({"task": "noop"})))
        .collect();
    assert!(wait_until(WAIT, || {
        free.iter()
            .all(|id| task(&api, *id)["status"] == "completed")
    }));
    let record = task(&api, frozen);
    assert_eq!(record["status"], "queued", "{record}");
    assert_eq!(record["waiting"]["code"], "queue_paused", "{record}");
    assert_eq!(record["waiting"]["queue"], "gpu", "{record}");

    for (body, expected) in [
        (json!({"limit": 0}), "at least 1"),
        (json!({"limit": "two"}), "whole number"),
        (json!({"paused": "yes"}), "true or false"),
        (json!({"stop_running": true}), "paused"),
        (json!({"color": "red"}), "unknown field"),
    ] {
        let (status, answer) = call(&api, "PATCH", "/api/v1/queues/gpu", Some(&body));
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let (status, _) = call(
        &api,
        "PATCH",
        "/api/v1/queues/no%20spaces",
        Some(&json!({"paused": true})),
    );
    assert_eq!(status, 400);
    let (status, _) = call(
        &api,
        "POST",
        "/api/v1/tasks",
        Some(&json!({"task": "noop", "queue": "bad/name"})),
    );
    assert_eq!(status, 400);
    assert_eq!(task(&api, frozen)["status"], "queued", "nothing changed");

    let (_, resumed) = call(
        &api,
        "PATCH",
        "/api/v1/queues/gpu",
        Some(&json!({"paused": false})),
    );
    assert_eq!(resumed["paused"], false);
    assert!(wait_until(WAIT, || task(&api, frozen)["status"] == "completed"));
}

#[test]
fn pausing_a_queue_with_stop_running_puts_its_running_tasks_back() {
    let api = Api::start(2, None);
    let long = submit(
        &api,
        json!({"task": "sleep", "args": [60000], "queue": "slow"}),
    );
    assert!(wait_until(WAIT, || task(&api, long)["status"] == "running"));
    let (status, _) = call(
        &api,
        "PATCH",
        "/api/v1/queues/slow",
        Some(&json!({"paused": true, "stop_running": true})),
    );
    assert_eq!(status, 200);
    assert!(wait_until(WAIT, || task(&api, long)["status"] == "queued"));
    let record = task(&api, long);
    assert_eq!(
        record["attempts"], 0,
        "the stopped attempt does not count: {record}"
    );
    assert_eq!(record["waiting"]["code"], "queue_paused", "{record}");
}

#[test]
fn queue_settings_survive_kill_9_of_serve() {
    use crate::cli::{Server, text};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start_in(dir.path(), &[]);
    let set = server.run(&["queue", "train", "--limit", "1"]);
    assert!(set.status.success(), "{}", text(&set));
    let paused = server.run(&["queue", "eval", "--pause"]);
    assert!(paused.status.success(), "{}", text(&paused));
    assert!(text(&paused).contains("paused"), "{}", text(&paused));
    let submitted = server.run(&["submit", "noop", "--queue", "eval"]);
    assert!(submitted.status.success(), "{}", text(&submitted));
    let id: u64 = text(&submitted)
        .trim()
        .strip_prefix("submitted task ")
        .and_then(|id| id.parse().ok())
        .expect("an id");
    let bad = server.run(&["queue", "train", "--limit", "0"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("--limit"), "{}", text(&bad));
    let _ = server.child.kill();
    let _ = server.child.wait();

    let server = Server::start_in(dir.path(), &[]);
    let listed = text(&server.run(&["queues"]));
    let line = |name: &str| {
        listed
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("train").contains(" 1 "), "{listed}");
    assert!(line("eval").contains("paused"), "{listed}");
    let client = taskdeck::client::Client::new(&server.url, None, WAIT);
    assert_eq!(client.task(id).expect("kept")["status"], "queued");
    let status = text(&server.run(&["status", &id.to_string()]));
    assert!(status.contains("queue eval is paused"), "{status}");
    let resumed = server.run(&["queue", "eval", "--resume"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(wait_until(WAIT, || {
        client.task(id).is_ok_and(|t| t["status"] == "completed")
    }));
}
