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
    /// A spec's dependencies cannot be met (index within a batch).
    #[error("{}{source}", index.map(|i| format!("task {i} of the batch: ")).unwrap_or_default())]
    Dependency {
        /// Position in the batch, for batches.
        index: Option<usize>,
        /// What is wrong.
        source: DependencyError,
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

/// Why a task's dependencies were refused at submit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DependencyError {
    /// No such task (never submitted, or dropped from the history).
    #[error(
        "depends on task {0}, which is not known (never submitted, or dropped from the history)"
    )]
    Unknown(crate::model::TaskId),
    /// A task can depend only on tasks accepted before it.
    #[error("depends on task {0}, which is not an earlier task")]
    NotEarlier(crate::model::TaskId),
    /// A batch position that is not an earlier task of the batch.
    #[error("depends on batch position {batch_index}, which is not an earlier task of the batch")]
    BatchIndex {
        /// The position named.
        batch_index: usize,
    },
    /// Outside a batch there is nothing to refer to by position.
    #[error("depends on batch position {batch_index}, but this is not a batch submission")]
    NotABatch {
        /// The position named.
        batch_index: usize,
    },
    /// The dependency already failed or was cancelled, and the task would
    /// be cancelled at once.
    #[error(
        "depends on task {id}, which is already {status}; it would be cancelled at once \
         (retry task {id} first, or let it run anyway with on_dependency_failure \"run\")"
    )]
    AlreadyFailed {
        /// The dependency.
        id: crate::model::TaskId,
        /// Its final status.
        status: crate::model::TaskStatus,
    },
    /// More dependencies than one task may have.
    #[error("has {0} dependencies; at most {MAX_DEPENDENCIES} are allowed")]
    TooMany(usize),
}

/// The most dependencies one task may have.
pub const MAX_DEPENDENCIES: usize = 100_000;

/// Why a queue's settings were not changed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Not a queue name.
    #[error("{0}")]
    Name(String),
    /// A limit below one (pause the queue instead).
    #[error("a queue's limit must be at least 1 (pause the queue to run none of its tasks)")]
    Limit,
    /// The store could not keep the setting; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
