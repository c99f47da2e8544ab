//! What readers ask the scheduler: records, listings, counts and workers.
//! The lock is held only to find what was asked for and clone shared
//! pointers or small summaries; copies are made after it is released.

use std::sync::Arc;
use std::time::Instant;

use super::{
    BrokerRefusals, LatencyBuckets, NameTotals, Scheduler, SchedulerStats, StatusCounts,
    StorageStatus, TaskQuery, TaskSort, Waiting, WorkerInfo,
};
use crate::model::{TaskId, TaskRecord};

impl Scheduler {
    /// The task's current record (copied after the lock is released).
    pub fn task(&self, id: TaskId) -> Option<TaskRecord> {
        self.task_shared(id)
            .map(|record| TaskRecord::clone(&record))
    }

    /// The task's current record, shared: no copy at all.
    pub fn task_shared(&self, id: TaskId) -> Option<Arc<TaskRecord>> {
        let core = self.inner.core.lock();
        core.tasks.get(&id).map(|entry| Arc::clone(&entry.record))
    }

    /// The current records of `ids`, in order (none for unknown ids), taken
    /// under one short lock that only clones shared pointers.
    pub fn records(&self, ids: &[TaskId]) -> Vec<Option<Arc<TaskRecord>>> {
        let core = self.inner.core.lock();
        ids.iter()
            .map(|id| core.tasks.get(id).map(|entry| Arc::clone(&entry.record)))
            .collect()
    }

    /// Tasks matching a query (copied after the lock is released).
    pub fn list(&self, query: &TaskQuery) -> Vec<TaskRecord> {
        self.list_shared(query)
            .iter()
            .map(|record| TaskRecord::clone(record))
            .collect()
    }

    /// Tasks matching a query, shared: the lock is held for the scan alone
    /// and no record is copied.
    pub fn list_shared(&self, query: &TaskQuery) -> Vec<Arc<TaskRecord>> {
        let core = self.inner.core.lock();
        query.select(core.tasks.values().map(|entry| &entry.record))
    }

    /// One page of the tasks matching a query, in its sort, and how many
    /// match in all. Sorted by id, the lock is held for the scan up to the
    /// page (and the count comes from the status counts unless a name is
    /// asked for); sorted by anything else, it is held to clone the
    /// matches' shared pointers, and the sort runs after it is released.
    pub fn list_page(&self, query: &TaskQuery) -> (Vec<Arc<TaskRecord>>, usize) {
        if query.sort == TaskSort::Id {
            let core = self.inner.core.lock();
            let page = query.select(core.tasks.values().map(|entry| &entry.record));
            let total = match (&query.name, query.status) {
                (None, None) => core.tasks.len(),
                (None, Some(status)) => core.counts()[status.index()],
                (Some(_), _) => core
                    .tasks
                    .values()
                    .filter(|entry| query.matches(&entry.record))
                    .count(),
            };
            return (page, total);
        }
        let matched: Vec<Arc<TaskRecord>> = {
            let core = self.inner.core.lock();
            core.tasks
                .values()
                .filter(|entry| query.matches(&entry.record))
                .map(|entry| Arc::clone(&entry.record))
                .collect()
        };
        let total = matched.len();
        (query.page_sorted(matched, crate::model::now_us()), total)
    }

    /// Why each of these tasks waits (none for one that runs, finished or
    /// is unknown); the lock is held for one pass over the ready queue,
    /// which stops at the last of them.
    pub fn waiting(&self, ids: &[TaskId]) -> Vec<Option<Waiting>> {
        let workers = self.inner.transport.worker_processes(Instant::now());
        self.inner
            .core
            .lock()
            .waiting(ids, crate::model::now_us(), workers)
    }

    /// Tasks in memory that depend on `id`, lowest id first.
    pub fn dependents(&self, id: TaskId) -> Vec<TaskId> {
        self.inner.core.lock().dependents_of(id)
    }

    /// Queued task ids in the order they will run.
    pub fn queued(&self) -> Vec<TaskId> {
        self.inner.core.lock().queue.iter().collect()
    }

    /// Each live worker's state and counts.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let core = self.inner.core.lock();
        let now = Instant::now();
        let lease = self.inner.transport.worker_lease();
        core.workers
            .iter()
            .map(|(id, slot)| WorkerInfo::from_slot(*id, slot))
            .chain(
                core.remote
                    .iter()
                    .map(|(id, remote)| WorkerInfo::from_remote(*id, remote, now, lease)),
            )
            .collect()
    }

    /// Counts, worker load, latency percentiles and throughput.
    pub fn stats(&self) -> SchedulerStats {
        let (counts, load, paused) = {
            let core = self.inner.core.lock();
            (core.counts(), self.inner.transport.load(&core), core.paused)
        };
        let metrics = self.inner.metrics.lock().report(Instant::now());
        SchedulerStats {
            counts: StatusCounts::from_array(counts),
            queue_depth: load.queue_depth,
            workers_total: load.total,
            workers_busy: load.busy,
            workers_idle: load.total.saturating_sub(load.busy),
            workers_target: load.target,
            uptime_s: self.inner.started.elapsed().as_secs_f64(),
            paused,
            metrics,
        }
    }

    /// Each task name's lifecycle counters since this process started,
    /// sorted by name: they only grow (finished tasks dropped by the
    /// retention stay counted). The lock is held to copy a few kilobytes.
    pub fn totals(&self) -> Vec<NameTotals> {
        let totals = self.inner.core.lock().totals();
        let mut totals: Vec<NameTotals> = totals
            .iter()
            .map(|(name, counts)| NameTotals::new(name, *counts))
            .collect();
        totals.sort_by(|a, b| a.name.cmp(&b.name));
        totals
    }

    /// Broker messages refused for a missing or wrong signature since
    /// this process started, by the scheduler and by its worker processes
    /// (none without a broker).
    pub fn broker_refusals(&self) -> Option<BrokerRefusals> {
        self.inner
            .transport
            .is_external()
            .then(|| self.inner.core.lock().refused)
    }

    /// Submission-to-completion latency of finished tasks as cumulative
    /// counts at each bound (microseconds).
    pub fn latency_buckets(&self, bounds_us: &[u64]) -> LatencyBuckets {
        self.inner.metrics.lock().latency_buckets(bounds_us)
    }

    /// Whether the store's writes succeed (none without a store).
    pub fn storage_status(&self) -> Option<StorageStatus> {
        self.inner.store.as_ref().map(|store| store.status())
    }

    /// The database file, if tasks are persisted.
    pub fn db_path(&self) -> Option<&std::path::Path> {
        self.inner.store.as_ref().map(|store| store.path())
    }
}
