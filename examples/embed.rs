//! Embedding Taskdeck: register your own task next to the built-in and demo
//! tasks, submit mock ML/CV jobs and your task, and wait for the results.
//!
//! Run with `cargo run --release --example embed`.

use std::time::Duration;

use serde_json::json;
use taskdeck::model::TaskSpec;
use taskdeck::scheduler::{Scheduler, SchedulerConfig};
use taskdeck::tasks::{Param, ParamType, Signature, TaskError};

fn main() -> anyhow::Result<()> {
    let mut registry = taskdeck::demo::registry();
    registry.register(
        "word_count",
        "Counts the words of a text.",
        Signature::new(vec![Param::required("text", ParamType::String)]),
        |ctx, args| {
            ctx.checkpoint()?;
            let text = args.str("text")?;
            if text.is_empty() {
                return Err(TaskError::fatal("nothing to count"));
            }
            Ok(json!({ "words": text.split_whitespace().count() }))
        },
    );

    let mut config = SchedulerConfig::in_memory();
    config.workers = 4;
    let scheduler = Scheduler::start(config, registry)?;

    let ids = scheduler.submit_batch(vec![
        TaskSpec::new("mock_ml_task", vec![json!(1500), json!("Random Forest")]),
        TaskSpec::new("mock_cv_task", vec![json!(1000), json!("Object Detection")]).priority(9),
        TaskSpec::new(
            "word_count",
            vec![json!("tasks as functions with parameters")],
        ),
    ])?;
    for id in ids {
        if let Some(record) = scheduler.wait(id, Duration::from_secs(60)) {
            println!(
                "task {id} {} {}: {} in {:.1} ms",
                record.spec.name,
                record.status,
                record.result.clone().unwrap_or_default(),
                record.total_latency_us().unwrap_or(0) as f64 / 1000.0
            );
        }
    }
    let stats = scheduler.stats();
    println!(
        "completed {} tasks; latency p50 {} us",
        stats.counts.completed, stats.metrics.total_latency.p50_us
    );
    scheduler.shutdown()?;
    Ok(())
}
