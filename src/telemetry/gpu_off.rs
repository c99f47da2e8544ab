//! GPUs in a build without the `nvidia` feature: every reading says that
//! this build cannot see NVIDIA GPUs, and nothing is discovered. The same
//! interface as the NVML reader, so the sampler and the API do not change.

use crate::model::GpuState;

/// Why there are no GPUs here.
const REASON: &str =
    "this build of Taskdeck has no NVIDIA support (build it with the `nvidia` feature)";

/// The GPU side of the sampler: always unavailable.
pub(crate) struct GpuProbe;

impl GpuProbe {
    /// A probe that never finds a GPU.
    pub(crate) fn new() -> Self {
        Self
    }

    /// Why there are no GPUs to show.
    pub(crate) fn unavailable(&self) -> Option<&str> {
        Some(REASON)
    }

    /// No devices are counted.
    pub(crate) fn device_count(&self) -> Option<u32> {
        None
    }

    /// The same answer on every tick.
    pub(crate) fn read(&mut self) -> GpuState {
        GpuState::Unavailable {
            reason: REASON.to_owned(),
        }
    }
}

/// No GPUs to offer tasks; `--gpus 0,1` can still declare some.
pub fn discover_gpus() -> Result<Vec<(u32, u64)>, String> {
    Err(REASON.to_owned())
}

/// No per-process GPU memory without NVML.
pub fn process_group_gpu_memory_mb(_group: u32) -> Option<u64> {
    None
}
