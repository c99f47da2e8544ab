//! The routes of the user's earlier Flask-era scripts, with their exact
//! shapes.

use serde_json::{Value, json};

use crate::model::{GpuState, ResourceSample, TaskId, TaskSpec, percent};
use crate::scheduler::{Scheduler, SchedulerStats, TaskQuery};

use super::error::ApiError;
use super::views;

/// Most tasks `/get_tasks` lists (the newest ones).
pub const LEGACY_LIST_LIMIT: usize = 10_000;
/// What the legacy routes say for a value there is no device for.
const NOT_AVAILABLE: &str = "Not Available";
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// `POST /submit_task` → `{"task_id": N}`.
pub fn submit(
    scheduler: &Scheduler,
    name: String,
    arguments: Vec<Value>,
) -> Result<Value, ApiError> {
    let id = scheduler.submit(TaskSpec::new(name, arguments))?;
    Ok(json!({ "task_id": id }))
}

/// `GET /task_status/<id>` → `{"task_id", "status"}`; "Unknown" for ids it
/// does not know (including ones that are not numbers).
pub fn status(scheduler: &Scheduler, id: &str) -> Value {
    let record = id
        .parse::<u64>()
        .ok()
        .and_then(|n| scheduler.task_shared(TaskId(n)));
    let status = record.as_ref().map_or_else(
        || "Unknown".to_owned(),
        |record| views::legacy_status(record),
    );
    let task_id = id.parse::<u64>().map_or_else(|_| json!(id), |n| json!(n));
    json!({ "task_id": task_id, "status": status })
}

/// `GET /monitoring_data`: percentages for CPU, RAM, GPU and disk; GiB for
/// RAM amounts; worker counts.
pub fn monitoring(sample: Option<&ResourceSample>, stats: &SchedulerStats) -> Value {
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let (cpu, ram_usage, ram_allocated, ram_total, disk) = sample.map_or(
        (
            json!(NOT_AVAILABLE),
            json!(NOT_AVAILABLE),
            json!(NOT_AVAILABLE),
            json!(NOT_AVAILABLE),
            json!(NOT_AVAILABLE),
        ),
        |s| {
            let root = s
                .disks
                .iter()
                .find(|d| d.mount == "/")
                .or_else(|| s.disks.first())
                .map_or(json!(NOT_AVAILABLE), |d| {
                    json!(round(percent(d.used_bytes, d.total_bytes)))
                });
            (
                json!(round(f64::from(s.cpu_percent))),
                json!(round(s.memory_percent())),
                json!(round(s.memory_used_bytes as f64 / GIB)),
                json!(round(s.memory_total_bytes as f64 / GIB)),
                root,
            )
        },
    );
    let gpu = sample.and_then(|s| match &s.gpus {
        GpuState::Available { devices } if !devices.is_empty() => Some(devices),
        _ => None,
    });
    let (gpu_usage, gpu_ram) =
        gpu.map_or((json!(NOT_AVAILABLE), json!(NOT_AVAILABLE)), |devices| {
            let n = devices.len() as f64;
            let usage = devices
                .iter()
                .map(|d| f64::from(d.utilization_percent))
                .sum::<f64>()
                / n;
            let ram = devices
                .iter()
                .map(|d| percent(d.memory_used_bytes, d.memory_total_bytes))
                .sum::<f64>()
                / n;
            (json!(round(usage)), json!(round(ram)))
        });
    json!({
        "CPU": cpu,
        "RAM Usage": ram_usage,
        "RAM Allocated": ram_allocated,
        "RAM Total": ram_total,
        "GPU Usage": gpu_usage,
        "GPU RAM Usage": gpu_ram,
        "Disk": disk,
        "Idle Workers": stats.workers_idle,
        "Busy Workers": stats.workers_busy,
        "Total Workers": stats.workers_total,
    })
}

/// `GET /get_tasks`: the newest tasks as `{"id", "task", "arguments",
/// "status", "time_taken"}`.
pub fn tasks(scheduler: &Scheduler) -> Value {
    let query = TaskQuery {
        limit: LEGACY_LIST_LIMIT,
        ..TaskQuery::default()
    };
    let list: Vec<Value> = scheduler
        .list_shared(&query)
        .iter()
        .map(|record| {
            json!({
                "id": record.id,
                "task": record.spec.name,
                "arguments": record.spec.args,
                "status": views::legacy_status(record),
                "time_taken": record.total_latency_us().map(|us| us as f64 / 1e6),
            })
        })
        .collect();
    Value::Array(list)
}

/// `DELETE /remove_task/<id>` → `{"success": true}` when it left the queue.
pub fn remove(scheduler: &Scheduler, id: &str) -> Value {
    let Ok(number) = id.parse::<u64>() else {
        return json!({ "success": false, "reason": format!("task id must be a positive integer, got {id:?}") });
    };
    match scheduler.remove(TaskId(number)) {
        Ok(()) => json!({ "success": true }),
        Err(error) => json!({ "success": false, "reason": error.to_string() }),
    }
}
