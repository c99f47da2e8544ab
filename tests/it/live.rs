//! Watching work live over real sockets: the event stream (resume after a
//! reconnect and after a server restart, stalled followers), log follow and
//! paging, and progress from a shell command and a Python function.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::broker::{Proc, status, submit, task, wait_final};
use common::{Api, WAIT, wait_until};

/// Reads a chunked body as plain bytes (the streamed answers use chunked
/// transfer encoding); EOF after the last, empty chunk.
struct Dechunk<R: BufRead> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Dechunk<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            left: 0,
            done: false,
        }
    }
}

impl<R: BufRead> Read for Dechunk<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut size = String::new();
            if self.inner.read_line(&mut size)? == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = usize::from_str_radix(size.trim(), 16)
                .unwrap_or_else(|_| panic!("a chunk size, got {size:?}"));
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = self.left.min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n;
        if self.left == 0 {
            let mut crlf = [0u8; 2];
            self.inner.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

/// Reads the status line and headers of an answer; the head, with the
/// reader left at the body.
fn read_head(reader: &mut impl BufRead) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            return head;
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
struct Sse {
    id: String,
    event: String,
    data: Value,
}

/// A follower of `/api/v1/events` on a raw socket; a thread parses what
/// arrives into events.
struct Stream {
    events: Receiver<Sse>,
    socket: TcpStream,
}

impl Stream {
    fn open(addr: SocketAddr, query: &str, last_event_id: Option<&str>) -> Self {
        let mut socket = TcpStream::connect(addr).expect("connect");
        let last = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        let auth = common::auth_header(addr);
        write!(
            socket,
            "GET /api/v1/events{query} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{auth}{last}\r\n"
        )
        .expect("send");
        let mut raw = BufReader::new(socket.try_clone().expect("clone"));
        let head = read_head(&mut raw);
        assert!(head.starts_with("HTTP/1.1 200"), "answer: {head}");
        assert!(head.contains("text/event-stream"), "{head}");
        assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
        let mut reader = BufReader::new(Dechunk::new(raw));
        let (tx, events) = channel();
        thread::spawn(move || {
            let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                let text = line.trim_end_matches('\n');
                if text.is_empty() {
                    if !data.is_empty() {
                        let parsed = serde_json::from_str(&data).expect("event data is JSON");
                        let sse = Sse {
                            id: std::mem::take(&mut id),
                            event: std::mem::take(&mut event),
                            data: parsed,
                        };
                        if tx.send(sse).is_err() {
                            return;
                        }
                    }
                    data.clear();
                } else if let Some(value) = text.strip_prefix("id: ") {
                    id = value.to_owned();
                } else if let Some(value) = text.strip_prefix("event: ") {
                    event = value.to_owned();
                } else if let Some(value) = text.strip_prefix("data: ") {
                    data.push_str(value);
                }
                line.clear();
            }
        });
        Self { events, socket }
    }

    /// Events until `done` says stop (it sees each), or the time is up.
    fn until(&self, timeout: Duration, mut done: impl FnMut(&Sse) -> bool) -> Vec<Sse> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    let stop = done(&event);
                    seen.push(event);
                    if stop {
                        return seen;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return seen,
            }
        }
    }

    fn close(self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

fn finished_task(event: &Sse, id: u64) -> bool {
    event.event == "task" && event.data["task"]["id"] == id && event.data["kind"] == "completed"
}

/// A full `task` event of its completion, or a `tasks` summary that lists it
/// as completed (its change came in a burst).
fn seen_completed(event: &Sse, id: u64) -> bool {
    finished_task(event, id)
        || (event.event == "tasks"
            && event.data["statuses"]["completed"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|range| range[0].as_u64() <= Some(id) && range[1].as_u64() >= Some(id)))
}

/// Starts `taskdeck serve` on a free port with its data in `dir`.
fn serve(dir: &Path, extra: &[&str]) -> (Proc, taskdeck::client::Client, SocketAddr) {
    common::broker::serve_local(dir, &[&["--workers", "2"], extra].concat())
}

#[test]
fn the_event_stream_resumes_after_a_reconnect_and_says_reload_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut proc, client, addr) = serve(dir.path(), &[]);
    let stream = Stream::open(addr, "?kinds=task", None);
    let first = submit(&client, "noop", json!([1]), json!({}));
    let seen = stream.until(WAIT, |e| finished_task(e, first));
    let last = seen.last().expect("events");
    assert!(finished_task(last, first), "saw {seen:?}");
    assert_eq!(last.data["task"]["status"], "completed");
    let last_id = last.id.clone();
    stream.close();

    // Missed while disconnected, then resumed: nothing lost, nothing twice.
    let second = submit(&client, "noop", json!([2]), json!({}));
    wait_final(&client, &[second], WAIT);
    let resumed = Stream::open(addr, "?kinds=task", Some(&last_id));
    let seen = resumed.until(WAIT, |e| finished_task(e, second));
    assert!(seen.iter().any(|e| finished_task(e, second)), "{seen:?}");
    assert!(seen.iter().all(|e| e.event == "task"), "{seen:?}");
    assert!(
        seen.iter().all(|e| e.data["task"]["id"] != first),
        "events up to the last id are not sent again: {seen:?}"
    );
    let resume_id = seen.last().expect("events").id.clone();
    resumed.close();

    // A new run of the server cannot resume the old one's stream.
    assert!(proc.terminate(WAIT), "serve should stop");
    let (mut proc, client, addr) = serve(dir.path(), &[]);
    let after = Stream::open(addr, "?kinds=task", Some(&resume_id));
    let reset = after.until(WAIT, |_| true);
    assert_eq!(reset.first().map(|e| e.event.as_str()), Some("reset"));
    let third = submit(&client, "noop", json!([3]), json!({}));
    let seen = after.until(WAIT, |e| finished_task(e, third));
    assert!(seen.iter().any(|e| finished_task(e, third)), "{seen:?}");
    after.close();
    assert!(proc.terminate(WAIT));
}

#[test]
fn filters_pick_kinds_and_tasks_and_bad_filters_are_refused() {
    let api = Api::start(2, None);
    let client = api.client(None);
    let mine = Stream::open(api.addr(), "?task=2", None);
    let workers = Stream::open(api.addr(), "?kinds=worker,resources", None);
    let ids: Vec<u64> = (0..3)
        .map(|n| submit(&client, "noop", json!([n]), json!({})))
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    let seen = mine.until(WAIT, |e| finished_task(e, 2));
    assert!(seen.iter().any(|e| finished_task(e, 2)));
    assert!(seen.iter().all(|e| e.data["task"]["id"] == 2), "{seen:?}");
    let seen = workers.until(WAIT, |e| e.event == "resources");
    assert!(seen.iter().any(|e| e.event == "resources"), "{seen:?}");
    assert!(seen.iter().all(|e| e.event != "task"));
    assert!(
        seen.iter()
            .filter(|e| e.event == "resources")
            .all(|e| e.data["cpu"]["percent"].is_number())
    );
    for bad in ["?kinds=tasks", "?task=x", "?task="] {
        let answer = common::raw_http(
            api.addr(),
            format!("GET /api/v1/events{bad} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad}: {answer}");
    }
    let token = Api::start(1, Some("secret"));
    let answer = common::raw_http(
        token.addr(),
        b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

#[test]
fn a_burst_of_changes_reaches_followers_as_a_summary_and_task_followers_in_full() {
    let api = Api::start(2, None);
    let client = api.client(None);
    let all = Stream::open(api.addr(), "?kinds=task", None);
    // The burst's first id is the next one: ids count from 1 here.
    let watched = 250;
    let one = Stream::open(api.addr(), &format!("?task={watched}"), None);
    let batch: Vec<Value> = (0..500)
        .map(|n| json!({"task": "noop", "args": [n]}))
        .collect();
    let ids = client.submit_batch(&batch).expect("batch");
    assert_eq!(ids.first(), Some(&1));
    let last = *ids.last().expect("ids");
    let seen = all.until(WAIT, |e| seen_completed(e, last));
    assert!(
        seen.iter().any(|e| e.event == "tasks"),
        "500 tasks changing at once come as a summary: {:?}",
        seen.iter().map(|e| &e.event).collect::<Vec<_>>()
    );
    let summary = seen.iter().find(|e| e.event == "tasks").expect("a summary");
    assert!(summary.data["changed"].as_u64().is_some_and(|n| n > 64));
    assert!(
        seen.iter().filter(|e| e.event == "task").count() < 500,
        "not every change in full"
    );
    let mine = one.until(WAIT, |e| finished_task(e, watched));
    assert!(
        mine.iter().any(|e| finished_task(e, watched)),
        "a follower of one task gets its changes in full: {mine:?}"
    );
    assert!(mine.iter().all(|e| e.event == "task"));
}

#[test]
fn a_follower_that_stops_reading_blocks_neither_submits_nor_other_followers() {
    let api = Api::start(2, None);
    let client = api.client(None);
    // This one never reads: its socket buffers fill, and its writes block.
    let stalled = TcpStream::connect(api.addr()).expect("connect");
    (&stalled)
        .write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let live = Stream::open(api.addr(), "?kinds=task", None);
    let mut last = 0;
    for _ in 0..40 {
        let batch: Vec<Value> = (0..500)
            .map(|n| json!({"task": "noop", "args": [n, "x".repeat(200)]}))
            .collect();
        last = *client
            .submit_batch(&batch)
            .expect("submits go on")
            .last()
            .expect("ids");
    }
    assert!(
        wait_until(WAIT, || client.task(last).expect("get")["status"]
            == "completed"),
        "20,000 tasks ran while a follower was stalled"
    );
    // The reading follower may have fallen behind the buffer; then it is
    // told to reload (a reset) and goes on live, so a task submitted after
    // the reset is seen finishing.
    let mut live_again = false;
    for _ in 0..5 {
        let marker = submit(&client, "noop", json!(["marker"]), json!({}));
        let seen = live.until(WAIT, |e| seen_completed(e, marker) || e.event == "reset");
        assert!(
            seen.iter()
                .all(|e| matches!(e.event.as_str(), "task" | "tasks" | "reset")),
            "only the kinds asked for"
        );
        if seen.iter().any(|e| seen_completed(e, marker)) {
            live_again = true;
            break;
        }
        assert!(
            seen.last().is_some_and(|e| e.event == "reset"),
            "a follower that misses events is told so: {} events, the last {:?}",
            seen.len(),
            seen.iter()
                .rev()
                .take(3)
                .map(|e| (&e.id, &e.event, &e.data["kind"], &e.data["task"]["id"]))
                .collect::<Vec<_>>()
        );
    }
    assert!(
        live_again,
        "the reading follower is live past the stalled one"
    );
    drop(stalled);
}

/// The log a shell loop writes: `count` numbered lines.
fn numbered(count: usize) -> String {
    (1..=count).map(|n| format!("line {n} ü\n")).collect()
}

/// Reads a streamed (follow) answer whole: the headers, then the chunked
/// body to its end (on a connection kept open).
fn follow(addr: SocketAddr, target: &str) -> (String, Vec<u8>) {
    let mut socket = TcpStream::connect(addr).expect("connect");
    let auth = common::auth_header(addr);
    write!(socket, "GET {target} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").expect("send");
    let mut reader = BufReader::new(socket);
    let head = read_head(&mut reader);
    let mut body = Vec::new();
    Dechunk::new(reader).read_to_end(&mut body).expect("body");
    (head, body)
}

#[test]
fn a_followed_log_brings_every_byte_once_in_order_and_pages_add_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut proc, client, addr) = serve(dir.path(), &["--allow-code-tasks"]);
    let script = "for i in $(seq 100); do echo \"line $i ü\"; sleep 0.05; done";
    let id = submit(&client, "command", json!([["sh", "-c", script]]), json!({}));
    let (head, body) = follow(addr, &format!("/api/v1/tasks/{id}/log?follow=true"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("X-Taskdeck-Attempt: 1"), "{head}");
    assert_eq!(String::from_utf8(body).expect("UTF-8"), numbered(100));
    assert_eq!(status(&wait_final(&client, &[id], WAIT)[0]), "completed");

    // Pages of 7 bytes (splitting the two-byte ü) add up to the file.
    let mut offset = 0;
    let mut whole = Vec::new();
    loop {
        let answer = http_get(
            addr,
            &format!("/api/v1/tasks/{id}/log?offset={offset}&limit=7"),
        );
        whole.extend_from_slice(&answer.body);
        let next: u64 = answer
            .header("X-Taskdeck-Next-Offset")
            .parse()
            .expect("offset");
        assert_eq!(next, offset + answer.body.len() as u64);
        offset = next;
        if answer.header("X-Taskdeck-Log-Complete") == "true" {
            break;
        }
        assert!(
            !answer.body.is_empty(),
            "a running page is never empty and incomplete"
        );
    }
    assert_eq!(String::from_utf8(whole).expect("UTF-8"), numbered(100));
    let tail = http_get(addr, &format!("/api/v1/tasks/{id}/log?tail=2"));
    assert_eq!(tail.body, b"line 99 \xc3\xbc\nline 100 \xc3\xbc\n");
    for (target, code) in [
        (format!("/api/v1/tasks/{id}/log?attempt=2"), "404"),
        ("/api/v1/tasks/999/log".to_owned(), "404"),
        (format!("/api/v1/tasks/{id}/log?limit=0"), "400"),
        (format!("/api/v1/tasks/{id}/log?tail=1&offset=3"), "400"),
    ] {
        let answer = http_get(addr, &target);
        assert_eq!(answer.status, code, "{target}");
    }
    assert!(proc.terminate(WAIT));
}

#[test]
fn following_the_log_of_a_task_that_writes_none_is_answered_while_it_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut proc, client, addr) = serve(dir.path(), &[]);
    // A task type that runs no process writes no output log.
    let id = submit(&client, "sleep", json!([60_000]), json!({}));
    assert!(wait_until(WAIT, || status(&task(&client, id)) == "running"));
    let (head, body) = follow_closed(addr, &format!("/api/v1/tasks/{id}/log?follow=true"));
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("only tasks that run a process"), "{body}");
    assert_eq!(
        status(&task(&client, id)),
        "running",
        "answered at once, not when the task ended"
    );
    client.cancel(id).expect("cancel");
    assert!(proc.terminate(WAIT));
}

#[test]
fn a_one_gigabyte_output_is_followed_with_bounded_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut proc, client, addr) =
        serve(dir.path(), &["--allow-code-tasks", "--log-cap-mb", "2048"]);
    let gigabyte = 1_000_000_000u64;
    let script = format!("head -c {gigabyte} /dev/zero | tr '\\0' 'x'");
    let id = submit(&client, "command", json!([["sh", "-c", script]]), json!({}));
    let mut socket = TcpStream::connect(addr).expect("connect");
    let auth = common::auth_header(addr);
    write!(
        socket,
        "GET /api/v1/tasks/{id}/log?follow=true HTTP/1.1\r\nHost: x\r\n{auth}\r\n"
    )
    .expect("send");
    let mut raw = BufReader::new(socket);
    let head = read_head(&mut raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut reader = Dechunk::new(raw);
    let mut received = 0u64;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buffer).expect("read");
        if n == 0 {
            break;
        }
        assert!(buffer[..n].iter().all(|b| *b == b'x'));
        received += n as u64;
    }
    assert_eq!(received, gigabyte);
    let peak_kb = peak_rss_kb(proc.child.id());
    assert!(
        peak_kb < 300 * 1024,
        "the server's peak RSS stayed bounded: {peak_kb} kB"
    );
    eprintln!("serve peak RSS while following 1 GB: {peak_kb} kB");
    assert_eq!(status(&wait_final(&client, &[id], WAIT)[0]), "completed");
    assert!(proc.terminate(WAIT));
}

fn peak_rss_kb(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    text.lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn progress_from_a_shell_command_and_a_python_function_reaches_record_history_and_stream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let modules = dir.path().join("modules");
    std::fs::create_dir_all(&modules).expect("dir");
    std::fs::write(
        modules.join("trainer.py"),
        "import time\nfrom taskdeck import progress\n\n\
         def train(epochs):\n    for epoch in range(1, epochs + 1):\n        \
         progress(epoch / epochs, message='epoch %d/%d' % (epoch, epochs), loss=1.0 / epoch, epoch=epoch)\n        \
         time.sleep(0.15)\n    return epochs\n",
    )
    .expect("module");
    let path = modules.to_str().expect("path");
    let (mut proc, client, addr) = serve(dir.path(), &["--allow-code-tasks", "--pythonpath", path]);
    let stream = Stream::open(addr, "?kinds=task", None);
    let shell = "for i in 1 2 3 4; do echo \"{\\\"fraction\\\": 0.$((i*2)), \\\"message\\\": \\\"step $i\\\", \\\"loss\\\": $i}\" >> \"$TASKDECK_PROGRESS\"; sleep 0.15; done";
    let command = submit(&client, "command", json!([["sh", "-c", shell]]), json!({}));
    let python = submit(
        &client,
        "python",
        json!(["trainer:train"]),
        json!({"kwargs": {"args": [5]}}),
    );
    let records = wait_final(&client, &[command, python], WAIT);
    assert!(
        records.iter().all(|r| status(r) == "completed"),
        "{records:?}"
    );

    let shell_record = task(&client, command);
    assert_eq!(shell_record["progress"]["fraction"], 0.8);
    assert_eq!(shell_record["progress"]["message"], "step 4");
    assert_eq!(shell_record["progress"]["metrics"]["loss"], 4.0);
    let python_record = task(&client, python);
    assert_eq!(python_record["progress"]["fraction"], 1.0);
    assert_eq!(python_record["progress"]["message"], "epoch 5/5");
    assert_eq!(python_record["progress"]["metrics"]["epoch"], 5.0);

    let history = client
        .call("GET", &format!("/api/v1/tasks/{python}/progress"), None)
        .expect("history");
    assert_eq!(history["attempt"], 1);
    let points = history["points"].as_array().expect("points");
    assert_eq!(points.len(), 5, "one point per report: {history}");
    let losses: Vec<f64> = points
        .iter()
        .map(|p| p["metrics"]["loss"].as_f64().expect("loss"))
        .collect();
    assert!(losses.windows(2).all(|w| w[0] > w[1]), "{losses:?}");

    let seen = stream.until(WAIT, |e| finished_task(e, python));
    let progress: Vec<&Sse> = seen
        .iter()
        .filter(|e| e.data["kind"] == "progress" && e.data["task"]["id"] == python)
        .collect();
    assert!(!progress.is_empty(), "progress events reached the stream");
    assert!(
        progress
            .iter()
            .all(|e| e.data["task"]["progress"]["fraction"].is_number())
    );
    assert!(proc.terminate(WAIT));
}

/// A whole answer to a GET.
struct Answer {
    status: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }
}

fn http_get(addr: SocketAddr, target: &str) -> Answer {
    let (head, body) = follow_closed(addr, target);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body,
    }
}

/// Like [`follow`] for an answer with a length, asking the server to close.
fn follow_closed(addr: SocketAddr, target: &str) -> (String, Vec<u8>) {
    let mut socket = TcpStream::connect(addr).expect("connect");
    let auth = common::auth_header(addr);
    write!(
        socket,
        "GET {target} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("send");
    let mut all = Vec::new();
    socket.read_to_end(&mut all).expect("read");
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    (head, all[split + 4..].to_vec())
}

#[test]
fn the_cli_prints_follows_and_tails_logs_and_shows_progress() {
    let server = crate::cli::Server::start(&["--allow-code-tasks"]);
    // The progress line is written last, so status shows it once the task is done.
    let script = "for i in $(seq 30); do echo \"line $i ü\"; sleep 0.05; done; \
                  echo '{\"fraction\": 0.3, \"message\": \"step 30\"}' >> \"$TASKDECK_PROGRESS\"";
    let submitted = server.run(&[
        "submit",
        "command",
        &json!(["sh", "-c", script]).to_string(),
    ]);
    assert!(
        submitted.status.success(),
        "{}",
        crate::cli::text(&submitted)
    );
    let id = String::from_utf8_lossy(&submitted.stdout)
        .split_whitespace()
        .find_map(|word| word.parse::<u64>().ok())
        .expect("an id in the submit output");
    let id = id.to_string();
    // Started before the task prints its last line: follow prints it all.
    let followed = server.run(&["logs", &id, "-f"]);
    assert!(followed.status.success(), "{}", crate::cli::text(&followed));
    assert_eq!(String::from_utf8_lossy(&followed.stdout), numbered(30));
    let whole = server.run(&["logs", &id]);
    assert_eq!(String::from_utf8_lossy(&whole.stdout), numbered(30));
    let tail = server.run(&["logs", &id, "--tail", "2"]);
    assert_eq!(
        String::from_utf8_lossy(&tail.stdout),
        "line 29 ü\nline 30 ü\n"
    );
    let status = server.run(&["status", &id]);
    let text = crate::cli::text(&status);
    assert!(
        text.contains("progress:") && text.contains("step 30"),
        "{text}"
    );
    let list = server.run(&["list"]);
    assert!(
        crate::cli::text(&list).contains("30%"),
        "{}",
        crate::cli::text(&list)
    );
    for bad in [
        vec!["logs", "999"],
        vec!["logs", &id, "--attempt", "5"],
        vec!["logs", &id, "--attempt", "0"],
    ] {
        let answer = server.run(&bad);
        assert!(!answer.status.success(), "{bad:?} should fail");
        assert!(!crate::cli::text(&answer).is_empty());
    }
}
