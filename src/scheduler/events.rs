//! Fan-out of lifecycle events to any number of subscribers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender, unbounded};
use parking_lot::Mutex;

use crate::model::{Event, EventKind, TaskChange, TaskRecord};

/// Subscribers of lifecycle events.
///
/// Publishing clones an `Arc` of the subscriber list under a short lock and
/// sends outside it; channels are unbounded, so a slow subscriber never
/// blocks the scheduler (it owns the backlog it leaves). A dropped receiver
/// is forgotten on the next publish.
#[derive(Default)]
pub struct EventBus {
    subscribers: Mutex<Arc<Vec<Subscriber>>>,
    count: AtomicUsize,
}

/// Called after events were sent to a subscriber, so it can wake up (the
/// window asks for a repaint). It must be cheap and must not block.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone)]
enum Subscriber {
    /// Gets each event with a share of the record.
    Events {
        tx: Sender<Event>,
        waker: Option<Waker>,
    },
    /// Gets each change without the record.
    Changes(Sender<TaskChange>),
}

impl Subscriber {
    /// Sends one transition; false when the receiver is gone.
    fn deliver(&self, seq: u64, kind: EventKind, record: &Arc<TaskRecord>) -> bool {
        match self {
            Self::Events { tx, waker } => {
                let event = Event {
                    seq,
                    kind,
                    task: Arc::clone(record),
                };
                if tx.send(event).is_err() {
                    return false;
                }
                if let Some(waker) = waker {
                    waker();
                }
                true
            }
            Self::Changes(tx) => tx.send(TaskChange::of(seq, kind, record)).is_ok(),
        }
    }

    fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Events { tx: a, .. }, Self::Events { tx: b, .. }) => a.same_channel(b),
            (Self::Changes(a), Self::Changes(b)) => a.same_channel(b),
            _ => false,
        }
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.count.load(Ordering::Relaxed))
            .finish()
    }
}

impl EventBus {
    /// A bus with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when somebody listens, so callers can skip building events.
    pub fn has_subscribers(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// A new receiver of every event published from now on; `waker`, when
    /// given, is called after each event sent to it.
    pub fn subscribe(&self, waker: Option<Waker>) -> Receiver<Event> {
        let (tx, rx) = unbounded();
        self.add(Subscriber::Events { tx, waker });
        rx
    }

    /// A new receiver of every transition from now on, without records.
    pub fn subscribe_changes(&self) -> Receiver<TaskChange> {
        let (tx, rx) = unbounded();
        self.add(Subscriber::Changes(tx));
        rx
    }

    fn add(&self, subscriber: Subscriber) {
        let mut subscribers = self.subscribers.lock();
        let mut list = Vec::clone(&subscribers);
        list.push(subscriber);
        self.count.store(list.len(), Ordering::Relaxed);
        *subscribers = Arc::new(list);
    }

    /// Sends transition number `seq` of `record` to every subscriber.
    pub fn publish(&self, seq: u64, kind: EventKind, record: &Arc<TaskRecord>) {
        let list = Arc::clone(&self.subscribers.lock());
        let gone: Vec<&Subscriber> = list
            .iter()
            .filter(|subscriber| !subscriber.deliver(seq, kind, record))
            .collect();
        if !gone.is_empty() {
            let mut subscribers = self.subscribers.lock();
            let kept: Vec<_> = subscribers
                .iter()
                .filter(|s| !gone.iter().any(|g| g.same(s)))
                .cloned()
                .collect();
            self.count.store(kept.len(), Ordering::Relaxed);
            *subscribers = Arc::new(kept);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TaskId, TaskSpec, TaskStatus};

    fn record(id: u64) -> Arc<TaskRecord> {
        Arc::new(TaskRecord::new(
            TaskId(id),
            TaskSpec::new("noop", vec![]),
            0,
        ))
    }

    #[test]
    fn every_subscriber_gets_every_event_and_dropped_ones_are_forgotten() {
        let bus = EventBus::new();
        assert!(!bus.has_subscribers());
        let woken = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&woken);
        let first = bus.subscribe(Some(Arc::new(move || {
            counter.fetch_add(1, Ordering::Relaxed);
        })));
        let second = bus.subscribe(None);
        bus.publish(1, EventKind::Submitted, &record(1));
        assert_eq!(first.try_recv().map(|e| e.seq).ok(), Some(1));
        assert_eq!(second.try_recv().map(|e| e.seq).ok(), Some(1));
        drop(second);
        bus.publish(2, EventKind::Submitted, &record(2));
        assert_eq!(first.try_recv().map(|e| e.seq).ok(), Some(2));
        assert_eq!(
            woken.load(Ordering::Relaxed),
            2,
            "the waker ran once per event"
        );
        assert!(bus.has_subscribers());
        drop(first);
        bus.publish(3, EventKind::Submitted, &record(3));
        assert!(!bus.has_subscribers());
    }

    #[test]
    fn change_subscribers_get_the_transition_without_a_share_of_the_record() {
        let bus = EventBus::new();
        let changes = bus.subscribe_changes();
        let events = bus.subscribe(None);
        let task = record(7);
        bus.publish(5, EventKind::Submitted, &task);
        assert_eq!(
            changes.try_recv().ok(),
            Some(TaskChange {
                seq: 5,
                kind: EventKind::Submitted,
                id: TaskId(7),
                status: TaskStatus::Queued,
                version: task.version,
            })
        );
        assert_eq!(Arc::strong_count(&task), 2, "only the full event holds it");
        drop(events);
        bus.publish(6, EventKind::Submitted, &task);
        assert_eq!(changes.try_recv().map(|c| c.seq).ok(), Some(6));
        assert_eq!(Arc::strong_count(&task), 1, "nobody else holds it now");
        drop(changes);
        bus.publish(7, EventKind::Submitted, &task);
        assert!(!bus.has_subscribers());
    }
}
