//! The ready queue: which queued task runs next.
//!
//! Rules:
//! - a higher priority runs first;
//! - within a priority, a lower task id runs first. Ids are handed out in
//!   acceptance order, so this is arrival order, and a task that comes back
//!   (after a retry backoff or a restart) keeps its original place;
//! - removing a task (cancel) costs O(log n), so bulk cancels stay cheap.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use crate::model::TaskId;

/// Queued task ids ordered by (priority descending, id ascending).
#[derive(Debug, Default, Clone)]
pub struct ReadyQueue {
    entries: BTreeSet<(Reverse<u8>, TaskId)>,
}

impl ReadyQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a task; adding one that is already queued changes nothing.
    pub fn push(&mut self, priority: u8, id: TaskId) {
        self.entries.insert((Reverse(priority), id));
    }

    /// Takes the task that should run next.
    pub fn pop(&mut self) -> Option<TaskId> {
        self.entries.pop_first().map(|(_, id)| id)
    }

    /// Removes a queued task; false when it was not queued.
    pub fn remove(&mut self, priority: u8, id: TaskId) -> bool {
        self.entries.remove(&(Reverse(priority), id))
    }

    /// Number of queued tasks.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queued ids in the order they will run.
    pub fn iter(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.entries.iter().map(|(_, id)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_first_then_arrival_order() {
        let mut queue = ReadyQueue::new();
        queue.push(5, TaskId(1));
        queue.push(9, TaskId(2));
        queue.push(5, TaskId(3));
        queue.push(0, TaskId(4));
        queue.push(9, TaskId(5));
        let order: Vec<u64> = std::iter::from_fn(|| queue.pop()).map(|id| id.0).collect();
        assert_eq!(order, vec![2, 5, 1, 3, 4]);
    }

    #[test]
    fn a_returning_task_keeps_its_place() {
        let mut queue = ReadyQueue::new();
        queue.push(5, TaskId(10));
        queue.push(5, TaskId(11));
        queue.push(5, TaskId(3));
        assert_eq!(queue.pop(), Some(TaskId(3)));
    }

    #[test]
    fn remove_takes_out_only_that_task() {
        let mut queue = ReadyQueue::new();
        queue.push(5, TaskId(1));
        queue.push(5, TaskId(2));
        assert!(queue.remove(5, TaskId(1)));
        assert!(!queue.remove(5, TaskId(1)));
        assert!(!queue.remove(4, TaskId(2)));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.iter().collect::<Vec<_>>(), vec![TaskId(2)]);
    }
}
