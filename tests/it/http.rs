//! The HTTP API over real sockets on 127.0.0.1: every route, the legacy
//! shapes, auth, bad input, slow clients, long polls and concurrency.

use crate::common;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Api, WAIT, raw_http, wait_until};
use taskdeck::client::ClientError;

fn status_of(result: Result<Value, ClientError>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(ClientError::Server { status, .. }) => status,
        Err(other) => panic!("unexpected client error: {other}"),
    }
}

fn message_of(result: Result<Value, ClientError>) -> String {
    match result {
        Err(ClientError::Server { message, .. }) => message,
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[test]
fn every_v1_route_answers_as_documented() {
    let api = Api::start(2, None);
    let client = api.client(None);

    let id = client
        .submit(&json!({"task": "noop", "args": [1, "two"], "priority": 7, "max_retries": 1, "timeout_s": 5}))
        .expect("submit");
    let done = client.wait(id, 10.0).expect("wait");
    assert_eq!(done["finished"], true);
    let task = &done["task"];
    assert_eq!(task["status"], "completed");
    assert_eq!(task["result"], json!([1, "two"]));
    assert_eq!(
        (task["priority"].clone(), task["timeout_s"].clone()),
        (json!(7), json!(5.0))
    );
    assert!(task["total_latency_s"].as_f64().is_some_and(|s| s >= 0.0));
    assert_eq!(client.task(id).expect("get")["id"], id);

    let ids = client
        .submit_batch(&[
            json!({"task": "sleep", "args": [60000]}),
            json!({"task": "fail", "args": [5], "max_retries": 0}),
            json!({"task": "mock_cv_task", "args": [100], "kwargs": {"operation": "Object Detection"}}),
        ])
        .expect("batch");
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[1], ids[0] + 1);

    assert!(wait_until(
        WAIT,
        || client.task(ids[0]).expect("get")["status"] == "running"
    ));
    let cancelled = client.cancel(ids[0]).expect("cancel running");
    assert_eq!(cancelled["outcome"], "stop_requested");
    assert_eq!(
        client.wait(ids[0], 10.0).expect("wait")["task"]["status"],
        "cancelled"
    );

    let failed = client.wait(ids[1], 10.0).expect("wait");
    assert_eq!(failed["task"]["status"], "failed");
    assert_eq!(
        client.retry(ids[1], false).expect("retry")["status"],
        "queued"
    );
    assert_eq!(status_of(client.retry(id, false)), 409);
    assert_eq!(
        client.wait(ids[2], 10.0).expect("wait")["task"]["status"],
        "completed"
    );

    let page = client
        .list("status=completed&limit=1&order=oldest")
        .expect("list");
    assert_eq!(page["count"], 1);
    assert_eq!(page["tasks"][0]["id"], id);
    let cv = client.list("task=mock_cv_task").expect("list");
    assert_eq!(cv["tasks"][0]["id"], ids[2]);
    let all = client.list("limit=2&offset=1").expect("list");
    assert_eq!(all["tasks"].as_array().map(Vec::len), Some(2));
    assert!(
        all["tasks"][0]["id"].as_u64() > all["tasks"][1]["id"].as_u64(),
        "newest first"
    );

    let queued = client
        .submit(&json!({"task": "sleep", "args": [10]}))
        .expect("submit");
    let by_post = client.call("POST", &format!("/api/v1/tasks/{queued}/cancel"), None);
    assert!(status_of(by_post) == 200 || client.task(queued).is_ok());

    assert!(wait_until(WAIT, || api.telemetry.latest().is_some()));
    let monitoring = client.monitoring().expect("monitoring");
    assert!(monitoring["cpu"]["percent"].is_number(), "{monitoring}");
    assert!(
        monitoring["memory"]["total_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0)
    );
    assert_eq!(
        monitoring["gpus"]["available"], false,
        "no GPU on this machine"
    );
    assert!(
        monitoring["gpus"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    assert_eq!(monitoring["workers"]["total"], 2);
    assert!(monitoring["latency"]["count"].as_u64() >= Some(2));

    let workers = client
        .call("GET", "/api/v1/workers", None)
        .expect("workers");
    assert_eq!(workers["total"], 2);
    assert_eq!(workers["workers"].as_array().map(Vec::len), Some(2));
    let report = client.call("GET", "/api/v1/report", None).expect("report");
    assert!(report["counts"]["completed"].as_u64() >= Some(2));
    let names: Vec<&str> = report["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["task"].as_str())
        .collect();
    assert!(
        names.contains(&"noop") && names.contains(&"fail"),
        "{report}"
    );
    let types = client.task_types().expect("task types");
    let ml = types["task_types"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "mock_ml_task"))
        .expect("mock_ml_task is registered");
    assert_eq!(
        ml["params"][0],
        json!({"name": "duration_ms", "type": "u_int"})
    );
    assert_eq!(
        client.call("GET", "/healthz", None).expect("health")["status"],
        "ok"
    );

    let metrics = raw_http(
        api.addr(),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
    assert!(metrics.contains("taskdeck_queue_depth "));
    assert!(metrics.contains("taskdeck_tasks{status=\"completed\"}"));
    assert!(metrics.contains("taskdeck_task_latency_seconds_bucket{le=\"+Inf\"}"));
    assert!(metrics.contains("taskdeck_workers_busy "));
    assert!(metrics.contains("taskdeck_memory_total_bytes "));
}

#[test]
fn a_long_poll_is_answered_the_moment_the_task_finishes_or_when_time_is_up() {
    let api = Api::start(1, None);
    let client = api.client(None);
    let id = client
        .submit(&json!({"task": "sleep", "args": [300]}))
        .expect("submit");
    let begun = Instant::now();
    let answer = client.wait(id, 30.0).expect("wait");
    let took = begun.elapsed();
    assert_eq!(answer["finished"], true);
    assert!(
        took < Duration::from_secs(5),
        "answered at completion, not at the timeout: {took:?}"
    );

    let long = client
        .submit(&json!({"task": "sleep", "args": [60000]}))
        .expect("submit");
    let begun = Instant::now();
    let answer = client.wait(long, 0.3).expect("wait");
    assert_eq!(answer["finished"], false);
    assert_eq!(answer["task"]["status"], "running");
    assert!(begun.elapsed() >= Duration::from_millis(300));

    // Many waiting clients hold no request thread: a plain request still answers.
    let waiters: Vec<_> = (0..40)
        .map(|_| {
            let client = api.client(None);
            thread::spawn(move || client.wait(long, 60.0))
        })
        .collect();
    assert!(wait_until(WAIT, || {
        let begun = Instant::now();
        client.call("GET", "/healthz", None).is_ok() && begun.elapsed() < Duration::from_secs(1)
    }));
    client.cancel(long).expect("cancel");
    for waiter in waiters {
        let answer = waiter.join().expect("waiter").expect("wait answer");
        assert_eq!(answer["task"]["status"], "cancelled");
    }
    assert_eq!(status_of(client.wait(999_999, 1.0)), 404);
}

#[test]
fn legacy_routes_keep_their_exact_shapes() {
    let api = Api::start(1, None);
    let client = api.client(None);
    let submitted = client
        .call(
            "POST",
            "/submit_task",
            Some(&json!({"function_name": "mock_ml_task", "arguments": [200, "Random Forest"]})),
        )
        .expect("legacy submit");
    let id = submitted["task_id"].as_u64().expect("task_id is a number");
    assert_eq!(submitted.as_object().map(|o| o.len()), Some(1));
    let queued = client
        .call(
            "POST",
            "/submit_task",
            Some(&json!({"function_name": "sleep", "arguments": [60000]})),
        )
        .expect("legacy submit")["task_id"]
        .as_u64()
        .expect("id");
    let behind = client
        .call(
            "POST",
            "/submit_task",
            Some(&json!({"function_name": "sleep", "arguments": [1]})),
        )
        .expect("legacy submit")["task_id"]
        .as_u64()
        .expect("id");

    let status = client
        .call("GET", &format!("/task_status/{behind}"), None)
        .expect("status");
    assert_eq!(status, json!({"task_id": behind, "status": "On Hold"}));
    assert!(wait_until(WAIT, || {
        client
            .call("GET", &format!("/task_status/{id}"), None)
            .expect("status")["status"]
            == "Completed"
    }));
    assert!(wait_until(WAIT, || {
        client
            .call("GET", &format!("/task_status/{queued}"), None)
            .expect("status")["status"]
            == "In Progress"
    }));
    assert_eq!(
        client
            .call("GET", "/task_status/4242", None)
            .expect("status"),
        json!({"task_id": 4242, "status": "Unknown"})
    );

    assert_eq!(
        client
            .call("DELETE", &format!("/remove_task/{behind}"), None)
            .expect("remove"),
        json!({"success": true})
    );
    let refused = client
        .call("DELETE", &format!("/remove_task/{queued}"), None)
        .expect("remove");
    assert_eq!(refused["success"], false);
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("running")),
        "{refused}"
    );
    assert_eq!(
        client
            .call("GET", &format!("/task_status/{queued}"), None)
            .expect("status")["status"],
        "In Progress",
        "a refused removal changes nothing"
    );
    assert_eq!(
        client
            .call("GET", &format!("/task_status/{behind}"), None)
            .expect("s")["status"],
        "Cancelled"
    );

    let failing = client
        .call(
            "POST",
            "/submit_task",
            Some(&json!({"function_name": "fail", "arguments": [9]})),
        )
        .expect("submit")["task_id"]
        .as_u64()
        .expect("id");
    api.scheduler
        .cancel(taskdeck::model::TaskId(queued))
        .expect("stop");
    assert!(wait_until(WAIT, || {
        let s = client
            .call("GET", &format!("/task_status/{failing}"), None)
            .expect("status");
        s["status"]
            .as_str()
            .is_some_and(|t| t.starts_with("Failed: planned failure"))
    }));

    let tasks = client.call("GET", "/get_tasks", None).expect("get_tasks");
    let list = tasks.as_array().expect("a list");
    let first = list.iter().find(|t| t["id"] == id).expect("task listed");
    assert_eq!(first["task"], "mock_ml_task");
    assert_eq!(first["arguments"], json!([200, "Random Forest"]));
    assert_eq!(first["status"], "Completed");
    assert!(first["time_taken"].as_f64().is_some_and(|t| t >= 0.2));
    for task in list {
        let keys: Vec<&String> = task.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["arguments", "id", "status", "task", "time_taken"]);
    }

    assert!(wait_until(WAIT, || api.telemetry.latest().is_some()));
    let data = client
        .call("GET", "/monitoring_data", None)
        .expect("monitoring_data");
    for key in [
        "CPU",
        "RAM Usage",
        "RAM Allocated",
        "RAM Total",
        "Disk",
        "Idle Workers",
        "Busy Workers",
        "Total Workers",
    ] {
        assert!(data[key].is_number(), "{key} in {data}");
    }
    assert_eq!(data["GPU Usage"], "Not Available");
    assert_eq!(data["GPU RAM Usage"], "Not Available");
    assert_eq!(data["Total Workers"], 1);
}

#[test]
fn a_token_guards_every_route_but_healthz() {
    let api = Api::start(1, Some("s3cret"));
    let anonymous = api.client(None);
    let wrong = api.client(Some("s3creT"));
    let right = api.client(Some("s3cret"));
    for (method, path) in [
        ("GET", "/api/v1/tasks"),
        ("POST", "/api/v1/tasks"),
        ("GET", "/monitoring_data"),
        ("GET", "/nope"),
    ] {
        assert_eq!(
            status_of(anonymous.call(method, path, None)),
            401,
            "{method} {path}"
        );
        assert_eq!(
            status_of(wrong.call(method, path, None)),
            401,
            "{method} {path}"
        );
    }
    assert_eq!(status_of(anonymous.call("GET", "/healthz", None)), 200);
    let id = right
        .submit(&json!({"task": "noop"}))
        .expect("authorised submit");
    assert_eq!(right.task(id).expect("get")["id"], id);
    let answer = raw_http(
        api.addr(),
        b"GET /api/v1/tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("WWW-Authenticate: Bearer"), "{answer}");
    assert_eq!(
        api.scheduler.stats().counts.completed
            + api.scheduler.stats().counts.queued
            + api.scheduler.stats().counts.running,
        1
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let api = Api::start_with(1, None, |c| c.max_body_bytes = 64 * 1024);
    let client = api.client(None);
    let post = |path: &str, body: &str| {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        raw_http(api.addr(), request.as_bytes())
    };
    let cases = [
        ("/api/v1/tasks", "{not json", "400", "invalid JSON"),
        ("/api/v1/tasks", "", "400", "needs a JSON body"),
        ("/api/v1/tasks", r#"{"task": 5}"#, "400", "invalid request"),
        (
            "/api/v1/tasks",
            r#"{"task": "noop", "args": "x"}"#,
            "400",
            "invalid request",
        ),
        (
            "/api/v1/tasks",
            r#"{"task": "noop", "colour": 1}"#,
            "400",
            "unknown field",
        ),
        (
            "/api/v1/tasks",
            r#"{"task": "rm -rf"}"#,
            "400",
            "unknown task",
        ),
        (
            "/api/v1/tasks",
            r#"{"task": "noop", "delay_s": -1}"#,
            "400",
            "delay_s must be",
        ),
        (
            "/api/v1/tasks",
            r#"{"task": "noop", "delay_s": 1, "not_before": 2}"#,
            "400",
            "not both",
        ),
        (
            "/api/v1/tasks",
            r#"{"task": "noop", "not_before": "tomorrow"}"#,
            "400",
            "RFC 3339",
        ),
        (
            "/api/v1/tasks",
            r#"{"task": "noop", "not_before": 99999999999}"#,
            "400",
            "more than a year ahead",
        ),
        (
            "/api/v1/tasks",
            r#"{"task": "mock_ml_task", "args": [100]}"#,
            "400",
            "missing argument",
        ),
        (
            "/api/v1/tasks",
            r#"{"task": "sleep", "args": ["long"]}"#,
            "400",
            "must be a non-negative integer",
        ),
        (
            "/api/v1/tasks",
            r#"{"task": "noop", "priority": 10}"#,
            "400",
            "out of range 0-9",
        ),
        (
            "/api/v1/tasks",
            r#"{"task": "noop", "priority": -1}"#,
            "400",
            "out of range 0-9",
        ),
        (
            "/api/v1/tasks",
            r#"{"task": "noop", "timeout_s": 0}"#,
            "400",
            "timeout_s",
        ),
        (
            "/api/v1/tasks/batch",
            r#"{"tasks": []}"#,
            "400",
            "1 to 10000",
        ),
        (
            "/api/v1/tasks/batch",
            r#"{"tasks": [{"task": "noop"}, {"task": "nope"}]}"#,
            "400",
            "task 1 of the batch",
        ),
        (
            "/submit_task",
            r#"{"function_name": "nope", "arguments": []}"#,
            "400",
            "unknown task",
        ),
        ("/api/v1/tasks/1/retry", "", "404", "not found"),
    ];
    for (path, body, status, needle) in cases {
        let answer = post(path, body);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{path} {body}: {answer}"
        );
        assert!(answer.contains("application/json"), "{answer}");
        assert!(
            answer.contains(needle),
            "{path} {body}: expected {needle:?} in {answer}"
        );
    }

    let big = format!(
        r#"{{"task": "noop", "args": ["{}"]}}"#,
        "x".repeat(70 * 1024)
    );
    assert!(post("/api/v1/tasks", &big).starts_with("HTTP/1.1 413"));
    // A huge announced body is refused before it is sent.
    let begun = Instant::now();
    let answer = raw_http(
        api.addr(),
        b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\nConnection: close\r\n\r\n{",
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(begun.elapsed() < Duration::from_secs(5));

    let get = |target: &str, method: &str| {
        raw_http(
            api.addr(),
            format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    assert!(get("/api/v1/nothing", "GET").starts_with("HTTP/1.1 404"));
    assert!(get("/api/v1/tasks/77", "GET").starts_with("HTTP/1.1 404"));
    assert!(get("/api/v1/tasks/x1", "GET").starts_with("HTTP/1.1 400"));
    assert!(get("/api/v1/tasks?limit=0", "GET").starts_with("HTTP/1.1 400"));
    let wrong = get("/api/v1/tasks", "PUT");
    assert!(
        wrong.starts_with("HTTP/1.1 405") && wrong.contains("Allow: GET, POST"),
        "{wrong}"
    );
    assert!(get("/api/v1/tasks/1", "PATCH").starts_with("HTTP/1.1 405"));
    assert!(get("/remove_task/1", "GET").starts_with("HTTP/1.1 405"));
    assert!(raw_http(api.addr(), b"garbage\r\n\r\n").is_empty() || !api.url.is_empty());

    assert_eq!(status_of(client.cancel(12345)), 404);
    assert!(
        message_of(client.submit(&json!({"task": "nope"})).map(|_| Value::Null))
            .contains("registered tasks")
    );
    let stats = api.scheduler.stats();
    assert_eq!(stats.counts, Default::default(), "nothing was accepted");
    let id = client
        .submit(&json!({"task": "noop"}))
        .expect("a good request still works");
    assert_eq!(id, 1, "rejected requests used no ids");
}

#[test]
fn slow_and_stalled_clients_do_not_block_others() {
    let api = Api::start(1, None);
    // A burst of stalled uploads and half-sent requests, more than there are
    // request threads, with real clients' connections right behind them.
    let mut stalled = Vec::new();
    for i in 0..12 {
        let mut stream = TcpStream::connect(api.addr()).expect("connect");
        let head = if i % 2 == 0 {
            "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"task\":"
        } else {
            "GET /api/v1/tas"
        };
        stream.write_all(head.as_bytes()).expect("write");
        stalled.push(stream);
    }
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let client = api.client(None);
            thread::spawn(move || {
                let begun = Instant::now();
                let id = client
                    .submit(&json!({"task": "noop"}))
                    .expect("submit while others stall");
                assert_eq!(client.wait(id, 10.0).expect("wait")["finished"], true);
                begun.elapsed()
            })
        })
        .collect();
    for handle in clients {
        let took = handle.join().expect("client");
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
    let client = api.client(None);
    assert_eq!(
        client.call("GET", "/healthz", None).expect("health")["status"],
        "ok"
    );
    drop(stalled);
    assert_eq!(
        api.scheduler.stats().counts.completed,
        4,
        "the stalled uploads submitted nothing"
    );
}

#[test]
fn concurrent_clients_lose_nothing_and_every_task_ends_once() {
    let api = Api::start(2, None);
    let accepted = Arc::new(Mutex::new(Vec::<u64>::new()));
    let removed = Arc::new(Mutex::new(Vec::<u64>::new()));
    let submitters: Vec<_> = (0..8)
        .map(|c| {
            let client = api.client(None);
            let accepted = Arc::clone(&accepted);
            thread::spawn(move || {
                for i in 0..1_250 {
                    let task = if i % 5 == 0 {
                        json!({"task": "sleep", "args": [1], "priority": (c + i) % 10})
                    } else {
                        json!({"task": "noop", "args": [c, i], "priority": (c + i) % 10})
                    };
                    let id = client.submit(&task).expect("submit under load");
                    accepted.lock().expect("lock").push(id);
                }
            })
        })
        .collect();
    let listers: Vec<_> = (0..2)
        .map(|_| {
            let client = api.client(None);
            let accepted = Arc::clone(&accepted);
            let removed = Arc::clone(&removed);
            thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(11);
                for round in 0..150 {
                    let page = client
                        .list("limit=50&status=queued")
                        .expect("list under load");
                    assert!(page["tasks"].is_array());
                    let candidate = {
                        let ids = accepted.lock().expect("lock");
                        (!ids.is_empty()).then(|| ids[rng.usize(..ids.len())])
                    };
                    if let Some(id) = candidate {
                        match client.call("DELETE", &format!("/remove_task/{id}"), None) {
                            Ok(answer) if answer["success"] == true => {
                                removed.lock().expect("lock").push(id)
                            }
                            Ok(_) => {}
                            Err(error) => panic!("remove under load failed: {error}"),
                        }
                    }
                    if round % 10 == 0 {
                        client.monitoring().expect("monitoring under load");
                    }
                }
            })
        })
        .collect();
    for handle in submitters.into_iter().chain(listers) {
        handle.join().expect("client thread");
    }
    assert!(api.scheduler.wait_idle(Duration::from_secs(60)));

    let accepted = accepted.lock().expect("lock").clone();
    assert_eq!(accepted.len(), 10_000);
    let mut unique = accepted.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 10_000, "every accepted id is distinct");
    let removed = removed.lock().expect("lock").clone();
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for id in &accepted {
        let record = api
            .scheduler
            .task(taskdeck::model::TaskId(*id))
            .expect("no accepted task is lost");
        assert!(record.status.is_final(), "{record:?}");
        if removed.contains(id) {
            assert_eq!(record.status, taskdeck::model::TaskStatus::Cancelled);
            assert_eq!(record.attempts, 0, "a removed task never ran");
        } else {
            assert_eq!(
                record.status,
                taskdeck::model::TaskStatus::Completed,
                "{record:?}"
            );
            assert_eq!(record.attempts, 1, "ran exactly once");
        }
        *by_status.entry(record.status.to_string()).or_default() += 1;
    }
    let counts = api.scheduler.stats().counts;
    assert_eq!(counts.completed + counts.cancelled, 10_000);
    assert_eq!(counts.cancelled, removed.len());
    assert_eq!(
        by_status.get("completed").copied().unwrap_or(0),
        counts.completed
    );
}

#[test]
fn every_route_in_the_openapi_contract_answers() {
    let api = Api::start(1, None);
    let client = api.client(None);
    let id = client
        .submit(&json!({"task": "fail", "args": [9], "max_retries": 0}))
        .expect("submit");
    client.wait(id, 10.0).expect("wait");
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml"))
        .expect("docs/openapi.yaml should exist");
    let mut checked = 0;
    let mut path: Option<String> = None;
    let mut in_paths = false;
    for line in spec.lines() {
        if line.starts_with("paths:") {
            in_paths = true;
            continue;
        }
        if in_paths && !line.starts_with(' ') && !line.trim().is_empty() {
            break;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|p| p.strip_suffix(':')) {
            path = Some(format!("/{p}"));
            continue;
        }
        let Some(method) = line.strip_prefix("    ").and_then(|m| m.strip_suffix(':')) else {
            continue;
        };
        if !["get", "post", "put", "delete"].contains(&method) {
            continue;
        }
        let Some(route) = &path else { continue };
        let target = route
            .replace("{id}", &id.to_string())
            .replace("{task_id}", &id.to_string())
            .replace("<id>", &id.to_string())
            .replace("{file}", "app.js");
        let request = format!(
            "{} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
            method.to_uppercase()
        );
        // The event stream does not end: its head is the answer.
        let answer = if target.starts_with("/api/v1/events") {
            head_of(api.addr(), request.as_bytes())
        } else {
            raw_http(api.addr(), request.as_bytes())
        };
        let status: u16 = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        assert!(
            status != 0 && status != 405 && status < 500,
            "{method} {target}: {answer}"
        );
        assert!(
            !answer.contains("no route"),
            "{method} {target} is not served: {answer}"
        );
        checked += 1;
    }
    assert!(
        checked >= 18,
        "only {checked} operations found in docs/openapi.yaml"
    );
}

/// Sends a request and reads its answer's status line and headers only.
fn head_of(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use std::io::Read;
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(request).expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn run_and_wait_many_answer_in_one_round_trip() {
    let api = Api::start(2, None);
    let client = api.client(None);

    // Run: submit and wait in one request.
    let ran = client
        .call(
            "POST",
            "/api/v1/tasks/run",
            Some(&json!({"task": "noop", "args": [5]})),
        )
        .expect("run");
    assert_eq!(ran["finished"], true, "{ran}");
    assert_eq!(ran["task"]["status"], "completed");
    assert_eq!(ran["task"]["result"], json!([5]));
    // Longer than the inline wait: the long poll answers at completion.
    let started = Instant::now();
    let slow = client
        .call(
            "POST",
            "/api/v1/tasks/run?timeout_s=10",
            Some(&json!({"task": "sleep", "args": [200]})),
        )
        .expect("run a sleep");
    assert_eq!(slow["task"]["status"], "completed", "{slow}");
    assert!(started.elapsed() >= Duration::from_millis(190));
    // Time up first: the task is accepted and keeps going.
    let early = client
        .call(
            "POST",
            "/api/v1/tasks/run?timeout_s=0.05",
            Some(&json!({"task": "sleep", "args": [300]})),
        )
        .expect("run with a short wait");
    assert_eq!(early["finished"], false, "{early}");
    let early_id = early["task"]["id"].as_u64().expect("an id");
    assert_eq!(
        client.wait(early_id, 10.0).expect("wait")["task"]["status"],
        "completed"
    );

    // Wait for many: answered when the last one finishes, in the order asked.
    let ids = client
        .submit_batch(&[
            json!({"task": "sleep", "args": [200]}),
            json!({"task": "noop", "args": [1]}),
            json!({"task": "fail", "args": [9], "max_retries": 0}),
        ])
        .expect("batch");
    let started = Instant::now();
    let asked = json!({"ids": [ids[2], ids[0], ids[1], ids[0]]});
    let waited = client
        .call("POST", "/api/v1/tasks/wait?timeout_s=10", Some(&asked))
        .expect("wait for many");
    assert!(started.elapsed() >= Duration::from_millis(150), "{waited}");
    assert_eq!(waited["finished"], true);
    let got: Vec<(u64, String)> = waited["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| {
            (
                t["id"].as_u64().unwrap_or(0),
                t["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (ids[2], "failed".to_owned()),
            (ids[0], "completed".to_owned()),
            (ids[1], "completed".to_owned())
        ],
        "each task once, in the order first asked"
    );
    // Time up: the answer says which are not finished yet.
    let long = client
        .submit(&json!({"task": "sleep", "args": [5000]}))
        .expect("submit");
    let started = Instant::now();
    let partial = client
        .call(
            "POST",
            "/api/v1/tasks/wait?timeout_s=0.2",
            Some(&json!({"ids": [ids[1], long]})),
        )
        .expect("a partial wait");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(partial["finished"], false, "{partial}");
    assert_eq!(partial["tasks"][0]["status"], "completed");
    assert_ne!(partial["tasks"][1]["status"], "completed");

    // Many waiting requests hold no request thread.
    let waiters: Vec<_> = (0..12)
        .map(|_| {
            let client = api.client(None);
            thread::spawn(move || {
                client.call(
                    "POST",
                    "/api/v1/tasks/wait?timeout_s=30",
                    Some(&json!({"ids": [long]})),
                )
            })
        })
        .collect();
    let started = Instant::now();
    for _ in 0..5 {
        client
            .call("GET", "/healthz", None)
            .expect("health while long polls wait");
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    client.cancel(long).expect("cancel");
    for waiter in waiters {
        let answer = waiter.join().expect("waiter").expect("answered");
        assert_eq!(answer["finished"], true);
        assert_eq!(answer["tasks"][0]["status"], "cancelled");
    }

    // Bad input: a clear error, and nothing submitted.
    let before = api.scheduler.stats().counts;
    let too_many: Vec<u64> = (1..=10_001).collect();
    let bad: [(&str, &str, Value, u16); 9] = [
        ("POST", "/api/v1/tasks/wait", json!({"ids": []}), 400),
        ("POST", "/api/v1/tasks/wait", json!({"ids": too_many}), 400),
        (
            "POST",
            "/api/v1/tasks/wait",
            json!({"ids": [1], "extra": true}),
            400,
        ),
        ("POST", "/api/v1/tasks/wait", json!({"ids": ["one"]}), 400),
        (
            "POST",
            "/api/v1/tasks/wait",
            json!({"ids": [ids[0], 999_999]}),
            404,
        ),
        (
            "POST",
            "/api/v1/tasks/wait?timeout_s=301",
            json!({"ids": [ids[0]]}),
            400,
        ),
        (
            "POST",
            "/api/v1/tasks/run",
            json!({"task": "no_such_task"}),
            400,
        ),
        (
            "POST",
            "/api/v1/tasks/run",
            json!({"task": "sleep", "args": ["long"]}),
            400,
        ),
        (
            "POST",
            "/api/v1/tasks/run",
            json!({"task": "noop", "priority": 12}),
            400,
        ),
    ];
    for (method, path, body, status) in bad {
        let result = client.call(method, path, Some(&body));
        assert_eq!(status_of(result), status, "{method} {path} {body}");
    }
    assert_eq!(
        status_of(client.call("GET", "/api/v1/tasks/run", None)),
        405
    );
    assert_eq!(
        status_of(client.call("GET", "/api/v1/tasks/wait", None)),
        405
    );
    let after = api.scheduler.stats().counts;
    assert_eq!(
        before.completed + before.failed + before.cancelled,
        after.completed + after.failed + after.cancelled,
        "bad requests submitted nothing"
    );
    assert_eq!(api.scheduler.stats().queue_depth, 0);
}

#[test]
fn hold_and_release_answer_with_the_record_and_refuse_what_cannot_be_held() {
    let api = Api::start(0, None);
    let client = api.client(None);
    let id = client
        .submit(&serde_json::json!({"task": "noop"}))
        .expect("submit");
    let held = client.hold(id).expect("hold");
    assert_eq!(
        (held["id"].as_u64(), held["held"].as_bool()),
        (Some(id), Some(true))
    );
    assert_eq!(held["status"], "queued");
    let again = client
        .hold(id)
        .expect("holding a held task changes nothing");
    assert_eq!(again["held"], true);
    let released = client.release(id).expect("release");
    assert_eq!(released["held"], false);
    let unknown = client.hold(999_999).expect_err("unknown");
    assert!(unknown.to_string().contains("404"), "{unknown}");
    api.scheduler
        .cancel(taskdeck::model::TaskId(id))
        .expect("cancel");
    let finished = client.hold(id).expect_err("finished");
    assert!(finished.to_string().contains("409"), "{finished}");
}

#[test]
fn a_queued_task_says_why_it_waits_in_its_record_and_in_lists() {
    let api = Api::start(0, None);
    let client = api.client(None);
    let first = client
        .submit(&serde_json::json!({"task": "noop", "priority": 9}))
        .expect("submit");
    let second = client
        .submit(&serde_json::json!({"task": "noop"}))
        .expect("submit");
    let later = client
        .submit(&serde_json::json!({"task": "noop", "delay_s": 600}))
        .expect("submit");
    let record = client.task(second).expect("record");
    assert_eq!(record["waiting"]["code"], "queued_behind", "{record}");
    assert_eq!(record["waiting"]["ahead"], 1, "{record}");
    let record = client.task(first).expect("record");
    assert_eq!(record["waiting"]["ahead"], 0, "{record}");
    let record = client.task(later).expect("record");
    assert_eq!(record["waiting"]["code"], "not_before", "{record}");
    assert!(record["waiting"]["until"].as_f64() > Some(0.0), "{record}");
    let listed = client.list("status=queued").expect("list");
    let codes: Vec<&str> = listed["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|task| task["waiting"]["code"].as_str())
        .collect();
    assert_eq!(codes, ["not_before", "queued_behind", "queued_behind"]);
    api.scheduler.set_workers(1);
    let done = api
        .scheduler
        .wait(taskdeck::model::TaskId(first), WAIT)
        .expect("known");
    assert_eq!(done.status, taskdeck::model::TaskStatus::Completed);
    assert!(client.task(first).expect("record")["waiting"].is_null());
}
