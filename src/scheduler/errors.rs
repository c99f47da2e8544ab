//! Why the scheduler could not start, or refused a submission.

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
}
