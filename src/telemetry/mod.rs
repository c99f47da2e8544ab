//! Resource telemetry: a sampling thread over sysinfo and NVML, and the
//! bounded history a plot keeps of its samples.
//!
//! - [`Telemetry`] owns the "taskdeck-telemetry" thread. It sends owned
//!   [`ResourceSample`](crate::model::ResourceSample)s behind `Arc`s to
//!   subscribers and keeps the newest for [`Telemetry::latest`]; readers
//!   never block it.
//! - [`History`] is plain data a reader keeps: bounded by age and length,
//!   with gaps where samples are missing.
//! - [`sample_once`] takes one reading without a thread, for command lines.
//!
//! This is the only module that may use `sysinfo` or `nvml_wrapper` (a CI
//! grep keeps it so). It depends on [`crate::model`] alone, so the window,
//! the HTTP API and the runtime may all use it.

#[cfg(feature = "nvidia")]
mod gpu;
#[cfg(not(feature = "nvidia"))]
#[path = "gpu_off.rs"]
mod gpu;
mod history;
mod sampler;
mod service;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

pub use gpu::{discover_gpus, process_group_gpu_memory_mb};
pub use history::{History, Point, Window};
pub use sampler::{host_name, sample_once};
pub use service::Telemetry;

/// The shortest sampling interval: CPU use cannot be measured over less.
pub const MIN_INTERVAL: Duration = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL;

/// A callback run after each sample, e.g. to ask the window to repaint.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// How the telemetry thread samples.
#[derive(Clone)]
pub struct TelemetryConfig {
    /// Time between samples; at least [`MIN_INTERVAL`].
    pub interval: Duration,
    /// Called on the telemetry thread after each sample is published; it
    /// must return quickly, as the next sample waits for it.
    pub waker: Option<Waker>,
}

impl Default for TelemetryConfig {
    /// One sample a second, waking nobody.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            waker: None,
        }
    }
}

impl std::fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { interval, waker } = self;
        f.debug_struct("TelemetryConfig")
            .field("interval", interval)
            .field("waker", &waker.as_ref().map(|_| "Fn()"))
            .finish()
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The interval is too short to measure CPU use.
    #[error(
        "telemetry interval of {interval_ms} ms is shorter than the {minimum_ms} ms needed to measure CPU use"
    )]
    IntervalTooShort {
        /// The interval asked for.
        interval_ms: u128,
        /// The shortest allowed, [`MIN_INTERVAL`].
        minimum_ms: u128,
    },
    /// The operating system's resource counters could not be opened.
    #[error("cannot read system resources: {0}")]
    System(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The telemetry thread could not be started.
    #[error("cannot start the telemetry thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl TelemetryError {
    /// Wraps a sysinfo error without making sysinfo part of the public API.
    fn system(error: sysinfo::Error) -> Self {
        Self::System(Box::new(error))
    }
}
