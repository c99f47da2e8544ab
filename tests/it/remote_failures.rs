//! Distributed mode when things fail, against a real RabbitMQ: worker
//! processes killed or frozen, the scheduler killed and restarted, the
//! broker restarted and its consumer timeout in force; every task must
//! reach exactly one final state.
//!
//! Skipped with a notice when RabbitMQ does not answer (see
//! `common/broker.rs`); CI requires it.

use crate::common::{self, broker};

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use broker::{
    Case, Serve, delete_queues, listed, rabbitmqctl, refused, scrape, serve, serve_in, status,
    submit, task, wait_final, worker, worker_with, workers,
};
use common::wait_until;

const LONG: Duration = Duration::from_secs(90);

/// After worker `name` was killed: it is still listed, silent, and its
/// presence token, dead-lettered with its headers, passed the scheduler's
/// signature check.
fn the_killed_worker_is_listed_silent_and_its_token_held(server: &Serve, name: &str) {
    let entry = listed(server, name).expect("the dead worker is still listed");
    assert_eq!(entry["state"], "silent", "{entry}");
    assert_eq!(refused(server, "scheduler"), Some(0), "{}", scrape(server));
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
    let server = serve_in(&url, &ns, dir.path(), &["--workers", "0", "--lease", "2"]);
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
    the_killed_worker_is_listed_silent_and_its_token_held(&server, "doomed");
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
    let server = serve_in(&url, &ns, dir.path(), &["--workers", "0"]);
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
    the_killed_worker_is_listed_silent_and_its_token_held(&server, "doomed");
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
    let server = serve_in(&url, &ns, dir.path(), &["--workers", "0", "--lease", "1"]);
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
    let server = serve_in(&url, &ns, dir.path(), &["--workers", "0", "--lease", "10"]);
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
