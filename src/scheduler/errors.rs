//! Why the scheduler could not start, or refused a submission.

use std::time::Duration;

use crate::model::TaskId;
use crate::store::StoreError;
use crate::tasks::SpecError;

/// Why the scheduler could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Why a submission was refused; nothing of it was accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A spec does not fit its task (index within a batch).
    #[error("{}{source}", index.map(|i| format!("task {i} of the batch: ")).unwrap_or_default())]
    Invalid {
        /// Position in the batch, for batches.
        index: Option<usize>,
        /// What is wrong.
        source: SpecError,
    },
    /// The store could not make it durable.
    #[error("not stored: {0}")]
    Store(#[from] StoreError),
    /// The scheduler is shutting down.
    #[error("the scheduler is shutting down")]
    ShuttingDown,
    /// The transport to worker processes cannot take tasks now; nothing
    /// was accepted.
    #[error("{0}")]
    Unavailable(String),
    /// The tasks are stored and will run, but the transport did not confirm
    /// them in time (they are published once it is back).
    #[error("tasks {} are stored, but the broker did not confirm them within {} s; they are published when it is back", format_ids(ids), waited.as_secs())]
    Unconfirmed {
        /// The accepted tasks.
        ids: Vec<TaskId>,
        /// How long the submit waited.
        waited: Duration,
    },
}

fn format_ids(ids: &[TaskId]) -> String {
    match ids {
        [] => String::new(),
        [one] => one.to_string(),
        [first, .., last] => format!("{first}-{last}"),
    }
}
