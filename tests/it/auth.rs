//! Local authentication of a real `taskdeck serve`: its owner's tools pass
//! nothing, anybody else gets 401 and changes nothing, and the older
//! scripts' routes keep working on loopback without ever running code.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;

use crate::common::broker::{Proc, serve_local, submit, wait_final};
use crate::common::raw_http;
use taskdeck::client::Client;

/// An account other than the one the tests run as, for the checks that
/// need one; created when the tests run as root (as CI does).
const OTHER_ACCOUNT: &str = "taskdeck-other";

fn serve(data_dir: &Path, extra: &[&str]) -> (Proc, Client, std::net::SocketAddr) {
    serve_local(
        data_dir,
        &[&["--workers", "1", "--allow-code-tasks"], extra].concat(),
    )
}

fn request(addr: std::net::SocketAddr, method: &str, path: &str, auth: &str, body: &str) -> String {
    raw_http(
        addr,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

fn task_count(client: &Client) -> usize {
    client.list("limit=1000").expect("list")["tasks"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn without_the_secret_every_route_but_healthz_is_refused_and_nothing_changes() {
    let temp = tempfile::tempdir().expect("temp dir");
    let (_proc, owner, addr) = serve(&temp.path().join("data"), &[]);
    let kept = submit(&owner, "noop", json!([]), json!({}));
    wait_final(&owner, &[kept], Duration::from_secs(30));
    let before = task_count(&owner);

    let submit_body = r#"{"task":"command","args":[["touch","/tmp/never"]]}"#;
    for auth in ["", "Authorization: Bearer wrong\r\n"] {
        for (method, path, body) in [
            ("GET", "/api/v1/tasks", ""),
            ("POST", "/api/v1/tasks", submit_body),
            ("DELETE", &*format!("/api/v1/tasks/{kept}"), ""),
            ("POST", &*format!("/api/v1/tasks/{kept}/retry"), ""),
            ("GET", "/api/v1/events", ""),
            ("GET", "/api/v1/nothing-here", ""),
        ] {
            let answer = request(addr, method, path, auth, body);
            assert!(
                answer.starts_with("HTTP/1.1 401"),
                "{method} {path} with {auth:?}: {answer}"
            );
            assert!(answer.contains(r#""code":"unauthorized""#), "{answer}");
        }
    }
    assert!(request(addr, "GET", "/healthz", "", "").starts_with("HTTP/1.1 200"));
    assert_eq!(task_count(&owner), before, "nothing was added or removed");
    assert_eq!(owner.task(kept).expect("task")["status"], "completed");

    let secret = std::fs::read_to_string(temp.path().join("data").join("secret"))
        .expect("the secret is in the data directory");
    let answer = request(
        addr,
        "GET",
        "/api/v1/tasks",
        &format!("Authorization: Bearer {}\r\n", secret.trim()),
        "",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn the_older_scripts_routes_work_on_loopback_but_never_run_code_and_can_be_turned_off() {
    let temp = tempfile::tempdir().expect("temp dir");
    let (mut proc, owner, addr) = serve(&temp.path().join("data"), &[]);
    let answer = request(
        addr,
        "POST",
        "/submit_task",
        "",
        r#"{"function_name":"mock_ml_task","arguments":[200,"Random Forest"]}"#,
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let marker = temp.path().join("ran");
    let code = format!(
        r#"{{"function_name":"command","arguments":[["touch","{}"]]}}"#,
        marker.display()
    );
    let refused = request(addr, "POST", "/submit_task", "", &code);
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let secret = std::fs::read_to_string(temp.path().join("data").join("secret")).expect("secret");
    let with_secret = request(
        addr,
        "POST",
        "/submit_task",
        &format!("Authorization: Bearer {}\r\n", secret.trim()),
        &code,
    );
    assert!(
        with_secret.starts_with("HTTP/1.1 403"),
        "not even with the secret: {with_secret}"
    );
    assert!(request(addr, "GET", "/get_tasks", "", "").starts_with("HTTP/1.1 200"));
    assert!(request(addr, "GET", "/metrics", "", "").starts_with("HTTP/1.1 200"));
    assert_eq!(task_count(&owner), 1, "only the demo task was accepted");
    assert!(!marker.exists());
    assert!(proc.terminate(Duration::from_secs(20)), "{}", proc.stderr());

    let (_proc, _owner, addr) = serve(&temp.path().join("data"), &["--no-legacy-routes"]);
    let off = request(addr, "GET", "/get_tasks", "", "");
    assert!(off.starts_with("HTTP/1.1 404"), "{off}");
    assert!(off.contains("--no-legacy-routes"), "{off}");
}

/// Runs `program args` as [`OTHER_ACCOUNT`].
fn as_other(program: &str, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", OTHER_ACCOUNT, "--", program])
        .args(args)
        .env_remove("TASKDECK_TOKEN")
        .env_remove("TASKDECK_DATA_DIR")
        .output()
        .expect("runuser should run")
}

/// Creates [`OTHER_ACCOUNT`] when it is missing; false when this process
/// cannot (not root, or no useradd/runuser).
fn other_account() -> bool {
    // SAFETY: geteuid only reads the process's user id.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    let exists = Command::new("id")
        .arg(OTHER_ACCOUNT)
        .output()
        .is_ok_and(|out| out.status.success());
    exists
        || Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", OTHER_ACCOUNT])
            .status()
            .is_ok_and(|status| status.success())
}

#[test]
fn another_account_can_neither_use_the_server_nor_read_its_files() {
    if !other_account() {
        eprintln!(
            "another_account...: skipped: needs root (CI runs it) to create a second account"
        );
        return;
    }
    // Everything the other account needs to reach is world-readable, so
    // only the data directory's own modes keep it out.
    let temp = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let binary = temp.path().join("taskdeck");
    std::fs::copy(env!("CARGO_BIN_EXE_taskdeck"), &binary).expect("copy the binary");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let binary = binary.to_string_lossy().into_owned();
    let data_dir = temp.path().join("data");
    let (_proc, owner, addr) = serve(&data_dir, &[]);
    let url = format!("http://{addr}");
    let id = submit(
        &owner,
        "command",
        json!([["echo", "owner's output"]]),
        json!({}),
    );
    wait_final(&owner, &[id], Duration::from_secs(30));
    let before = task_count(&owner);

    for args in [
        vec!["list", "--url", &url],
        vec!["status", "1", "--url", &url],
        vec!["submit", "noop", "--url", &url],
        vec!["cancel", "1", "--url", &url],
    ] {
        let out = as_other(&binary, &args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{args:?}: {text}");
        assert!(text.contains("401"), "{args:?}: {text}");
    }
    assert_eq!(
        task_count(&owner),
        before,
        "the other account changed nothing"
    );

    let log = data_dir
        .join("logs")
        .join(format!("task-{id}-attempt-1.log"));
    for file in [data_dir.join("taskdeck.db"), data_dir.join("secret"), log] {
        assert!(file.exists(), "{}", file.display());
        let out = as_other("cat", &[&file.to_string_lossy()]);
        assert!(
            !out.status.success(),
            "the other account read {}",
            file.display()
        );
    }
    let listing = as_other("ls", &[&data_dir.to_string_lossy()]);
    assert!(
        !listing.status.success(),
        "it cannot even list the data directory"
    );
    // And the owner's own command line needs nothing.
    let mine = Command::new(env!("CARGO_BIN_EXE_taskdeck"))
        .args(["list", "--url", &url])
        .env_remove("TASKDECK_TOKEN")
        .output()
        .expect("run");
    assert!(
        mine.status.success(),
        "{}",
        String::from_utf8_lossy(&mine.stderr)
    );
}
