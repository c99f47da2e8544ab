//! `taskdeck bench --http`: a load generator for the HTTP API. It starts the
//! real scheduler and listener in-process on a free loopback port (or
//! targets `--url`) and measures from the clients' side, over kept-alive
//! connections.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::wire::{Wire, WireError};
use super::{BenchError, Latencies, LatencyReport};
use crate::api::{ApiConfig, ApiServer};
use crate::client::{Client, ClientError};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::store::Retention;
use crate::tasks::Registry;

/// What to measure.
#[derive(Debug, Clone)]
pub struct HttpBenchOptions {
    /// Server to load; none starts one in-process (memory store).
    pub url: Option<String>,
    /// Bearer token for `url`.
    pub token: Option<String>,
    /// Tasks in each throughput phase.
    pub tasks: usize,
    /// Concurrent clients in the throughput phases.
    pub clients: usize,
    /// Tasks per batch request in the batch phase.
    pub batch: usize,
    /// Workers of the in-process server.
    pub workers: usize,
    /// Submit-and-wait round trips in the latency phase.
    pub latency_tasks: usize,
    /// Event stream followers connected during all phases, each reading
    /// every event.
    pub followers: usize,
}

/// Results; printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct HttpBenchReport {
    /// The server measured.
    pub url: String,
    /// Concurrent clients in the throughput phases.
    pub clients: usize,
    /// Tasks in each throughput phase.
    pub tasks: usize,
    /// One task per request: tasks accepted per second.
    pub single_submit_tasks_per_s: f64,
    /// Batches of `batch` tasks: tasks accepted per second.
    pub batch_submit_tasks_per_s: f64,
    /// Tasks per batch request.
    pub batch: usize,
    /// Submit then long-poll wait, one at a time from one client.
    pub latency: LatencyReport,
    /// Event stream followers connected meanwhile.
    pub followers: usize,
    /// Bytes of events they received in all.
    pub follower_bytes: u64,
}

impl From<WireError> for BenchError {
    fn from(error: WireError) -> Self {
        BenchError::Stuck(format!("HTTP call failed: {error}"))
    }
}

/// Sends a request and insists on a 2xx answer with a JSON body.
fn json_call(wire: &mut Wire, method: &str, path: &str, body: &[u8]) -> Result<Value, BenchError> {
    let (status, answer) = wire.call(method, path, body)?;
    let value: Value = serde_json::from_slice(&answer)
        .map_err(|e| BenchError::Stuck(format!("{method} {path}: not JSON: {e}")))?;
    if !(200..300).contains(&status) {
        return Err(BenchError::Stuck(format!(
            "{method} {path}: HTTP {status}: {value}"
        )));
    }
    Ok(value)
}

impl From<ClientError> for BenchError {
    fn from(error: ClientError) -> Self {
        BenchError::Stuck(format!("HTTP call failed: {error}"))
    }
}

/// Runs the three phases.
pub fn run(options: &HttpBenchOptions) -> Result<HttpBenchReport, BenchError> {
    let local = match &options.url {
        Some(_) => None,
        None => Some(start_local(options)?),
    };
    let url = options
        .url
        .clone()
        .or_else(|| local.as_ref().map(|(_, server)| server.url()))
        .unwrap_or_default();
    let result = measure(&url, options);
    if let Some((scheduler, server)) = local {
        server.shutdown();
        scheduler.shutdown()?;
    }
    result
}

fn start_local(options: &HttpBenchOptions) -> Result<(Scheduler, ApiServer), BenchError> {
    let mut config = SchedulerConfig::in_memory();
    config.workers = options.workers;
    config.retention = Retention {
        max_finished: (options.tasks * 2 + options.latency_tasks).max(1),
        max_age: None,
    };
    let scheduler = Scheduler::start(config, Registry::with_builtins())?;
    let api = ApiConfig {
        listen: "127.0.0.1:0".into(),
        ..ApiConfig::default()
    };
    let server = ApiServer::start(api, scheduler.clone(), Arc::new(|| None))
        .map_err(|e| BenchError::Stuck(e.to_string()))?;
    Ok((scheduler, server))
}

fn measure(url: &str, options: &HttpBenchOptions) -> Result<HttpBenchReport, BenchError> {
    let token = options.token.as_deref();
    let followers = super::followers::Followers::start(url, token, options.followers)?;
    let measured = measure_phases(url, options);
    let follower_bytes = followers.stop();
    measured.map(|report| HttpBenchReport {
        followers: options.followers,
        follower_bytes,
        ..report
    })
}

fn measure_phases(url: &str, options: &HttpBenchOptions) -> Result<HttpBenchReport, BenchError> {
    let token = options.token.as_deref();
    let control = Client::new(url, token, Duration::from_secs(60));
    let noop = br#"{"task":"noop"}"#;

    let mut one = Wire::connect(url, token)?;
    let mut latencies = Latencies::new();
    for _ in 0..options.latency_tasks {
        let begun = Instant::now();
        let submitted = json_call(&mut one, "POST", "/api/v1/tasks", noop)?;
        let id = submitted["id"].as_u64().unwrap_or(0);
        let answer = json_call(
            &mut one,
            "GET",
            &format!("/api/v1/tasks/{id}/wait?timeout_s=10"),
            b"",
        )?;
        let elapsed = begun.elapsed();
        if answer["task"]["status"] != "completed" {
            return Err(BenchError::Stuck(format!(
                "latency task {id} did not complete: {answer}"
            )));
        }
        latencies.record(elapsed);
    }

    let clients = options.clients.max(1);
    let connect = || Wire::connect(url, token);
    let single = parallel(clients, options.tasks, connect, |wire, n| {
        for _ in 0..n {
            json_call(wire, "POST", "/api/v1/tasks", noop)?;
        }
        Ok(())
    })?;
    drain(&control)?;

    let batch = options.batch.max(1);
    let body_of = |n: usize| {
        let tasks: Vec<Value> = (0..n).map(|_| json!({ "task": "noop" })).collect();
        json!({ "tasks": tasks }).to_string().into_bytes()
    };
    let full = body_of(batch);
    let batched = parallel(clients, options.tasks, connect, |wire, n| {
        let mut left = n;
        while left > 0 {
            let take = left.min(batch);
            let body = if take == batch {
                full.clone()
            } else {
                body_of(take)
            };
            json_call(wire, "POST", "/api/v1/tasks/batch", &body)?;
            left -= take;
        }
        Ok(())
    })?;
    drain(&control)?;

    Ok(HttpBenchReport {
        url: url.to_owned(),
        clients,
        tasks: options.tasks,
        single_submit_tasks_per_s: (options.tasks as f64 / single.as_secs_f64().max(1e-9)).round(),
        batch_submit_tasks_per_s: (options.tasks as f64 / batched.as_secs_f64().max(1e-9)).round(),
        batch,
        latency: latencies.report(),
        followers: 0,
        follower_bytes: 0,
    })
}

/// Splits `tasks` over `clients` threads, each with its own connection
/// (opened before the clock starts), and returns the wall time from the
/// first request to the last answer.
fn parallel(
    clients: usize,
    tasks: usize,
    connect: impl Fn() -> Result<Wire, WireError>,
    work: impl Fn(&mut Wire, usize) -> Result<(), BenchError> + Sync,
) -> Result<Duration, BenchError> {
    let mut connections = (0..clients)
        .map(|_| connect())
        .collect::<Result<Vec<_>, _>>()?;
    for wire in &mut connections {
        json_call(wire, "GET", "/healthz", b"")?;
    }
    let work = &work;
    let begun = Instant::now();
    thread::scope(|scope| {
        let handles: Vec<_> = connections
            .iter_mut()
            .enumerate()
            .map(|(i, wire)| {
                let share = tasks / clients + usize::from(i < tasks % clients);
                scope.spawn(move || work(wire, share))
            })
            .collect();
        handles.into_iter().try_for_each(|handle| {
            handle
                .join()
                .map_err(|_| BenchError::Stuck("a client thread panicked".into()))?
        })
    })?;
    Ok(begun.elapsed())
}

/// Waits until the server's queue is empty and nothing runs.
fn drain(client: &Client) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let m = client.call("GET", "/api/v1/workers", None)?;
        let report = client.call("GET", "/api/v1/report", None)?;
        let counts = &report["counts"];
        let active = ["queued", "running", "retrying"]
            .iter()
            .map(|k| counts[*k].as_u64().unwrap_or(0))
            .sum::<u64>();
        if active == 0 && m["busy"].as_u64() == Some(0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Stuck(
                "the server did not drain its queue".into(),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}
