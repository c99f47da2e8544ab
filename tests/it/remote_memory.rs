//! Distributed mode keeps its messages in the broker's memory: what a
//! broker restart takes must come back from the side that sent it. Real
//! `serve --broker` and `taskdeck worker` processes, a real RabbitMQ
//! restarted (`stop_app`/`start_app`), processes killed and frozen.

use crate::common::{self, broker};

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use broker::{
    Case, delete_queues, persistent_messages, restart_broker, serve, status, submit, task,
    wait_final, worker,
};
use common::wait_until;

const LONG: Duration = Duration::from_secs(90);

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
    let server = serve(
        &url,
        &ns,
        Some(&dir.path().join("t.db")),
        dir.path(),
        &["--workers", "0", "--lease", "120"],
    );
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
    let extra = ["--workers", "0", "--lease", "120"];
    let mut first = serve(&url, &ns, Some(&db), dir.path(), &extra);
    let mut a = worker(&url, &ns, "spill-a", 2);
    let ids: Vec<u64> = (0..4)
        .map(|_| submit(&first.client, "sleep", json!([300]), json!({})))
        .collect();
    assert!(wait_until(LONG, || ids
        .iter()
        .filter(|id| status(&task(&first.client, **id)) == "running")
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
