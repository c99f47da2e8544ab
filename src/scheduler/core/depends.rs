//! Dependencies between tasks: which queued tasks still wait for others,
//! what the end of a dependency does to its dependents, and retry with
//! cascade.
//!
//! Rules:
//! - a task depends only on tasks accepted before it, so there are no
//!   cycles;
//! - it may start only once every dependency completed (with
//!   `on_dependency_failure: run`, once every dependency finished, however
//!   it ended); until then it stays out of the ready queue and
//!   [`Core::unmet`] holds the dependencies it waits for;
//! - a dependency that fails for good or is cancelled cancels the waiting
//!   dependents that do not run anyway, and theirs in turn, each naming the
//!   dependency that took it down ([`TaskRecord::cancelled_by`]);
//! - a dependency no longer in the history (dropped by the retention, which
//!   spares the dependencies of unfinished tasks) counts as completed;
//! - a retried dependency is waited for again by dependents still waiting;
//!   a retry with cascade also queues again the dependents a dependency
//!   took down with it.

use std::collections::HashSet;
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::{Change, Core, RequestError, Settled};
use crate::model::{
    Dependency, EventKind, OnDependencyFailure, TaskId, TaskRecord, TaskSpec, TaskStatus,
};
use crate::scheduler::errors::{DependencyError, MAX_DEPENDENCIES};

/// How one dependency stands for a task that depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Done as far as the dependent is concerned.
    Met,
    /// Not finished yet.
    Pending,
    /// Failed for good or cancelled, and the dependent does not run anyway.
    Failed(TaskStatus),
}

/// Checks the batch positions named in `specs` (each must be an earlier
/// task of the batch) before ids are handed out.
pub fn check_batch_positions(specs: &[TaskSpec]) -> Result<(), (usize, DependencyError)> {
    for (index, spec) in specs.iter().enumerate() {
        if spec.depends_on.len() > MAX_DEPENDENCIES {
            return Err((index, DependencyError::TooMany(spec.depends_on.len())));
        }
        for dependency in &spec.depends_on {
            if let Dependency::Batch { batch_index } = *dependency
                && batch_index >= index
            {
                return Err((index, DependencyError::BatchIndex { batch_index }));
            }
        }
    }
    Ok(())
}

/// Turns the batch positions of `specs` into the ids the batch got (from
/// `first`, checked by [`check_batch_positions`]) and drops repeated
/// dependencies.
pub fn resolve_batch_positions(specs: &mut [TaskSpec], first: TaskId) {
    for spec in specs {
        let mut seen = HashSet::with_capacity(spec.depends_on.len());
        spec.depends_on = spec
            .depends_on
            .iter()
            .map(|dependency| match *dependency {
                Dependency::Task(id) => id,
                Dependency::Batch { batch_index } => TaskId(first.0 + batch_index as u64),
            })
            .filter(|id| seen.insert(*id))
            .map(Dependency::Task)
            .collect();
    }
}

impl Core {
    /// Checks the dependencies of tasks about to be accepted with ids from
    /// `first` on, in order: each must be a known earlier task (or an
    /// earlier one of the batch) that has not already failed or been
    /// cancelled, unless the task runs anyway.
    pub fn check_dependencies(
        &self,
        specs: &[TaskSpec],
        first: TaskId,
    ) -> Result<(), (usize, DependencyError)> {
        for (index, spec) in specs.iter().enumerate() {
            let own = TaskId(first.0 + index as u64);
            for dependency in spec.dependency_ids() {
                if (first..own).contains(&dependency) {
                    // An earlier task of the same batch.
                    continue;
                }
                let Some(entry) = self.tasks.get(&dependency) else {
                    return Err((index, DependencyError::Unknown(dependency)));
                };
                if dependency >= own {
                    return Err((index, DependencyError::NotEarlier(dependency)));
                }
                let status = entry.record.status;
                if spec.on_dependency_failure == OnDependencyFailure::Cancel
                    && matches!(status, TaskStatus::Failed | TaskStatus::Cancelled)
                {
                    return Err((
                        index,
                        DependencyError::AlreadyFailed {
                            id: dependency,
                            status,
                        },
                    ));
                }
            }
        }
        Ok(())
    }

    /// How `dependency` stands for a task with `policy`.
    fn standing(&self, dependency: TaskId, policy: OnDependencyFailure) -> Standing {
        let Some(entry) = self.tasks.get(&dependency) else {
            return Standing::Met;
        };
        match entry.record.status {
            TaskStatus::Completed => Standing::Met,
            status @ (TaskStatus::Failed | TaskStatus::Cancelled) => match policy {
                OnDependencyFailure::Run => Standing::Met,
                OnDependencyFailure::Cancel => Standing::Failed(status),
            },
            TaskStatus::Queued | TaskStatus::Running | TaskStatus::Retrying => Standing::Pending,
        }
    }

    /// The dependencies of `spec` the task still waits for, or the first
    /// one that failed (with its status) when the task does not run anyway.
    fn pending_of(&self, spec: &TaskSpec) -> Result<HashSet<TaskId>, (TaskId, TaskStatus)> {
        let policy = spec.on_dependency_failure;
        let mut pending = HashSet::new();
        for dependency in spec.dependency_ids() {
            match self.standing(dependency, policy) {
                Standing::Met => {}
                Standing::Pending => {
                    pending.insert(dependency);
                }
                Standing::Failed(status) => return Err((dependency, status)),
            }
        }
        Ok(pending)
    }

    /// Records the edges from the dependencies of `record` to it.
    fn add_dependents(&mut self, record: &TaskRecord) {
        for dependency in record.spec.dependency_ids() {
            self.dependents
                .entry(dependency)
                .or_default()
                .push(record.id);
        }
    }

    /// Links a task just accepted, or recovered as waiting, to its
    /// dependencies. Returns true when it may not start yet (it is then
    /// out of the ready queue); a dependency that already failed cancels
    /// it, and the change is added to `cancelled`.
    pub(super) fn link_waiting(
        &mut self,
        id: TaskId,
        now_us: i64,
        cancelled: &mut Vec<(Change, Vec<Sender<TaskId>>)>,
    ) -> bool {
        let Some(entry) = self.tasks.get(&id) else {
            return false;
        };
        if entry.record.spec.depends_on.is_empty() {
            return false;
        }
        let record = Arc::clone(&entry.record);
        match self.pending_of(&record.spec) {
            Ok(pending) if pending.is_empty() => false,
            Ok(pending) => {
                let lane = self.queues.lane_of(&record.spec);
                self.queue.remove(lane, record.spec.priority, id);
                self.unmet.insert(id, pending);
                true
            }
            Err((dependency, status)) => {
                cancelled.extend(self.cancel_for_dependency(id, dependency, status, now_us));
                true
            }
        }
    }

    /// Registers the dependency edges of every task recovered at start and
    /// keeps the waiting ones out of the ready queue (in id order, so a
    /// dependency cancelled here takes its dependents with it). Returns the
    /// cancellations.
    pub(super) fn link_recovered(&mut self, now_us: i64) -> Vec<Change> {
        let with_dependencies: Vec<Arc<TaskRecord>> = self
            .tasks
            .values()
            .filter(|entry| !entry.record.spec.depends_on.is_empty())
            .map(|entry| Arc::clone(&entry.record))
            .collect();
        let mut cancelled = Vec::new();
        for record in with_dependencies {
            self.add_dependents(&record);
            let waiting = matches!(record.status, TaskStatus::Queued | TaskStatus::Retrying)
                && self.tasks.get(&record.id).is_some_and(|e| e.run.is_none());
            if waiting {
                self.link_waiting(record.id, now_us, &mut cancelled);
            }
        }
        cancelled.into_iter().map(|(change, _)| change).collect()
    }

    /// Links tasks just accepted (see [`Core::link_waiting`]).
    pub(super) fn link_accepted(
        &mut self,
        record: &TaskRecord,
        now_us: i64,
        cancelled: &mut Vec<(Change, Vec<Sender<TaskId>>)>,
    ) -> bool {
        if record.spec.depends_on.is_empty() {
            return false;
        }
        self.add_dependents(record);
        self.link_waiting(record.id, now_us, cancelled)
    }

    /// Cancels waiting task `id` because `dependency` ended as `status`.
    fn cancel_for_dependency(
        &mut self,
        id: TaskId,
        dependency: TaskId,
        status: TaskStatus,
        now_us: i64,
    ) -> Option<(Change, Vec<Sender<TaskId>>)> {
        let entry = self.tasks.get_mut(&id)?;
        if !matches!(
            entry.record.status,
            TaskStatus::Queued | TaskStatus::Retrying
        ) || entry.run.is_some()
        {
            return None;
        }
        self.unmet.remove(&id);
        let lane = self.queues.lane_of(&entry.record.spec);
        self.queue.remove(lane, entry.record.spec.priority, id);
        let record = Arc::make_mut(&mut entry.record);
        record.finished_at_us = Some(now_us);
        record.retry_at_us = None;
        record.held = false;
        record.cancelled_by = Some(dependency);
        record.error = Some(format!(
            "cancelled: its dependency, task {dependency}, {status}"
        ));
        Self::set_status(
            &mut self.counts,
            &mut self.queues,
            record,
            TaskStatus::Cancelled,
        );
        self.tally
            .add(entry.name_slot, super::TaskCounter::Cancelled);
        let change = Change {
            kind: EventKind::Cancelled,
            record: Arc::clone(&entry.record),
        };
        self.finished.push_back((id, now_us));
        Some((change, self.waiters.remove(&id).unwrap_or_default()))
    }

    /// Carries the end of task `id` (final `status`) to the tasks waiting
    /// for it: they may become ready (`settled.unblocked`), or are
    /// cancelled, transitively (`settled.cascade`).
    pub(super) fn dependency_ended(
        &mut self,
        id: TaskId,
        status: TaskStatus,
        now_us: i64,
        settled: &mut Settled,
    ) {
        // Most tasks take part in no dependency: no hashing for them.
        if self.dependents.is_empty() {
            if !self.unmet.is_empty() {
                self.unmet.remove(&id);
            }
            return;
        }
        self.unmet.remove(&id);
        let mut ended = vec![(id, status)];
        while let Some((dependency, status)) = ended.pop() {
            let Some(dependents) = self.dependents.get(&dependency).cloned() else {
                continue;
            };
            for dependent in dependents {
                let Some(pending) = self.unmet.get_mut(&dependent) else {
                    continue;
                };
                let policy = self
                    .tasks
                    .get(&dependent)
                    .map_or(OnDependencyFailure::Cancel, |e| {
                        e.record.spec.on_dependency_failure
                    });
                if status == TaskStatus::Completed || policy == OnDependencyFailure::Run {
                    if pending.remove(&dependency) && pending.is_empty() {
                        self.unmet.remove(&dependent);
                        settled.unblocked.push(dependent);
                    }
                } else if let Some(cancelled) =
                    self.cancel_for_dependency(dependent, dependency, status, now_us)
                {
                    settled.cascade.push(cancelled);
                    ended.push((dependent, TaskStatus::Cancelled));
                }
            }
        }
    }

    /// Queues failed or cancelled task `id` again (see [`Core::retry`]);
    /// with `cascade`, also the dependents that a dependency's failure
    /// cancelled and that can now wait for it again. Returns the changes
    /// in order (dependencies before dependents).
    pub fn retry_tasks(&mut self, id: TaskId, cascade: bool) -> Result<Vec<Change>, RequestError> {
        let mut changes = vec![self.retry(id)?];
        if !cascade {
            return Ok(changes);
        }
        let mut retried = vec![id];
        while let Some(parent) = retried.pop() {
            let Some(dependents) = self.dependents.get(&parent).cloned() else {
                continue;
            };
            for dependent in dependents {
                let taken_down = self.tasks.get(&dependent).is_some_and(|entry| {
                    entry.record.status == TaskStatus::Cancelled
                        && entry.record.cancelled_by.is_some()
                });
                if taken_down && let Ok(change) = self.retry(dependent) {
                    changes.push(change);
                    retried.push(dependent);
                }
            }
        }
        Ok(changes)
    }

    /// Second half of a retry: the task waits again for dependencies not
    /// yet met, and dependents still waiting wait for it again. Refuses a
    /// task whose dependency failed (unless it runs anyway).
    pub(super) fn relink_retried(&mut self, id: TaskId) -> Result<(), RequestError> {
        let Some(entry) = self.tasks.get(&id) else {
            return Err(RequestError::NotFound(id));
        };
        let record = Arc::clone(&entry.record);
        let pending = self
            .pending_of(&record.spec)
            .map_err(|(dependency, status)| RequestError::DependencyFailed {
                id,
                dependency,
                status,
            })?;
        if !pending.is_empty() {
            self.unmet.insert(id, pending);
        }
        if let Some(dependents) = self.dependents.get(&id) {
            for dependent in dependents {
                if let Some(pending) = self.unmet.get_mut(dependent) {
                    pending.insert(id);
                }
            }
        }
        Ok(())
    }

    /// Whether task `id` waits for dependencies.
    pub(super) fn waits_for_dependencies(&self, id: TaskId) -> bool {
        !self.unmet.is_empty() && self.unmet.contains_key(&id)
    }

    /// Tasks in memory that depend on `id`, lowest id first.
    pub fn dependents_of(&self, id: TaskId) -> Vec<TaskId> {
        let mut dependents: Vec<TaskId> = self
            .dependents
            .get(&id)
            .map(|list| {
                list.iter()
                    .copied()
                    .filter(|dependent| self.tasks.contains_key(dependent))
                    .collect()
            })
            .unwrap_or_default();
        dependents.sort_unstable();
        dependents.dedup();
        dependents
    }

    /// Forgets the edges from an evicted task.
    pub(super) fn forget_dependents(&mut self, id: TaskId) {
        self.dependents.remove(&id);
    }
}
