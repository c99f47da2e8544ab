//! Frame time of the real window state with 100,000 tasks in the table,
//! while tasks keep finishing (events flow and rows re-sort).
//!
//! `cargo run --release --example frame_bench [-- TASKS FRAMES]` prints one
//! JSON line: the CPU time of whole frames (taking events, layout and
//! tessellation, as egui_kittest runs them without a GPU) in milliseconds.

use std::time::{Duration, Instant};

use egui_kittest::Harness;
use serde_json::json;
use taskdeck::app::{Services, SortColumn, TaskdeckApp, ViewSettings};
use taskdeck::model::TaskSpec;
use taskdeck::scheduler::{Scheduler, SchedulerConfig};
use taskdeck::store::Retention;
use taskdeck::tasks::Registry;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let tasks: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let frames: usize = args.next().map_or(Ok(300), |a| a.parse())?;

    let mut config = SchedulerConfig::in_memory();
    config.workers = 0;
    config.retention = Retention {
        max_finished: tasks * 2,
        max_age: None,
    };
    let scheduler = Scheduler::start(config, Registry::with_builtins())?;
    for chunk in (0..tasks).collect::<Vec<_>>().chunks(10_000) {
        let specs = chunk
            .iter()
            .map(|i| TaskSpec::new("sleep", vec![json!(1 + i % 3)]).priority((i % 10) as u8))
            .collect();
        scheduler.submit_batch(specs)?;
    }
    let services = Services {
        http_url: Some("http://127.0.0.1:5000".into()),
        ..Services::local(&scheduler)
    };
    let app = TaskdeckApp::new(services, None, None);
    let mut harness = Harness::builder()
        .with_size([1600.0, 960.0])
        .build_ui_state(
            |ui, app: &mut TaskdeckApp| {
                app.step(ui.ctx());
                app.show(ui);
            },
            app,
        );
    harness.run_steps(5);
    let loaded = harness.state().state().tasks.len();

    // Tasks finish from now on, about 1,000 a second: events flow into the
    // table while it is sorted by total time.
    scheduler.set_workers(2);
    let mut settings = ViewSettings {
        sort: SortColumn::Total,
        ..ViewSettings::default()
    };
    settings.ascending = false;
    harness.state_mut().state_mut().tasks.set_settings(settings);

    let mut times = Vec::with_capacity(frames);
    for _ in 0..frames {
        let begun = Instant::now();
        harness.step();
        times.push(begun.elapsed());
        // About 60 frames a second, as a busy window would draw.
        std::thread::sleep(Duration::from_millis(16));
    }
    times.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    let pick = |q: f64| ms(times[((times.len() - 1) as f64 * q) as usize]);
    let finished = scheduler.stats().counts.completed;
    println!(
        "{}",
        json!({
            "tasks_in_table": loaded,
            "frames": frames,
            "tasks_finished_while_measuring": finished,
            "frame_ms": { "p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99), "max": ms(times[times.len() - 1]) },
        })
    );
    scheduler.set_workers(0);
    scheduler.shutdown()?;
    Ok(())
}
