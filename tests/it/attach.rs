//! The window's remote backend (`taskdeck --connect`) against a real
//! `taskdeck serve`: what the window does reaches the server, what the
//! server does shows live, and after the server stops and starts again on
//! the same port and data directory the backend reconnects by itself and
//! catches up on what happened meanwhile.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskdeck::app::{Backend, Command as WindowCommand, ConnectionState};
use taskdeck::attach::{Attached, Remote};
use taskdeck::client::Client;
use taskdeck::model::{TaskId, TaskSpec, TaskStatus};

use crate::common::broker::{Proc, submit};
use crate::common::{free_port, wait_until};

const WAIT: Duration = Duration::from_secs(30);

fn serve(data_dir: &Path, port: u16) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskdeck"));
    command
        .args(["serve", "--workers", "1", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("TASKDECK_TOKEN");
    Proc::spawn(command)
}

fn status_of(remote: &Arc<Remote>, id: TaskId) -> Option<TaskStatus> {
    remote.task(id).map(|record| record.status)
}

fn connected(remote: &Arc<Remote>) -> bool {
    remote
        .connection()
        .is_some_and(|c| c.state == ConnectionState::Connected)
}

#[test]
fn the_remote_window_drives_a_real_server_and_catches_up_after_it_restarts() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    let port = free_port();
    let mut server = serve(&data, port);
    let url = server.listening_url();
    // The owner's client finds the local secret by itself, as the window's.
    let client = Client::new(&url, None, WAIT);
    let attached = Attached::start(client.clone()).expect("attach");
    let remote = attached.remote();
    assert!(wait_until(WAIT, || connected(&remote)), "connects");

    // Create from the window: the task runs on the server and its end shows.
    remote.send(WindowCommand::Submit(TaskSpec::new(
        "sleep",
        vec![json!(50)],
    )));
    let mut created = None;
    assert!(wait_until(WAIT, || {
        created = remote.list_all().first().map(|r| r.id);
        created.is_some()
    }));
    let created = created.expect("a task");
    assert!(wait_until(WAIT, || status_of(&remote, created)
        == Some(TaskStatus::Completed)));

    // Stop a running task from the window, then retry it.
    let long = TaskId(submit(&client, "sleep", json!([60_000]), json!({})));
    assert!(wait_until(WAIT, || status_of(&remote, long)
        == Some(TaskStatus::Running)));
    remote.send(WindowCommand::Stop(vec![long]));
    assert!(wait_until(WAIT, || status_of(&remote, long)
        == Some(TaskStatus::Cancelled)));
    remote.send(WindowCommand::Retry(vec![long]));
    assert!(wait_until(WAIT, || status_of(&remote, long)
        == Some(TaskStatus::Running)));

    client.cancel(long.0).expect("cancel");
    assert!(wait_until(WAIT, || status_of(&remote, long)
        == Some(TaskStatus::Cancelled)));

    // The server goes away: the window says so and keeps trying.
    assert!(server.terminate(WAIT), "{}", server.stderr());
    assert!(
        wait_until(WAIT, || matches!(
            remote.connection().map(|c| c.state),
            Some(ConnectionState::Reconnecting { .. })
        )),
        "the connection state tells the server is gone"
    );

    // Back on the same port and data: the window catches up on what
    // changed while it was away (a task submitted and finished meanwhile).
    let server = serve(&data, port);
    assert_eq!(server.listening_url(), url);
    let meanwhile = TaskId(submit(
        &Client::new(&url, None, WAIT),
        "noop",
        json!([]),
        json!({}),
    ));
    assert!(wait_until(WAIT, || connected(&remote)), "reconnects");
    assert!(wait_until(WAIT, || status_of(&remote, meanwhile)
        == Some(TaskStatus::Completed)));
    assert_eq!(status_of(&remote, created), Some(TaskStatus::Completed));
    attached.shutdown();
    drop(server);
}

#[test]
fn a_window_opened_before_its_server_first_starts_takes_the_server_s_secret_once_it_runs() {
    let temp = tempfile::tempdir().expect("temp dir");
    // Data of its own: the server's secret is one no client has seen.
    let data = temp.path().join("data");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    // Made while nothing listens there: the client finds no secret for this
    // server yet (at most that of the account's default data directory).
    let client = Client::new(&url, None, WAIT);
    let attached = Attached::start(client.clone()).expect("attach");
    let remote = attached.remote();
    assert!(!connected(&remote));
    let server = serve(&data, port);
    assert_eq!(server.listening_url(), url);
    assert!(
        wait_until(WAIT, || connected(&remote)),
        "the window connects once the server runs: {:?}",
        remote.connection()
    );
    let id = TaskId(submit(&client, "noop", json!([]), json!({})));
    assert!(wait_until(WAIT, || status_of(&remote, id)
        == Some(TaskStatus::Completed)));
    // A token given is never replaced: a wrong one stays refused.
    let given = Client::new(&url, Some("wrong"), WAIT);
    let refused = given.task(id.0).expect_err("a wrong token is refused");
    assert!(
        matches!(
            refused,
            taskdeck::client::ClientError::Server { status: 401, .. }
        ),
        "{refused:?}"
    );
    attached.shutdown();
    drop(server);
}
