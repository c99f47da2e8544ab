//! Distributed mode over TLS (`amqps://`): a certificate from a test CA,
//! TLS terminated by socat in front of the real RabbitMQ; the certificate
//! is checked.
//!
//! Skipped with a notice when RabbitMQ does not answer (see
//! `common/broker.rs`); CI requires it.

use crate::common::{self, broker};

use std::time::Duration;

use serde_json::json;

use broker::{
    Case, delete_queues, spawn_serve_env, status, submit, tool_available, wait_connected,
    wait_final, worker_env,
};
use common::{free_port, wait_until};

const LONG: Duration = Duration::from_secs(90);

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
    let port = free_port();
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
