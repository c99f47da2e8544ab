//! Fan-out of lifecycle events to any number of subscribers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender, unbounded};
use parking_lot::Mutex;

use crate::model::Event;

/// Subscribers of lifecycle events.
///
/// Publishing clones an `Arc` of the subscriber list under a short lock and
/// sends outside it; channels are unbounded, so a slow subscriber never
/// blocks the scheduler (it owns the backlog it leaves). A dropped receiver
/// is forgotten on the next publish.
#[derive(Debug, Default)]
pub struct EventBus {
    subscribers: Mutex<Arc<Vec<Sender<Event>>>>,
    count: AtomicUsize,
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

    /// A new receiver of every event published from now on.
    pub fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = unbounded();
        let mut subscribers = self.subscribers.lock();
        let mut list = Vec::clone(&subscribers);
        list.push(tx);
        self.count.store(list.len(), Ordering::Relaxed);
        *subscribers = Arc::new(list);
        rx
    }

    /// Sends an event to every subscriber.
    pub fn publish(&self, event: Event) {
        let list = Arc::clone(&self.subscribers.lock());
        let mut gone: Vec<&Sender<Event>> = Vec::new();
        if let Some((last, rest)) = list.split_last() {
            for tx in rest {
                if tx.send(event.clone()).is_err() {
                    gone.push(tx);
                }
            }
            if last.send(event).is_err() {
                gone.push(last);
            }
        }
        if !gone.is_empty() {
            let mut subscribers = self.subscribers.lock();
            let kept: Vec<_> = subscribers
                .iter()
                .filter(|tx| !gone.iter().any(|g| g.same_channel(tx)))
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
    use crate::model::{EventKind, TaskId, TaskRecord, TaskSpec};

    fn event(seq: u64) -> Event {
        Event {
            seq,
            kind: EventKind::Submitted,
            task: TaskRecord::new(TaskId(seq), TaskSpec::new("noop", vec![]), 0),
        }
    }

    #[test]
    fn every_subscriber_gets_every_event_and_dropped_ones_are_forgotten() {
        let bus = EventBus::new();
        assert!(!bus.has_subscribers());
        let first = bus.subscribe();
        let second = bus.subscribe();
        bus.publish(event(1));
        assert_eq!(first.try_recv().map(|e| e.seq).ok(), Some(1));
        assert_eq!(second.try_recv().map(|e| e.seq).ok(), Some(1));
        drop(second);
        bus.publish(event(2));
        assert_eq!(first.try_recv().map(|e| e.seq).ok(), Some(2));
        assert!(bus.has_subscribers());
        drop(first);
        bus.publish(event(3));
        assert!(!bus.has_subscribers());
    }
}
