//! `GET /api/v1/events`: the scheduler's changes as Server-Sent Events.
//!
//! One hub thread (`taskdeck-events`) turns task transitions, worker and
//! queue changes and resource samples into numbered frames and appends them
//! to a bounded [`ring::Ring`]. Task transitions are coalesced per task
//! within a tick ([`TICK`]): a follower gets each changed task's newest
//! record at most once per tick, which bounds what a busy scheduler sends.
//! The hub takes the scheduler's transitions without their records
//! ([`crate::model::TaskChange`]) and reads the records it sends, so the
//! scheduler never has to copy a record a follower still holds.
//! Each connected follower has a small thread of its own that waits for new
//! frames, takes whole batches under a short lock, and writes them to its
//! socket; none of them holds a request thread, and none can hold up the
//! scheduler or the hub: a follower too slow for the ring is told to reload
//! (`reset`) and goes on live, and one whose socket stops taking data fails
//! its write after the listener's send timeout and is dropped.
//!
//! Only the HTTP module uses this.

mod follower;
pub(crate) mod ring;
mod source;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};
use tiny_http::Request;

use super::handlers::ResourceSource;
use super::streams::Streams;
use crate::scheduler::Scheduler;
pub use ring::Filter;
use ring::Ring;

/// Task transitions within one tick reach followers together, each changed
/// task once; the first change after a quiet tick goes out at once.
pub const TICK: Duration = Duration::from_millis(50);

/// How often workers and queues are compared with what was sent.
const POLL: Duration = Duration::from_millis(250);

/// How long a shutdown waits for followers to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// How the event stream runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsConfig {
    /// Events kept for followers that reconnect (`Last-Event-ID`).
    pub buffer: usize,
    /// Most followers connected at once.
    pub max_followers: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            buffer: 10_000,
            max_followers: 1_000,
        }
    }
}

/// What followers and the hub thread share.
struct Shared {
    /// Names this run of the server, so ids from an earlier run are told
    /// apart from this one's.
    epoch: String,
    /// Where frames rendered late read a task's current record.
    scheduler: Scheduler,
    state: Mutex<State>,
    changed: Condvar,
    /// Somebody followed once: from then on the hub records events, so a
    /// follower that reconnects can resume.
    wanted: AtomicBool,
}

struct State {
    ring: Ring,
    closed: bool,
}

/// Messages to the hub thread.
enum Control {
    /// The first follower connected: record the scheduler's events from
    /// this subscription on.
    Record(crossbeam_channel::Receiver<crate::model::TaskChange>),
    /// Finish.
    Stop,
}

/// The running event stream.
pub struct EventHub {
    shared: Arc<Shared>,
    control: Sender<Control>,
    thread: Mutex<Option<JoinHandle<()>>>,
    followers: Streams,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("epoch", &self.shared.epoch)
            .field("followers", &self.followers.running())
            .finish_non_exhaustive()
    }
}

impl EventHub {
    /// Starts the hub thread.
    pub fn start(
        config: EventsConfig,
        scheduler: Scheduler,
        resources: ResourceSource,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            epoch: format!("{:08x}", fastrand::u32(..)),
            scheduler: scheduler.clone(),
            state: Mutex::new(State {
                ring: Ring::new(config.buffer),
                closed: false,
            }),
            changed: Condvar::new(),
            wanted: AtomicBool::new(false),
        });
        let (control, rx) = crossbeam_channel::unbounded();
        let thread = {
            let shared = Arc::clone(&shared);
            let scheduler = scheduler.clone();
            thread::Builder::new()
                .name("taskdeck-events".into())
                .spawn(move || source::run(&shared, &scheduler, &resources, &rx))?
        };
        Ok(Self {
            shared,
            control,
            thread: Mutex::new(Some(thread)),
            followers: Streams::new("events", config.max_followers),
        })
    }

    /// Takes over `request` and streams the events `filter` selects to it on
    /// a thread of its own, after the event `last_event_id` (the
    /// `Last-Event-ID` header wins); answers 503 when too many follow
    /// already.
    pub fn follow(&self, request: Request, filter: Filter, last_event_id: Option<String>) {
        let last = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("Last-Event-ID"))
            .map(|h| h.value.as_str().to_owned())
            .or(last_event_id)
            .filter(|id| !id.trim().is_empty());
        // Subscribed, and the start fixed, before the client sees a byte:
        // whatever it does once the stream is open is in the stream.
        if !self.shared.wanted.swap(true, Ordering::AcqRel) {
            let _ = self
                .control
                .send(Control::Record(self.shared.scheduler.subscribe_changes()));
        }
        let start = self
            .shared
            .state
            .lock()
            .ring
            .start(&self.shared.epoch, last.as_deref());
        let shared = Arc::clone(&self.shared);
        self.followers.spawn(request, move |request| {
            follower::run(&shared, request, &filter, start);
        });
    }

    /// Stops the hub, ends every follower's stream and joins their threads;
    /// later calls do nothing.
    pub fn stop(&self) {
        let _ = self.control.send(Control::Stop);
        let thread = self.thread.lock().take();
        if let Some(handle) = thread
            && handle.join().is_err()
        {
            tracing::error!("the event stream thread panicked");
        }
        self.shared.state.lock().closed = true;
        self.shared.changed.notify_all();
        self.followers.join(SHUTDOWN_WAIT);
    }
}

impl Drop for EventHub {
    fn drop(&mut self) {
        self.stop();
    }
}
