//! Distributed mode against a real RabbitMQ: real `taskdeck serve --broker`
//! and `taskdeck worker` processes, killed and restarted, with the broker
//! itself restarted; every task must reach exactly one final state.
//!
//! Skipped with a notice when RabbitMQ does not answer (see
//! `common/broker.rs`); CI requires it.

use crate::common::{self, broker};

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use broker::{
    Case, Serve, delete_queues, namespace, rabbitmqctl, serve, spawn_serve, spawn_serve_env,
    status, submit, task, tool_available, wait_connected, wait_final, worker, worker_env,
    worker_with, workers,
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
    let server = serve(
        &url,
        &ns,
        Some(&dir.path().join("t.db")),
        dir.path(),
        &["--workers", "0", "--lease", "3"],
    );
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
fn a_worker_killed_mid_task_loses_the_attempt_and_another_finishes_it() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("kill")
    else {
        return;
    };
    let server = serve(
        &url,
        &ns,
        Some(&dir.path().join("t.db")),
        dir.path(),
        &["--workers", "0", "--lease", "2"],
    );
    let mut doomed = worker(&url, &ns, "doomed", 1);
    let id = submit(&server.client, "sleep", json!([1_500]), json!({}));
    assert!(wait_until(LONG, || {
        let record = task(&server.client, id);
        status(&record) == "running" && record["worker"] == "doomed"
    }));
    doomed.kill9();
    let _survivor = worker(&url, &ns, "survivor", 1);
    let record = &wait_final(&server.client, &[id], LONG)[0];
    assert_eq!(status(record), "completed", "{record}");
    assert_eq!(record["worker"], "survivor");
    assert_eq!(record["attempts"], 2);
    let failures = record["failures"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        failures.len(),
        1,
        "one lost attempt, one completion: {record}"
    );
    assert_eq!(failures[0]["kind"], "lost");
    assert_eq!(failures[0]["worker"], "doomed");
    let entry = workers(&server.client)
        .into_iter()
        .find(|w| w["name"] == "doomed")
        .expect("the dead worker is still listed");
    assert_eq!(entry["state"], "silent", "{entry}");
    // The token was dead-lettered with its headers, so its signature held.
    assert_scheduler_refused_nothing(&server);
    drop((server, doomed, _survivor));
    delete_queues(&ns, &["doomed", "survivor"]);
}

#[test]
fn a_killed_worker_s_attempt_runs_again_at_once_not_after_its_lease() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("killfast")
    else {
        return;
    };
    // The default lease (30 s): only the closed connection can tell the
    // scheduler this early that the worker is gone.
    let server = serve(
        &url,
        &ns,
        Some(&dir.path().join("t.db")),
        dir.path(),
        &["--workers", "0"],
    );
    let mut doomed = worker(&url, &ns, "doomed", 1);
    let id = submit(&server.client, "sleep", json!([3_000]), json!({}));
    assert!(wait_until(LONG, || {
        let record = task(&server.client, id);
        status(&record) == "running" && record["worker"] == "doomed"
    }));
    let _survivor = worker(&url, &ns, "survivor", 1);
    doomed.kill9();
    assert!(
        wait_until(Duration::from_secs(15), || {
            let record = task(&server.client, id);
            record["worker"] == "survivor" && record["attempts"] == 2
        }),
        "the attempt was not run again well within the 30 s lease: {}",
        task(&server.client, id)
    );
    let record = &wait_final(&server.client, &[id], LONG)[0];
    assert_eq!(status(record), "completed", "{record}");
    let failures = record["failures"].as_array().cloned().unwrap_or_default();
    assert_eq!(failures.len(), 1, "{record}");
    assert_eq!(failures[0]["kind"], "lost");
    let message = failures[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("lost its connection"), "{message}");
    let entry = workers(&server.client)
        .into_iter()
        .find(|w| w["name"] == "doomed")
        .expect("the dead worker is still listed");
    assert_eq!(entry["state"], "silent", "{entry}");
    // The token was dead-lettered with its headers, so its signature held.
    assert_scheduler_refused_nothing(&server);
    drop((server, doomed, _survivor));
    delete_queues(&ns, &["doomed", "survivor"]);
}

#[test]
fn a_worker_asked_for_rare_heartbeats_still_keeps_a_short_lease() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("beats")
    else {
        return;
    };
    let server = serve(
        &url,
        &ns,
        Some(&dir.path().join("t.db")),
        dir.path(),
        &["--workers", "0", "--lease", "1"],
    );
    // Heartbeats every 5 s would let a 1 s lease run out four times over;
    // the worker learns the lease from its first grant and beats faster.
    let _slow = worker_with(&url, &ns, "rare", 1, &["--heartbeat", "5"], &[]);
    let id = submit(&server.client, "sleep", json!([3_500]), json!({}));
    let record = &wait_final(&server.client, &[id], LONG)[0];
    assert_eq!(status(record), "completed", "{record}");
    assert_eq!(record["attempts"], 1, "no attempt was lost: {record}");
    drop((server, _slow));
    delete_queues(&ns, &["rare"]);
}

#[test]
fn the_scheduler_killed_and_restarted_loses_nothing_and_applies_what_arrived() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("restart")
    else {
        return;
    };
    let db = dir.path().join("t.db");
    let extra = ["--workers", "0", "--lease", "5"];
    let mut first = serve(&url, &ns, Some(&db), dir.path(), &extra);
    let _w = worker(&url, &ns, "steady", 2);
    let ids: Vec<u64> = (0..16)
        .map(|_| submit(&first.client, "sleep", json!([400]), json!({})))
        .collect();
    assert!(wait_until(LONG, || {
        let records: Vec<Value> = ids.iter().map(|id| task(&first.client, *id)).collect();
        records.iter().filter(|r| status(r) == "completed").count() >= 2
            && records.iter().any(|r| status(r) == "running")
    }));
    first.proc.kill9();
    // Running attempts finish while the scheduler is down; their results
    // wait in the broker.
    std::thread::sleep(Duration::from_millis(1_500));
    let second = serve(&url, &ns, Some(&db), dir.path(), &extra);
    let records = wait_final(&second.client, &ids, LONG);
    for record in &records {
        assert_eq!(status(record), "completed", "{record}");
        assert_eq!(record["attempts"], 1, "no task ran twice: {record}");
        assert_eq!(record["failures"], json!([]), "{record}");
    }
    drop((second, _w));
    delete_queues(&ns, &["steady"]);
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

/// Sets RabbitMQ's consumer timeout (ms) for new channels; restores the
/// default when dropped.
struct ConsumerTimeout;

/// Consumes one message of a fresh queue and holds it unacknowledged;
/// true when the broker closes the channel within `within` (its consumer
/// timeout is in force).
fn a_held_delivery_is_cut_off(url: &str, queue: &str, within: Duration) -> bool {
    use futures_lite::StreamExt;
    use lapin::options::{
        BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let properties = lapin::ConnectionProperties::default();
        let connection = lapin::Connection::connect(url, properties)
            .await
            .expect("connects");
        let channel = connection.create_channel().await.expect("a channel");
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declared");
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                b"held",
                lapin::BasicProperties::default(),
            )
            .await
            .expect("published");
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "held".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consumes");
        let _held = consumer
            .next()
            .await
            .expect("a delivery")
            .expect("delivered");
        let deadline = Instant::now() + within;
        let mut cut = false;
        while Instant::now() < deadline {
            if !channel.status().connected() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if let Ok(cleanup) = connection.create_channel().await {
            let _ = cleanup
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await;
        }
        cut
    })
}

impl ConsumerTimeout {
    fn set(ms: u64) -> Self {
        rabbitmqctl(&[
            "eval",
            &format!("application:set_env(rabbit, consumer_timeout, {ms})."),
        ]);
        Self
    }
}

impl Drop for ConsumerTimeout {
    fn drop(&mut self) {
        rabbitmqctl(&[
            "eval",
            "application:set_env(rabbit, consumer_timeout, 1800000).",
        ]);
    }
}

#[test]
fn a_task_far_longer_than_the_consumer_timeout_runs_once_and_completes_once() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::exclusive("long")
    else {
        return;
    };
    // RabbitMQ checks the timeout about once a minute; a delivery held
    // unacknowledged past it closes its channel.
    let _timeout = ConsumerTimeout::set(1_000);
    let server = serve(
        &url,
        &ns,
        None,
        dir.path(),
        &["--workers", "0", "--lease", "3"],
    );
    let mut a = worker(&url, &ns, "long-a", 1);
    let mut b = worker(&url, &ns, "long-b", 1);
    let id = submit(
        &server.client,
        "sleep",
        json!([75_000]),
        json!({ "max_retries": 0 }),
    );

    // The control: a consumer that holds a delivery unacknowledged does
    // get its channel closed meanwhile.
    let control = {
        let url = url.clone();
        let queue = format!("{ns}.held-control");
        std::thread::spawn(move || {
            a_held_delivery_is_cut_off(&url, &queue, Duration::from_secs(150))
        })
    };
    let record = &wait_final(&server.client, &[id], Duration::from_secs(150))[0];
    assert_eq!(status(record), "completed", "{record}");
    assert_eq!(record["attempts"], 1, "{record}");
    assert_eq!(record["failures"], json!([]));
    assert!(record["run_time_s"].as_f64().is_some_and(|s| s >= 75.0));
    for worker in [&mut a, &mut b] {
        let log = worker.stderr();
        assert!(
            !log.contains("PRECONDITION_FAILED"),
            "a channel was closed: {log}"
        );
        assert!(!log.contains("lost the broker"), "{log}");
    }
    assert!(
        control.join().expect("the control thread"),
        "the consumer timeout was in force"
    );
    drop((server, a, b));
    delete_queues(&ns, &["long-a", "long-b"]);
}

#[test]
fn a_broker_restart_is_survived_and_accepted_tasks_complete() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::exclusive("bounce")
    else {
        return;
    };
    let server = serve(
        &url,
        &ns,
        Some(&dir.path().join("t.db")),
        dir.path(),
        &["--workers", "0", "--lease", "10"],
    );
    let mut w = worker(&url, &ns, "bouncer", 2);
    let before: Vec<u64> = (0..10)
        .map(|_| submit(&server.client, "sleep", json!([700]), json!({})))
        .collect();
    assert!(wait_until(LONG, || before
        .iter()
        .any(|id| status(&task(&server.client, *id)) == "running")));
    // Down for a moment.
    broker::restart_broker(Duration::from_secs(2));
    assert!(
        wait_until(LONG, || server
            .client
            .submit(&json!({ "task": "noop" }))
            .is_ok()),
        "the scheduler reconnects by itself"
    );
    let after = submit(&server.client, "noop", json!([]), json!({}));
    let all: Vec<u64> = before.iter().copied().chain([after]).collect();
    for record in wait_final(&server.client, &all, LONG) {
        assert_eq!(status(&record), "completed", "{record}");
    }
    assert!(w.alive(), "the worker reconnected instead of exiting");
    assert!(
        w.stderr().contains("lost the broker"),
        "it did notice the restart"
    );
    drop((server, w));
    delete_queues(&ns, &["bouncer"]);
}

/// Runs `program` with `args`; panics when it fails.
fn run(program: &str, args: &[&str], dir: &std::path::Path) {
    let output = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} should run: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn amqps_connects_through_tls_and_checks_the_certificate() {
    let test = "amqps_connects_through_tls_and_checks_the_certificate";
    if !tool_available("openssl", test) || !tool_available("socat", test) {
        return;
    }
    let Some(Case {
        dir, ns, _guard, ..
    }) = Case::shared("tls")
    else {
        return;
    };
    let path = dir.path();
    // A test CA and a certificate for localhost signed by it.
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=taskdeck test CA",
        ],
        path,
    );
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ],
        path,
    );
    std::fs::write(
        path.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext.cnf");
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
        path,
    );
    let both = [
        std::fs::read_to_string(path.join("leaf.pem")).expect("leaf"),
        std::fs::read_to_string(path.join("leaf.key")).expect("key"),
    ]
    .concat();
    std::fs::write(path.join("both.pem"), both).expect("write both.pem");
    // socat terminates TLS in front of the plain broker port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut tls = std::process::Command::new("socat")
        .arg(format!(
            "openssl-listen:{port},reuseaddr,fork,cert=both.pem,verify=0"
        ))
        .arg("tcp:127.0.0.1:5672")
        .current_dir(path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("socat should start");
    assert!(wait_until(LONG, || std::net::TcpStream::connect((
        "127.0.0.1",
        port
    ))
    .is_ok()));
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let ca = path.join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path");
    let trusted = [("SSL_CERT_FILE", ca)];
    let server = spawn_serve_env(&url, &ns, None, path, &["--workers", "0"], &trusted);
    wait_connected(&server);
    let _w = worker_env(&url, &ns, "tls-w", 1, &trusted);
    let id = submit(&server.client, "noop", json!([]), json!({}));
    assert_eq!(
        status(&wait_final(&server.client, &[id], LONG)[0]),
        "completed"
    );
    // Without the test CA, the certificate is refused.
    let mut untrusted = worker_env(
        &url,
        &ns,
        "tls-untrusted",
        1,
        &[("SSL_CERT_FILE", "/nonexistent")],
    );
    assert!(
        wait_until(LONG, || untrusted.stderr().contains("certificate")),
        "{}",
        untrusted.stderr()
    );
    untrusted.kill9();
    drop((server, _w));
    let _ = tls.kill();
    let _ = tls.wait();
    delete_queues(&ns, &["tls-w", "tls-untrusted"]);
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
    let server = serve(
        &url,
        &ns,
        Some(&dir.path().join("t.db")),
        dir.path(),
        &["--workers", "0"],
    );
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
    let server = serve(
        &url,
        &ns,
        Some(&dir.path().join("t.db")),
        dir.path(),
        &["--workers", "0"],
    );
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
    let server = serve(
        &url,
        &ns,
        Some(&dir.path().join("t.db")),
        dir.path(),
        &["--workers", "0"],
    );
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
    let server = serve(
        &url,
        &ns,
        Some(&dir.path().join("t.db")),
        dir.path(),
        &["--workers", "0"],
    );
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

/// Waits until every task is final through `POST /api/v1/tasks/wait`
/// (batches of 1,000); the records, or none when `timeout` passed first.
fn wait_all(server: &Serve, ids: &[u64], timeout: Duration) -> Option<Vec<Value>> {
    let deadline = Instant::now() + timeout;
    let mut records = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1_000) {
        loop {
            if Instant::now() >= deadline {
                return None;
            }
            let answer = server.client.call(
                "POST",
                "/api/v1/tasks/wait?timeout_s=5",
                Some(&json!({ "ids": chunk })),
            );
            match answer {
                Ok(answer) if answer["finished"] == true => {
                    records.extend(answer["tasks"].as_array().cloned().unwrap_or_default());
                    break;
                }
                // Not yet, or the server is restarting.
                Ok(_) | Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    Some(records)
}

#[test]
fn five_thousand_tasks_run_exactly_once_across_a_scheduler_kill_and_a_broker_restart() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::exclusive("chaos")
    else {
        return;
    };
    const TASKS: usize = 5_000;
    let db = dir.path().join("t.db");
    let runs = dir.path().join("runs");
    let flags = ["--workers", "0", "--allow-code-tasks", "--lease", "5"];
    let mut server = serve(&url, &ns, Some(&db), dir.path(), &flags);
    let a = worker_with(&url, &ns, "chaos-a", 4, &["--prefetch", "2"], &[]);
    let b = worker_with(&url, &ns, "chaos-b", 4, &[], &[]);
    // Each task appends its own number to one file (O_APPEND: whole lines).
    let submissions: Vec<Value> = (0..TASKS)
        .map(|n| {
            let line = format!("echo {n} >> '{}'", runs.display());
            json!({ "task": "command", "args": [["sh", "-c", line]], "max_retries": 0 })
        })
        .collect();
    let mut ids = Vec::with_capacity(TASKS);
    for chunk in submissions.chunks(500) {
        ids.extend(server.client.submit_batch(chunk).expect("accepted"));
    }
    let lines = || {
        std::fs::read_to_string(&runs)
            .map(|text| text.lines().count())
            .unwrap_or(0)
    };
    // The scheduler is killed while tasks run, and started again.
    assert!(wait_until(Duration::from_secs(120), || lines() >= 1_000));
    server.proc.kill9();
    let killed_at = lines();
    assert!(
        killed_at < TASKS - 2_000,
        "the scheduler dies while tasks run"
    );
    server = serve(&url, &ns, Some(&db), dir.path(), &flags);
    // Then the broker goes away for a moment while tasks run.
    assert!(wait_until(Duration::from_secs(120), || lines() >= killed_at + 1_000));
    assert!(lines() < TASKS - 500, "the broker restarts while tasks run");
    broker::restart_broker(Duration::ZERO);
    let records = wait_all(&server, &ids, Duration::from_secs(600)).unwrap_or_else(|| {
        panic!(
            "not every task finished; {} lines; scheduler log: {}",
            lines(),
            server.proc.stderr()
        )
    });
    assert_eq!(records.len(), TASKS);
    let not_completed: Vec<&Value> = records
        .iter()
        .filter(|record| record["status"] != "completed")
        .take(5)
        .collect();
    assert!(not_completed.is_empty(), "{not_completed:?}");
    // Every task ran exactly once: each number is in the file once.
    let text = std::fs::read_to_string(&runs).expect("the tasks' file");
    let mut seen = vec![0_u32; TASKS];
    for line in text.lines() {
        let n: usize = line.trim().parse().expect("a task's number");
        seen[n] += 1;
    }
    let wrong: Vec<(usize, u32)> = seen
        .iter()
        .enumerate()
        .filter(|(_, count)| **count != 1)
        .map(|(n, count)| (n, *count))
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "tasks that ran other than once: {wrong:?}"
    );
    drop((server, a, b));
    delete_queues(&ns, &["chaos-a", "chaos-b"]);
}

#[test]
fn a_frozen_worker_s_task_runs_again_on_a_worker_that_only_just_connected() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("frozen")
    else {
        return;
    };
    let server = serve(
        &url,
        &ns,
        None,
        dir.path(),
        &["--workers", "0", "--lease", "2"],
    );
    // Both ask for rare heartbeats: they must learn the scheduler's lease
    // when they connect, before anything is placed on them.
    let rare = ["--heartbeat", "10"];
    let mut frozen = worker_with(&url, &ns, "frozen-a", 1, &rare, &[]);
    let id = submit(
        &server.client,
        "sleep",
        json!([60_000]),
        json!({ "max_retries": 1 }),
    );
    assert!(wait_until(LONG, || task(&server.client, id)["worker"] == "frozen-a"));
    let _b = worker_with(&url, &ns, "frozen-b", 1, &rare, &[]);
    assert!(wait_until(LONG, || workers(&server.client)
        .iter()
        .any(|w| w["name"] == "frozen-b")));
    // The scenario: the new worker has been connected for longer than the
    // lease when the other freezes (its first heartbeat is older than
    // that), which is not a condition to wait for but a time to let pass.
    std::thread::sleep(Duration::from_millis(2_500));
    let pid = frozen.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill runs");
    let frozen_at = Instant::now();
    let moved = wait_until(Duration::from_secs(30), || {
        let record = task(&server.client, id);
        record["worker"] == "frozen-b" && record["status"] == "running"
    });
    let took = frozen_at.elapsed();
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .expect("kill runs");
    assert!(moved, "{}", task(&server.client, id));
    // The lease (2 s) and a lease check, not the new worker's 10 s between
    // heartbeats, nor a second lease on the frozen worker.
    assert!(took < Duration::from_secs(6), "{took:?}");
    let record = task(&server.client, id);
    assert_eq!(record["attempts"], 2, "{record}");
    assert_eq!(record["failures"][0]["kind"], "lost", "{record}");
    frozen.kill9();
    drop((server, _b));
    delete_queues(&ns, &["frozen-a", "frozen-b"]);
}

/// The scheduler refused no broker message for its signature.
fn assert_scheduler_refused_nothing(server: &Serve) {
    let metrics = ureq::get(format!("{}/metrics", server.client.url()))
        .call()
        .ok()
        .and_then(|answer| answer.into_body().read_to_string().ok())
        .unwrap_or_default();
    assert!(
        metrics.contains("taskdeck_broker_messages_refused_total{by=\"scheduler\"} 0\n"),
        "{metrics}"
    );
}
