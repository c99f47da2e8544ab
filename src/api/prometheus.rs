//! `GET /metrics` in the Prometheus text format (version 0.0.4).

use std::fmt::Write;

use crate::model::{DiskSample, GpuSample, GpuState, ResourceSample, TaskStatus};
use crate::scheduler::Scheduler;

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BOUNDS_S: [f64; 14] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0,
];

/// Escapes a label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole exposition.
pub fn render(scheduler: &Scheduler, sample: Option<&ResourceSample>) -> String {
    let stats = scheduler.stats();
    let mut out = String::with_capacity(4096);

    header(
        &mut out,
        "taskdeck_queue_depth",
        "gauge",
        "Tasks waiting in the queue.",
    );
    let _ = writeln!(out, "taskdeck_queue_depth {}", stats.queue_depth);

    header(
        &mut out,
        "taskdeck_tasks",
        "gauge",
        "Tasks held by status (finished ones within the retention).",
    );
    for status in TaskStatus::ALL {
        let _ = writeln!(
            out,
            "taskdeck_tasks{{status=\"{status}\"}} {}",
            stats.counts.get(status)
        );
    }

    header(&mut out, "taskdeck_workers", "gauge", "Workers by state.");
    let _ = writeln!(
        out,
        "taskdeck_workers{{state=\"busy\"}} {}",
        stats.workers_busy
    );
    let _ = writeln!(
        out,
        "taskdeck_workers{{state=\"idle\"}} {}",
        stats.workers_idle
    );
    header(
        &mut out,
        "taskdeck_workers_busy",
        "gauge",
        "Workers running a task.",
    );
    let _ = writeln!(out, "taskdeck_workers_busy {}", stats.workers_busy);

    header(
        &mut out,
        "taskdeck_throughput_tasks_per_second",
        "gauge",
        "Tasks finished per second over the last minute.",
    );
    let _ = writeln!(
        out,
        "taskdeck_throughput_tasks_per_second {}",
        stats.metrics.throughput_per_s
    );

    let bounds_us: Vec<u64> = LATENCY_BOUNDS_S.iter().map(|s| (s * 1e6) as u64).collect();
    let buckets = scheduler.latency_buckets(&bounds_us);
    header(
        &mut out,
        "taskdeck_task_latency_seconds",
        "histogram",
        "Time from submission to completion of finished tasks.",
    );
    for (bound, count) in LATENCY_BOUNDS_S.iter().zip(&buckets.cumulative) {
        let _ = writeln!(
            out,
            "taskdeck_task_latency_seconds_bucket{{le=\"{bound}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "taskdeck_task_latency_seconds_bucket{{le=\"+Inf\"}} {}",
        buckets.count
    );
    let _ = writeln!(
        out,
        "taskdeck_task_latency_seconds_sum {}",
        buckets.sum_us / 1e6
    );
    let _ = writeln!(out, "taskdeck_task_latency_seconds_count {}", buckets.count);

    if let Some(sample) = sample {
        resources(&mut out, sample);
    }
    out
}

/// Writes one gauge family: a header, then one line per item with its
/// labels (already rendered, `a="b",c="d"`; empty for none) and value.
fn gauge<T>(
    out: &mut String,
    name: &str,
    help: &str,
    items: &[T],
    labels: impl Fn(&T) -> String,
    value: impl Fn(&T) -> String,
) {
    header(out, name, "gauge", help);
    for item in items {
        let labels = labels(item);
        let value = value(item);
        let _ = if labels.is_empty() {
            writeln!(out, "{name} {value}")
        } else {
            writeln!(out, "{name}{{{labels}}} {value}")
        };
    }
}

fn resources(out: &mut String, sample: &ResourceSample) {
    let one = [sample];
    let none = |_: &&ResourceSample| String::new();
    gauge(
        out,
        "taskdeck_cpu_percent",
        "CPU use of the machine, 0-100.",
        &one,
        none,
        |s| s.cpu_percent.to_string(),
    );
    gauge(
        out,
        "taskdeck_memory_used_bytes",
        "Memory in use.",
        &one,
        none,
        |s| s.memory_used_bytes.to_string(),
    );
    gauge(
        out,
        "taskdeck_memory_total_bytes",
        "Installed memory.",
        &one,
        none,
        |s| s.memory_total_bytes.to_string(),
    );
    let mount = |d: &DiskSample| format!("mount=\"{}\"", label(&d.mount));
    gauge(
        out,
        "taskdeck_disk_used_bytes",
        "Disk space in use per mount.",
        &sample.disks,
        mount,
        |d| d.used_bytes.to_string(),
    );
    gauge(
        out,
        "taskdeck_disk_total_bytes",
        "Disk capacity per mount.",
        &sample.disks,
        mount,
        |d| d.total_bytes.to_string(),
    );
    let devices = match &sample.gpus {
        GpuState::Available { devices } => devices.as_slice(),
        GpuState::Unavailable { .. } => &[],
    };
    gauge(
        out,
        "taskdeck_gpus",
        "NVIDIA GPUs visible through NVML (0 without a driver).",
        &one,
        none,
        |_| devices.len().to_string(),
    );
    let gpu = |d: &GpuSample| format!("gpu=\"{}\",name=\"{}\"", d.index, label(&d.name));
    gauge(
        out,
        "taskdeck_gpu_utilization_percent",
        "GPU utilisation, 0-100.",
        devices,
        gpu,
        |d| d.utilization_percent.to_string(),
    );
    gauge(
        out,
        "taskdeck_gpu_memory_used_bytes",
        "GPU memory in use.",
        devices,
        gpu,
        |d| d.memory_used_bytes.to_string(),
    );
    gauge(
        out,
        "taskdeck_gpu_memory_total_bytes",
        "GPU memory on the device.",
        devices,
        gpu,
        |d| d.memory_total_bytes.to_string(),
    );
}
