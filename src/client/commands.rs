//! The CLI commands that talk to a running server: submit, status, list,
//! cancel, retry, wait, monitor and mock. Each prints for people (or JSON
//! where asked) and returns an error the caller prints plainly.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use super::Client;
use crate::demo::random_mock_spec;
use crate::tasks::parse_arg;

/// Longest single long poll the server allows.
const POLL_CHUNK_S: f64 = 300.0;

/// Builds a submission object from the CLI's pieces.
pub fn submission(
    name: &str,
    args: &[String],
    kwargs: &[String],
    priority: Option<u8>,
    retries: Option<u32>,
    timeout_s: Option<f64>,
) -> anyhow::Result<Value> {
    let mut named = Map::new();
    for pair in kwargs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--kwarg takes KEY=VALUE, got {pair:?}");
        };
        named.insert(key.to_owned(), parse_arg(value));
    }
    let mut object = json!({
        "task": name,
        "args": args.iter().map(|a| parse_arg(a)).collect::<Vec<_>>(),
        "kwargs": named,
    });
    if let Some(p) = priority {
        object["priority"] = json!(p);
    }
    if let Some(r) = retries {
        object["max_retries"] = json!(r);
    }
    if let Some(t) = timeout_s {
        object["timeout_s"] = json!(t);
    }
    Ok(object)
}

/// Reads a delay such as `90s`, `2h`, `1h30m` or `500ms`; seconds.
pub fn parse_delay(text: &str) -> anyhow::Result<f64> {
    let delay: jiff::SignedDuration = text.trim().parse().map_err(|_| {
        anyhow::anyhow!("--delay takes a duration such as 90s, 2h or 1h30m, got {text:?}")
    })?;
    if delay.is_negative() {
        bail!("--delay must not be negative, got {text:?}");
    }
    Ok(delay.as_secs_f64())
}

/// Reads a start time: RFC 3339 with an offset (`2026-12-02T03:00:00Z`),
/// or a date and time in this machine's time zone (`2026-12-02T03:00`,
/// `2026-12-02 03:00`); seconds since the epoch.
pub fn parse_at(text: &str) -> anyhow::Result<f64> {
    let text = text.trim();
    let at = match text.parse::<jiff::Timestamp>() {
        Ok(at) => at,
        Err(_) => text
            .parse::<jiff::civil::DateTime>()
            .and_then(|civil| civil.to_zoned(jiff::tz::TimeZone::system()))
            .map(|zoned| zoned.timestamp())
            .map_err(|_| {
                anyhow::anyhow!(
                    "--at takes a time such as 2026-12-02T03:00 (local) or \
                     2026-12-02T03:00:00Z, got {text:?}"
                )
            })?,
    };
    Ok(at.as_microsecond() as f64 / 1e6)
}

/// A time in seconds since the epoch, in this machine's time zone.
fn local_time(secs: f64) -> String {
    let micros = (secs * 1e6).round() as i64;
    jiff::Timestamp::from_microsecond(micros).map_or_else(
        |_| format!("{secs:.3}"),
        |at| {
            at.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        },
    )
}

fn seconds(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |s| format!("{s:.3} s"))
}

/// A duration for people: `45 s`, `3m 05s`, `2h 10m`.
pub fn human_duration(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// The percentage a task reported, e.g. `42%`.
fn percent_of(progress: &Value) -> Option<String> {
    progress["fraction"]
        .as_f64()
        .map(|f| format!("{:.0}%", f * 100.0))
}

/// A task's progress in one line: percentage, message, metrics and the
/// time left at its recent rate (while it runs); none when it reported none.
pub fn progress_line(task: &Value, now_s: f64) -> Option<String> {
    let progress = task.get("progress").filter(|p| p.is_object())?;
    let mut parts: Vec<String> = Vec::new();
    parts.extend(percent_of(progress));
    if let Some(message) = progress["message"].as_str() {
        parts.push(message.to_owned());
    }
    let metrics: Vec<String> = progress["metrics"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| value.as_f64().map(|v| format!("{name} {v:.4}")))
        .collect();
    if !metrics.is_empty() {
        parts.push(metrics.join(", "));
    }
    if task["status"] == "running"
        && let Some(eta_us) = progress["eta_at_us"].as_f64()
    {
        parts.push(format!("{} left", human_duration(eta_us / 1e6 - now_s)));
    }
    Some(parts.join(" · "))
}

/// A task record as a few readable lines.
pub fn describe(task: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "task {} {} {}",
        task["id"],
        task["task"].as_str().unwrap_or("?"),
        task["status"].as_str().unwrap_or("?")
    );
    let _ = writeln!(out, "  arguments:   {} {}", task["args"], task["kwargs"]);
    let _ = writeln!(
        out,
        "  priority {}, attempts {} of at most {}",
        task["priority"],
        task["attempts"],
        task["max_retries"].as_u64().map_or(0, |r| r + 1)
    );
    if let Some(queue) = task["queue"].as_str().filter(|q| *q != "default") {
        let _ = writeln!(out, "  queue:       {queue}");
    }
    if let Some(worker) = task["worker"].as_str() {
        let _ = writeln!(out, "  worker:      {worker}");
    }
    if let Some(at) = task["not_before"].as_f64() {
        let _ = writeln!(out, "  not before:  {}", local_time(at));
    }
    let ids = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .into_iter()
            .flatten()
            .map(ToString::to_string)
            .collect()
    };
    let after = ids(&task["depends_on"]);
    if !after.is_empty() {
        let policy = match task["on_dependency_failure"].as_str() {
            Some("run") => " (runs even if one fails)",
            _ => "",
        };
        let _ = writeln!(out, "  after:       {}{policy}", after.join(", "));
    }
    let dependents = ids(&task["dependents"]);
    if !dependents.is_empty() {
        let _ = writeln!(out, "  before:      {}", dependents.join(", "));
    }
    if let Some(reason) = task["waiting"]["message"].as_str() {
        let _ = writeln!(out, "  waiting:     {reason}");
    }
    if let Some(progress) = progress_line(task, now_s()) {
        let _ = writeln!(out, "  progress:    {progress}");
    }
    let _ = writeln!(
        out,
        "  queue wait {}, run time {}, total {}",
        seconds(&task["queue_wait_s"]),
        seconds(&task["run_time_s"]),
        seconds(&task["total_latency_s"])
    );
    for failure in task["failures"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  attempt {} {}: {}",
            failure["attempt"],
            failure["kind"].as_str().unwrap_or("?"),
            failure["message"].as_str().unwrap_or("")
        );
    }
    if !task["result"].is_null() {
        let _ = writeln!(out, "  result:      {}", task["result"]);
    }
    if let Some(error) = task["error"].as_str() {
        let _ = writeln!(out, "  error:       {error}");
    }
    out
}

/// Waits for a task, long-polling in chunks, up to `timeout` overall (none:
/// forever). Returns the final record.
pub fn wait_for(client: &Client, id: u64, timeout: Option<Duration>) -> anyhow::Result<Value> {
    let start = Instant::now();
    loop {
        let left = timeout.map(|t| t.saturating_sub(start.elapsed()).as_secs_f64());
        let chunk = left.map_or(POLL_CHUNK_S, |l| l.min(POLL_CHUNK_S));
        let answer = client.wait(id, chunk)?;
        if answer["finished"].as_bool() == Some(true) {
            return Ok(answer["task"].clone());
        }
        if left.is_some_and(|l| l <= chunk) {
            bail!(
                "task {id} is still {} after {:.1} s",
                answer["task"]["status"].as_str().unwrap_or("unfinished"),
                start.elapsed().as_secs_f64()
            );
        }
    }
}

/// Fails (non-zero exit) unless the task completed.
pub fn require_completed(task: &Value) -> anyhow::Result<()> {
    match task["status"].as_str() {
        Some("completed") => Ok(()),
        other => bail!(
            "task {} ended {}: {}",
            task["id"],
            other.unwrap_or("unknown"),
            task["error"].as_str().unwrap_or("no error message")
        ),
    }
}

fn now_s() -> f64 {
    crate::model::now_us() as f64 / 1e6
}

/// `taskdeck list`: one line per task.
pub fn print_list(answer: &Value) {
    println!(
        "{:>8}  {:<10}  {:<14}  {:>3}  {:>8}  {:<10}  {:>10}  {:>8}",
        "ID", "STATUS", "TASK", "PRI", "ATTEMPTS", "WORKER", "TOTAL", "PROGRESS"
    );
    for task in answer["tasks"].as_array().into_iter().flatten() {
        println!(
            "{:>8}  {:<10}  {:<14}  {:>3}  {:>8}  {:<10}  {:>10}  {:>8}",
            task["id"].to_string(),
            task["status"].as_str().unwrap_or("?"),
            task["task"].as_str().unwrap_or("?"),
            task["priority"].to_string(),
            task["attempts"].to_string(),
            task["worker"].as_str().unwrap_or("-"),
            seconds(&task["total_latency_s"]),
            percent_of(&task["progress"]).unwrap_or_else(|| "-".to_owned())
        );
    }
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// `taskdeck monitor`: resources, workers, queue and latency for people.
pub fn print_monitoring(m: &Value) {
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let gib = |v: &Value| num(v) / GIB;
    println!(
        "CPU     {:5.1} %   cores: {}",
        num(&m["cpu"]["percent"]),
        m["cpu"]["per_core"]
            .as_array()
            .map(|c| c
                .iter()
                .map(|x| format!("{:.0}", num(x)))
                .collect::<Vec<_>>()
                .join(" "))
            .unwrap_or_default()
    );
    println!(
        "Memory  {:5.1} %   {:.1} of {:.1} GiB",
        num(&m["memory"]["percent"]),
        gib(&m["memory"]["used_bytes"]),
        gib(&m["memory"]["total_bytes"])
    );
    for disk in m["disks"].as_array().into_iter().flatten() {
        println!(
            "Disk    {:5.1} %   {:.1} of {:.1} GiB  {}",
            num(&disk["percent"]),
            gib(&disk["used_bytes"]),
            gib(&disk["total_bytes"]),
            disk["mount"].as_str().unwrap_or("?")
        );
    }
    match m["gpus"]["devices"].as_array() {
        Some(devices) if !devices.is_empty() => {
            for gpu in devices {
                println!(
                    "GPU {}   {:5.1} %   {:.1} of {:.1} GiB  {} °C  {}",
                    gpu["index"],
                    num(&gpu["utilization_percent"]),
                    gib(&gpu["memory_used_bytes"]),
                    gib(&gpu["memory_total_bytes"]),
                    gpu["temperature_c"],
                    gpu["name"].as_str().unwrap_or("?")
                );
            }
        }
        _ => println!(
            "GPU     none: {}",
            m["gpus"]["reason"].as_str().unwrap_or("not available")
        ),
    }
    println!(
        "Workers {} busy, {} idle, {} total; queue depth {}",
        m["workers"]["busy"], m["workers"]["idle"], m["workers"]["total"], m["queue_depth"]
    );
    let ms = |v: &Value| num(v) * 1000.0;
    println!(
        "Tasks   {:.1}/s over the last minute; latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms ({} finished)",
        num(&m["throughput_per_s"]),
        ms(&m["latency"]["p50_s"]),
        ms(&m["latency"]["p95_s"]),
        ms(&m["latency"]["p99_s"]),
        m["latency"]["count"]
    );
}

/// A random mock ML or CV task (see [`random_mock_spec`]) as a submission.
pub fn random_mock(rng: &mut fastrand::Rng, max_ms: u64) -> Value {
    let spec = random_mock_spec(rng, max_ms);
    json!({ "task": spec.name, "args": spec.args })
}

/// `taskdeck mock`: submits `count` random mock tasks; prints their ids.
pub fn mock(client: &Client, count: usize, max_ms: u64) -> anyhow::Result<()> {
    if max_ms == 0 {
        bail!("--max-duration-ms must be at least 1");
    }
    let mut rng = fastrand::Rng::new();
    for _ in 0..count {
        let task = random_mock(&mut rng, max_ms);
        let id = client
            .submit(&task)
            .with_context(|| format!("submitting {task}"))?;
        println!(
            "submitted task {id}: {} {}",
            task["task"].as_str().unwrap_or("?"),
            task["args"]
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submissions_carry_every_option() {
        let s = submission(
            "sleep",
            &["10".into()],
            &["x=1".into()],
            Some(7),
            Some(0),
            Some(2.5),
        )
        .expect("valid submission");
        assert_eq!(
            s,
            json!({"task": "sleep", "args": [10], "kwargs": {"x": 1}, "priority": 7, "max_retries": 0, "timeout_s": 2.5})
        );
        assert!(submission("sleep", &[], &["novalue".into()], None, None, None).is_err());
    }

    #[test]
    fn random_mock_tasks_stay_in_range() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..100 {
            let task = random_mock(&mut rng, 20_000);
            let duration = task["args"][0].as_u64().unwrap_or(0);
            assert!((1_000..=20_000).contains(&duration));
            assert!(
                ["mock_ml_task", "mock_cv_task"].contains(&task["task"].as_str().unwrap_or(""))
            );
        }
    }

    #[test]
    fn delays_and_start_times_are_read_as_people_write_them() {
        let delay = |text| parse_delay(text).ok();
        assert_eq!(delay("90s"), Some(90.0));
        assert_eq!(delay("2h"), Some(7_200.0));
        assert_eq!(delay("1h30m"), Some(5_400.0));
        assert_eq!(delay("500ms"), Some(0.5));
        assert_eq!(delay("soon"), None);
        assert_eq!(delay("-5s"), None);
        let utc = parse_at("2026-12-02T03:00:00Z").expect("RFC 3339");
        assert_eq!(utc, 1_796_180_400.0);
        let offset = parse_at("2026-12-02T04:00:00+01:00").expect("with an offset");
        assert_eq!(offset, utc);
        assert!(parse_at("2026-12-02T03:00").is_ok(), "local time");
        assert!(parse_at("2026-12-02 03:00").is_ok(), "local time, a space");
        assert!(parse_at("tomorrow").is_err());
    }

    #[test]
    fn progress_reads_as_one_line_with_the_time_left_while_running() {
        let task = json!({
            "status": "running",
            "progress": {
                "fraction": 0.425, "message": "epoch 3/10",
                "metrics": {"loss": 0.3125}, "eta_at_us": 1_125_000_000.0
            }
        });
        assert_eq!(
            progress_line(&task, 1000.0).as_deref(),
            Some("42% · epoch 3/10 · loss 0.3125 · 2m 05s left")
        );
        let done = json!({"status": "completed", "progress": {"fraction": 1.0, "metrics": {}}});
        assert_eq!(progress_line(&done, 0.0).as_deref(), Some("100%"));
        assert_eq!(progress_line(&json!({"status": "running"}), 0.0), None);
        assert_eq!(human_duration(59.4), "59 s");
        assert_eq!(human_duration(7_800.0), "2h 10m");
    }
}
