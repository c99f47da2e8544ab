//! Whether the store can write: set by the writer thread, read by anyone
//! (the scheduler's submit path, `/healthz`, the window) without waiting on
//! the writer.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// What readers see of the store's writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageStatus {
    /// The last write failed because the disk is full; new tasks are refused
    /// until a write succeeds again.
    pub full: bool,
    /// Task state changes kept in memory because they could not be written
    /// yet; they are written once there is room.
    pub pending_updates: usize,
    /// Resource samples kept in memory for the same reason.
    pub pending_samples: usize,
    /// When writes started failing (microseconds since the epoch).
    pub failing_since_us: Option<u64>,
    /// The last write error, while writes fail.
    pub error: Option<String>,
}

impl StorageStatus {
    /// True while every write succeeds and nothing waits.
    pub fn is_ok(&self) -> bool {
        !self.full && self.error.is_none() && self.pending_updates == 0 && self.pending_samples == 0
    }
}

/// The writer's side: atomics for the hot checks, a lock only for the text.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// The last write failed for lack of space.
    full: AtomicBool,
    /// Saves waiting to be written.
    pending_updates: AtomicUsize,
    /// Samples waiting to be written.
    pending_samples: AtomicUsize,
    /// When writes started failing; 0 while they succeed.
    failing_since_us: AtomicU64,
    /// The last error, while writes fail.
    error: Mutex<Option<String>>,
}

impl Shared {
    /// Whether saves wait to be written (checked by every insert).
    pub(super) fn has_backlog(&self) -> bool {
        self.pending_updates.load(Ordering::Acquire) > 0
    }

    /// Records a failed write; returns true when writes were fine before.
    pub(super) fn failed(&self, full: bool, error: String, now_us: i64) -> bool {
        self.full.store(full, Ordering::Release);
        *self.error.lock() = Some(error);
        let since = u64::try_from(now_us).unwrap_or(0).max(1);
        self.failing_since_us
            .compare_exchange(0, since, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Records a successful write; returns true when writes had failed before.
    pub(super) fn succeeded(&self) -> bool {
        if self.failing_since_us.swap(0, Ordering::AcqRel) == 0 {
            return false;
        }
        self.full.store(false, Ordering::Release);
        *self.error.lock() = None;
        true
    }

    /// Publishes how much waits to be written.
    pub(super) fn set_backlog(&self, updates: usize, samples: usize) {
        self.pending_updates.store(updates, Ordering::Release);
        self.pending_samples.store(samples, Ordering::Release);
    }

    /// A copy for readers.
    pub(super) fn snapshot(&self) -> StorageStatus {
        let since = self.failing_since_us.load(Ordering::Acquire);
        StorageStatus {
            full: self.full.load(Ordering::Acquire),
            pending_updates: self.pending_updates.load(Ordering::Acquire),
            pending_samples: self.pending_samples.load(Ordering::Acquire),
            failing_since_us: (since > 0).then_some(since),
            error: self.error.lock().clone(),
        }
    }
}
