//! What users steer besides single submits: holding and releasing tasks,
//! pausing and resuming the whole scheduler.

use super::{RequestError, Scheduler, StoreError};
use crate::model::TaskId;

/// The stored setting that says whether the scheduler is paused.
pub(super) const PAUSED_KEY: &str = "paused";

impl Scheduler {
    /// Holds a queued or retrying task: it keeps its place and status but
    /// does not start until [`Scheduler::release`]d (the hold survives
    /// restarts). Holding a held task changes nothing.
    pub fn hold(&self, id: TaskId) -> Result<(), RequestError> {
        let change = self.inner.core.lock().hold(id)?;
        if let Some(change) = change {
            self.inner.emit(change);
        }
        Ok(())
    }

    /// Releases a held task: it may start again (at its start time, if that
    /// is still ahead). Releasing a task that is not held changes nothing.
    pub fn release(&self, id: TaskId) -> Result<(), RequestError> {
        let change = self.inner.core.lock().release(id)?;
        let Some(change) = change else {
            return Ok(());
        };
        self.inner.emit(change);
        self.inner.make_ready(id);
        Ok(())
    }

    /// Pauses the scheduler: no task starts (on the pool or through the
    /// broker) until [`Scheduler::resume`]; running tasks go on, submits
    /// are still accepted. Stored first, so a restart keeps it paused.
    pub fn pause(&self) -> Result<(), StoreError> {
        self.set_paused(true)
    }

    /// Pauses like [`Scheduler::pause`] and asks every running task to stop;
    /// each goes back to the queue without counting the attempt (it keeps
    /// its place and starts again after the resume). Returns how many were
    /// asked to stop.
    pub fn pause_and_stop(&self) -> Result<usize, StoreError> {
        self.set_paused(true)?;
        let (requests, running) = {
            let core = self.inner.core.lock();
            let running = core.counts()[crate::model::TaskStatus::Running.index()];
            (core.stop_running(crate::tasks::StopReason::Paused), running)
        };
        for request in requests {
            self.inner.transport.stop(request);
        }
        if running > 0 {
            tracing::info!(
                running,
                "asked the running tasks to stop; they go back to the queue"
            );
        }
        Ok(running)
    }

    /// Resumes a paused scheduler: queued tasks start again.
    pub fn resume(&self) -> Result<(), StoreError> {
        self.set_paused(false)
    }

    /// Whether the scheduler is paused.
    pub fn is_paused(&self) -> bool {
        self.inner.core.lock().paused
    }

    fn set_paused(&self, paused: bool) -> Result<(), StoreError> {
        if let Some(store) = &self.inner.store {
            store.set_setting(PAUSED_KEY, if paused { "true" } else { "false" })?;
        }
        let was = std::mem::replace(&mut self.inner.core.lock().paused, paused);
        if was != paused {
            if paused {
                tracing::info!("scheduler paused: no task starts until it is resumed");
            } else {
                tracing::info!("scheduler resumed");
                self.inner.signal_work(true);
            }
        }
        Ok(())
    }
}
