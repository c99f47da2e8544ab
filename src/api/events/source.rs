//! The hub thread: gathers what changed and appends it to the ring.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use rustc_hash::FxHashMap;
use serde_json::{Value, json};

use super::ring::{Payload, StreamKind};
use super::{Control, POLL, Shared, TICK};
use crate::api::handlers::ResourceSource;
use crate::api::views;
use crate::model::{TaskChange, TaskId, TaskRecord};
use crate::scheduler::Scheduler;

/// Most scheduler events taken per wake-up before publishing, so a flood
/// cannot keep the hub from its other work.
const DRAIN_AT_MOST: usize = 65_536;

/// Most task changes in one tick sent in full to followers without a task
/// filter; beyond, they get one `tasks` summary (at most 20 a second), so
/// the cost of a follower does not grow with the scheduler's throughput.
pub(super) const SUMMARY_ABOVE: usize = 64;

/// How often a new resource sample is looked for.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Task changes since the last publish, the newest per task, in the order
/// the tasks first changed.
#[derive(Default)]
struct Pending {
    order: Vec<TaskId>,
    latest: FxHashMap<TaskId, TaskChange>,
    /// Changes whose record did not match them yet, tried again at the next
    /// tick, each with the ticks it waited: a submission is told just
    /// before the scheduler takes the task in, and a record already newer
    /// than its change means the newer change is on its way (its own event
    /// then says what happened, with a kind that matches the record).
    deferred: Vec<(TaskChange, u8)>,
}

/// Ticks a change waits for a record that matches it; then it goes out
/// with the record there is (none: the task was removed meanwhile).
const DEFER_TICKS: u8 = 3;

impl Pending {
    fn add(&mut self, change: TaskChange) {
        match self.latest.entry(change.id) {
            Entry::Occupied(mut held) => {
                // Changes from different threads may arrive slightly out of
                // order; the record's version says which is newer.
                if change.version >= held.get().version {
                    held.insert(change);
                }
            }
            Entry::Vacant(slot) => {
                self.order.push(change.id);
                slot.insert(change);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty() && self.deferred.is_empty()
    }

    /// The changes as frames: each in full, with the task's current record,
    /// when there are at most [`SUMMARY_ABOVE`]; beyond, one summary for
    /// followers without a task filter, and each change for those that
    /// follow these tasks.
    fn take(
        &mut self,
        records: impl FnOnce(&[TaskId]) -> Vec<Option<Arc<TaskRecord>>>,
        into: &mut Vec<(StreamKind, Payload)>,
    ) {
        let mut waited: FxHashMap<TaskId, u8> = FxHashMap::default();
        for (change, ticks) in std::mem::take(&mut self.deferred) {
            // A newer change of the task, if any, stands for it.
            if !self.latest.contains_key(&change.id) {
                self.add(change);
            }
            waited.insert(change.id, ticks);
        }
        let changes: Vec<TaskChange> = self
            .order
            .drain(..)
            .filter_map(|id| self.latest.remove(&id))
            .collect();
        if changes.len() <= SUMMARY_ABOVE {
            let ids: Vec<TaskId> = changes.iter().map(|change| change.id).collect();
            for (change, record) in changes.iter().zip(records(&ids)) {
                let ticks = waited.get(&change.id).copied().unwrap_or(0) + 1;
                let matches = record
                    .as_ref()
                    .is_some_and(|record| record.version <= change.version);
                if !matches && ticks <= DEFER_TICKS {
                    self.deferred.push((*change, ticks));
                } else if let Some(record) = record {
                    into.push((StreamKind::Task, Payload::Task(change.kind, record)));
                }
            }
            return;
        }
        into.push((StreamKind::Task, Payload::Summary(summary(&changes))));
        into.extend(changes.into_iter().map(|change| {
            (
                StreamKind::Task,
                Payload::SummarizedTask(change.kind, change.id, change.status),
            )
        }));
    }
}

/// `{"changed": N, "statuses": {"completed": [[first, last], ...], ...}}`:
/// the ids of the changed tasks by their new status, as inclusive ranges
/// (tasks submitted together have consecutive ids, so this stays small).
fn summary(changes: &[TaskChange]) -> Value {
    let mut by_status: std::collections::BTreeMap<&'static str, Vec<u64>> =
        std::collections::BTreeMap::new();
    for change in changes {
        by_status
            .entry(change.status.as_str())
            .or_default()
            .push(change.id.0);
    }
    let statuses: serde_json::Map<String, Value> = by_status
        .into_iter()
        .map(|(status, mut ids)| {
            ids.sort_unstable();
            let mut ranges: Vec<[u64; 2]> = Vec::new();
            for id in ids {
                match ranges.last_mut() {
                    Some(range) if range[1] + 1 == id => range[1] = id,
                    _ => ranges.push([id, id]),
                }
            }
            (status.to_owned(), json!(ranges))
        })
        .collect();
    json!({ "changed": changes.len(), "statuses": statuses })
}

/// What was last sent about workers, queues and resources, to send only
/// changes.
#[derive(Default)]
struct Seen {
    workers: HashMap<String, Value>,
    queues: HashMap<String, Value>,
    sample_at_us: Option<i64>,
}

impl Seen {
    fn workers(&mut self, scheduler: &Scheduler, into: &mut Vec<(StreamKind, Payload)>) {
        let mut now: HashMap<String, Value> = HashMap::new();
        for mut worker in scheduler.workers() {
            // How long ago a worker process was heard from changes all the
            // time and is not news.
            worker.last_heard_ms = None;
            let name = worker.name.clone();
            let value = json!(worker);
            if self.workers.get(&name) != Some(&value) {
                into.push((
                    StreamKind::Worker,
                    Payload::Json(json!({ "worker": value })),
                ));
            }
            now.insert(name, value);
        }
        for (name, value) in &self.workers {
            if !now.contains_key(name) {
                into.push((
                    StreamKind::Worker,
                    Payload::Json(json!({ "worker": value, "gone": true })),
                ));
            }
        }
        self.workers = now;
    }

    fn queues(&mut self, scheduler: &Scheduler, into: &mut Vec<(StreamKind, Payload)>) {
        let mut now = HashMap::new();
        for queue in scheduler.queues() {
            let value = views::queue(&queue);
            if self.queues.get(&queue.name) != Some(&value) {
                into.push((StreamKind::Queue, Payload::Json(json!({ "queue": value }))));
            }
            now.insert(queue.name, value);
        }
        self.queues = now;
    }

    fn resources(&mut self, resources: &ResourceSource, into: &mut Vec<(StreamKind, Payload)>) {
        let Some(sample) = resources() else {
            return;
        };
        if self.sample_at_us != Some(sample.at_us) {
            self.sample_at_us = Some(sample.at_us);
            into.push((
                StreamKind::Resources,
                Payload::Json(views::resources(&sample)),
            ));
        }
    }
}

/// The hub thread's loop; returns on [`Control::Stop`].
pub(super) fn run(
    shared: &Shared,
    scheduler: &Scheduler,
    resources: &ResourceSource,
    control: &Receiver<Control>,
) {
    let mut events: Option<Receiver<TaskChange>> = None;
    let mut pending = Pending::default();
    let mut seen = Seen::default();
    let mut items = Vec::new();
    // When task changes were last taken: the next take waits a tick.
    let mut last_take: Option<Instant> = None;
    let mut next_poll = Instant::now();
    let mut next_sample = Instant::now();
    // While task changes keep coming the hub takes them once a tick rather
    // than waking for each (a busy scheduler sends a hundred thousand a
    // second); after a quiet tick it waits on the channel again, so the
    // first change goes out at once.
    let mut busy = false;
    loop {
        let now = Instant::now();
        let publish_at = last_take.map_or(now, |at| at + TICK);
        let polling = busy || !pending.is_empty();
        let wake_at = match (&events, polling) {
            (None, _) => now + Duration::from_secs(3600),
            (Some(_), false) => next_poll,
            (Some(_), true) => next_poll.min(publish_at),
        };
        let timeout = wake_at.saturating_duration_since(now);
        let never = crossbeam_channel::never();
        let waited_on = match &events {
            Some(rx) if !polling => rx,
            _ => &never,
        };
        select! {
            recv(control) -> message => match message {
                Ok(Control::Record(subscription)) => events = Some(subscription),
                Ok(Control::Stop) | Err(_) => return,
            },
            recv(waited_on) -> event => {
                if let Ok(event) = event {
                    pending.add(event);
                }
            },
            default(timeout) => {},
        }
        let Some(rx) = &events else { continue };
        for event in rx.try_iter().take(DRAIN_AT_MOST) {
            pending.add(event);
        }
        let now = Instant::now();
        if last_take.is_none_or(|at| now >= at + TICK) {
            busy = !pending.is_empty();
            if busy {
                last_take = Some(now);
                pending.take(|ids| scheduler.records(ids), &mut items);
            }
        }
        if now >= next_poll {
            next_poll = now + POLL;
            seen.workers(scheduler, &mut items);
            seen.queues(scheduler, &mut items);
            if now >= next_sample {
                next_sample = now + SAMPLE_EVERY;
                seen.resources(resources, &mut items);
            }
        }
        if !items.is_empty() {
            let mut state = shared.state.lock();
            state.ring.push(std::mem::take(&mut items));
            drop(state);
            shared.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, TaskSpec, TaskStatus};

    fn change(id: u64, status: TaskStatus, version: u64) -> TaskChange {
        TaskChange {
            seq: version,
            kind: EventKind::Submitted,
            id: TaskId(id),
            status,
            version,
        }
    }

    /// Records as the scheduler would give them: every task completed, but
    /// task 2 is gone.
    fn records(ids: &[TaskId]) -> Vec<Option<Arc<TaskRecord>>> {
        ids.iter()
            .map(|&id| {
                let mut record = TaskRecord::new(id, TaskSpec::new("noop", vec![]), 0);
                record.status = TaskStatus::Completed;
                (id != TaskId(2)).then(|| Arc::new(record))
            })
            .collect()
    }

    fn records_without_3(ids: &[TaskId]) -> Vec<Option<Arc<TaskRecord>>> {
        ids.iter().map(|_| None).collect()
    }

    #[test]
    fn a_few_changes_go_in_full_many_as_ranges_by_status() {
        let mut pending = Pending::default();
        pending.add(change(1, TaskStatus::Queued, 1));
        pending.add(change(2, TaskStatus::Queued, 2));
        pending.add(change(1, TaskStatus::Completed, 3));
        pending.add(change(1, TaskStatus::Running, 2));
        let mut items = Vec::new();
        pending.take(records, &mut items);
        assert_eq!(items.len(), 1, "task 1 once; task 2 is not there");
        assert!(matches!(
            &items[0].1,
            Payload::Task(EventKind::Submitted, r) if r.id == TaskId(1) && r.status == TaskStatus::Completed
        ));
        // A submission told before the scheduler took the task in is tried
        // again at the next ticks, then given up.
        assert!(!pending.is_empty(), "task 2 waits for its record");
        for _ in 0..DEFER_TICKS - 1 {
            let mut items = Vec::new();
            pending.take(records, &mut items);
            assert!(items.is_empty());
        }
        let mut items = Vec::new();
        pending.take(
            |ids| {
                ids.iter()
                    .map(|&id| {
                        Some(Arc::new(TaskRecord::new(
                            id,
                            TaskSpec::new("noop", vec![]),
                            0,
                        )))
                    })
                    .collect()
            },
            &mut items,
        );
        assert!(matches!(&items[0].1, Payload::Task(EventKind::Submitted, r) if r.id == TaskId(2)));
        pending.add(change(3, TaskStatus::Queued, 9));
        for _ in 0..=DEFER_TICKS {
            pending.take(records_without_3, &mut Vec::new());
        }
        assert!(pending.is_empty(), "given up");

        // A record newer than its change waits for the newer change, which
        // then goes out in its place; alone, it goes out after a while.
        let newer = |ids: &[TaskId]| -> Vec<Option<Arc<TaskRecord>>> {
            ids.iter()
                .map(|&id| {
                    let mut record = TaskRecord::new(id, TaskSpec::new("noop", vec![]), 0);
                    record.version = 5;
                    Some(Arc::new(record))
                })
                .collect()
        };
        pending.add(change(4, TaskStatus::Running, 4));
        let mut items = Vec::new();
        pending.take(newer, &mut items);
        assert!(
            items.is_empty(),
            "not with a record its change does not match"
        );
        let mut completed = change(4, TaskStatus::Completed, 5);
        completed.kind = EventKind::Completed;
        pending.add(completed);
        pending.take(newer, &mut items);
        assert_eq!(items.len(), 1);
        assert!(matches!(
            &items[0].1,
            Payload::Task(EventKind::Completed, _)
        ));
        pending.add(change(6, TaskStatus::Running, 4));
        let mut items = Vec::new();
        for _ in 0..=DEFER_TICKS {
            pending.take(newer, &mut items);
        }
        assert_eq!(
            items.len(),
            1,
            "out after waiting, with the record there is"
        );
        assert!(pending.is_empty());

        let mut pending = Pending::default();
        for id in (1..=100).chain([200, 202]) {
            pending.add(change(id, TaskStatus::Completed, id));
        }
        for id in 101..=110 {
            pending.add(change(id, TaskStatus::Running, id));
        }
        let mut items = Vec::new();
        pending.take(|_| panic!("no records are read for a summary"), &mut items);
        assert_eq!(items.len(), 1 + 112, "a summary, then every change");
        let Payload::Summary(summary) = &items[0].1 else {
            panic!("a summary first");
        };
        assert_eq!(
            summary,
            &json!({
                "changed": 112,
                "statuses": {"completed": [[1, 100], [200, 200], [202, 202]], "running": [[101, 110]]}
            })
        );
        assert!(
            items[1..]
                .iter()
                .all(|(_, p)| matches!(p, Payload::SummarizedTask(..)))
        );
    }
}
