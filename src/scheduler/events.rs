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
#[derive(Default)]
pub struct EventBus {
    subscribers: Mutex<Arc<Vec<Subscriber>>>,
    count: AtomicUsize,
}

/// Called after events were sent to a subscriber, so it can wake up (the
/// window asks for a repaint). It must be cheap and must not block.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone)]
struct Subscriber {
    tx: Sender<Event>,
    waker: Option<Waker>,
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
        let mut subscribers = self.subscribers.lock();
        let mut list = Vec::clone(&subscribers);
        list.push(Subscriber { tx, waker });
        self.count.store(list.len(), Ordering::Relaxed);
        *subscribers = Arc::new(list);
        rx
    }

    /// Sends an event to every subscriber.
    pub fn publish(&self, event: Event) {
        let list = Arc::clone(&self.subscribers.lock());
        let mut gone: Vec<&Sender<Event>> = Vec::new();
        if let Some((last, rest)) = list.split_last() {
            for subscriber in rest {
                Self::deliver(subscriber, event.clone(), &mut gone);
            }
            Self::deliver(last, event, &mut gone);
        }
        if !gone.is_empty() {
            let mut subscribers = self.subscribers.lock();
            let kept: Vec<_> = subscribers
                .iter()
                .filter(|s| !gone.iter().any(|g| g.same_channel(&s.tx)))
                .cloned()
                .collect();
            self.count.store(kept.len(), Ordering::Relaxed);
            *subscribers = Arc::new(kept);
        }
    }

    fn deliver<'a>(subscriber: &'a Subscriber, event: Event, gone: &mut Vec<&'a Sender<Event>>) {
        if subscriber.tx.send(event).is_err() {
            gone.push(&subscriber.tx);
        } else if let Some(waker) = &subscriber.waker {
            waker();
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
            task: Arc::new(TaskRecord::new(
                TaskId(seq),
                TaskSpec::new("noop", vec![]),
                0,
            )),
        }
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
        bus.publish(event(1));
        assert_eq!(first.try_recv().map(|e| e.seq).ok(), Some(1));
        assert_eq!(second.try_recv().map(|e| e.seq).ok(), Some(1));
        drop(second);
        bus.publish(event(2));
        assert_eq!(first.try_recv().map(|e| e.seq).ok(), Some(2));
        assert_eq!(
            woken.load(Ordering::Relaxed),
            2,
            "the waker ran once per event"
        );
        assert!(bus.has_subscribers());
        drop(first);
        bus.publish(event(3));
        assert!(!bus.has_subscribers());
    }
}
