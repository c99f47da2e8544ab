//! Workflows in distributed mode, against a real RabbitMQ with real
//! `taskdeck serve --broker` and `taskdeck worker` processes: a dependent
//! starts only after its dependencies completed, even when they ran on
//! other worker processes, a failure cancels its dependents there too, a
//! queue's limit holds across worker processes, and shares of a worker's
//! GPU never over-commit its memory.

use crate::common::broker::{
    Case, delete_queues, serve, serve_in, status, task, wait_final, worker, worker_with, workers,
};
use crate::common::{most_at_once, wait_until};

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(90);

#[test]
fn dependents_start_only_after_their_dependencies_completed_on_other_workers() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("depends")
    else {
        return;
    };
    let server = serve_in(&url, &ns, dir.path(), &["--workers", "0"]);
    let _a = worker(&url, &ns, "da", 2);
    let _b = worker(&url, &ns, "db", 2);
    assert!(wait_until(LONG, || workers(&server.client).len() == 2));
    // Eight chains of four sleeps, then one task after all of them, and a
    // failure with a dependent.
    let mut batch = Vec::new();
    for chain in 0..8 {
        for step in 0..4 {
            let mut item = json!({"task": "sleep", "args": [20 + chain * 5]});
            if step > 0 {
                item["depends_on"] = json!([{"batch_index": batch.len() - 1}]);
            }
            batch.push(item);
        }
    }
    let ends: Vec<Value> = (0..8).map(|c| json!({"batch_index": c * 4 + 3})).collect();
    batch.push(json!({"task": "noop", "depends_on": ends}));
    batch.push(json!({"task": "fail", "args": [5], "max_retries": 0}));
    batch.push(json!({"task": "noop", "depends_on": [{"batch_index": batch.len() - 1}]}));
    let ids = server.client.submit_batch(&batch).expect("accepted");
    let records = wait_final(&server.client, &ids, LONG);
    let by_id = |id: u64| {
        records
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("task {id}"))
    };
    let mut used = HashSet::new();
    for record in &records[..33] {
        assert_eq!(status(record), "completed", "{record}");
        assert_eq!(record["attempts"], 1, "{record}");
        used.insert(record["worker"].as_str().unwrap_or_default().to_owned());
        let started = record["first_started_at"].as_f64().expect("started");
        for dependency in record["depends_on"].as_array().into_iter().flatten() {
            let dependency = by_id(dependency.as_u64().expect("an id"));
            let finished = dependency["finished_at"].as_f64().expect("finished");
            assert!(
                started >= finished,
                "{} started before {} finished",
                record["id"],
                dependency["id"]
            );
        }
    }
    assert_eq!(used.len(), 2, "both worker processes ran tasks: {used:?}");
    assert_eq!(status(&records[33]), "failed");
    let cancelled = task(&server.client, ids[34]);
    assert_eq!(status(&cancelled), "cancelled", "{cancelled}");
    assert_eq!(cancelled["cancelled_by"], ids[33], "{cancelled}");
    assert_eq!(cancelled["attempts"], 0, "{cancelled}");
    drop((server, _a, _b));
    delete_queues(&ns, &["da", "db"]);
}

#[test]
fn a_queue_limit_holds_across_worker_processes() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("qlimit")
    else {
        return;
    };
    let server = serve_in(&url, &ns, dir.path(), &["--workers", "0"]);
    let _a = worker(&url, &ns, "qa", 2);
    let _b = worker(&url, &ns, "qb", 2);
    assert!(wait_until(LONG, || workers(&server.client).len() == 2));
    server
        .client
        .set_queue("train", &json!({"limit": 1}))
        .expect("the limit is set");
    let batch: Vec<Value> = (0..12)
        .map(|i| {
            let queue = if i % 2 == 0 { "train" } else { "prep" };
            json!({"task": "sleep", "args": [80], "queue": queue})
        })
        .collect();
    let ids = server.client.submit_batch(&batch).expect("accepted");
    let records = wait_final(&server.client, &ids, LONG);
    let intervals = |queue: &str| -> Vec<(f64, f64)> {
        records
            .iter()
            .filter(|r| r["queue"] == queue)
            .map(|r| {
                assert_eq!(status(r), "completed", "{r}");
                (
                    r["started_at"].as_f64().expect("started"),
                    r["finished_at"].as_f64().expect("finished"),
                )
            })
            .collect()
    };
    assert_eq!(most_at_once(&intervals("train")), 1, "never two at once");
    assert!(
        most_at_once(&intervals("prep")) > 1,
        "prep used the other slots"
    );
    drop((server, _a, _b));
    delete_queues(&ns, &["qa", "qb"]);
}

#[test]
fn shares_of_a_worker_s_gpu_never_over_commit_its_memory() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("gpushare")
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
    let _gpu = worker_with(&url, &ns, "one-gpu", 4, &["--gpus", "0:24000"], &[]);
    assert!(wait_until(LONG, || workers(&server.client).len() == 1));
    let release = dir.path().join("release");
    let gate = format!(
        "i=0; while [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
        release.display()
    );
    let share = json!({
        "task": "command",
        "args": [["sh", "-c", gate]],
        "gpus": 1,
        "gpu_memory_mb": 10000,
    });
    let ids: Vec<u64> = (0..3)
        .map(|_| server.client.submit(&share).expect("accepted"))
        .collect();
    assert!(wait_until(LONG, || {
        ids[..2]
            .iter()
            .all(|id| status(&task(&server.client, *id)) == "running")
    }));
    let third = task(&server.client, ids[2]);
    assert_eq!(status(&third), "queued", "{third}");
    assert_eq!(
        third["waiting"]["code"], "waiting_for_gpu_memory",
        "{third}"
    );
    let too_big = server.client.submit(&json!({
        "task": "command", "args": [["true"]], "gpus": 1, "gpu_memory_mb": 30000,
    }));
    assert!(too_big.is_err(), "no worker's GPU has 30 GB");
    std::fs::write(&release, b"go").expect("release");
    for record in wait_final(&server.client, &ids, LONG) {
        assert_eq!(status(&record), "completed", "{record}");
        assert_eq!(record["gpu_ids"], json!([0]), "{record}");
        assert_eq!(record["gpu_memory_mb"], 10000, "{record}");
    }
    drop((server, _gpu));
    delete_queues(&ns, &["one-gpu"]);
}

#[test]
fn a_worker_process_s_output_and_progress_are_followed_from_the_scheduler() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("remote-live")
    else {
        return;
    };
    let server_dir = dir.path().join("server");
    let worker_dir = dir.path().join("worker");
    let server = serve(
        &url,
        &ns,
        None,
        &server_dir,
        &["--workers", "0", "--allow-code-tasks"],
    );
    let worker_path = worker_dir.to_str().expect("path");
    let _worker = worker_with(&url, &ns, "live", 1, &["--data-dir", worker_path], &[]);
    assert!(wait_until(LONG, || workers(&server.client).len() == 1));
    let script = "for i in $(seq 100); do echo \"line $i ü\"; \
                  echo \"{\\\"fraction\\\": 0.$((i % 10)), \\\"message\\\": \\\"step $i\\\"}\" \
                  >> \"$TASKDECK_PROGRESS\"; sleep 0.05; done";
    let id = server
        .client
        .submit(&json!({ "task": "command", "args": [["sh", "-c", script]] }))
        .expect("submit");
    // Followed from the scheduler while the worker process runs it.
    let followed = std::process::Command::new(env!("CARGO_BIN_EXE_taskdeck"))
        .args(["logs", &id.to_string(), "-f", "--url", server.client.url()])
        .output()
        .expect("taskdeck logs runs");
    assert!(
        followed.status.success(),
        "{}",
        String::from_utf8_lossy(&followed.stderr)
    );
    let expected: String = (1..=100).map(|n| format!("line {n} ü\n")).collect();
    assert_eq!(String::from_utf8_lossy(&followed.stdout), expected);
    let record = &wait_final(&server.client, &[id], LONG)[0];
    assert_eq!(status(record), "completed", "{record}");
    assert_eq!(record["worker"], "live");
    assert_eq!(record["progress"]["message"], "step 100", "{record}");
    assert_eq!(record["progress"]["fraction"], 0.0);
    let history = server
        .client
        .call("GET", &format!("/api/v1/tasks/{id}/progress"), None)
        .expect("history");
    let points = history["points"].as_array().map_or(0, Vec::len);
    assert!(
        points >= 10,
        "forwarded progress keeps its points: {history}"
    );
    let name = format!("task-{id}-attempt-1.log");
    let copy = std::fs::read_to_string(server_dir.join("logs").join(&name)).expect("the copy");
    let original = std::fs::read_to_string(worker_dir.join("logs").join(&name)).expect("the log");
    assert_eq!(copy, original);
    drop(server);
    delete_queues(&ns, &["live"]);
}
