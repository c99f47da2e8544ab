//! GPU requests at submit: which can ever be met, on this machine's devices
//! or, in distributed mode, on one worker process heard from.

use super::{GpuDevice, Scheduler};
use crate::model::TaskSpec;
use crate::tasks::SpecError;

impl Scheduler {
    /// Refuses a GPU request that can never be met here.
    pub(super) fn check_gpus(&self, spec: &TaskSpec) -> Result<(), SpecError> {
        if spec.gpus == 0 {
            return Ok(());
        }
        let fitting = self.inner.transport.gpus_fitting(
            &self.inner.core,
            &self.inner.config.gpus,
            super::core::need_of(spec),
        );
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

    /// Takes a reading of the memory that programs Taskdeck did not start
    /// use on this machine's devices (device id, MB): shares of a device
    /// are placed against what is left. Workers look again when it changed.
    pub fn set_gpu_foreign(&self, readings: &[(u32, u64)]) {
        let changed = {
            let mut core = self.inner.core.lock();
            core.set_gpu_foreign(readings);
            std::mem::take(&mut core.gpus_freed)
        };
        if changed {
            self.inner.signal_work(true);
        }
    }
}
