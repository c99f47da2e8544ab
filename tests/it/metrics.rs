//! `GET /metrics` over a real socket: the lifecycle counters by task name
//! count what happened, never decrease, and outlive the retention that drops
//! finished tasks; queues and workers have series of their own; and every
//! series `docs/grafana-dashboard.json` queries is exposed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use serde_json::{Value, json};
use taskdeck::api::{ApiConfig, ApiServer, ResourceSource};
use taskdeck::model::{DiskSample, Event, EventKind, GpuSample, GpuState, ResourceSample};
use taskdeck::scheduler::{Scheduler, StoreMode};
use taskdeck::store::Retention;

use crate::common::{self, WAIT, raw_http};

/// A scheduler keeping at most `max_finished` finished tasks, with the API
/// on a free loopback port and a fixed resource sample (one disk, one GPU),
/// so every resource family has series.
struct Served {
    scheduler: Scheduler,
    server: Option<ApiServer>,
}

impl Served {
    fn start(max_finished: usize) -> Self {
        let mut config = common::config(StoreMode::Memory, 2);
        config.retention = Retention {
            max_finished,
            max_age: None,
        };
        let scheduler = Scheduler::start(config, taskdeck::demo::registry())
            .expect("the scheduler should start");
        let sample = Arc::new(sample());
        let source: ResourceSource = Arc::new(move || Some(Arc::clone(&sample)));
        let api = ApiConfig {
            listen: "127.0.0.1:0".into(),
            ..Default::default()
        };
        let server =
            ApiServer::start(api, scheduler.clone(), source).expect("the API should start");
        Self {
            scheduler,
            server: Some(server),
        }
    }

    fn client(&self) -> taskdeck::client::Client {
        let url = self.server.as_ref().expect("server").url();
        taskdeck::client::Client::new(&url, None, WAIT)
    }

    /// The exposition, read over a fresh connection.
    fn scrape(&self) -> String {
        let addr = self.server.as_ref().expect("server").local_addr();
        let answer = raw_http(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .expect("an answer with a body")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        let _ = self.scheduler.shutdown();
    }
}

fn sample() -> ResourceSample {
    ResourceSample {
        at_us: taskdeck::model::now_us(),
        cpu_percent: 12.5,
        cpu_per_core: vec![10.0, 15.0],
        memory_used_bytes: 1 << 30,
        memory_total_bytes: 4 << 30,
        disks: vec![DiskSample {
            mount: "/".into(),
            used_bytes: 10,
            total_bytes: 100,
        }],
        gpus: GpuState::Available {
            devices: vec![GpuSample {
                index: 0,
                name: "Test GPU".into(),
                utilization_percent: 50.0,
                memory_used_bytes: 1 << 20,
                memory_total_bytes: 1 << 30,
                foreign_memory_bytes: None,
                temperature_c: None,
            }],
        },
    }
}

/// Every sample line's series (name and labels, as written) and value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            let value = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
            (series.to_owned(), value)
        })
        .collect()
}

/// The value of one series, e.g. `taskdeck_tasks_failed_total{name="fail"}`.
fn value(text: &str, series: &str) -> f64 {
    samples(text)
        .get(series)
        .copied()
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

fn counter(text: &str, counter: &str, name: &str) -> f64 {
    value(
        text,
        &format!("taskdeck_tasks_{counter}_total{{name=\"{name}\"}}"),
    )
}

fn submit(client: &taskdeck::client::Client, submission: Value) -> u64 {
    client
        .submit(&submission)
        .unwrap_or_else(|error| panic!("{submission} should be accepted: {error}"))
}

/// Waits until task `id` is final; its status.
fn wait_final(client: &taskdeck::client::Client, id: u64) -> String {
    let answer = client.wait(id, 20.0).expect("wait");
    let status = answer["task"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        ["completed", "failed", "cancelled"].contains(&status.as_str()),
        "task {id} should be final: {answer}"
    );
    status
}

/// Waits for the next `count` tasks to reach a final status (the retention
/// may drop them right after, so they are not looked up); each id's
/// final event kind.
fn finals(events: &Receiver<Event>, count: usize) -> BTreeMap<u64, EventKind> {
    let mut finals = BTreeMap::new();
    while finals.len() < count {
        let event = events
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("only {finals:?} finished"));
        if matches!(
            event.kind,
            EventKind::Completed | EventKind::Failed | EventKind::Cancelled
        ) {
            finals.insert(event.task.id.0, event.kind);
        }
    }
    finals
}

#[test]
fn counters_by_task_name_only_grow_and_outlive_the_retention() {
    let served = Served::start(3);
    let events = served.scheduler.subscribe();
    let client = served.client();
    client
        .set_queue("held", &json!({ "paused": true }))
        .expect("pause a queue");
    client
        .set_queue("fast", &json!({ "limit": 2 }))
        .expect("limit a queue");

    let quick: Vec<u64> = (0..3)
        .map(|n| {
            submit(
                &client,
                json!({ "task": "noop", "args": [n], "queue": "fast" }),
            )
        })
        .collect();
    let waiting = submit(&client, json!({ "task": "noop", "queue": "held" }));
    let recovers = submit(
        &client,
        json!({ "task": "fail", "args": [1], "max_retries": 2 }),
    );
    let fails = submit(
        &client,
        json!({ "task": "fail", "args": [9], "max_retries": 1 }),
    );
    let sleeper = submit(&client, json!({ "task": "sleep", "args": [60_000] }));
    client.cancel(sleeper).expect("cancel");
    let ended = finals(&events, 6);
    for id in &quick {
        assert_eq!(ended.get(id), Some(&EventKind::Completed), "{ended:?}");
    }
    assert_eq!(ended.get(&recovers), Some(&EventKind::Completed));
    assert_eq!(ended.get(&fails), Some(&EventKind::Failed));
    assert_eq!(ended.get(&sleeper), Some(&EventKind::Cancelled));

    let first = served.scrape();
    // [submitted, completed, failed, retried, cancelled, lost]
    let expected = [
        ("noop", [4, 3, 0, 0, 0, 0]),
        ("fail", [2, 1, 1, 2, 0, 0]),
        ("sleep", [1, 0, 0, 0, 1, 0]),
    ];
    let names = [
        "submitted",
        "completed",
        "failed",
        "retried",
        "cancelled",
        "lost",
    ];
    for (name, counts) in expected {
        for (which, count) in names.iter().zip(counts) {
            assert_eq!(
                counter(&first, which, name),
                f64::from(count),
                "{which} of {name} in\n{first}"
            );
        }
    }
    for family in names.iter().map(|n| format!("taskdeck_tasks_{n}_total")) {
        assert!(
            first.contains(&format!("# TYPE {family} counter\n")),
            "{family} is a counter"
        );
    }
    // Six tasks finished but the retention keeps three: the gauges of held
    // tasks fell, the counters did not.
    let held_final: f64 = ["completed", "failed", "cancelled"]
        .iter()
        .map(|status| value(&first, &format!("taskdeck_tasks{{status=\"{status}\"}}")))
        .sum();
    assert_eq!(held_final, 3.0, "{first}");

    // Queues and workers.
    assert_eq!(
        value(
            &first,
            "taskdeck_queue_tasks{queue=\"held\",status=\"queued\"}"
        ),
        1.0
    );
    assert_eq!(value(&first, "taskdeck_queue_paused{queue=\"held\"}"), 1.0);
    assert_eq!(value(&first, "taskdeck_queue_paused{queue=\"fast\"}"), 0.0);
    assert_eq!(value(&first, "taskdeck_queue_limit{queue=\"fast\"}"), 2.0);
    assert!(
        !first.contains("taskdeck_queue_limit{queue=\"held\"}"),
        "a queue without a limit has no limit series"
    );
    let slots: f64 = samples(&first)
        .iter()
        .filter(|(series, _)| series.starts_with("taskdeck_worker_slots{worker="))
        .map(|(_, value)| value)
        .sum();
    assert_eq!(slots, 2.0, "two threads of one slot each:\n{first}");
    assert_eq!(
        value(&first, "taskdeck_worker_busy_slots{worker=\"worker-1\"}"),
        0.0
    );

    // More happens: another task fails and is retried by hand (and fails
    // twice more), the held task runs. Nothing counted may go down.
    let again = submit(
        &client,
        json!({ "task": "fail", "args": [9], "max_retries": 1 }),
    );
    assert_eq!(finals(&events, 1).get(&again), Some(&EventKind::Failed));
    client
        .retry(again, false)
        .expect("retry the newest failure");
    assert_eq!(finals(&events, 1).get(&again), Some(&EventKind::Failed));
    client
        .set_queue("held", &json!({ "paused": false }))
        .expect("resume the queue");
    assert_eq!(
        finals(&events, 1).get(&waiting),
        Some(&EventKind::Completed)
    );
    let second = served.scrape();
    let before = samples(&first);
    let after = samples(&second);
    for (series, was) in before.iter().filter(|(s, _)| s.contains("_total{")) {
        let now = after
            .get(series)
            .unwrap_or_else(|| panic!("{series} disappeared"));
        assert!(now >= was, "{series} went from {was} to {now}");
    }
    assert_eq!(counter(&second, "submitted", "fail"), 3.0, "{second}");
    assert_eq!(counter(&second, "retried", "fail"), 5.0);
    assert_eq!(counter(&second, "failed", "fail"), 3.0);
    assert_eq!(counter(&second, "completed", "noop"), 4.0);
    let completed_total =
        counter(&second, "completed", "noop") + counter(&second, "completed", "fail");
    let completed_held = value(&second, "taskdeck_tasks{status=\"completed\"}");
    assert!(
        completed_held < completed_total,
        "held {completed_held}, completed since start {completed_total}"
    );
}

/// The metric names a PromQL expression uses (`taskdeck_...`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("taskdeck_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every query in the document: the panels' `expr`, the variables'
/// `definition` and `query`.
fn exprs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition" | "query", Value::String(expr)) => found.push(expr),
                    _ => exprs(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| exprs(item, found)),
        _ => {}
    }
}

#[test]
fn every_series_the_grafana_dashboard_queries_is_exposed() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-dashboard.json");
    let text = std::fs::read_to_string(path).expect("the dashboard should be readable");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(
        dashboard["__inputs"]
            .as_array()
            .is_some_and(|inputs| inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS")),
        "a DS_PROMETHEUS datasource input"
    );
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let mut found = Vec::new();
    exprs(&dashboard, &mut found);
    assert!(found.len() >= 10, "panels with queries: {found:?}");

    let served = Served::start(100);
    let client = served.client();
    let id = submit(&client, json!({ "task": "noop", "queue": "q" }));
    wait_final(&client, id);
    let scrape = served.scrape();
    let exposed: BTreeSet<&str> = scrape
        .lines()
        .filter_map(|line| match line.strip_prefix("# TYPE ") {
            Some(typed) => typed.split(' ').next(),
            None => line.split(['{', ' ']).next(),
        })
        .collect();
    let used: BTreeSet<String> = found.iter().flat_map(|e| metric_names(e)).collect();
    assert!(used.contains("taskdeck_tasks_completed_total"), "{used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !exposed.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries series /metrics does not expose: {missing:?}"
    );
}
