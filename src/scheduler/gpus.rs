//! GPU requests at submit: which can ever be met, on this machine's devices
//! or, in distributed mode, on one worker process heard from.

use super::{Dispatch, GpuDevice, Scheduler};
use crate::model::TaskSpec;
use crate::tasks::SpecError;

impl Scheduler {
    /// Refuses a GPU request that can never be met here.
    pub(super) fn check_gpus(&self, spec: &TaskSpec) -> Result<(), SpecError> {
        if spec.gpus == 0 {
            return Ok(());
        }
        let fitting = if matches!(self.inner.config.dispatch, Dispatch::External(_)) {
            // Worker processes report their devices; one of those heard
            // from must have enough.
            self.remote_gpu_capacity(spec.gpu_memory_mb)
        } else {
            self.inner
                .config
                .gpus
                .iter()
                .filter(|device| device.has_memory(spec.gpu_memory_mb))
                .count()
        };
        if usize::try_from(spec.gpus).is_ok_and(|asked| asked <= fitting) {
            return Ok(());
        }
        Err(SpecError::Gpus {
            asked: spec.gpus,
            memory_mb: spec.gpu_memory_mb,
            available: fitting,
        })
    }

    /// The GPU devices tasks may ask for.
    pub fn gpus(&self) -> &[GpuDevice] {
        &self.inner.config.gpus
    }
}
