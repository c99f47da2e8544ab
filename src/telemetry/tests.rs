//! Tests of the sampling thread on the real machine.
//!
//! They wait on the subscribe channel with a timeout and never sleep
//! blindly. They expect Linux; GPUs are checked against `/dev/nvidiactl`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use super::*;
use crate::model::{GpuState, ResourceSample};

/// Long enough for a loaded CI machine to take its first sample.
const FIRST_SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

fn fast_config() -> TelemetryConfig {
    TelemetryConfig {
        interval: MIN_INTERVAL,
        waker: None,
    }
}

fn has_nvidia_gpu() -> bool {
    std::path::Path::new("/dev/nvidiactl").exists()
}

fn check_plausible(sample: &ResourceSample) {
    assert!(sample.at_us > 0);
    assert!(sample.memory_total_bytes > 0);
    assert!(sample.memory_used_bytes <= sample.memory_total_bytes);
    assert!(!sample.cpu_per_core.is_empty());
    assert!((0.0..=100.0).contains(&sample.cpu_percent));
    for core in &sample.cpu_per_core {
        assert!((0.0..=100.0).contains(core), "core use {core}");
    }
    assert!(
        sample.disks.iter().any(|disk| disk.total_bytes > 0),
        "no disk in {:?}",
        sample.disks
    );
    for disk in &sample.disks {
        assert!(disk.used_bytes <= disk.total_bytes);
    }
}

#[test]
fn the_thread_produces_plausible_samples() -> anyhow::Result<()> {
    let telemetry = Telemetry::start(fast_config())?;
    let samples = telemetry.subscribe();
    let sample = samples.recv_timeout(FIRST_SAMPLE_TIMEOUT)?;
    check_plausible(&sample);
    let latest = telemetry.latest();
    assert!(latest.is_some_and(|latest| latest.at_us >= sample.at_us));
    let next = samples.recv_timeout(FIRST_SAMPLE_TIMEOUT)?;
    assert!(next.at_us > sample.at_us);
    Ok(())
}

#[test]
fn gpus_are_read_or_say_why() -> anyhow::Result<()> {
    let telemetry = Telemetry::start(fast_config())?;
    let sample = telemetry.subscribe().recv_timeout(FIRST_SAMPLE_TIMEOUT)?;
    match (&sample.gpus, has_nvidia_gpu()) {
        (GpuState::Unavailable { reason }, false) => assert!(!reason.is_empty()),
        (GpuState::Available { devices }, true) => {
            assert!(!devices.is_empty());
            for device in devices {
                assert!(!device.name.is_empty());
                assert!(device.memory_total_bytes > 0);
                assert!(device.memory_used_bytes <= device.memory_total_bytes);
                assert!((0.0..=100.0).contains(&device.utilization_percent));
            }
        }
        (state, has_gpu) => panic!("NVIDIA device node present: {has_gpu}, but {state:?}"),
    }
    Ok(())
}

#[test]
fn stop_joins_quickly_and_is_idempotent() -> anyhow::Result<()> {
    let telemetry = Telemetry::start(TelemetryConfig {
        interval: Duration::from_secs(60),
        waker: None,
    })?;
    let samples = telemetry.subscribe();
    // The first sample comes after the warm-up; then the thread waits a minute.
    samples.recv_timeout(FIRST_SAMPLE_TIMEOUT)?;
    let started = Instant::now();
    telemetry.stop();
    assert!(started.elapsed() < Duration::from_secs(1));
    telemetry.stop();
    assert_eq!(
        samples.recv_timeout(Duration::from_secs(1)),
        Err(RecvTimeoutError::Disconnected)
    );
    // A subscriber after stop is told at once that nothing will come.
    assert_eq!(
        telemetry.subscribe().recv_timeout(Duration::from_secs(1)),
        Err(RecvTimeoutError::Disconnected)
    );
    Ok(())
}

#[test]
fn drop_stops_the_thread_before_its_first_sample() -> anyhow::Result<()> {
    let telemetry = Telemetry::start(fast_config())?;
    let samples = telemetry.subscribe();
    let started = Instant::now();
    drop(telemetry);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        samples.recv_timeout(Duration::from_secs(1)),
        Err(RecvTimeoutError::Disconnected)
    );
    Ok(())
}

#[test]
fn the_waker_runs_after_each_sample() -> anyhow::Result<()> {
    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&wakes);
    let telemetry = Telemetry::start(TelemetryConfig {
        interval: MIN_INTERVAL,
        waker: Some(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })),
    })?;
    let samples = telemetry.subscribe();
    samples.recv_timeout(FIRST_SAMPLE_TIMEOUT)?;
    samples.recv_timeout(FIRST_SAMPLE_TIMEOUT)?;
    telemetry.stop();
    // The waker of the second sample may still run when it is received, so
    // the count is checked after the join.
    assert!(wakes.load(Ordering::SeqCst) >= 2);
    Ok(())
}

#[test]
fn a_full_or_dropped_subscriber_does_not_stall_the_others() -> anyhow::Result<()> {
    let telemetry = Telemetry::start(fast_config())?;
    let never_read = telemetry.subscribe();
    drop(telemetry.subscribe());
    let reader = telemetry.subscribe();
    for _ in 0..3 {
        reader.recv_timeout(FIRST_SAMPLE_TIMEOUT)?;
    }
    assert!(!never_read.is_empty());
    assert!(format!("{telemetry:?}").contains("subscribers: 2"));
    Ok(())
}

#[test]
fn too_short_an_interval_is_refused() {
    let result = Telemetry::start(TelemetryConfig {
        interval: Duration::from_millis(1),
        waker: None,
    });
    assert!(matches!(
        result,
        Err(TelemetryError::IntervalTooShort { interval_ms: 1, .. })
    ));
}

#[test]
fn one_shot_sample_is_plausible() -> anyhow::Result<()> {
    let sample = sample_once()?;
    check_plausible(&sample);
    Ok(())
}
