//! `GET /metrics` in the Prometheus text format (version 0.0.4).

use std::fmt::Write;

use crate::model::{GpuState, ResourceSample, TaskStatus};
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

fn resources(out: &mut String, sample: &ResourceSample) {
    header(
        out,
        "taskdeck_cpu_percent",
        "gauge",
        "CPU use of the machine, 0-100.",
    );
    let _ = writeln!(out, "taskdeck_cpu_percent {}", sample.cpu_percent);
    header(out, "taskdeck_memory_used_bytes", "gauge", "Memory in use.");
    let _ = writeln!(
        out,
        "taskdeck_memory_used_bytes {}",
        sample.memory_used_bytes
    );
    header(
        out,
        "taskdeck_memory_total_bytes",
        "gauge",
        "Installed memory.",
    );
    let _ = writeln!(
        out,
        "taskdeck_memory_total_bytes {}",
        sample.memory_total_bytes
    );
    header(
        out,
        "taskdeck_disk_used_bytes",
        "gauge",
        "Disk space in use per mount.",
    );
    for disk in &sample.disks {
        let _ = writeln!(
            out,
            "taskdeck_disk_used_bytes{{mount=\"{}\"}} {}",
            label(&disk.mount),
            disk.used_bytes
        );
    }
    header(
        out,
        "taskdeck_disk_total_bytes",
        "gauge",
        "Disk capacity per mount.",
    );
    for disk in &sample.disks {
        let _ = writeln!(
            out,
            "taskdeck_disk_total_bytes{{mount=\"{}\"}} {}",
            label(&disk.mount),
            disk.total_bytes
        );
    }
    header(
        out,
        "taskdeck_gpus",
        "gauge",
        "NVIDIA GPUs visible through NVML (0 without a driver).",
    );
    let devices = match &sample.gpus {
        GpuState::Available { devices } => devices.as_slice(),
        GpuState::Unavailable { .. } => &[],
    };
    let _ = writeln!(out, "taskdeck_gpus {}", devices.len());
    if devices.is_empty() {
        return;
    }
    header(
        out,
        "taskdeck_gpu_utilization_percent",
        "gauge",
        "GPU utilisation, 0-100.",
    );
    for d in devices {
        let _ = writeln!(
            out,
            "taskdeck_gpu_utilization_percent{{gpu=\"{}\",name=\"{}\"}} {}",
            d.index,
            label(&d.name),
            d.utilization_percent
        );
    }
    header(
        out,
        "taskdeck_gpu_memory_used_bytes",
        "gauge",
        "GPU memory in use.",
    );
    for d in devices {
        let _ = writeln!(
            out,
            "taskdeck_gpu_memory_used_bytes{{gpu=\"{}\",name=\"{}\"}} {}",
            d.index,
            label(&d.name),
            d.memory_used_bytes
        );
    }
    header(
        out,
        "taskdeck_gpu_memory_total_bytes",
        "gauge",
        "GPU memory on the device.",
    );
    for d in devices {
        let _ = writeln!(
            out,
            "taskdeck_gpu_memory_total_bytes{{gpu=\"{}\",name=\"{}\"}} {}",
            d.index,
            label(&d.name),
            d.memory_total_bytes
        );
    }
}
