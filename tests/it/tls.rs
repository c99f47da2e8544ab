//! HTTPS on a real `taskdeck serve`: a certificate from a test CA checked
//! by the command line and the Rust client, a generated self-signed one
//! trusted by its pinned fingerprint, and what each refusal says.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::json;

use crate::common::broker::{Proc, submit, wait_final};
use crate::common::{raw_http, wait_until};
use taskdeck::client::{Client, ClientError, TlsOptions};

const WAIT: Duration = Duration::from_secs(30);

/// A test authority and a server certificate it signed for loopback.
struct TestPki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// The server certificate's fingerprint.
    fingerprint: String,
}

fn authority(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params, key)
}

/// Writes `name.pem`, a CA that signed nothing the server presents.
fn stranger_ca(dir: &Path) -> PathBuf {
    let (params, key) = authority("Someone else's CA");
    let cert = params.self_signed(&key).expect("CA cert");
    let path = dir.join("stranger-ca.pem");
    std::fs::write(&path, cert.pem()).expect("write");
    path
}

fn test_pki(dir: &Path) -> TestPki {
    let (ca_params, ca_key) = authority("Taskdeck test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("server key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&leaf_key, &issuer)
        .expect("server cert");
    let pki = TestPki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        fingerprint: taskdeck::api::tls::fingerprint(leaf.der()),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).expect("write CA");
    std::fs::write(&pki.cert, leaf.pem()).expect("write cert");
    std::fs::write(&pki.key, leaf_key.serialize_pem()).expect("write key");
    pki
}

fn spawn(data_dir: &Path, listen: &str, extra: &[&str]) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskdeck"));
    command
        .args(["serve", "--workers", "1", "--listen", listen, "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env_remove("TASKDECK_TOKEN")
        .env_remove("TASKDECK_TLS_CERT")
        .env_remove("TASKDECK_TLS_KEY");
    Proc::spawn(command)
}

/// The fingerprint line `serve` prints after its address.
fn printed_fingerprint(proc: &Proc) -> String {
    let mut line = None;
    wait_until(WAIT, || {
        line = proc
            .stdout_rest()
            .lines()
            .find_map(|l| l.strip_prefix("taskdeck certificate SHA-256 fingerprint "))
            .map(str::to_owned);
        line.is_some()
    });
    line.unwrap_or_else(|| panic!("no fingerprint line; stderr: {}", proc.stderr()))
}

/// The command line against `url`, with `args` after the command.
fn cli(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskdeck"))
        .args(args)
        .args(["--url", url])
        .env_remove("TASKDECK_TOKEN")
        .env_remove("TASKDECK_CA_FILE")
        .env_remove("TASKDECK_TLS_FINGERPRINT")
        .output()
        .expect("run the command line")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn client(url: &str, token: Option<&str>, tls: TlsOptions) -> Client {
    Client::with_tls(url, token, WAIT, &tls).expect("usable TLS options")
}

fn ca(path: &Path) -> TlsOptions {
    TlsOptions {
        ca_file: Some(path.to_owned()),
        fingerprint: None,
    }
}

fn pinned(fingerprint: &str) -> TlsOptions {
    TlsOptions {
        ca_file: None,
        fingerprint: Some(fingerprint.to_owned()),
    }
}

fn task_count(client: &Client) -> usize {
    client.list("limit=1000").expect("list")["tasks"]
        .as_array()
        .map_or(0, Vec::len)
}

fn connect_detail(error: ClientError) -> String {
    match error {
        ClientError::Connect { detail, .. } => detail,
        other => panic!("expected a connection error, got {other}"),
    }
}

#[test]
fn a_certificate_from_a_ca_is_checked_and_plain_http_is_told_to_use_https() {
    let temp = tempfile::tempdir().expect("temp dir");
    let pki = test_pki(temp.path());
    let cert = pki.cert.to_str().expect("utf-8 path");
    let key = pki.key.to_str().expect("utf-8 path");
    let proc = spawn(
        &temp.path().join("data"),
        "127.0.0.1:0",
        &["--tls-cert", cert, "--tls-key", key],
    );
    let url = proc.listening_url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    assert_eq!(printed_fingerprint(&proc), pki.fingerprint);

    // The owner's command line, trusting the test CA, finds the local
    // secret for an https:// loopback URL too.
    let ca_file = pki.ca.to_str().expect("utf-8 path");
    let submitted = cli(&url, &["submit", "noop", "--ca-file", ca_file]);
    assert!(submitted.status.success(), "{}", text(&submitted));
    let id: u64 = text(&submitted)
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no id in {}", text(&submitted)));
    let waited = cli(&url, &["wait", &id.to_string(), "--ca-file", ca_file]);
    assert!(waited.status.success(), "{}", text(&waited));

    // The Rust client, by the CA and by the pinned certificate.
    let by_ca = client(&url, None, ca(&pki.ca));
    let by_pin = client(&url, None, pinned(&pki.fingerprint));
    let second = submit(&by_pin, "noop", json!([]), json!({}));
    let done = wait_final(&by_ca, &[id, second], WAIT);
    assert!(done.iter().all(|t| t["status"] == "completed"), "{done:?}");
    let before = task_count(&by_ca);

    // Refused before anything is sent: another CA, the system's CAs, a
    // wrong pin; nothing changes.
    let stranger = stranger_ca(temp.path());
    let error = client(&url, None, ca(&stranger))
        .submit(&json!({"task": "noop"}))
        .expect_err("a certificate from another CA is refused");
    let detail = connect_detail(error);
    assert!(
        detail.contains("not signed by an authority trusted here"),
        "{detail}"
    );
    let wrong_pin = "00".repeat(32);
    let error = client(&url, None, pinned(&wrong_pin))
        .submit(&json!({"task": "noop"}))
        .expect_err("another certificate than the pinned one is refused");
    let detail = connect_detail(error);
    assert!(
        detail.contains(&format!("its SHA-256 fingerprint is {}", pki.fingerprint)),
        "{detail}"
    );
    for refused in [
        cli(&url, &["submit", "noop"]),
        cli(
            &url,
            &[
                "submit",
                "noop",
                "--ca-file",
                stranger.to_str().expect("utf-8"),
            ],
        ),
        cli(&url, &["submit", "noop", "--tls-fingerprint", &wrong_pin]),
    ] {
        assert!(!refused.status.success(), "{}", text(&refused));
        assert!(
            text(&refused).contains("the server's certificate is refused"),
            "{}",
            text(&refused)
        );
    }
    let bad_pin = cli(&url, &["list", "--tls-fingerprint", "12:34"]);
    assert!(!bad_pin.status.success());
    assert!(
        text(&bad_pin).contains("is not a SHA-256 fingerprint"),
        "{}",
        text(&bad_pin)
    );
    assert_eq!(task_count(&by_ca), before);

    // Through TLS every route but /healthz wants the secret, as over
    // plain HTTP.
    let wrong_token = client(&url, Some("wrong"), ca(&pki.ca));
    match wrong_token.list("limit=1") {
        Err(ClientError::Server { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    assert_eq!(
        client(&url, Some("wrong"), ca(&pki.ca))
            .call("GET", "/healthz", None)
            .expect("healthz is open")["status"],
        "ok"
    );

    // Plain HTTP to the TLS port: a readable answer, not a TLS alert.
    let addr = url
        .trim_start_matches("https://")
        .parse()
        .expect("an address");
    let answer = raw_http(
        addr,
        b"GET /api/v1/tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"tls_required\""), "{answer}");
    assert!(answer.contains("https://"), "{answer}");
}

#[test]
fn beyond_loopback_serve_speaks_https_with_a_generated_certificate_clients_pin() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    let token = "tls-test-token";
    let mut proc = spawn(&data, "0.0.0.0:0", &["--token", token]);
    let url = proc.listening_url();
    assert!(url.starts_with("https://0.0.0.0:"), "{url}");
    let fingerprint = printed_fingerprint(&proc);
    for file in ["cert.pem", "key.pem"] {
        let mode = std::fs::metadata(data.join("tls").join(file))
            .expect("generated file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let port = url.rsplit(':').next().expect("a port");
    let local = format!("https://127.0.0.1:{port}");

    let client = client(&local, Some(token), pinned(&fingerprint));
    let id = submit(&client, "noop", json!([]), json!({}));
    let done = wait_final(&client, &[id], WAIT);
    assert_eq!(done[0]["status"], "completed", "{done:?}");

    // A CA file with the self-signed certificate itself also works.
    let by_file = cli(
        &local,
        &[
            "status",
            &id.to_string(),
            "--token",
            token,
            "--ca-file",
            data.join("tls").join("cert.pem").to_str().expect("utf-8"),
        ],
    );
    assert!(by_file.status.success(), "{}", text(&by_file));

    // The certificate is kept: the same fingerprint after a restart.
    assert!(proc.terminate(WAIT), "{}", proc.stderr());
    let again = spawn(&data, "0.0.0.0:0", &["--token", token]);
    assert_eq!(printed_fingerprint(&again), fingerprint);
    drop(again);

    // --no-tls: plain HTTP beyond loopback, for a proxy that adds TLS.
    let plain = spawn(&data, "0.0.0.0:0", &["--token", token, "--no-tls"]);
    let plain_url = plain.listening_url();
    assert!(plain_url.starts_with("http://0.0.0.0:"), "{plain_url}");
    let port = plain_url.rsplit(':').next().expect("a port");
    let over_http = Client::new(&format!("http://127.0.0.1:{port}"), Some(token), WAIT);
    assert!(task_count(&over_http) >= 1);
}

#[test]
fn large_uploads_large_answers_and_followed_logs_cross_the_tls_front() {
    let temp = tempfile::tempdir().expect("temp dir");
    let proc = spawn(
        &temp.path().join("data"),
        "127.0.0.1:0",
        &["--tls", "--allow-code-tasks", "--memory"],
    );
    let url = proc.listening_url();
    let fingerprint = printed_fingerprint(&proc);
    let client = client(&url, None, pinned(&fingerprint));

    // About 1 MB up (bodies past 1 KiB go to the upload threads), and a
    // large answer back.
    let padding = "x".repeat(80);
    let batch: Vec<_> = (0..10_000)
        .map(|n| json!({"task": "noop", "args": [n, padding]}))
        .collect();
    let ids = client.submit_batch(&batch).expect("a large batch");
    assert_eq!(ids.len(), batch.len());
    let listed = client.list("limit=1000").expect("a large answer");
    assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(1000));

    // A followed log streams through the front as the task writes it.
    let id = submit(
        &client,
        "command",
        json!([[
            "sh",
            "-c",
            "for i in 1 2 3; do echo line-$i; sleep 0.2; done"
        ]]),
        json!({"priority": 9}),
    );
    let followed = cli(
        &url,
        &[
            "logs",
            &id.to_string(),
            "-f",
            "--tls-fingerprint",
            &fingerprint,
        ],
    );
    assert!(followed.status.success(), "{}", text(&followed));
    let out = String::from_utf8_lossy(&followed.stdout);
    assert!(
        out.contains("line-1") && out.contains("line-2") && out.contains("line-3"),
        "{out}"
    );
}
