//! Distributed mode keeps its messages in the broker's memory: what a
//! broker restart takes must come back from the side that sent it, and
//! what comes back twice must count once. Real
//! `serve --broker` and `taskdeck worker` processes, a real RabbitMQ
//! restarted (`stop_app`/`start_app`), processes killed and frozen.

use crate::common::{self, broker};

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use broker::{
    Case, TEST_KEY, delete_queues, persistent_messages, publish, restart_broker, serve, serve_in,
    signature, status, submit, task, wait_final, worker,
};
use common::wait_until;

const LONG: Duration = Duration::from_secs(90);

/// The fractions of an attempt's progress history, oldest first.
fn fractions(server: &broker::Serve, id: u64) -> Vec<f64> {
    let history = server
        .client
        .call("GET", &format!("/api/v1/tasks/{id}/progress"), None)
        .unwrap_or(Value::Null);
    history["points"]
        .as_array()
        .map(|points| {
            points
                .iter()
                .filter_map(|p| p["fraction"].as_f64())
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `signal` (STOP, CONT) to a process.
fn signal(pid: u32, signal: &str) {
    Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill runs");
}

#[test]
fn placements_a_broker_restart_took_are_sent_again() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::exclusive("resend")
    else {
        return;
    };
    // A lease far longer than the test: an attempt that had to wait for it
    // would show as lost and run twice.
    let server = serve_in(&url, &ns, dir.path(), &["--workers", "0", "--lease", "120"]);
    let mut w = worker(&url, &ns, "asleep", 2);
    assert!(wait_until(LONG, || broker::workers(&server.client)
        .iter()
        .any(|one| one["name"] == "asleep")));
    // Frozen, the worker takes nothing from its queue: the placements wait
    // in the broker's memory when it restarts.
    let pid = w.child.id();
    signal(pid, "STOP");
    let ids: Vec<u64> = (0..4)
        .map(|_| submit(&server.client, "noop", json!([]), json!({})))
        .collect();
    let placed = wait_until(LONG, || {
        ids.iter()
            .filter(|id| status(&task(&server.client, **id)) == "running")
            .count()
            == 2
    });
    restart_broker(Duration::from_secs(1));
    signal(pid, "CONT");
    assert!(placed, "two placed on the worker's two slots");
    for record in wait_final(&server.client, &ids, LONG) {
        assert_eq!(status(&record), "completed", "{record}");
        assert_eq!(record["attempts"], 1, "sent again, not lost: {record}");
        assert_eq!(record["failures"], json!([]), "{record}");
    }
    assert!(w.alive(), "the worker reconnected");
    drop((server, w));
    delete_queues(&ns, &["asleep"]);
}

#[test]
fn results_the_scheduler_did_not_answer_wait_on_the_broker_s_disk() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::exclusive("spill")
    else {
        return;
    };
    let db = dir.path().join("t.db");
    let extra = ["--workers", "0", "--lease", "120", "--allow-code-tasks"];
    let mut first = serve(&url, &ns, Some(&db), dir.path(), &extra);
    let mut a = worker(&url, &ns, "spill-a", 2);
    let started: Vec<std::path::PathBuf> = (0..4)
        .map(|i| dir.path().join(format!("started-{i}")))
        .collect();
    let ids: Vec<u64> = started
        .iter()
        .map(|marker| {
            let script = format!("touch '{}'; sleep 0.3", marker.display());
            submit(
                &first.client,
                "command",
                json!([["sh", "-c", script]]),
                json!({}),
            )
        })
        .collect();
    // Started on the worker, not only committed as running: a placement
    // may not have left the scheduler yet when its state shows.
    assert!(wait_until(LONG, || started
        .iter()
        .filter(|marker| marker.exists())
        .count()
        == 2));
    first.proc.kill9();
    // The two running attempts end with nobody to answer their reports;
    // the worker publishes them again to the broker's disk, then dies too,
    // and the broker restarts: only its disk keeps the results.
    let events = format!("{ns}.events");
    let spilled = wait_until(Duration::from_secs(60), || persistent_messages(&events) > 0);
    a.kill9();
    assert!(spilled, "the unanswered results went to the broker's disk");
    restart_broker(Duration::ZERO);
    let second = serve(&url, &ns, Some(&db), dir.path(), &extra);
    let _b = worker(&url, &ns, "spill-b", 2);
    let records = wait_final(&second.client, &ids, LONG);
    let on_a = records.iter().filter(|r| r["worker"] == "spill-a").count();
    assert_eq!(on_a, 2, "two ran on the first worker: {records:?}");
    for record in &records {
        assert_eq!(status(record), "completed", "{record}");
        assert_eq!(record["attempts"], 1, "no task ran twice: {record}");
        assert_eq!(record["failures"], json!([]), "{record}");
    }
    drop((second, _b));
    delete_queues(&ns, &["spill-a", "spill-b"]);
}

#[test]
fn reports_sent_again_are_applied_once() {
    let Some(Case {
        dir,
        ns,
        url,
        _guard,
    }) = Case::shared("again")
    else {
        return;
    };
    let server = serve(&url, &ns, None, dir.path(), &["--workers", "0"]);
    let _w = worker(&url, &ns, "aw", 1);
    let id = submit(&server.client, "sleep", json!([60_000]), json!({}));
    assert!(wait_until(LONG, || {
        let record = task(&server.client, id);
        status(&record) == "running" && record["worker"] == "aw"
    }));
    // Numbered reports of the attempt's worker, as a worker that missed
    // the scheduler's answers sends them again after a reconnect (signed
    // with the shared key; a report stream of their own).
    let events = format!("{ns}.events");
    let send = |fractions: &[f64], first: u64| {
        let mut message: Vec<Value> = fractions
            .iter()
            .map(|fraction| {
                json!({
                    "type": "progress", "worker": "aw", "task": id, "attempt": 1,
                    "reports": [{ "fraction": fraction }],
                })
            })
            .collect();
        let last = first + fractions.len() as u64 - 1;
        message.push(json!({
            "type": "reports", "worker": "aw", "stream": 4242, "first": first, "last": last,
        }));
        let body = serde_json::to_vec(&message).expect("json");
        publish(&url, &events, &body, Some(signature(TEST_KEY, &body)), "aw");
    };
    send(&[0.25], 1);
    assert!(wait_until(LONG, || fractions(&server, id) == [0.25]));
    // The same report again with a new one after it, then the whole
    // message once more, then a new one: each report counts once.
    send(&[0.25, 0.5], 1);
    send(&[0.25, 0.5], 1);
    send(&[0.75], 3);
    assert!(
        wait_until(LONG, || fractions(&server, id).len() >= 3),
        "{:?}",
        fractions(&server, id)
    );
    assert_eq!(fractions(&server, id), [0.25, 0.5, 0.75]);
    drop((server, _w));
    delete_queues(&ns, &["aw"]);
}
