//! The ready queue: which queued task runs next.
//!
//! Rules:
//! - a higher priority runs first;
//! - within a priority, a lower task id runs first. Ids are handed out in
//!   acceptance order, so this is arrival order, and a task that comes back
//!   (after a retry backoff or a restart) keeps its original place;
//! - a task that needs GPUs runs only when that many are free. GPU tasks
//!   are placed strictly in queue order: while the first GPU task waits for
//!   devices, no later GPU task takes the devices that come free (so a large
//!   request is never starved by a stream of small ones), but tasks that
//!   need no GPU keep running past it;
//! - removing a task (cancel) costs O(log n), so bulk cancels stay cheap.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::model::TaskId;

type Key = (Reverse<u8>, TaskId);

/// Queued task ids ordered by (priority descending, id ascending), with the
/// tasks that need GPUs kept apart.
#[derive(Debug, Default, Clone)]
pub struct ReadyQueue {
    cpu: BTreeSet<Key>,
    gpu: BTreeMap<Key, GpuNeed>,
}

/// What a queued task needs of the GPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuNeed {
    /// Devices.
    pub count: u32,
    /// Memory each device must have, MB.
    pub memory_mb: Option<u64>,
}

impl ReadyQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a task that needs `gpus`; adding one that is already queued
    /// changes nothing.
    pub fn push(&mut self, priority: u8, id: TaskId, gpus: GpuNeed) {
        let key = (Reverse(priority), id);
        if gpus.count == 0 {
            self.cpu.insert(key);
        } else {
            self.gpu.insert(key, gpus);
        }
    }

    /// Takes the task that comes next, whatever it needs, and what it
    /// needs: [`ReadyQueue::pop_placeable`] with every need met.
    pub fn pop(&mut self) -> Option<(TaskId, GpuNeed)> {
        self.pop_placeable(|_| true)
    }

    /// Takes the next task that can run now, and what it needs; `fits`
    /// says whether a GPU need can be met by the free devices (see the
    /// module's rules).
    pub fn pop_placeable(&mut self, fits: impl Fn(GpuNeed) -> bool) -> Option<(TaskId, GpuNeed)> {
        let placeable = self
            .gpu
            .first_key_value()
            .filter(|(_, need)| fits(**need))
            .map(|(key, need)| (*key, *need));
        match (self.cpu.first().copied(), placeable) {
            (Some(cpu), Some((gpu, need))) if gpu < cpu => {
                self.gpu.remove(&gpu);
                Some((gpu.1, need))
            }
            (None, Some((gpu, need))) => {
                self.gpu.remove(&gpu);
                Some((gpu.1, need))
            }
            (Some(cpu), _) => {
                self.cpu.remove(&cpu);
                Some((cpu.1, GpuNeed::default()))
            }
            (None, None) => None,
        }
    }

    /// Removes a queued task; false when it was not queued.
    pub fn remove(&mut self, priority: u8, id: TaskId) -> bool {
        let key = (Reverse(priority), id);
        self.cpu.remove(&key) || self.gpu.remove(&key).is_some()
    }

    /// Number of queued tasks.
    pub fn len(&self) -> usize {
        self.cpu.len() + self.gpu.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.cpu.is_empty() && self.gpu.is_empty()
    }

    /// Queued ids in the order they would run if nothing waited for GPUs,
    /// merged lazily from both kinds (no copy, stops where the caller does).
    pub fn ordered(&self) -> impl Iterator<Item = TaskId> + '_ {
        let mut cpu = self.cpu.iter().peekable();
        let mut gpu = self.gpu.keys().peekable();
        std::iter::from_fn(move || {
            let take_gpu = match (cpu.peek(), gpu.peek()) {
                (Some(c), Some(g)) => g < c,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            let key = if take_gpu { gpu.next() } else { cpu.next() };
            key.map(|(_, id)| *id)
        })
    }

    /// Queued ids in the order they would run if nothing waited for GPUs.
    pub fn iter(&self) -> impl Iterator<Item = TaskId> + '_ {
        let mut keys: Vec<Key> = self.cpu.iter().chain(self.gpu.keys()).copied().collect();
        keys.sort_unstable();
        keys.into_iter().map(|(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(count: u32) -> GpuNeed {
        GpuNeed {
            count,
            memory_mb: None,
        }
    }

    fn free(n: u32) -> impl Fn(GpuNeed) -> bool {
        move |need| need.count <= n
    }

    #[test]
    fn higher_priority_first_then_arrival_order() {
        let mut queue = ReadyQueue::new();
        queue.push(5, TaskId(1), GpuNeed::default());
        queue.push(9, TaskId(2), GpuNeed::default());
        queue.push(5, TaskId(3), GpuNeed::default());
        queue.push(0, TaskId(4), GpuNeed::default());
        queue.push(9, TaskId(5), GpuNeed::default());
        let order: Vec<u64> = std::iter::from_fn(|| queue.pop())
            .map(|(id, _)| id.0)
            .collect();
        assert_eq!(order, vec![2, 5, 1, 3, 4]);
    }

    #[test]
    fn a_returning_task_keeps_its_place() {
        let mut queue = ReadyQueue::new();
        queue.push(5, TaskId(10), GpuNeed::default());
        queue.push(5, TaskId(11), GpuNeed::default());
        queue.push(5, TaskId(3), GpuNeed::default());
        assert_eq!(queue.pop(), Some((TaskId(3), GpuNeed::default())));
    }

    #[test]
    fn remove_takes_out_only_that_task() {
        let mut queue = ReadyQueue::new();
        queue.push(5, TaskId(1), GpuNeed::default());
        queue.push(5, TaskId(2), GpuNeed::default());
        assert!(queue.remove(5, TaskId(1)));
        assert!(!queue.remove(5, TaskId(1)));
        assert!(!queue.remove(4, TaskId(2)));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.iter().collect::<Vec<_>>(), vec![TaskId(2)]);
    }

    #[test]
    fn gpu_tasks_wait_for_devices_without_blocking_cpu_tasks_or_being_starved() {
        let mut queue = ReadyQueue::new();
        queue.push(5, TaskId(1), need(2));
        queue.push(5, TaskId(2), need(1));
        queue.push(5, TaskId(3), GpuNeed::default());
        queue.push(5, TaskId(4), GpuNeed::default());
        // One GPU free: task 1 needs two, so it waits; task 2 (one GPU)
        // must not overtake it; the CPU tasks run.
        assert_eq!(queue.pop_placeable(free(1)), Some((TaskId(3), need(0))));
        assert_eq!(queue.pop_placeable(free(1)), Some((TaskId(4), need(0))));
        assert_eq!(queue.pop_placeable(free(1)), None);
        // Two free: task 1 first, then task 2.
        assert_eq!(queue.pop_placeable(free(2)), Some((TaskId(1), need(2))));
        assert_eq!(queue.pop_placeable(free(1)), Some((TaskId(2), need(1))));
        assert!(queue.is_empty());
    }

    #[test]
    fn placeable_order_is_priority_then_arrival_across_both_kinds() {
        let mut queue = ReadyQueue::new();
        queue.push(5, TaskId(1), GpuNeed::default());
        queue.push(9, TaskId(2), need(1));
        queue.push(5, TaskId(3), need(1));
        assert_eq!(queue.pop_placeable(free(4)), Some((TaskId(2), need(1))));
        assert_eq!(queue.pop_placeable(free(4)), Some((TaskId(1), need(0))));
        assert_eq!(queue.iter().collect::<Vec<_>>(), vec![TaskId(3)]);
        assert!(queue.remove(5, TaskId(3)));
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn ordered_merges_both_kinds_like_iter() {
        let mut queue = ReadyQueue::new();
        queue.push(5, TaskId(4), need(1));
        queue.push(5, TaskId(1), GpuNeed::default());
        queue.push(9, TaskId(7), GpuNeed::default());
        queue.push(9, TaskId(2), need(2));
        queue.push(0, TaskId(3), GpuNeed::default());
        let lazy: Vec<TaskId> = queue.ordered().collect();
        assert_eq!(lazy, queue.iter().collect::<Vec<_>>());
        assert_eq!(lazy, [2, 7, 1, 4, 3].map(TaskId));
    }
}
