//! Plain data shared by every part of Taskdeck: task ids, specs, records,
//! statuses and lifecycle events.
//!
//! Nothing here starts threads or does I/O, and this module depends on no
//! other module of the crate, so every other part may use it.

mod event;
mod progress;
mod resources;
mod task;

pub use event::{Event, EventKind, TaskChange};
pub use progress::{HISTORY_POINTS, Progress, ProgressHistory, ProgressPoint, ProgressReport};
pub use resources::{DiskSample, GpuSample, GpuState, HostSummary, ResourceSample, percent};
pub use task::{
    AttemptFailure, DEFAULT_QUEUE, Dependency, FailureKind, OnDependencyFailure, PRIORITY_DEFAULT,
    PRIORITY_MAX, QUEUE_NAME_MAX, RETRIES_DEFAULT, TaskId, TaskLog, TaskRecord, TaskSpec,
    TaskStatus, UnknownStatus, check_queue_name, now_us,
};
