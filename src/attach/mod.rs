//! The window attached to a remote Taskdeck (`taskdeck --connect URL`): a
//! [`Backend`] over the HTTP API and its event stream, so the window's
//! panels work on a `serve` (or another window's listener) as they do on
//! the scheduler in this process.
//!
//! Background threads own the network; the window's reads never wait on
//! it:
//! - `taskdeck-attach-follow` follows the event stream (reconnecting with
//!   backoff and `Last-Event-ID`), reloads what it keeps after a reconnect
//!   or a `reset` (the task list page by page, workers, queues, counts,
//!   the resource history it missed) and polls the counts once a second;
//! - `taskdeck-attach-stream` reads one connection's stream and hands its
//!   frames to the follower;
//! - `taskdeck-attach-commands` runs the window's commands over HTTP and
//!   reports their outcomes;
//! - `taskdeck-attach-details` fetches why the waiting tasks the window
//!   asked about wait, and the progress history of the selected attempt
//!   ([`details`]);
//! - the window's own log reader thread reads the details' output log
//!   through [`logs::RemoteLogs`] (the API's log route, by offset).
//!
//! They hand owned data to [`Remote`]'s cache (locks held only to clone or
//! replace) and wake the window through its waker.
//!
//! This module may use the window's seam (`crate::app`), the HTTP client
//! (`crate::client`), the model and the scheduler's plain types; the
//! window and the client know nothing of it. It reads the API's views only
//! in its tests, to check that it reads back what the server writes.

mod commands;
pub mod convert;
mod details;
mod follow;
mod logs;

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::app::{Backend, Command, Connection, ConnectionState, LogReader, Outcome, Services};
use crate::client::Client;
use crate::model::{Dependency, Event, ProgressPoint, ResourceSample, TaskId, TaskRecord};
use crate::scheduler::{QueueInfo, SchedulerStats, StorageStatus, Waiting, Waker, WorkerInfo};
use crate::tasks::TaskTypes;

/// How long one HTTP call of the attached window may take per phase.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the reads return besides the tasks, replaced whole by the
/// background threads.
#[derive(Clone)]
struct Snapshot {
    stats: SchedulerStats,
    workers: Vec<WorkerInfo>,
    queues: Vec<QueueInfo>,
    task_types: Arc<TaskTypes>,
    state: ConnectionState,
}

/// Someone fed by the event stream: the window.
struct Subscriber {
    events: Sender<Event>,
    waker: Option<Waker>,
}

/// A remote server as the window's [`Backend`]: reads come from a cache the
/// background threads keep, commands go to the commands thread.
pub struct Remote {
    url: String,
    snapshot: Mutex<Arc<Snapshot>>,
    tasks: Mutex<HashMap<TaskId, Arc<TaskRecord>>>,
    subscribers: Mutex<Vec<Subscriber>>,
    commands: Sender<Command>,
    outcomes_tx: Sender<Outcome>,
    outcomes_rx: Receiver<Outcome>,
    log_reader: Arc<dyn LogReader>,
    /// Why tasks wait and progress histories, as the details thread
    /// fetched them.
    details: Mutex<details::Details>,
}

impl Remote {
    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.lock())
    }

    /// Replaces part of the snapshot (a clone of the rest; the lock is held
    /// only for the swap).
    fn update(&self, change: impl FnOnce(&mut Snapshot)) {
        let mut next = Snapshot::clone(&self.snapshot());
        change(&mut next);
        *self.snapshot.lock() = Arc::new(next);
    }

    fn set_state(&self, state: ConnectionState) {
        if self.snapshot().state != state {
            self.update(|snapshot| snapshot.state = state);
            self.wake();
        }
    }

    /// Wakes the window (after events, outcomes or a new snapshot).
    fn wake(&self) {
        let wakers: Vec<Waker> = self
            .subscribers
            .lock()
            .iter()
            .filter_map(|subscriber| subscriber.waker.clone())
            .collect();
        for waker in wakers {
            waker();
        }
    }

    /// Takes records into the cache and tells the subscribers, keeping
    /// only those newer than the copy held. `kind` names the change of a
    /// record that came without one (a reload).
    fn take_events(&self, events: Vec<Event>) {
        let mut fresh = Vec::with_capacity(events.len());
        {
            let mut tasks = self.tasks.lock();
            for event in events {
                let held = tasks.get(&event.task.id);
                if held.is_some_and(|held| held.version >= event.task.version) {
                    continue;
                }
                tasks.insert(event.task.id, Arc::clone(&event.task));
                fresh.push(event);
            }
        }
        if fresh.is_empty() {
            return;
        }
        let senders: Vec<Sender<Event>> = self
            .subscribers
            .lock()
            .iter()
            .map(|subscriber| subscriber.events.clone())
            .collect();
        for event in fresh {
            for sender in &senders {
                // A window that closed no longer listens.
                let _ = sender.send(event.clone());
            }
        }
        self.wake();
    }

    /// The version held of task `id`, if any.
    fn held_version(&self, id: TaskId) -> Option<u64> {
        self.tasks.lock().get(&id).map(|record| record.version)
    }

    fn tell(&self, outcome: Outcome) {
        // The receiver lives as long as self.
        let _ = self.outcomes_tx.send(outcome);
        self.wake();
    }
}

impl Backend for Remote {
    fn subscribe(&self, waker: Option<Waker>) -> Receiver<Event> {
        let (events, rx) = crossbeam_channel::unbounded();
        self.subscribers.lock().push(Subscriber { events, waker });
        rx
    }

    fn list_all(&self) -> Vec<Arc<TaskRecord>> {
        let mut all: Vec<Arc<TaskRecord>> = self.tasks.lock().values().cloned().collect();
        all.sort_by_key(|record| record.id);
        all
    }

    fn stats(&self) -> SchedulerStats {
        self.snapshot().stats.clone()
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        self.snapshot().workers.clone()
    }

    fn transport_status(&self) -> Option<Result<(), String>> {
        None
    }

    fn storage_status(&self) -> Option<StorageStatus> {
        None
    }

    fn queues(&self) -> Vec<QueueInfo> {
        self.snapshot().queues.clone()
    }

    fn waiting(&self, ids: &[TaskId]) -> Vec<Option<Waiting>> {
        // Why a task waits is not part of what the stream tells: the
        // details thread fetches it for the tasks asked about.
        self.details.lock().waiting(ids, Instant::now())
    }

    fn records(&self, ids: &[TaskId]) -> Vec<Option<Arc<TaskRecord>>> {
        let tasks = self.tasks.lock();
        ids.iter().map(|id| tasks.get(id).cloned()).collect()
    }

    fn dependents(&self, id: TaskId) -> Vec<TaskId> {
        let tasks = self.tasks.lock();
        let mut dependents: Vec<TaskId> = tasks
            .values()
            .filter(|record| record.spec.depends_on.contains(&Dependency::Task(id)))
            .map(|record| record.id)
            .collect();
        drop(tasks);
        dependents.sort_unstable();
        dependents
    }

    fn task(&self, id: TaskId) -> Option<Arc<TaskRecord>> {
        self.tasks.lock().get(&id).cloned()
    }

    fn progress_history(
        &self,
        id: TaskId,
        attempt: Option<u32>,
    ) -> Option<(u32, Vec<ProgressPoint>)> {
        let record = self.task(id);
        self.details
            .lock()
            .history((id, attempt), record.as_deref(), Instant::now())
    }

    fn log_reader(&self) -> Arc<dyn LogReader> {
        Arc::clone(&self.log_reader)
    }

    fn task_types(&self) -> Arc<TaskTypes> {
        Arc::clone(&self.snapshot().task_types)
    }

    fn can_resize_workers(&self) -> bool {
        false
    }

    fn connection(&self) -> Option<Connection> {
        Some(Connection {
            url: self.url.clone(),
            state: self.snapshot().state.clone(),
        })
    }

    fn send(&self, command: Command) {
        if self.commands.send(command).is_err() {
            self.tell(Outcome::Said {
                text: "the connection to the server is closed".to_owned(),
                error: true,
            });
        }
    }

    fn outcomes(&self) -> &Receiver<Outcome> {
        &self.outcomes_rx
    }
}

/// A window's attachment to a remote server: the backend and the threads
/// that feed it. [`Attached::shutdown`] stops them.
pub struct Attached {
    remote: Arc<Remote>,
    samples: Option<Receiver<Arc<ResourceSample>>>,
    /// Dropped to cancel the threads.
    cancel: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    streams: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// Why attaching could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the connection's threads: {0}")]
pub struct AttachError(#[from] std::io::Error);

impl Attached {
    /// Starts following the server `client` talks to. Returns at once: the
    /// connection is made (and made again) in the background, and its
    /// state shows through [`Backend::connection`].
    pub fn start(client: Client) -> Result<Self, AttachError> {
        let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
        let (outcomes_tx, outcomes_rx) = crossbeam_channel::unbounded();
        let remote = Arc::new(Remote {
            url: client.url().to_owned(),
            snapshot: Mutex::new(Arc::new(Snapshot {
                stats: convert::empty_stats(),
                workers: Vec::new(),
                queues: Vec::new(),
                task_types: Arc::new(TaskTypes::default()),
                state: ConnectionState::Connecting,
            })),
            tasks: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(Vec::new()),
            commands: commands_tx,
            outcomes_tx,
            outcomes_rx,
            log_reader: Arc::new(logs::RemoteLogs::new(client.clone())),
            details: Mutex::new(details::Details::default()),
        });
        let (cancel, cancelled) = crossbeam_channel::bounded::<()>(0);
        let (samples_tx, samples_rx) = crossbeam_channel::unbounded();
        let streams = Arc::new(Mutex::new(Vec::new()));
        let follower = follow::Follower {
            client: client.clone(),
            remote: Arc::clone(&remote),
            cancelled: cancelled.clone(),
            samples: samples_tx,
            streams: Arc::clone(&streams),
        };
        let follow = std::thread::Builder::new()
            .name("taskdeck-attach-follow".into())
            .spawn(move || follower.run())?;
        let fetcher = details::Fetcher {
            client: client.clone(),
            remote: Arc::clone(&remote),
            cancelled: cancelled.clone(),
        };
        let details = std::thread::Builder::new()
            .name("taskdeck-attach-details".into())
            .spawn(move || fetcher.run())?;
        let runner = commands::Runner {
            client,
            remote: Arc::clone(&remote),
        };
        let commands = std::thread::Builder::new()
            .name("taskdeck-attach-commands".into())
            .spawn(move || runner.run(&commands_rx, &cancelled))?;
        Ok(Self {
            remote,
            samples: Some(samples_rx),
            cancel: Some(cancel),
            threads: vec![follow, details, commands],
            streams,
        })
    }

    /// The backend, for the window and tests.
    pub fn remote(&self) -> Arc<Remote> {
        Arc::clone(&self.remote)
    }

    /// What the window is given: the backend and the server's resource
    /// samples (once; later calls get no samples).
    pub fn services(&mut self) -> Services {
        Services {
            backend: Arc::clone(&self.remote) as Arc<dyn Backend>,
            samples: self.samples.take(),
            past_samples: Vec::new(),
            // The server's API, which is what the window talks to.
            http_url: Some(self.remote.url.clone()),
            data_dir: None,
        }
    }

    /// Stops the threads and joins them. A stream reader blocked on a
    /// quiet connection ends at the server's next keep-alive (at most 15
    /// seconds) and is not waited for.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        drop(self.cancel.take());
        for thread in self.threads.drain(..).rev() {
            if thread.join().is_err() {
                tracing::warn!("a thread of the connection panicked");
            }
        }
        for stream in self.streams.lock().drain(..) {
            if stream.is_finished() && stream.join().is_err() {
                tracing::warn!("a stream reader of the connection panicked");
            }
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod window_tests;
