//! The API's JSON (as `src/api/views.rs` writes it, docs/openapi.yaml
//! describes it) read back into the model types the window shows. Times
//! come as seconds since the epoch and go back to microseconds; anything
//! missing or of the wrong type is an error that names the field, never a
//! made-up value.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::model::{
    DEFAULT_QUEUE, Event, EventKind, GpuState, ProgressPoint, ResourceSample, TaskId, TaskRecord,
    TaskSpec, TaskStatus,
};
use crate::scheduler::{
    LatencySummary, MetricsReport, NameReport, QueueChange, QueueInfo, SchedulerStats,
    StatusCounts, Waiting, WorkerInfo,
};
use crate::tasks::{TaskType, TaskTypes};

/// JSON that does not say what the API promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server's {what} is not as expected: {detail}")]
pub struct ConvertError {
    what: &'static str,
    detail: String,
}

type Result<T> = std::result::Result<T, ConvertError>;

fn bad(what: &'static str, detail: impl Into<String>) -> ConvertError {
    ConvertError {
        what,
        detail: detail.into(),
    }
}

/// The field `key` of `value`, read as `T` (a missing field reads as null).
fn field<T: DeserializeOwned>(what: &'static str, value: &Value, key: &str) -> Result<T> {
    let found = value.get(key).cloned().unwrap_or(Value::Null);
    serde_json::from_value(found).map_err(|error| bad(what, format!("{key}: {error}")))
}

/// Seconds since the epoch (or null) as microseconds.
fn micros(what: &'static str, value: &Value, key: &str) -> Result<Option<i64>> {
    let secs: Option<f64> = field(what, value, key)?;
    Ok(secs.map(|s| (s * 1e6).round() as i64))
}

/// A task record as `GET /api/v1/tasks/{id}` and the `task` events give it.
pub fn task(value: &Value) -> Result<TaskRecord> {
    const WHAT: &str = "task record";
    let queue: String = field(WHAT, value, "queue")?;
    let timeout_s: Option<f64> = field(WHAT, value, "timeout_s")?;
    let spec = TaskSpec {
        name: field(WHAT, value, "task")?,
        args: field(WHAT, value, "args")?,
        kwargs: field::<Option<Map<String, Value>>>(WHAT, value, "kwargs")?.unwrap_or_default(),
        priority: field(WHAT, value, "priority")?,
        max_retries: field(WHAT, value, "max_retries")?,
        timeout_ms: timeout_s.map(|s| (s * 1000.0).round() as u64),
        gpus: field::<Option<u32>>(WHAT, value, "gpus")?.unwrap_or(0),
        gpu_memory_mb: field(WHAT, value, "gpu_memory_mb")?,
        not_before_us: micros(WHAT, value, "not_before")?,
        depends_on: field::<Option<_>>(WHAT, value, "depends_on")?.unwrap_or_default(),
        on_dependency_failure: field::<Option<_>>(WHAT, value, "on_dependency_failure")?
            .unwrap_or_default(),
        queue: (queue != DEFAULT_QUEUE).then_some(queue),
    };
    let failures = field::<Vec<Value>>(WHAT, value, "failures")?
        .iter()
        .map(|failure| {
            Ok(crate::model::AttemptFailure {
                attempt: field(WHAT, failure, "attempt")?,
                kind: field(WHAT, failure, "kind")?,
                message: field(WHAT, failure, "message")?,
                worker: field(WHAT, failure, "worker")?,
                at_us: micros(WHAT, failure, "at")?.ok_or_else(|| bad(WHAT, "failure at: null"))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TaskRecord {
        id: field(WHAT, value, "id")?,
        spec,
        status: field(WHAT, value, "status")?,
        attempts: field(WHAT, value, "attempts")?,
        failures,
        submitted_at_us: micros(WHAT, value, "submitted_at")?
            .ok_or_else(|| bad(WHAT, "submitted_at: null"))?,
        first_started_at_us: micros(WHAT, value, "first_started_at")?,
        started_at_us: micros(WHAT, value, "started_at")?,
        finished_at_us: micros(WHAT, value, "finished_at")?,
        retry_at_us: micros(WHAT, value, "retry_at")?,
        worker: field(WHAT, value, "worker")?,
        result: field(WHAT, value, "result")?,
        error: field(WHAT, value, "error")?,
        log: field(WHAT, value, "log")?,
        gpu_ids: field::<Option<_>>(WHAT, value, "gpu_ids")?.unwrap_or_default(),
        held: field::<Option<bool>>(WHAT, value, "held")?.unwrap_or(false),
        cancelled_by: field(WHAT, value, "cancelled_by")?,
        progress: field(WHAT, value, "progress")?,
        version: field(WHAT, value, "version")?,
    })
}

/// A `task` event's data: `{"kind": ..., "task": <record>}`. A record
/// reduced to `{"id", "status"}` (the task was gone when the event was
/// written) is `None`.
pub fn task_event(data: &Value, seq: u64) -> Result<Option<Event>> {
    let kind: EventKind = field("task event", data, "kind")?;
    let record = data.get("task").unwrap_or(&Value::Null);
    if record.get("version").is_none() && record.get("submitted_at").is_none() {
        return Ok(None);
    }
    Ok(Some(Event {
        seq,
        kind,
        task: std::sync::Arc::new(task(record)?),
    }))
}

/// What to call a change found by a reload rather than told by an event:
/// the kind of event that leaves a task in its status.
pub fn kind_of(record: &TaskRecord, known_before: bool) -> EventKind {
    match record.status {
        TaskStatus::Queued if record.held => EventKind::Held,
        TaskStatus::Queued if known_before => EventKind::Requeued,
        TaskStatus::Queued => EventKind::Submitted,
        TaskStatus::Running => EventKind::Started,
        TaskStatus::Retrying => EventKind::Retrying,
        TaskStatus::Completed => EventKind::Completed,
        TaskStatus::Failed => EventKind::Failed,
        TaskStatus::Cancelled => EventKind::Cancelled,
    }
}

/// A queue as `GET /api/v1/queues` and the `queue` events give it.
pub fn queue(value: &Value) -> Result<QueueInfo> {
    const WHAT: &str = "queue";
    let mut counts = [0usize; TaskStatus::ALL.len()];
    for status in TaskStatus::ALL {
        if let Some(slot) = counts.get_mut(status.index()) {
            *slot = field(WHAT, value, status.as_str())?;
        }
    }
    Ok(QueueInfo {
        name: field(WHAT, value, "name")?,
        limit: field(WHAT, value, "limit")?,
        paused: field(WHAT, value, "paused")?,
        counts,
    })
}

/// The workers of `GET /api/v1/workers` (or a `worker` event's `worker`).
pub fn worker(value: &Value) -> Result<WorkerInfo> {
    serde_json::from_value(value.clone()).map_err(|error| bad("worker", error.to_string()))
}

/// Latency percentiles written in seconds.
fn latency(value: &Value) -> Result<LatencySummary> {
    const WHAT: &str = "latency";
    let us = |key: &str| -> Result<u64> {
        let secs: f64 = field(WHAT, value, key)?;
        Ok((secs * 1e6).round().max(0.0) as u64)
    };
    let mean_s: f64 = field(WHAT, value, "mean_s")?;
    Ok(LatencySummary {
        count: field(WHAT, value, "count")?,
        mean_us: mean_s * 1e6,
        p50_us: us("p50_s")?,
        p95_us: us("p95_s")?,
        p99_us: us("p99_s")?,
        max_us: us("max_s")?,
    })
}

/// The scheduler's counts from `GET /api/v1/report` and the pool's from
/// `GET /api/v1/workers`.
pub fn stats(report: &Value, workers: &Value) -> Result<SchedulerStats> {
    const WHAT: &str = "report";
    let counts = report.get("counts").unwrap_or(&Value::Null);
    let per_name = field::<Vec<Value>>(WHAT, report, "tasks")?
        .iter()
        .map(|name| {
            Ok(NameReport {
                name: field(WHAT, name, "task")?,
                runs: field(WHAT, name, "runs")?,
                attempt_failures: field(WHAT, name, "attempt_failures")?,
                completed: field(WHAT, name, "completed")?,
                failed: field(WHAT, name, "failed")?,
                run_time: latency(name.get("run_time").unwrap_or(&Value::Null))?,
                total_latency: latency(name.get("total_latency").unwrap_or(&Value::Null))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SchedulerStats {
        counts: StatusCounts {
            queued: field(WHAT, counts, "queued")?,
            running: field(WHAT, counts, "running")?,
            retrying: field(WHAT, counts, "retrying")?,
            completed: field(WHAT, counts, "completed")?,
            failed: field(WHAT, counts, "failed")?,
            cancelled: field(WHAT, counts, "cancelled")?,
        },
        queue_depth: field(WHAT, report, "queue_depth")?,
        workers_total: field("workers", workers, "total")?,
        workers_busy: field("workers", workers, "busy")?,
        workers_idle: field("workers", workers, "idle")?,
        workers_target: field("workers", workers, "target")?,
        uptime_s: field(WHAT, report, "uptime_s")?,
        paused: field(WHAT, report, "paused")?,
        metrics: MetricsReport {
            total_latency: latency(report.get("latency").unwrap_or(&Value::Null))?,
            throughput_per_s: field(WHAT, report, "throughput_per_s")?,
            finished_last_minute: field(WHAT, report, "finished_last_minute")?,
            per_name,
        },
    })
}

/// Counts before the first report arrives: all zero.
pub fn empty_stats() -> SchedulerStats {
    SchedulerStats {
        counts: StatusCounts::default(),
        queue_depth: 0,
        workers_total: 0,
        workers_busy: 0,
        workers_idle: 0,
        workers_target: 0,
        uptime_s: 0.0,
        paused: false,
        metrics: MetricsReport {
            total_latency: LatencySummary::default(),
            throughput_per_s: 0.0,
            finished_last_minute: 0,
            per_name: Vec::new(),
        },
    }
}

/// A resource sample as `/api/v1/monitoring/history` and the `resources`
/// events give it; `None` for the placeholder of a server without one.
pub fn sample(value: &Value) -> Result<Option<ResourceSample>> {
    const WHAT: &str = "resource sample";
    let Some(at_us) = micros(WHAT, value, "sampled_at")? else {
        return Ok(None);
    };
    let cpu = value.get("cpu").unwrap_or(&Value::Null);
    let memory = value.get("memory").unwrap_or(&Value::Null);
    let disks = field::<Vec<Value>>(WHAT, value, "disks")?
        .iter()
        .map(|disk| {
            Ok(crate::model::DiskSample {
                mount: field(WHAT, disk, "mount")?,
                used_bytes: field(WHAT, disk, "used_bytes")?,
                total_bytes: field(WHAT, disk, "total_bytes")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let gpus = value.get("gpus").unwrap_or(&Value::Null);
    let devices: Vec<crate::model::GpuSample> = field(WHAT, gpus, "devices")?;
    let available: bool = field(WHAT, gpus, "available")?;
    let gpus = if available || !devices.is_empty() {
        GpuState::Available { devices }
    } else {
        let reason: Option<String> = field(WHAT, gpus, "reason")?;
        match reason.as_deref() {
            // The view's words for "NVML is there and found no device".
            Some("NVML found no devices") => GpuState::Available { devices },
            _ => GpuState::Unavailable {
                reason: reason.unwrap_or_default(),
            },
        }
    };
    Ok(Some(ResourceSample {
        at_us,
        cpu_percent: field(WHAT, cpu, "percent")?,
        cpu_per_core: field(WHAT, cpu, "per_core")?,
        memory_used_bytes: field(WHAT, memory, "used_bytes")?,
        memory_total_bytes: field(WHAT, memory, "total_bytes")?,
        disks,
        gpus,
    }))
}

/// `GET /api/v1/task-types` as a catalog for the create form.
pub fn task_types(value: &Value) -> Result<TaskTypes> {
    let types: Vec<TaskType> = field("task types", value, "task_types")?;
    Ok(TaskTypes::new(types))
}

/// A spec as the API takes it (`POST /api/v1/tasks`): the inverse of
/// `Submission::into_spec`, with the start time as seconds since the epoch.
pub fn submission(spec: &TaskSpec) -> Value {
    let TaskSpec {
        name,
        args,
        kwargs,
        priority,
        max_retries,
        timeout_ms,
        gpus,
        gpu_memory_mb,
        not_before_us,
        depends_on,
        on_dependency_failure,
        queue,
    } = spec;
    let mut body = json!({
        "task": name,
        "args": args,
        "kwargs": kwargs,
        "priority": priority,
        "max_retries": max_retries,
        "gpus": gpus,
        "depends_on": depends_on,
        "on_dependency_failure": on_dependency_failure,
    });
    if let Some(ms) = timeout_ms {
        body["timeout_s"] = json!(*ms as f64 / 1000.0);
    }
    if let Some(mb) = gpu_memory_mb {
        body["gpu_memory_mb"] = json!(mb);
    }
    if let Some(us) = not_before_us {
        body["not_before"] = json!(*us as f64 / 1e6);
    }
    if let Some(queue) = queue {
        body["queue"] = json!(queue);
    }
    body
}

/// A queue change as `PATCH /api/v1/queues/{name}` takes it.
pub fn queue_change(change: QueueChange) -> Value {
    let QueueChange {
        limit,
        paused,
        stop_running,
    } = change;
    let mut body = json!({});
    if let Some(limit) = limit {
        body["limit"] = json!(limit);
    }
    if let Some(paused) = paused {
        body["paused"] = json!(paused);
    }
    if stop_running {
        body["stop_running"] = json!(true);
    }
    body
}
/// Why a task waits, from the `waiting` field of `GET /api/v1/tasks/{id}`
/// (none when it is null); `record` gives what the reason leaves to it
/// (the GPUs a task needs).
pub fn waiting(value: &Value, record: &TaskRecord) -> Result<Option<Waiting>> {
    const WHAT: &str = "waiting reason";
    let Some(reason) = value.get("waiting").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let code: String = field(WHAT, reason, "code")?;
    let until = || -> Result<i64> {
        micros(WHAT, reason, "until")?.ok_or_else(|| bad(WHAT, "until: missing"))
    };
    let waiting = match code.as_str() {
        "waiting_for_dependencies" => Waiting::Dependencies {
            count: field(WHAT, reason, "count")?,
            ids: field::<Vec<TaskId>>(WHAT, reason, "dependencies")?,
        },
        "retry_backoff" => Waiting::RetryBackoff { until_us: until()? },
        "held" => Waiting::Held,
        "not_before" => Waiting::NotBefore { until_us: until()? },
        "scheduler_paused" => Waiting::Paused,
        "queue_paused" => Waiting::QueuePaused {
            queue: field(WHAT, reason, "queue")?,
        },
        "queue_at_limit" => Waiting::QueueAtLimit {
            queue: field(WHAT, reason, "queue")?,
            limit: field(WHAT, reason, "limit")?,
        },
        "shutting_down" => Waiting::ShuttingDown,
        "queued_behind" => Waiting::Behind {
            ahead: field(WHAT, reason, "ahead")?,
            gpus: 0,
        },
        "waiting_for_gpus" => Waiting::Behind {
            ahead: field(WHAT, reason, "ahead")?,
            gpus: record.spec.gpus.max(1),
        },
        "waiting_for_gpu_memory" => Waiting::GpuMemory {
            ahead: field(WHAT, reason, "ahead")?,
            memory_mb: field(WHAT, reason, "memory_mb")?,
        },
        "waiting_for_worker" => Waiting::NoWorker,
        other => return Err(bad(WHAT, format!("unknown code {other:?}"))),
    };
    Ok(Some(waiting))
}

/// An attempt's progress history as `GET /api/v1/tasks/{id}/progress`
/// gives it: the attempt and its points.
pub fn progress(value: &Value) -> Result<(u32, Vec<ProgressPoint>)> {
    const WHAT: &str = "progress history";
    Ok((
        field(WHAT, value, "attempt")?,
        field(WHAT, value, "points")?,
    ))
}
