//! Lifecycle counters by task name since this process started: tasks
//! submitted, completed, failed for good, retried and cancelled, and
//! attempts lost with their worker. `/metrics` shows them as Prometheus
//! counters.
//!
//! Rules:
//! - a counter only grows while the process runs and starts at zero with
//!   it (Prometheus's `rate()` handles the reset); the retention dropping
//!   finished tasks never lowers one;
//! - the first [`MAX_NAMES`] task names seen get counters of their own;
//!   later names share those of [`OTHER`] (as does a task actually named
//!   `other`), so clients cannot grow the table without bound;
//! - a task finds its name's slot once, when it is taken in (one hash of
//!   its name, under the lock already held); later transitions count
//!   through the slot kept in its entry, without hashing.

use std::collections::HashMap;
use std::sync::Arc;

/// Distinct task names counted apart; the rest count as [`OTHER`].
pub const MAX_NAMES: usize = 256;

/// The name the counters of names beyond [`MAX_NAMES`] go under.
pub const OTHER: &str = "other";

/// Where a task name's counters are, see [`Tally::slot`].
pub type NameSlot = u16;

/// The slot of [`OTHER`].
const OTHER_SLOT: NameSlot = 0;

/// What is counted per task name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskCounter {
    /// A task was accepted.
    Submitted,
    /// A task completed.
    Completed,
    /// A task failed for good (no retry left, or not retryable).
    Failed,
    /// A task will run again: an attempt failed with retries left, or a
    /// user retried a failed or cancelled task.
    Retried,
    /// A task was cancelled (by a user, or with a dependency).
    Cancelled,
    /// An attempt was lost with its worker (a dead worker thread, a worker
    /// process gone silent, a scheduler that stopped while it ran).
    Lost,
}

impl TaskCounter {
    /// Every counter, in the order of [`TaskCounter::index`].
    pub const ALL: [TaskCounter; 6] = [
        TaskCounter::Submitted,
        TaskCounter::Completed,
        TaskCounter::Failed,
        TaskCounter::Retried,
        TaskCounter::Cancelled,
        TaskCounter::Lost,
    ];

    /// Its position in [`TaskCounter::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Its name in lower case (`submitted`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskCounter::Submitted => "submitted",
            TaskCounter::Completed => "completed",
            TaskCounter::Failed => "failed",
            TaskCounter::Retried => "retried",
            TaskCounter::Cancelled => "cancelled",
            TaskCounter::Lost => "lost",
        }
    }
}

/// One name's counters, indexed by [`TaskCounter::index`].
pub type Counts = [u64; TaskCounter::ALL.len()];

/// The counters of every task name seen, owned by the core.
#[derive(Debug, Clone)]
pub struct Tally {
    slots: HashMap<Box<str>, NameSlot>,
    names: Vec<Arc<str>>,
    counts: Vec<Counts>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            slots: HashMap::from([(OTHER.into(), OTHER_SLOT)]),
            names: vec![OTHER.into()],
            counts: vec![[0; TaskCounter::ALL.len()]],
        }
    }
}

impl Tally {
    /// The slot of task name `name`, made on first use while there is
    /// room; [`OTHER`]'s once [`MAX_NAMES`] names have one.
    pub fn slot(&mut self, name: &str) -> NameSlot {
        if let Some(slot) = self.slots.get(name) {
            return *slot;
        }
        // The names hold OTHER besides the MAX_NAMES counted apart.
        if self.names.len() > MAX_NAMES {
            return OTHER_SLOT;
        }
        let Ok(slot) = NameSlot::try_from(self.names.len()) else {
            return OTHER_SLOT;
        };
        self.slots.insert(name.into(), slot);
        self.names.push(name.into());
        self.counts.push([0; TaskCounter::ALL.len()]);
        slot
    }

    /// Counts one `counter` for the name in `slot`.
    pub fn add(&mut self, slot: NameSlot, counter: TaskCounter) {
        if let Some(counts) = self.counts.get_mut(usize::from(slot)) {
            counts[counter.index()] += 1;
        }
    }

    /// Every name's counters, [`OTHER`] only when it counted something;
    /// shares the names (cloning an `Arc` each), so a caller holding the
    /// lock holds it for a copy of a few kilobytes at most.
    pub fn snapshot(&self) -> Vec<(Arc<str>, Counts)> {
        self.names
            .iter()
            .zip(&self.counts)
            .enumerate()
            .filter(|(slot, (_, counts))| {
                *slot != usize::from(OTHER_SLOT) || counts.iter().any(|n| *n > 0)
            })
            .map(|(_, (name, counts))| (Arc::clone(name), *counts))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts_of(tally: &Tally, name: &str) -> Option<Counts> {
        tally
            .snapshot()
            .into_iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, counts)| counts)
    }

    #[test]
    fn a_name_keeps_its_slot_and_counts_only_grow() {
        let mut tally = Tally::default();
        let noop = tally.slot("noop");
        let fail = tally.slot("fail");
        assert_ne!(noop, fail);
        assert_eq!(tally.slot("noop"), noop);
        tally.add(noop, TaskCounter::Submitted);
        tally.add(noop, TaskCounter::Submitted);
        tally.add(noop, TaskCounter::Completed);
        tally.add(fail, TaskCounter::Retried);
        tally.add(fail, TaskCounter::Lost);
        assert_eq!(counts_of(&tally, "noop"), Some([2, 1, 0, 0, 0, 0]));
        assert_eq!(counts_of(&tally, "fail"), Some([0, 0, 0, 1, 0, 1]));
        // Nothing counted as OTHER yet: it is not listed.
        assert_eq!(counts_of(&tally, OTHER), None);
    }

    #[test]
    fn names_beyond_the_limit_fold_into_other() {
        let mut tally = Tally::default();
        for n in 0..MAX_NAMES {
            let slot = tally.slot(&format!("task-{n}"));
            assert_ne!(slot, OTHER_SLOT, "name {n} should get a slot of its own");
            tally.add(slot, TaskCounter::Submitted);
        }
        for n in MAX_NAMES..MAX_NAMES + 50 {
            let slot = tally.slot(&format!("task-{n}"));
            assert_eq!(slot, OTHER_SLOT, "name {n} should fold into other");
            tally.add(slot, TaskCounter::Submitted);
        }
        // A name seen before the table filled keeps its own slot.
        assert_ne!(tally.slot("task-0"), OTHER_SLOT);
        let snapshot = tally.snapshot();
        assert_eq!(snapshot.len(), MAX_NAMES + 1);
        assert_eq!(counts_of(&tally, OTHER), Some([50, 0, 0, 0, 0, 0]));
        assert_eq!(counts_of(&tally, &format!("task-{}", MAX_NAMES)), None);
        let total: u64 = snapshot.iter().map(|(_, counts)| counts[0]).sum();
        assert_eq!(total, (MAX_NAMES + 50) as u64);
    }

    #[test]
    fn a_task_named_other_shares_the_folded_counters() {
        let mut tally = Tally::default();
        assert_eq!(tally.slot(OTHER), OTHER_SLOT);
        tally.add(OTHER_SLOT, TaskCounter::Cancelled);
        assert_eq!(counts_of(&tally, OTHER), Some([0, 0, 0, 0, 1, 0]));
    }

    #[test]
    fn counters_are_named_in_their_index_order() {
        for (index, counter) in TaskCounter::ALL.iter().enumerate() {
            assert_eq!(counter.index(), index);
        }
        let names: Vec<&str> = TaskCounter::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "submitted",
                "completed",
                "failed",
                "retried",
                "cancelled",
                "lost"
            ]
        );
    }
}
