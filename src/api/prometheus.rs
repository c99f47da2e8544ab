//! `GET /metrics` in the Prometheus text format (version 0.0.4).
//!
//! Gauges of what the scheduler holds now (tasks by status, queues,
//! workers, resources), counters of what happened since the process
//! started (tasks by name and outcome), and the latency histogram.
//! Every family's header is written even when it has no series yet, so a
//! dashboard's queries name families that exist.

use std::fmt::Write;

use crate::model::{DiskSample, GpuSample, GpuState, ResourceSample, TaskStatus};
use crate::scheduler::{BrokerRefusals, NameTotals, QueueInfo, Scheduler, TaskCounter, WorkerInfo};

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BOUNDS_S: [f64; 14] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0,
];

/// Queues shown with series of their own; the tasks of the others are
/// summed under `queue="other"` (queue names come from clients).
const MAX_QUEUE_SERIES: usize = 256;

/// The label value the queues beyond [`MAX_QUEUE_SERIES`] share.
const OTHER_QUEUE: &str = "other";

/// The lifecycle counters: family name and help, by counter.
const COUNTERS: [(TaskCounter, &str, &str); TaskCounter::ALL.len()] = [
    (
        TaskCounter::Submitted,
        "taskdeck_tasks_submitted_total",
        "Tasks accepted since the process started, by task name.",
    ),
    (
        TaskCounter::Completed,
        "taskdeck_tasks_completed_total",
        "Tasks completed since the process started, by task name.",
    ),
    (
        TaskCounter::Failed,
        "taskdeck_tasks_failed_total",
        "Tasks failed for good since the process started, by task name.",
    ),
    (
        TaskCounter::Retried,
        "taskdeck_tasks_retried_total",
        "Tasks that will run again since the process started (a failed attempt with retries left, or a manual retry), by task name.",
    ),
    (
        TaskCounter::Cancelled,
        "taskdeck_tasks_cancelled_total",
        "Tasks cancelled since the process started, by task name.",
    ),
    (
        TaskCounter::Lost,
        "taskdeck_tasks_lost_total",
        "Attempts lost with their worker since the process started, by task name.",
    ),
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

    counters(&mut out, &scheduler.totals());
    refusals(&mut out, scheduler.broker_refusals());
    queues(&mut out, &scheduler.queues());
    workers(&mut out, &scheduler.workers());

    if let Some(sample) = sample {
        resources(&mut out, sample);
    }
    out
}

/// The lifecycle counters, one family per counter, one series per name.
fn counters(out: &mut String, totals: &[NameTotals]) {
    for (counter, family, help) in COUNTERS {
        header(out, family, "counter", help);
        for name in totals {
            let _ = writeln!(
                out,
                "{family}{{name=\"{}\"}} {}",
                label(&name.name),
                name.get(counter)
            );
        }
    }
}

/// The queues shown apart (sorted by name, at most [`MAX_QUEUE_SERIES`])
/// and the tasks in each status of the rest, summed (none when every queue
/// is shown). A queue named like [`OTHER_QUEUE`] is summed with the rest
/// when there is a rest, so no series appears twice.
fn fold_queues(list: &[QueueInfo]) -> (Vec<&QueueInfo>, Option<[usize; TaskStatus::ALL.len()]>) {
    if list.len() <= MAX_QUEUE_SERIES {
        return (list.iter().collect(), None);
    }
    let mut shown = Vec::with_capacity(MAX_QUEUE_SERIES);
    let mut rest = [0; TaskStatus::ALL.len()];
    for queue in list {
        if shown.len() < MAX_QUEUE_SERIES && queue.name != OTHER_QUEUE {
            shown.push(queue);
        } else {
            for (sum, count) in rest.iter_mut().zip(queue.counts) {
                *sum += count;
            }
        }
    }
    (shown, Some(rest))
}

/// Broker messages refused for their signature: by the scheduler, and by
/// its worker processes (no series without a broker).
fn refusals(out: &mut String, refused: Option<BrokerRefusals>) {
    let family = "taskdeck_broker_messages_refused_total";
    header(
        out,
        family,
        "counter",
        "Broker messages refused unread since the process started because they were unsigned or signed with another key: by=\"scheduler\" sent to this scheduler, by=\"worker\" sent to its worker processes (as their heartbeats report).",
    );
    if let Some(BrokerRefusals {
        by_scheduler,
        by_workers,
    }) = refused
    {
        let _ = writeln!(out, "{family}{{by=\"scheduler\"}} {by_scheduler}");
        let _ = writeln!(out, "{family}{{by=\"worker\"}} {by_workers}");
    }
}

fn queues(out: &mut String, list: &[QueueInfo]) {
    let (shown, rest) = fold_queues(list);
    header(
        out,
        "taskdeck_queue_tasks",
        "gauge",
        "Tasks held by queue and status (finished ones within the retention).",
    );
    let mut line = |name: &str, counts: &[usize; TaskStatus::ALL.len()]| {
        for status in TaskStatus::ALL {
            let _ = writeln!(
                out,
                "taskdeck_queue_tasks{{queue=\"{}\",status=\"{status}\"}} {}",
                label(name),
                counts[status.index()]
            );
        }
    };
    for queue in &shown {
        line(&queue.name, &queue.counts);
    }
    if let Some(rest) = rest {
        line(OTHER_QUEUE, &rest);
    }
    let with_limit: Vec<(&QueueInfo, usize)> = shown
        .iter()
        .filter_map(|queue| queue.limit.map(|limit| (*queue, limit)))
        .collect();
    let queue = |(queue, _): &(&QueueInfo, usize)| format!("queue=\"{}\"", label(&queue.name));
    gauge(
        out,
        "taskdeck_queue_limit",
        "Most tasks of the queue running at once (queues with a limit only).",
        &with_limit,
        queue,
        |(_, limit)| limit.to_string(),
    );
    gauge(
        out,
        "taskdeck_queue_paused",
        "1 while the queue is paused (none of its tasks starts), else 0.",
        &shown,
        |queue| format!("queue=\"{}\"", label(&queue.name)),
        |queue| u8::from(queue.paused).to_string(),
    );
}

fn workers(out: &mut String, list: &[WorkerInfo]) {
    let worker = |w: &WorkerInfo| format!("worker=\"{}\"", label(&w.name));
    gauge(
        out,
        "taskdeck_worker_slots",
        "Attempts the worker runs at once (1 for a thread of the pool; 0 for a worker process that stops).",
        list,
        worker,
        |w| w.concurrency.to_string(),
    );
    gauge(
        out,
        "taskdeck_worker_busy_slots",
        "Attempts the worker runs now (on a worker process, placed attempts waiting for a slot count too).",
        list,
        worker,
        |w| w.running.len().to_string(),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str, queued: usize) -> QueueInfo {
        let mut counts = [0; TaskStatus::ALL.len()];
        counts[TaskStatus::Queued.index()] = queued;
        QueueInfo {
            name: name.to_owned(),
            limit: None,
            paused: false,
            counts,
        }
    }

    #[test]
    fn counters_have_one_series_per_name_with_escaped_labels() {
        let totals = [
            NameTotals {
                name: "noop".into(),
                submitted: 3,
                completed: 2,
                cancelled: 1,
                ..NameTotals::default()
            },
            NameTotals {
                name: "odd \"name\"".into(),
                lost: 4,
                ..NameTotals::default()
            },
        ];
        let mut out = String::new();
        counters(&mut out, &totals);
        for (_, family, _) in COUNTERS {
            assert!(out.contains(&format!("# TYPE {family} counter\n")), "{out}");
        }
        assert!(out.contains("taskdeck_tasks_submitted_total{name=\"noop\"} 3\n"));
        assert!(out.contains("taskdeck_tasks_completed_total{name=\"noop\"} 2\n"));
        assert!(out.contains("taskdeck_tasks_cancelled_total{name=\"noop\"} 1\n"));
        assert!(out.contains("taskdeck_tasks_failed_total{name=\"noop\"} 0\n"));
        assert!(out.contains("taskdeck_tasks_lost_total{name=\"odd \\\"name\\\"\"} 4\n"));
        let samples = out.lines().filter(|line| !line.starts_with('#')).count();
        assert_eq!(samples, COUNTERS.len() * totals.len());
    }

    #[test]
    fn refused_broker_messages_are_counted_by_who_refused_them() {
        let mut out = String::new();
        refusals(&mut out, None);
        assert!(
            out.contains("# TYPE taskdeck_broker_messages_refused_total counter\n"),
            "{out}"
        );
        assert_eq!(out.lines().filter(|line| !line.starts_with('#')).count(), 0);
        let mut out = String::new();
        refusals(
            &mut out,
            Some(BrokerRefusals {
                by_scheduler: 2,
                by_workers: 5,
            }),
        );
        assert!(out.contains("taskdeck_broker_messages_refused_total{by=\"scheduler\"} 2\n"));
        assert!(out.contains("taskdeck_broker_messages_refused_total{by=\"worker\"} 5\n"));
    }

    #[test]
    fn queues_beyond_the_limit_are_summed_under_other() {
        let few = [queue("default", 1), queue("train", 2)];
        let (shown, rest) = fold_queues(&few);
        assert_eq!(shown.len(), 2);
        assert_eq!(rest, None);

        // Sorted by name, as the scheduler lists them; one is named "other".
        let mut many: Vec<QueueInfo> = (0..MAX_QUEUE_SERIES + 10)
            .map(|n| queue(&format!("q{n:04}"), 1))
            .collect();
        many.push(queue(OTHER_QUEUE, 5));
        many.sort_by(|a, b| a.name.cmp(&b.name));
        let (shown, rest) = fold_queues(&many);
        assert_eq!(shown.len(), MAX_QUEUE_SERIES);
        assert!(shown.iter().all(|q| q.name != OTHER_QUEUE));
        let rest = rest.expect("the rest is summed");
        assert_eq!(rest[TaskStatus::Queued.index()], 10 + 5);
        let mut out = String::new();
        queues(&mut out, &many);
        let others = out
            .lines()
            .filter(|line| line.starts_with("taskdeck_queue_tasks{queue=\"other\","))
            .count();
        assert_eq!(others, TaskStatus::ALL.len(), "one series per status");
    }

    #[test]
    fn queue_limits_and_pauses_are_gauges_by_queue() {
        let mut train = queue("train", 0);
        train.limit = Some(2);
        train.paused = true;
        let mut out = String::new();
        queues(&mut out, &[queue("default", 3), train]);
        assert!(out.contains("taskdeck_queue_tasks{queue=\"default\",status=\"queued\"} 3\n"));
        assert!(out.contains("taskdeck_queue_limit{queue=\"train\"} 2\n"));
        assert!(
            !out.contains("taskdeck_queue_limit{queue=\"default\"}"),
            "no limit"
        );
        assert!(out.contains("taskdeck_queue_paused{queue=\"train\"} 1\n"));
        assert!(out.contains("taskdeck_queue_paused{queue=\"default\"} 0\n"));
    }
}
