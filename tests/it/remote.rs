//! Distributed mode against a real RabbitMQ: real `taskdeck serve --broker`
//! and `taskdeck worker` processes sharing the work, with priorities, GPU
//! routing, cancellation, holds, delays and pausing; every task must reach
//! exactly one final state. What happens when processes or the broker fail
//! is in `remote_failures`, TLS in `remote_tls`.
//!
//! Skipped with a notice when RabbitMQ does not answer (see
//! `common/broker.rs`); CI requires it.

use crate::common::{self, broker};

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use broker::{
    Case, delete_queues, namespace, serve, serve_in, spawn_serve, status, submit, task, wait_final,
    worker, worker_with, workers,
};
use common::wait_until;

const LONG: Duration = Duration::from_secs(90);

#[test]
fn two_worker_processes_share_the_queue_and_report_back() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("share")
    else {
        return;
    };
    let server = serve_in(&url, &ns, dir.path(), &["--workers", "0", "--lease", "3"]);
    let _a = worker(&url, &ns, "wa", 2);
    let _b = worker(&url, &ns, "wb", 2);
    assert!(
        wait_until(LONG, || workers(&server.client).len() == 2),
        "both workers should be known"
    );
    let mut ids: Vec<u64> = (0..24)
        .map(|i| submit(&server.client, "sleep", json!([60 + i % 3 * 20]), json!({})))
        .collect();
    let flaky = submit(
        &server.client,
        "fail",
        json!([2]),
        json!({ "max_retries": 3 }),
    );
    let hopeless = submit(
        &server.client,
        "fail",
        json!([5]),
        json!({ "max_retries": 1 }),
    );
    ids.push(flaky);
    let records = wait_final(&server.client, &ids, LONG);
    let mut used = HashSet::new();
    for record in &records {
        assert_eq!(status(record), "completed", "{record}");
        used.insert(record["worker"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        used,
        HashSet::from(["wa".to_owned(), "wb".to_owned()]),
        "pull-based load balancing uses both workers"
    );
    let flaky = task(&server.client, flaky);
    assert_eq!(
        flaky["attempts"], 3,
        "fail(2) completes on its third attempt: {flaky}"
    );
    let hopeless = &wait_final(&server.client, &[hopeless], LONG)[0];
    assert_eq!(status(hopeless), "failed");
    assert_eq!(hopeless["attempts"], 2, "one retry allowed: {hopeless}");
    let sleeps = &records[..24];
    assert!(
        sleeps
            .iter()
            .all(|r| r["attempts"] == 1 && r["failures"] == json!([]))
    );

    // The workers route shows each process with its host, slots and load.
    let listed = workers(&server.client);
    for entry in &listed {
        assert_eq!(entry["kind"], "process", "{entry}");
        assert_eq!(entry["concurrency"], 2, "{entry}");
        assert!(
            entry["host"].as_str().is_some_and(|h| !h.is_empty()),
            "{entry}"
        );
        assert!(
            entry["resources"]["cpu_count"]
                .as_u64()
                .is_some_and(|n| n > 0),
            "{entry}"
        );
        assert!(
            entry["resources"]["memory_total_bytes"]
                .as_u64()
                .is_some_and(|n| n > 0)
        );
        assert!(entry["resources"]["gpus"]["state"].is_string(), "{entry}");
    }
    let run: u64 = listed.iter().filter_map(|e| e["tasks_run"].as_u64()).sum();
    assert_eq!(run, 24 + 3 + 2, "every attempt is counted on its worker");
    drop((server, _a, _b));
    delete_queues(&ns, &["wa", "wb"]);
}

#[test]
fn a_command_runs_on_a_worker_process_and_its_log_comes_back() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("exec")
    else {
        return;
    };
    let server = serve(
        &url,
        &ns,
        None,
        dir.path(),
        &["--workers", "0", "--allow-code-tasks"],
    );
    let _w = worker(&url, &ns, "exec-w", 1);
    let id = submit(
        &server.client,
        "command",
        json!([["sh", "-c", "echo remote-output; exit 0"]]),
        json!({}),
    );
    let record = &wait_final(&server.client, &[id], LONG)[0];
    assert_eq!(status(record), "completed", "{record}");
    assert_eq!(record["worker"], "exec-w");
    assert!(
        record["log"]["tail"]
            .as_str()
            .is_some_and(|tail| tail.contains("remote-output")),
        "{record}"
    );
    let failing = submit(
        &server.client,
        "command",
        json!([["sh", "-c", "echo bad >&2; exit 4"]]),
        json!({ "max_retries": 0 }),
    );
    let record = &wait_final(&server.client, &[failing], LONG)[0];
    assert_eq!(status(record), "failed");
    assert!(
        record["error"]
            .as_str()
            .is_some_and(|e| e.contains("code 4") && e.contains("bad"))
    );
    drop((server, _w));
    delete_queues(&ns, &["exec-w"]);
}

#[test]
fn gpu_tasks_go_only_to_workers_with_enough_gpus() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("gpu")
    else {
        return;
    };
    let server = serve(
        &url,
        &ns,
        None,
        dir.path(),
        &["--workers", "0", "--allow-code-tasks"],
    );
    let _plain = worker_with(&url, &ns, "no-gpu", 2, &["--gpus", "none"], &[]);
    let _gpu = worker_with(&url, &ns, "two-gpus", 2, &["--gpus", "0,1"], &[]);
    assert!(
        wait_until(LONG, || workers(&server.client).len() == 2),
        "both workers heard from"
    );
    let print = json!([["sh", "-c", "echo \"visible=[$CUDA_VISIBLE_DEVICES]\""]]);
    let gpu_tasks: Vec<u64> = (0..4)
        .map(|_| {
            submit(
                &server.client,
                "command",
                print.clone(),
                json!({ "gpus": 1 }),
            )
        })
        .collect();
    let pair = submit(
        &server.client,
        "command",
        print.clone(),
        json!({ "gpus": 2 }),
    );
    let cpu_tasks: Vec<u64> = (0..4)
        .map(|_| submit(&server.client, "command", print.clone(), json!({})))
        .collect();
    let all: Vec<u64> = gpu_tasks
        .iter()
        .chain([&pair])
        .chain(&cpu_tasks)
        .copied()
        .collect();
    for record in wait_final(&server.client, &all, LONG) {
        assert_eq!(status(&record), "completed", "{record}");
        let tail = record["log"]["tail"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let ids: Vec<String> = record["gpu_ids"]
            .as_array()
            .map(|ids| ids.iter().map(|id| id.to_string()).collect())
            .unwrap_or_default();
        assert!(
            tail.contains(&format!("visible=[{}]", ids.join(","))),
            "{record}"
        );
        if record["gpus"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(record["worker"], "two-gpus", "{record}");
            assert_eq!(ids.len() as u64, record["gpus"].as_u64().unwrap_or(0));
        }
    }
    let refused = server
        .client
        .submit(&json!({ "task": "command", "args": [["true"]], "gpus": 3 }))
        .expect_err("no worker has three GPUs");
    assert!(refused.to_string().contains("400"), "{refused}");
    drop((server, _plain, _gpu));
    delete_queues(&ns, &["no-gpu", "two-gpus"]);
    for gpus in ["1", "2"] {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_queue", &format!("{ns}.tasks.gpus-{gpus}")])
            .output();
    }
}

#[test]
fn priorities_hold_through_the_broker() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("prio")
    else {
        return;
    };
    let server = serve(&url, &ns, None, dir.path(), &["--workers", "0"]);
    // Queued while no worker runs: the broker orders them.
    let low: Vec<u64> = (0..4)
        .map(|_| submit(&server.client, "noop", json!([]), json!({ "priority": 1 })))
        .collect();
    let high: Vec<u64> = (0..4)
        .map(|_| submit(&server.client, "noop", json!([]), json!({ "priority": 9 })))
        .collect();
    let _w = worker(&url, &ns, "single", 1);
    let all: Vec<u64> = low.iter().chain(&high).copied().collect();
    let records = wait_final(&server.client, &all, LONG);
    let started = |r: &Value| r["first_started_at"].as_f64().unwrap_or(f64::MAX);
    let last_high = records[4..].iter().map(started).fold(0.0, f64::max);
    let first_low = records[..4].iter().map(started).fold(f64::MAX, f64::min);
    assert!(last_high <= first_low, "priority 9 runs before priority 1");
    let order = |part: &[Value]| part.iter().map(started).collect::<Vec<_>>();
    let low_order = order(&records[..4]);
    assert!(
        low_order.windows(2).all(|w| w[0] <= w[1]),
        "FIFO within a priority"
    );
    drop((server, _w));
    delete_queues(&ns, &["single"]);
}

#[test]
fn cancel_removes_queued_tasks_and_stops_running_ones_on_workers() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("cancel")
    else {
        return;
    };
    let server = serve(&url, &ns, None, dir.path(), &["--workers", "0"]);
    // Removed while its message waits in the broker: it must never run.
    let removed = submit(&server.client, "sleep", json!([100]), json!({}));
    server.client.cancel(removed).expect("removed");
    let _w = worker(&url, &ns, "cw", 1);
    let long = submit(&server.client, "sleep", json!([60_000]), json!({}));
    assert!(wait_until(LONG, || status(&task(&server.client, long)) == "running"));
    let asked = Instant::now();
    server.client.cancel(long).expect("stop requested");
    let record = &wait_final(&server.client, &[long], LONG)[0];
    assert_eq!(status(record), "cancelled", "{record}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the stop reached the worker"
    );
    // A timeout on the worker: the attempt is stopped and fails.
    let slow = submit(
        &server.client,
        "sleep",
        json!([60_000]),
        json!({ "timeout_s": 0.5, "max_retries": 0 }),
    );
    let record = &wait_final(&server.client, &[slow], LONG)[0];
    assert_eq!(status(record), "failed");
    assert_eq!(record["failures"][0]["kind"], "timed_out", "{record}");
    // The slot is free again, and the removed task never ran.
    let after = submit(&server.client, "noop", json!([]), json!({}));
    assert_eq!(
        status(&wait_final(&server.client, &[after], LONG)[0]),
        "completed"
    );
    let removed = task(&server.client, removed);
    assert_eq!(status(&removed), "cancelled");
    assert_eq!(removed["attempts"], 0, "{removed}");
    assert!(removed["first_started_at"].is_null());
    drop((server, _w));
    delete_queues(&ns, &["cw"]);
}

#[test]
fn serve_with_a_broker_runs_tasks_on_its_own_worker_too() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("local")
    else {
        return;
    };
    let mut server = serve(&url, &ns, None, dir.path(), &["--workers", "2"]);
    let ids: Vec<u64> = (0..6)
        .map(|_| submit(&server.client, "noop", json!([]), json!({})))
        .collect();
    for record in wait_final(&server.client, &ids, LONG) {
        assert_eq!(status(&record), "completed");
    }
    let listed = workers(&server.client);
    assert_eq!(listed.len(), 1, "the embedded worker: {listed:?}");
    assert_eq!(listed[0]["concurrency"], 2);
    assert!(server.proc.terminate(LONG), "SIGTERM stops it cleanly");
    assert!(
        !server.proc.stderr().contains("guest:guest"),
        "credentials never logged"
    );
    let worker_name = listed[0]["name"].as_str().unwrap_or_default().to_owned();
    delete_queues(&ns, &[&worker_name]);
}

#[test]
fn an_unreachable_broker_is_reported_and_retried_without_the_password() {
    // Needs no broker: the address is a closed port.
    let dir = tempfile::tempdir().expect("temp dir");
    let closed = "amqp://guest:hunter2@127.0.0.1:1/%2f";
    let mut server = spawn_serve(
        closed,
        &namespace("down"),
        None,
        dir.path(),
        &["--workers", "0"],
    );
    let mut lonely = worker(closed, "down", "lonely", 1);
    assert!(wait_until(LONG, || server
        .proc
        .stderr()
        .matches("retrying")
        .count()
        >= 2));
    assert!(wait_until(LONG, || lonely
        .stderr()
        .matches("retrying")
        .count()
        >= 2));
    let answer = server.client.submit(&json!({ "task": "noop" }));
    let error = answer.expect_err("no broker, no submit");
    let text = error.to_string();
    assert!(text.contains("503"), "{text}");
    assert!(text.contains("amqp://guest:***@127.0.0.1:1"), "{text}");
    assert!(server.client.list("limit=10").expect("list")["tasks"] == json!([]));
    assert!(server.proc.alive() && lonely.alive(), "no crash, no exit");
    for output in [server.proc.stderr(), lonely.stderr()] {
        assert!(
            output.contains("cannot reach the broker at amqp://guest:***@127.0.0.1:1"),
            "{output}"
        );
        assert!(!output.contains("hunter2"), "the password leaked: {output}");
    }
}

#[test]
fn bench_through_the_broker_prints_one_json_line_with_the_messages_per_task() {
    let Some(Case { url, _guard, .. }) = Case::shared("bench") else {
        return;
    };
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_taskdeck"))
        .args(["bench", "--broker", &url, "--memory"])
        .args(["--tasks", "300", "--latency-tasks", "50"])
        .args(["--processes", "1", "--concurrency", "2"])
        .output()
        .expect("bench should run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let report: Value = serde_json::from_str(lines[0]).expect("one JSON object");
    assert_eq!(report["processes"], 1);
    assert_eq!(report["latency"]["samples"], 50);
    assert!(
        report["throughput_tasks_per_s"].as_f64() > Some(0.0),
        "{report}"
    );
    // Placements and results went through the broker (several to one
    // worker, or several reports, may share a message).
    let per_task = report["broker_messages_per_task"].as_f64().unwrap_or(0.0);
    assert!((0.5..20.0).contains(&per_task), "{report}");
}

#[test]
fn a_delayed_task_waits_for_its_time_through_the_broker_too() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("delayed")
    else {
        return;
    };
    let server = serve_in(&url, &ns, dir.path(), &["--workers", "0"]);
    let _w = worker(&url, &ns, "later", 2);
    let delayed = submit(
        &server.client,
        "noop",
        json!([]),
        json!({"delay_s": 4.0, "priority": 9}),
    );
    let now = submit(&server.client, "noop", json!([]), json!({}));
    let first = &wait_final(&server.client, &[now], LONG)[0];
    assert_eq!(status(first), "completed", "{first}");
    assert_eq!(status(&task(&server.client, delayed)), "queued");
    let record = &wait_final(&server.client, &[delayed], LONG)[0];
    assert_eq!(status(record), "completed", "{record}");
    let not_before = record["not_before"].as_f64().expect("a start time");
    let started = record["first_started_at"].as_f64().expect("it ran");
    assert!(started >= not_before, "{record}");
    drop((server, _w));
    delete_queues(&ns, &["later"]);
}

#[test]
fn a_task_held_after_it_was_published_runs_only_once_released() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("held")
    else {
        return;
    };
    let server = serve_in(&url, &ns, dir.path(), &["--workers", "0"]);
    let _w = worker(&url, &ns, "holder", 1);
    let first = submit(&server.client, "sleep", json!([1_500]), json!({}));
    assert!(wait_until(LONG, || status(&task(&server.client, first)) == "running"));
    // Published to the broker at once, and held while it waits there.
    let held = submit(&server.client, "noop", json!([]), json!({}));
    let record = server.client.hold(held).expect("held");
    assert_eq!(record["held"], true, "{record}");
    let done = &wait_final(&server.client, &[first], LONG)[0];
    assert_eq!(status(done), "completed", "{done}");
    assert!(
        !wait_until(Duration::from_secs(1), || status(&task(
            &server.client,
            held
        )) != "queued"),
        "the worker's claim of a held task is refused"
    );
    server.client.release(held).expect("released");
    let record = &wait_final(&server.client, &[held], LONG)[0];
    assert_eq!(status(record), "completed", "{record}");
    assert_eq!(record["attempts"], 1, "{record}");
    drop((server, _w));
    delete_queues(&ns, &["holder"]);
}

#[test]
fn a_paused_scheduler_sends_nothing_to_workers_until_resumed() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("paused")
    else {
        return;
    };
    let server = serve_in(&url, &ns, dir.path(), &["--workers", "0"]);
    let _w = worker(&url, &ns, "waiter", 2);
    server.client.pause(false).expect("pause");
    let id = submit(&server.client, "noop", json!([]), json!({}));
    assert!(
        !wait_until(Duration::from_secs(1), || status(&task(&server.client, id))
            != "queued"),
        "nothing starts while paused"
    );
    server.client.resume().expect("resume");
    let record = &wait_final(&server.client, &[id], LONG)[0];
    assert_eq!(status(record), "completed", "{record}");
    drop((server, _w));
    delete_queues(&ns, &["waiter"]);
}

#[test]
fn pausing_with_stop_running_brings_tasks_back_from_worker_processes() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("pausestop")
    else {
        return;
    };
    let server = serve_in(&url, &ns, dir.path(), &["--workers", "0"]);
    let _w = worker(&url, &ns, "stopper", 1);
    let id = submit(&server.client, "sleep", json!([60_000]), json!({}));
    assert!(wait_until(LONG, || status(&task(&server.client, id)) == "running"));
    let answer = server.client.pause(true).expect("pause");
    assert_eq!(answer["stopped"], 1, "{answer}");
    assert!(wait_until(LONG, || status(&task(&server.client, id)) == "queued"));
    let record = task(&server.client, id);
    assert_eq!(record["attempts"], 0, "{record}");
    server.client.resume().expect("resume");
    assert!(wait_until(LONG, || {
        let record = task(&server.client, id);
        status(&record) == "running" && record["attempts"] == 1
    }));
    server.client.cancel(id).expect("cancel");
    let record = &wait_final(&server.client, &[id], LONG)[0];
    assert_eq!(status(record), "cancelled", "{record}");
    drop((server, _w));
    delete_queues(&ns, &["stopper"]);
}
