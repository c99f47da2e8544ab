//! Samples of the machine's resources, as the telemetry thread produces
//! them and the window, the HTTP API and reports read them.

use serde::{Deserialize, Serialize};

/// One reading of the machine's resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceSample {
    /// When it was taken, microseconds since the epoch.
    pub at_us: i64,
    /// Overall CPU use, 0-100.
    pub cpu_percent: f32,
    /// Use of each logical CPU, 0-100.
    pub cpu_per_core: Vec<f32>,
    /// Memory in use, bytes.
    pub memory_used_bytes: u64,
    /// Installed memory, bytes.
    pub memory_total_bytes: u64,
    /// Mounted disks.
    pub disks: Vec<DiskSample>,
    /// NVIDIA GPUs, or why there are none to show.
    pub gpus: GpuState,
}

#[cfg(test)]
impl ResourceSample {
    /// A plain sample taken at `at_us`, for tests: an idle CPU, a little
    /// memory, no disks, no GPUs.
    pub(crate) fn for_tests(at_us: i64) -> Self {
        Self {
            at_us,
            cpu_percent: 0.0,
            cpu_per_core: vec![0.0],
            memory_used_bytes: 1,
            memory_total_bytes: 2,
            disks: Vec::new(),
            gpus: GpuState::Unavailable {
                reason: "test".to_owned(),
            },
        }
    }
}

impl ResourceSample {
    /// Memory in use as a percentage of the total.
    pub fn memory_percent(&self) -> f64 {
        percent(self.memory_used_bytes, self.memory_total_bytes)
    }
}

/// Used share of a total, in percent; 0 when the total is 0.
pub fn percent(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        used as f64 * 100.0 / total as f64
    }
}

/// Space on one mounted disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSample {
    /// Mount point, e.g. `/`.
    pub mount: String,
    /// Bytes in use.
    pub used_bytes: u64,
    /// Capacity in bytes.
    pub total_bytes: u64,
}

/// What is known of the GPUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum GpuState {
    /// NVML answered; one entry per device (possibly none).
    Available {
        /// The devices.
        devices: Vec<GpuSample>,
    },
    /// No NVIDIA driver/NVML here, or it failed; the reason says which.
    Unavailable {
        /// Why, for people.
        reason: String,
    },
}

/// One GPU's reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    /// Device index as NVML numbers it.
    pub index: u32,
    /// Product name.
    pub name: String,
    /// Utilisation, 0-100.
    pub utilization_percent: f32,
    /// Memory in use, bytes.
    pub memory_used_bytes: u64,
    /// Memory on the device, bytes.
    pub memory_total_bytes: u64,
    /// Of the memory in use, what programs other than this Taskdeck process
    /// and the tasks it started use, bytes; none where NVML cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreign_memory_bytes: Option<u64>,
    /// Temperature in °C, when the device reports it.
    pub temperature_c: Option<u32>,
}

/// A host's load in brief, as remote workers report it with their
/// heartbeats: CPU, memory and GPUs, without per-core or disk detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSummary {
    /// Overall CPU use, 0-100.
    pub cpu_percent: f32,
    /// Logical CPUs.
    pub cpu_count: usize,
    /// Memory in use, bytes.
    pub memory_used_bytes: u64,
    /// Installed memory, bytes.
    pub memory_total_bytes: u64,
    /// NVIDIA GPUs, or why there are none to show.
    pub gpus: GpuState,
}

impl HostSummary {
    /// The brief form of a full sample.
    pub fn from_sample(sample: &ResourceSample) -> Self {
        Self {
            cpu_percent: sample.cpu_percent,
            cpu_count: sample.cpu_per_core.len(),
            memory_used_bytes: sample.memory_used_bytes,
            memory_total_bytes: sample.memory_total_bytes,
            gpus: sample.gpus.clone(),
        }
    }
}
