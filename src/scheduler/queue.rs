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
//! - removing a task (cancel) costs O(log n), so bulk cancels stay cheap;
//! - each named queue of tasks is a lane of its own, and only lanes the
//!   caller calls open (not paused, under their limit) give tasks; the
//!   rules above hold across the open lanes, so a closed lane costs a pop
//!   nothing, however many tasks wait in it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::model::TaskId;

type Key = (Reverse<u8>, TaskId);

/// Identifies a named queue of tasks (its lane); 0 is the default queue.
pub type Lane = u32;

/// Queued task ids of one lane ordered by (priority descending, id
/// ascending), with the tasks that need GPUs kept apart.
#[derive(Debug, Default, Clone)]
struct Tasks {
    cpu: BTreeSet<Key>,
    gpu: BTreeMap<Key, GpuNeed>,
}

impl Tasks {
    /// Takes its next task that can run now (see the module's rules).
    fn pop(&mut self, fits: impl Fn(GpuNeed) -> bool) -> Option<(TaskId, GpuNeed)> {
        let gpu = self
            .gpu
            .first_key_value()
            .filter(|(_, need)| fits(**need))
            .map(|(key, need)| (*key, *need));
        match (self.cpu.first().copied(), gpu) {
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

    /// Ids in the order they would run if nothing waited for GPUs, merged
    /// lazily from both kinds, with their keys.
    fn ordered(&self) -> impl Iterator<Item = Key> + '_ {
        let mut cpu = self.cpu.iter().peekable();
        let mut gpu = self.gpu.keys().peekable();
        std::iter::from_fn(move || {
            let take_gpu = match (cpu.peek(), gpu.peek()) {
                (Some(c), Some(g)) => g < c,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if take_gpu { gpu.next() } else { cpu.next() }.copied()
        })
    }
}

/// The queued tasks of every lane.
#[derive(Debug, Default, Clone)]
pub struct ReadyQueue {
    lanes: Vec<Tasks>,
}

/// What a queued task needs of the GPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuNeed {
    /// Devices.
    pub count: u32,
    /// Memory each device must have, MB; for one device, the memory of a
    /// share of it.
    pub memory_mb: Option<u64>,
}

impl GpuNeed {
    /// The memory of a share, MB: one GPU asked for with `gpu_memory_mb`
    /// may share a device with others; none for whole devices.
    pub fn share_mb(&self) -> Option<u64> {
        if self.count == 1 {
            self.memory_mb
        } else {
            None
        }
    }
}

impl ReadyQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a task of `lane` that needs `gpus`; adding one that is already
    /// queued changes nothing.
    pub fn push(&mut self, lane: Lane, priority: u8, id: TaskId, gpus: GpuNeed) {
        let index = lane as usize;
        if self.lanes.len() <= index {
            self.lanes.resize_with(index + 1, Tasks::default);
        }
        let tasks = &mut self.lanes[index];
        let key = (Reverse(priority), id);
        if gpus.count == 0 {
            tasks.cpu.insert(key);
        } else {
            tasks.gpu.insert(key, gpus);
        }
    }

    /// Takes the task that comes next, whatever it needs, and what it
    /// needs: [`ReadyQueue::pop_placeable`] with every lane open and every
    /// need met.
    pub fn pop(&mut self) -> Option<(TaskId, GpuNeed)> {
        self.pop_placeable(|_| true, |_| true)
    }

    /// Takes the next task of an `open` lane that can run now, and what it
    /// needs; `fits` says whether a GPU need can be met by the free devices
    /// (see the module's rules).
    pub fn pop_placeable(
        &mut self,
        open: impl Fn(Lane) -> bool,
        fits: impl Fn(GpuNeed) -> bool,
    ) -> Option<(TaskId, GpuNeed)> {
        if let [only] = self.lanes.as_mut_slice() {
            // One queue, the common case: no lanes to compare.
            return if open(0) { only.pop(fits) } else { None };
        }
        let mut cpu: Option<(Key, usize)> = None;
        let mut gpu: Option<(Key, GpuNeed, usize)> = None;
        for (index, tasks) in self.lanes.iter().enumerate() {
            if tasks.cpu.is_empty() && tasks.gpu.is_empty() {
                continue;
            }
            if !open(Lane::try_from(index).unwrap_or(Lane::MAX)) {
                continue;
            }
            if let Some(key) = tasks.cpu.first()
                && cpu.is_none_or(|(best, _)| *key < best)
            {
                cpu = Some((*key, index));
            }
            if let Some((key, need)) = tasks.gpu.first_key_value()
                && gpu.is_none_or(|(best, _, _)| *key < best)
            {
                gpu = Some((*key, *need, index));
            }
        }
        // Only the first GPU task of the open lanes may take devices.
        let gpu = gpu.filter(|(_, need, _)| fits(*need));
        match (cpu, gpu) {
            (Some((cpu_key, _)), Some((gpu_key, need, index))) if gpu_key < cpu_key => {
                self.lanes[index].gpu.remove(&gpu_key);
                Some((gpu_key.1, need))
            }
            (None, Some((key, need, index))) => {
                self.lanes[index].gpu.remove(&key);
                Some((key.1, need))
            }
            (Some((key, index)), _) => {
                self.lanes[index].cpu.remove(&key);
                Some((key.1, GpuNeed::default()))
            }
            (None, None) => None,
        }
    }

    /// Removes a queued task; false when it was not queued.
    pub fn remove(&mut self, lane: Lane, priority: u8, id: TaskId) -> bool {
        let Some(tasks) = self.lanes.get_mut(lane as usize) else {
            return false;
        };
        let key = (Reverse(priority), id);
        tasks.cpu.remove(&key) || tasks.gpu.remove(&key).is_some()
    }

    /// Number of queued tasks.
    pub fn len(&self) -> usize {
        self.lanes.iter().map(|t| t.cpu.len() + t.gpu.len()).sum()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lanes
            .iter()
            .all(|t| t.cpu.is_empty() && t.gpu.is_empty())
    }

    /// Queued ids in the order they would run if nothing waited for GPUs
    /// and every lane were open, merged lazily from every lane and both
    /// kinds (no copy, stops where the caller does).
    pub fn ordered(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.ordered_where(|_| true)
    }

    /// [`ReadyQueue::ordered`] over the lanes `which` names only.
    pub fn ordered_where(&self, which: impl Fn(Lane) -> bool) -> impl Iterator<Item = TaskId> + '_ {
        let mut lanes: Vec<_> = self
            .lanes
            .iter()
            .enumerate()
            .filter(|(index, _)| which(Lane::try_from(*index).unwrap_or(Lane::MAX)))
            .map(|(_, tasks)| tasks.ordered().peekable())
            .collect();
        std::iter::from_fn(move || {
            let next = lanes
                .iter_mut()
                .enumerate()
                .filter_map(|(index, lane)| lane.peek().map(|key| (*key, index)))
                .min()?;
            lanes[next.1].next().map(|(_, id)| id)
        })
    }

    /// Queued ids of `lane` in the order they would run if nothing waited
    /// for GPUs.
    pub fn ordered_in(&self, lane: Lane) -> impl Iterator<Item = TaskId> + '_ {
        self.lanes
            .get(lane as usize)
            .into_iter()
            .flat_map(Tasks::ordered)
            .map(|(_, id)| id)
    }

    /// Queued ids in the order they would run if nothing waited for GPUs.
    pub fn iter(&self) -> impl Iterator<Item = TaskId> + '_ {
        let mut keys: Vec<Key> = self
            .lanes
            .iter()
            .flat_map(|t| t.cpu.iter().chain(t.gpu.keys()))
            .copied()
            .collect();
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
        queue.push(0, 5, TaskId(1), GpuNeed::default());
        queue.push(0, 9, TaskId(2), GpuNeed::default());
        queue.push(0, 5, TaskId(3), GpuNeed::default());
        queue.push(0, 0, TaskId(4), GpuNeed::default());
        queue.push(0, 9, TaskId(5), GpuNeed::default());
        let order: Vec<u64> = std::iter::from_fn(|| queue.pop())
            .map(|(id, _)| id.0)
            .collect();
        assert_eq!(order, vec![2, 5, 1, 3, 4]);
    }

    #[test]
    fn a_returning_task_keeps_its_place() {
        let mut queue = ReadyQueue::new();
        queue.push(0, 5, TaskId(10), GpuNeed::default());
        queue.push(0, 5, TaskId(11), GpuNeed::default());
        queue.push(0, 5, TaskId(3), GpuNeed::default());
        assert_eq!(queue.pop(), Some((TaskId(3), GpuNeed::default())));
    }

    #[test]
    fn remove_takes_out_only_that_task() {
        let mut queue = ReadyQueue::new();
        queue.push(0, 5, TaskId(1), GpuNeed::default());
        queue.push(0, 5, TaskId(2), GpuNeed::default());
        assert!(queue.remove(0, 5, TaskId(1)));
        assert!(!queue.remove(0, 5, TaskId(1)));
        assert!(!queue.remove(0, 4, TaskId(2)));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.iter().collect::<Vec<_>>(), vec![TaskId(2)]);
    }

    #[test]
    fn gpu_tasks_wait_for_devices_without_blocking_cpu_tasks_or_being_starved() {
        let mut queue = ReadyQueue::new();
        queue.push(0, 5, TaskId(1), need(2));
        queue.push(0, 5, TaskId(2), need(1));
        queue.push(0, 5, TaskId(3), GpuNeed::default());
        queue.push(0, 5, TaskId(4), GpuNeed::default());
        // One GPU free: task 1 needs two, so it waits; task 2 (one GPU)
        // must not overtake it; the CPU tasks run.
        assert_eq!(
            queue.pop_placeable(|_| true, free(1)),
            Some((TaskId(3), need(0)))
        );
        assert_eq!(
            queue.pop_placeable(|_| true, free(1)),
            Some((TaskId(4), need(0)))
        );
        assert_eq!(queue.pop_placeable(|_| true, free(1)), None);
        // Two free: task 1 first, then task 2.
        assert_eq!(
            queue.pop_placeable(|_| true, free(2)),
            Some((TaskId(1), need(2)))
        );
        assert_eq!(
            queue.pop_placeable(|_| true, free(1)),
            Some((TaskId(2), need(1)))
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn placeable_order_is_priority_then_arrival_across_both_kinds() {
        let mut queue = ReadyQueue::new();
        queue.push(0, 5, TaskId(1), GpuNeed::default());
        queue.push(0, 9, TaskId(2), need(1));
        queue.push(0, 5, TaskId(3), need(1));
        assert_eq!(
            queue.pop_placeable(|_| true, free(4)),
            Some((TaskId(2), need(1)))
        );
        assert_eq!(
            queue.pop_placeable(|_| true, free(4)),
            Some((TaskId(1), need(0)))
        );
        assert_eq!(queue.iter().collect::<Vec<_>>(), vec![TaskId(3)]);
        assert!(queue.remove(0, 5, TaskId(3)));
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn a_closed_lane_gives_nothing_and_holds_back_nothing() {
        let mut queue = ReadyQueue::new();
        queue.push(1, 9, TaskId(1), GpuNeed::default());
        queue.push(1, 9, TaskId(2), need(1));
        queue.push(0, 5, TaskId(3), need(1));
        queue.push(2, 0, TaskId(4), GpuNeed::default());
        let open = |lane: Lane| lane != 1;
        // Lane 1's GPU task comes first but its lane is closed, so the
        // default lane's GPU task may take the device.
        assert_eq!(
            queue.pop_placeable(open, free(1)),
            Some((TaskId(3), need(1)))
        );
        assert_eq!(
            queue.pop_placeable(open, free(1)),
            Some((TaskId(4), need(0)))
        );
        assert_eq!(queue.pop_placeable(open, free(1)), None);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.ordered().collect::<Vec<_>>(), [TaskId(1), TaskId(2)]);
        assert_eq!(
            queue.ordered_in(1).collect::<Vec<_>>(),
            [TaskId(1), TaskId(2)]
        );
        assert_eq!(queue.pop(), Some((TaskId(1), need(0))));
        assert!(!queue.remove(0, 9, TaskId(2)), "another lane");
        assert!(queue.remove(1, 9, TaskId(2)));
        assert!(queue.is_empty());
    }

    #[test]
    fn ordered_merges_both_kinds_like_iter() {
        let mut queue = ReadyQueue::new();
        queue.push(0, 5, TaskId(4), need(1));
        queue.push(3, 5, TaskId(1), GpuNeed::default());
        queue.push(0, 9, TaskId(7), GpuNeed::default());
        queue.push(0, 9, TaskId(2), need(2));
        queue.push(0, 0, TaskId(3), GpuNeed::default());
        let lazy: Vec<TaskId> = queue.ordered().collect();
        assert_eq!(lazy, queue.iter().collect::<Vec<_>>());
        assert_eq!(lazy, [2, 7, 1, 4, 3].map(TaskId));
    }
}
