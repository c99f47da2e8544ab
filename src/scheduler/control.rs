//! What users steer besides single submits: holding and releasing tasks,
//! pausing and resuming the whole scheduler, and the settings of named
//! queues.

use std::collections::BTreeMap;

use super::core::{QueueInfo, QueueSettings};
use super::errors::QueueError;
use super::{RequestError, Scheduler, StoreError};
use crate::model::{TaskId, TaskStatus, check_queue_name};
use crate::tasks::StopReason;

/// The stored setting that says whether the scheduler is paused.
pub(super) const PAUSED_KEY: &str = "paused";

/// Stored queue settings are under this prefix and the queue's name.
const QUEUE_KEY_PREFIX: &str = "queue.";

/// The queue settings among the stored settings; one that cannot be read
/// is left out with a warning.
pub(super) fn stored_queues(
    settings: &BTreeMap<String, String>,
) -> impl Iterator<Item = (String, QueueSettings)> + '_ {
    settings.iter().filter_map(|(key, value)| {
        let name = key.strip_prefix(QUEUE_KEY_PREFIX)?;
        match serde_json::from_str::<QueueSettings>(value) {
            Ok(stored) if check_queue_name(name).is_ok() => Some((name.to_owned(), stored)),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(queue = name, %error, "ignoring stored queue settings");
                None
            }
        }
    })
}

/// A change to a queue's settings; what is none stays as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueChange {
    /// A new limit (`Some(None)` removes it).
    pub limit: Option<Option<usize>>,
    /// Pause (true) or resume (false).
    pub paused: Option<bool>,
    /// With a pause: also stop its running tasks; they go back to the
    /// queue without counting an attempt.
    pub stop_running: bool,
}

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

    /// Every queue with its settings and counts, by name.
    pub fn queues(&self) -> Vec<QueueInfo> {
        self.inner.core.lock().queue_list()
    }

    /// One queue (a valid name never used has the default settings and
    /// no tasks).
    pub fn queue(&self, name: &str) -> Result<QueueInfo, QueueError> {
        check_queue_name(name).map_err(QueueError::Name)?;
        let settings = self.inner.core.lock().queue_settings(name);
        Ok(self
            .queues()
            .into_iter()
            .find(|queue| queue.name == name)
            .unwrap_or(QueueInfo {
                name: name.to_owned(),
                limit: settings.limit,
                paused: settings.paused,
                counts: [0; TaskStatus::ALL.len()],
            }))
    }

    /// Changes a queue's limit or pauses or resumes it (stored first, so a
    /// restart keeps it); returns the queue as it then stands.
    pub fn set_queue(&self, name: &str, change: QueueChange) -> Result<QueueInfo, QueueError> {
        check_queue_name(name).map_err(QueueError::Name)?;
        if change.limit == Some(Some(0)) {
            return Err(QueueError::Limit);
        }
        let current = self.inner.core.lock().queue_settings(name);
        let settings = QueueSettings {
            limit: change.limit.unwrap_or(current.limit),
            paused: change.paused.unwrap_or(current.paused),
        };
        if let Some(store) = &self.inner.store {
            let value = serde_json::to_string(&settings)
                .map_err(|error| QueueError::Name(error.to_string()))?;
            store.set_setting(&format!("{QUEUE_KEY_PREFIX}{name}"), &value)?;
        }
        let requests = {
            let mut core = self.inner.core.lock();
            core.set_queue(name, settings);
            if settings.paused && change.stop_running {
                core.stop_running_in(name, StopReason::Paused)
            } else {
                Vec::new()
            }
        };
        for request in requests {
            self.inner.transport.stop(request);
        }
        if settings != current {
            tracing::info!(queue = name, limit = ?settings.limit, paused = settings.paused, "queue settings changed");
        }
        // A resume or a higher limit may let tasks start.
        self.inner.signal_work(true);
        self.queue(name)
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
