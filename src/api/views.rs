//! The JSON shapes the API sends and accepts.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::model::{
    Dependency, GpuState, OnDependencyFailure, ResourceSample, TaskId, TaskRecord, TaskSpec,
    TaskStatus, percent,
};
use crate::scheduler::{
    LatencySummary, QueueChange, QueueInfo, SchedulerStats, StorageStatus, Waiting, WorkerInfo,
};
use crate::tasks::Registry;

use super::error::ApiError;

/// A task as clients submit it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    task: String,
    #[serde(default)]
    args: Vec<Value>,
    #[serde(default)]
    kwargs: Map<String, Value>,
    priority: Option<i64>,
    max_retries: Option<i64>,
    timeout_s: Option<f64>,
    gpus: Option<i64>,
    gpu_memory_mb: Option<i64>,
    /// Seconds from now before which the task may not start.
    delay_s: Option<f64>,
    /// The time before which the task may not start: seconds since the
    /// epoch, or an RFC 3339 time with its offset.
    not_before: Option<Value>,
    /// Tasks that must complete first: ids, or `{"batch_index": n}` for an
    /// earlier task of the same batch.
    #[serde(default)]
    depends_on: Vec<Dependency>,
    /// `cancel` (default) or `run`.
    on_dependency_failure: Option<OnDependencyFailure>,
    /// Its queue (default `default`).
    queue: Option<String>,
}

/// The longest delay or timeout accepted: a year.
const YEAR_S: f64 = 365.0 * 24.0 * 3600.0;

/// A start time as submitted: seconds since the epoch, or RFC 3339 text.
fn start_time(value: &Value) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "not_before must be seconds since the epoch or an RFC 3339 time such as \
             2026-12-02T03:00:00Z, got {value}"
        ))
    };
    let micros = match value {
        Value::Number(number) => {
            let secs = number.as_f64().filter(|s| s.is_finite() && *s >= 0.0);
            secs.map(|s| (s * 1e6).round() as i64).ok_or_else(bad)?
        }
        Value::String(text) => text
            .parse::<jiff::Timestamp>()
            .map_err(|_| bad())?
            .as_microsecond(),
        _ => return Err(bad()),
    };
    if micros > crate::model::now_us() + (YEAR_S * 1e6) as i64 {
        return Err(ApiError::bad_request(format!(
            "not_before {value} is more than a year ahead"
        )));
    }
    Ok(micros)
}

impl Submission {
    /// Checks the ranges serde cannot express and builds the spec.
    pub fn into_spec(self) -> Result<TaskSpec, ApiError> {
        let Self {
            task,
            args,
            kwargs,
            priority,
            max_retries,
            timeout_s,
            gpus,
            gpu_memory_mb,
            delay_s,
            not_before,
            depends_on,
            on_dependency_failure,
            queue,
        } = self;
        let mut spec = TaskSpec::new(task, args);
        if let Some(queue) = queue {
            crate::model::check_queue_name(&queue).map_err(ApiError::bad_request)?;
            spec = spec.queue(queue);
        }
        spec.depends_on = depends_on;
        spec.on_dependency_failure = on_dependency_failure.unwrap_or_default();
        spec.not_before_us = match (delay_s, not_before) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give delay_s or not_before, not both",
                ));
            }
            (Some(secs), None) => {
                if !secs.is_finite() || !(0.0..=YEAR_S).contains(&secs) {
                    return Err(ApiError::bad_request(format!(
                        "delay_s must be a number of seconds from 0 to a year, got {secs}"
                    )));
                }
                Some(crate::model::now_us() + (secs * 1e6).round() as i64)
            }
            (None, Some(value)) => Some(start_time(&value)?),
            (None, None) => None,
        };
        spec.kwargs = kwargs;
        if let Some(priority) = priority {
            spec.priority = u8::try_from(priority)
                .ok()
                .filter(|p| *p <= crate::model::PRIORITY_MAX)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("priority {priority} is out of range 0-9"))
                })?;
        }
        if let Some(retries) = max_retries {
            spec.max_retries = u32::try_from(retries)
                .ok()
                .filter(|r| *r <= 1_000)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("max_retries {retries} is out of range 0-1000"))
                })?;
        }
        if let Some(secs) = timeout_s {
            if !secs.is_finite() || secs <= 0.0 || secs > YEAR_S {
                return Err(ApiError::bad_request(format!(
                    "timeout_s must be a positive number of seconds (at most a year), got {secs}"
                )));
            }
            spec.timeout_ms = Some((secs * 1000.0).ceil() as u64);
        }
        if let Some(gpus) = gpus {
            spec.gpus = u32::try_from(gpus)
                .ok()
                .filter(|n| *n <= 1_024)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("gpus {gpus} is out of range 0-1024"))
                })?;
        }
        if let Some(mb) = gpu_memory_mb {
            spec.gpu_memory_mb =
                Some(u64::try_from(mb).ok().filter(|mb| *mb > 0).ok_or_else(|| {
                    ApiError::bad_request(format!("gpu_memory_mb must be more than 0, got {mb}"))
                })?);
        }
        Ok(spec)
    }
}

/// `POST /api/v1/tasks/batch` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The tasks, in order.
    pub tasks: Vec<Submission>,
}

/// `POST /api/v1/tasks/wait` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitMany {
    /// The tasks to wait for.
    pub ids: Vec<TaskId>,
}

/// `POST /submit_task` body (legacy).
#[derive(Debug, Deserialize)]
pub struct LegacySubmission {
    /// Task name.
    pub function_name: String,
    /// Positional arguments.
    #[serde(default)]
    pub arguments: Vec<Value>,
}

fn secs(micros: Option<i64>) -> Value {
    micros.map_or(Value::Null, |us| json!(us as f64 / 1e6))
}

/// The store's write status as `/healthz` reports it.
pub fn storage(status: &StorageStatus) -> Value {
    let StorageStatus {
        full,
        pending_updates,
        pending_samples,
        failing_since_us,
        error,
    } = status;
    json!({
        "writable": status.is_ok(),
        "full": full,
        "pending_updates": pending_updates,
        "pending_samples": pending_samples,
        "failing_since": failing_since_us.map(|us| us as f64 / 1e6),
        "error": error,
    })
}

/// A task record as clients see it: times in seconds since the epoch,
/// durations in seconds.
pub fn task(record: &TaskRecord) -> Value {
    let failures: Vec<Value> = record
        .failures
        .iter()
        .map(|f| {
            json!({
                "attempt": f.attempt,
                "kind": f.kind,
                "message": f.message,
                "worker": f.worker,
                "at": f.at_us as f64 / 1e6,
            })
        })
        .collect();
    json!({
        "id": record.id,
        "task": record.spec.name,
        "args": record.spec.args,
        "kwargs": record.spec.kwargs,
        "priority": record.spec.priority,
        "max_retries": record.spec.max_retries,
        "timeout_s": record.spec.timeout_ms.map(|ms| ms as f64 / 1000.0),
        "not_before": secs(record.spec.not_before_us),
        "depends_on": record.spec.depends_on,
        "on_dependency_failure": record.spec.on_dependency_failure,
        "cancelled_by": record.cancelled_by,
        "queue": record.spec.queue_name(),
        "status": record.status,
        "held": record.held,
        "attempts": record.attempts,
        "failures": failures,
        "submitted_at": record.submitted_at_us as f64 / 1e6,
        "first_started_at": secs(record.first_started_at_us),
        "started_at": secs(record.started_at_us),
        "finished_at": secs(record.finished_at_us),
        "retry_at": secs(record.retry_at_us),
        "worker": record.worker,
        "result": record.result,
        "error": record.error,
        "log": record.log,
        "gpus": record.spec.gpus,
        "gpu_memory_mb": record.spec.gpu_memory_mb,
        "gpu_ids": record.gpu_ids,
        "gpu_peak_memory_mb": record.log.as_ref().and_then(|log| log.gpu_peak_memory_mb),
        "progress": record.progress,
        "queue_wait_s": secs(record.queue_wait_us()),
        "run_time_s": secs(record.run_time_us()),
        "total_latency_s": secs(record.total_latency_us()),
        "version": record.version,
    })
}

/// A task record with why it waits (`waiting`, null unless it is queued or
/// retrying).
pub fn task_waiting(record: &TaskRecord, waiting: Option<Waiting>) -> Value {
    let mut view = task(record);
    let now = crate::model::now_us();
    view["waiting"] = waiting.map_or(Value::Null, |waiting| {
        let mut reason = json!({
            "code": waiting.code(),
            "message": waiting.message(now),
        });
        match waiting {
            Waiting::Behind { ahead, .. } => reason["ahead"] = json!(ahead),
            Waiting::GpuMemory { ahead, memory_mb } => {
                reason["ahead"] = json!(ahead);
                reason["memory_mb"] = json!(memory_mb);
            }
            Waiting::Dependencies { count, ids } => {
                reason["count"] = json!(count);
                reason["dependencies"] = json!(ids);
            }
            Waiting::QueuePaused { queue } => reason["queue"] = json!(queue),
            Waiting::QueueAtLimit { queue, limit } => {
                reason["queue"] = json!(queue);
                reason["limit"] = json!(limit);
            }
            Waiting::RetryBackoff { until_us } | Waiting::NotBefore { until_us } => {
                reason["until"] = json!(until_us as f64 / 1e6);
            }
            _ => {}
        }
        reason
    });
    view
}

/// A queue with its settings and how many of its tasks are in each status.
pub fn queue(queue: &QueueInfo) -> Value {
    let mut view = json!({
        "name": queue.name,
        "limit": queue.limit,
        "paused": queue.paused,
    });
    for status in TaskStatus::ALL {
        view[status.as_str()] = json!(queue.counts[status.index()]);
    }
    view
}

/// A `PATCH /api/v1/queues/{name}` body: `limit` (a number, or null for
/// none), `paused`, `stop_running`; absent fields stay as they are.
pub fn queue_change(body: &[u8]) -> Result<QueueChange, ApiError> {
    let fields: Map<String, Value> = super::handlers::parse_body(body)?;
    let mut change = QueueChange::default();
    for (key, value) in fields {
        match key.as_str() {
            "limit" => {
                change.limit = Some(match value {
                    Value::Null => None,
                    value => Some(
                        value
                            .as_u64()
                            .and_then(|n| usize::try_from(n).ok())
                            .filter(|n| *n >= 1)
                            .ok_or_else(|| {
                                ApiError::bad_request(format!(
                                    "limit must be a whole number of at least 1, or null for none; got {value}"
                                ))
                            })?,
                    ),
                });
            }
            "paused" | "stop_running" => {
                let flag = value.as_bool().ok_or_else(|| {
                    ApiError::bad_request(format!("{key} must be true or false, got {value}"))
                })?;
                if key == "paused" {
                    change.paused = Some(flag);
                } else {
                    change.stop_running = flag;
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown field {other:?} (expected limit, paused, stop_running)"
                )));
            }
        }
    }
    if change.stop_running && change.paused != Some(true) {
        return Err(ApiError::bad_request(
            "stop_running goes with \"paused\": true",
        ));
    }
    Ok(change)
}

/// Latency percentiles in seconds.
pub fn latency(summary: &LatencySummary) -> Value {
    let s = |us: u64| us as f64 / 1e6;
    json!({
        "count": summary.count,
        "mean_s": summary.mean_us / 1e6,
        "p50_s": s(summary.p50_us),
        "p95_s": s(summary.p95_us),
        "p99_s": s(summary.p99_us),
        "max_s": s(summary.max_us),
    })
}

/// Workers and their counts.
pub fn workers(list: &[WorkerInfo], stats: &SchedulerStats) -> Value {
    json!({
        "workers": list,
        "busy": stats.workers_busy,
        "idle": stats.workers_idle,
        "total": stats.workers_total,
        "target": stats.workers_target,
    })
}

/// One resource sample as `/api/v1/monitoring` and its history show it.
pub(crate) fn resources(sample: &ResourceSample) -> Value {
    let disks: Vec<Value> = sample
        .disks
        .iter()
        .map(|d| {
            json!({
                "mount": d.mount,
                "used_bytes": d.used_bytes,
                "total_bytes": d.total_bytes,
                "percent": percent(d.used_bytes, d.total_bytes),
            })
        })
        .collect();
    let gpus = match &sample.gpus {
        GpuState::Available { devices } => {
            json!({ "available": !devices.is_empty(), "reason": if devices.is_empty() { Some("NVML found no devices") } else { None }, "devices": devices })
        }
        GpuState::Unavailable { reason } => {
            json!({ "available": false, "reason": reason, "devices": [] })
        }
    };
    json!({
        "cpu": { "percent": sample.cpu_percent, "per_core": sample.cpu_per_core },
        "memory": {
            "used_bytes": sample.memory_used_bytes,
            "total_bytes": sample.memory_total_bytes,
            "percent": sample.memory_percent(),
        },
        "disks": disks,
        "gpus": gpus,
        "sampled_at": sample.at_us as f64 / 1e6,
    })
}

/// `GET /api/v1/monitoring/history`: the samples of the last `minutes`
/// before `now_us`, oldest first.
pub fn history(samples: &[std::sync::Arc<ResourceSample>], minutes: u32, now_us: i64) -> Value {
    let cutoff_us = now_us.saturating_sub(i64::from(minutes) * 60 * 1_000_000);
    let start = samples.partition_point(|sample| sample.at_us < cutoff_us);
    let shown: Vec<Value> = samples
        .get(start..)
        .unwrap_or_default()
        .iter()
        .map(|sample| resources(sample))
        .collect();
    json!({ "minutes": minutes, "count": shown.len(), "samples": shown })
}

/// Resources, workers, queue and latency in one object.
pub fn monitoring(sample: Option<&ResourceSample>, stats: &SchedulerStats) -> Value {
    let resources = sample.map_or_else(
        || {
            json!({
                "cpu": { "percent": null, "per_core": [] },
                "memory": { "used_bytes": null, "total_bytes": null, "percent": null },
                "disks": [],
                "gpus": { "available": false, "reason": "no resource sample yet", "devices": [] },
                "sampled_at": null,
            })
        },
        resources,
    );
    let mut object = match resources {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    object.insert(
        "workers".into(),
        json!({ "busy": stats.workers_busy, "idle": stats.workers_idle, "total": stats.workers_total }),
    );
    object.insert("queue_depth".into(), json!(stats.queue_depth));
    object.insert(
        "throughput_per_s".into(),
        json!(stats.metrics.throughput_per_s),
    );
    object.insert("latency".into(), latency(&stats.metrics.total_latency));
    Value::Object(object)
}

/// Counts by state and per task name.
pub fn report(stats: &SchedulerStats) -> Value {
    let tasks: Vec<Value> = stats
        .metrics
        .per_name
        .iter()
        .map(|n| {
            json!({
                "task": n.name,
                "runs": n.runs,
                "attempt_failures": n.attempt_failures,
                "completed": n.completed,
                "failed": n.failed,
                "run_time": latency(&n.run_time),
                "total_latency": latency(&n.total_latency),
            })
        })
        .collect();
    json!({
        "counts": stats.counts,
        "queue_depth": stats.queue_depth,
        "paused": stats.paused,
        "uptime_s": stats.uptime_s,
        "throughput_per_s": stats.metrics.throughput_per_s,
        "finished_last_minute": stats.metrics.finished_last_minute,
        "latency": latency(&stats.metrics.total_latency),
        "tasks": tasks,
    })
}

/// Registered task types with their signatures.
pub fn task_types(registry: &Registry) -> Value {
    let types: Vec<Value> = registry
        .iter()
        .map(|def| {
            json!({
                "name": def.name,
                "description": def.description,
                "params": def.signature.params,
                "rest": def.signature.rest,
            })
        })
        .collect();
    json!({ "task_types": types })
}

/// The legacy status text: "On Hold", "In Progress", "Completed",
/// "Cancelled" or "Failed: <reason>".
pub fn legacy_status(record: &TaskRecord) -> String {
    match record.status {
        TaskStatus::Queued | TaskStatus::Retrying => "On Hold".into(),
        TaskStatus::Running => "In Progress".into(),
        TaskStatus::Completed => "Completed".into(),
        TaskStatus::Cancelled => "Cancelled".into(),
        TaskStatus::Failed => format!(
            "Failed: {}",
            record.error.as_deref().unwrap_or("unknown error")
        ),
    }
}
