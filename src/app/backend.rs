//! The window's one seam to the scheduler it shows: [`Backend`]. The
//! panels and the window's state talk only to this trait, so the same
//! window works on the scheduler in this process ([`Scheduler`] implements
//! it here) and on a remote server (an implementation over HTTP and the
//! event stream, outside this module).
//!
//! Rules every implementation keeps:
//! - **Reads never wait on I/O.** They return what is at hand: the
//!   scheduler's own views in-process, a cache that background threads keep
//!   up to date for a remote server.
//! - **Commands return at once.** [`Backend::send`] hands a [`Command`]
//!   over; its [`Outcome`] comes back through [`Backend::outcomes`] (at once
//!   in-process, when the server answered for a remote one), and the window
//!   is woken through the waker given to [`Backend::subscribe`].
//! - **Events carry owned records**: the window keeps its own copy of the
//!   task table from them, whichever side they come from.

use std::collections::HashSet;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::log_reader::{LocalFiles, LogReader};
use crate::model::{Event, ProgressPoint, TaskId, TaskRecord, TaskSpec};
use crate::scheduler::{
    QueueChange, QueueInfo, RequestError, Scheduler, SchedulerStats, StorageStatus, TaskQuery,
    Waiting, Waker, WorkerInfo,
};
use crate::tasks::TaskTypes;

/// A change the window asks of the scheduler.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Submit one task (from the create form).
    Submit(TaskSpec),
    /// Submit tasks together (the random mock buttons).
    SubmitBatch(Vec<TaskSpec>),
    /// Remove waiting tasks from the queue.
    Remove(Vec<TaskId>),
    /// Ask running tasks to stop.
    Stop(Vec<TaskId>),
    /// Queue failed or cancelled tasks again.
    Retry(Vec<TaskId>),
    /// Queue them again with the dependents their end cancelled.
    RetryWithDependents(Vec<TaskId>),
    /// Hold waiting tasks.
    Hold(Vec<TaskId>),
    /// Release held tasks.
    Release(Vec<TaskId>),
    /// Pause (true) or resume (false).
    SetPaused(bool),
    /// Pause and stop the running tasks (they go back to the queue).
    PauseAndStop,
    /// Change a named queue.
    SetQueue(String, QueueChange),
    /// Resize the worker pool.
    SetWorkers(usize),
}

/// What came of a [`Command`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A task was submitted with this id.
    Submitted(TaskId),
    /// Submitting from the create form was refused (the form shows why).
    SubmitRefused(String),
    /// Something to say in the status bar (an error or a confirmation).
    Said {
        /// The text.
        text: String,
        /// Whether it is an error.
        error: bool,
    },
    /// A queue's settings as they are after a change.
    QueueChanged(QueueInfo, QueueChange),
    /// The worker pool was resized to this many.
    WorkersSet(usize),
}

/// The scheduler as the window sees it; see the module docs for the rules.
pub trait Backend: Send + Sync {
    /// Starts the event feed: the returned channel gets every change from
    /// now on; `waker` is called after events and outcomes.
    fn subscribe(&self, waker: Option<Waker>) -> Receiver<Event>;
    /// Every task held, oldest first (the table's first load).
    fn list_all(&self) -> Vec<Arc<TaskRecord>>;
    /// Counts, latency and settings.
    fn stats(&self) -> SchedulerStats;
    /// The workers.
    fn workers(&self) -> Vec<WorkerInfo>;
    /// Whether the broker is connected, with one.
    fn transport_status(&self) -> Option<Result<(), String>>;
    /// Whether the database's writes succeed, with one.
    fn storage_status(&self) -> Option<StorageStatus>;
    /// The named queues.
    fn queues(&self) -> Vec<QueueInfo>;
    /// Why each of `ids` waits, where known.
    fn waiting(&self, ids: &[TaskId]) -> Vec<Option<Waiting>>;
    /// The records of `ids`, where known.
    fn records(&self, ids: &[TaskId]) -> Vec<Option<Arc<TaskRecord>>>;
    /// The tasks that depend on `id`.
    fn dependents(&self, id: TaskId) -> Vec<TaskId>;
    /// One record, where known.
    fn task(&self, id: TaskId) -> Option<Arc<TaskRecord>>;
    /// The progress history of an attempt, where known.
    fn progress_history(
        &self,
        id: TaskId,
        attempt: Option<u32>,
    ) -> Option<(u32, Vec<ProgressPoint>)>;
    /// What reads the output logs of attempts for the details. Its reads
    /// may wait on I/O, so the window calls it only on its log reader
    /// thread: files on this machine in-process, the log route of the
    /// server when attached.
    fn log_reader(&self) -> Arc<dyn LogReader>;
    /// The task types the create form offers (names, descriptions and
    /// signatures; what runs them stays with the scheduler).
    fn task_types(&self) -> Arc<TaskTypes>;
    /// The connection to a remote server and its state; `None` in-process.
    fn connection(&self) -> Option<Connection> {
        None
    }
    /// Whether [`Command::SetWorkers`] can resize the worker pool (the API
    /// cannot resize a server's pool: it is sized where the server runs).
    fn can_resize_workers(&self) -> bool;
    /// Hands a command over; its outcomes come through [`Backend::outcomes`].
    fn send(&self, command: Command);
    /// Where outcomes of commands arrive.
    fn outcomes(&self) -> &Receiver<Outcome>;
}

/// Where a remote backend stands with its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// The first connection is being made.
    Connecting,
    /// The event stream is open and what it feeds is loaded.
    Connected,
    /// The connection broke or could not be made; it is tried again.
    Reconnecting {
        /// Why it broke, in words.
        reason: String,
        /// Tries since it last worked.
        tries: u32,
    },
}

/// A remote backend's server and where it stands with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The server's address.
    pub url: String,
    /// Its state.
    pub state: ConnectionState,
}

/// The scheduler of this process as a [`Backend`]: reads are the
/// scheduler's own views; commands run at once on the calling thread (they
/// take the scheduler's lock briefly and never wait on I/O) and their
/// outcomes are waiting in the channel when `send` returns.
pub struct InProcess {
    scheduler: Scheduler,
    task_types: Arc<TaskTypes>,
    log_reader: Arc<dyn LogReader>,
    outcomes_tx: Sender<Outcome>,
    outcomes_rx: Receiver<Outcome>,
}

impl InProcess {
    /// The backend of `scheduler`.
    pub fn new(scheduler: Scheduler) -> Self {
        let (outcomes_tx, outcomes_rx) = crossbeam_channel::unbounded();
        Self {
            task_types: Arc::new(scheduler.registry().types()),
            log_reader: Arc::new(LocalFiles),
            scheduler,
            outcomes_tx,
            outcomes_rx,
        }
    }

    fn tell(&self, outcome: Outcome) {
        // The receiver lives as long as self.
        let _ = self.outcomes_tx.send(outcome);
    }

    fn say(&self, text: impl Into<String>, error: bool) {
        self.tell(Outcome::Said {
            text: text.into(),
            error,
        });
    }

    /// Applies `request` to each task and says how many it was done to,
    /// and the first refusal.
    fn for_each(
        &self,
        ids: &[TaskId],
        what: &str,
        request: impl Fn(TaskId) -> Result<(), RequestError>,
    ) {
        let mut done = 0;
        let mut errors = Vec::new();
        for id in ids {
            match request(*id) {
                Ok(()) => done += 1,
                Err(error) => errors.push(error.to_string()),
            }
        }
        let (text, error) = report(done, what, &errors);
        self.say(text, error);
    }

    /// Retries each task with cascade, lowest id first, skipping those an
    /// earlier one already queued again.
    fn retry_with_dependents(&self, ids: &[TaskId]) {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        let mut queued = HashSet::new();
        let mut errors = Vec::new();
        for id in ids {
            if queued.contains(&id) {
                continue;
            }
            match self.scheduler.retry_cascade(id, true) {
                Ok(again) => queued.extend(again),
                Err(error) => errors.push(error.to_string()),
            }
        }
        let (text, error) = report(queued.len(), "queued again, dependents included", &errors);
        self.say(text, error);
    }
}

/// The status-bar line for a command done to `done` tasks with `errors`
/// refusals: the count and the first refusal.
pub fn report(done: usize, what: &str, errors: &[String]) -> (String, bool) {
    match errors.first() {
        None => (format!("{done} task(s) {what}"), false),
        Some(first) => (
            format!("{done} task(s) {what}; {} refused: {first}", errors.len()),
            true,
        ),
    }
}

/// The status-bar line for a pause or resume that succeeded.
pub fn paused_text(paused: bool) -> &'static str {
    if paused {
        "Scheduler paused: no task starts until it is resumed"
    } else {
        "Scheduler resumed"
    }
}

/// The status-bar line for "pause and stop running".
pub fn pause_and_stop_text(running: usize) -> String {
    if running == 0 {
        "Scheduler paused; no task was running".to_owned()
    } else {
        format!(
            "Scheduler paused; {running} running task(s) asked to stop \
             and go back to the queue"
        )
    }
}

/// The status-bar line for a batch that was queued.
pub fn queued_text(ids: &[TaskId]) -> String {
    let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
    format!("Queued random mock task(s) {}", list.join(", "))
}

impl Backend for InProcess {
    fn subscribe(&self, waker: Option<Waker>) -> Receiver<Event> {
        match waker {
            Some(waker) => self.scheduler.subscribe_with_waker(waker),
            None => self.scheduler.subscribe(),
        }
    }

    fn list_all(&self) -> Vec<Arc<TaskRecord>> {
        self.scheduler.list_shared(&TaskQuery {
            limit: usize::MAX,
            oldest_first: true,
            ..TaskQuery::default()
        })
    }

    fn stats(&self) -> SchedulerStats {
        self.scheduler.stats()
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        self.scheduler.workers()
    }

    fn transport_status(&self) -> Option<Result<(), String>> {
        self.scheduler.transport_status()
    }

    fn storage_status(&self) -> Option<StorageStatus> {
        self.scheduler.storage_status()
    }

    fn queues(&self) -> Vec<QueueInfo> {
        self.scheduler.queues()
    }

    fn waiting(&self, ids: &[TaskId]) -> Vec<Option<Waiting>> {
        self.scheduler.waiting(ids)
    }

    fn records(&self, ids: &[TaskId]) -> Vec<Option<Arc<TaskRecord>>> {
        self.scheduler.records(ids)
    }

    fn dependents(&self, id: TaskId) -> Vec<TaskId> {
        self.scheduler.dependents(id)
    }

    fn task(&self, id: TaskId) -> Option<Arc<TaskRecord>> {
        self.scheduler.task_shared(id)
    }

    fn progress_history(
        &self,
        id: TaskId,
        attempt: Option<u32>,
    ) -> Option<(u32, Vec<ProgressPoint>)> {
        self.scheduler.progress_history(id, attempt)
    }

    fn log_reader(&self) -> Arc<dyn LogReader> {
        Arc::clone(&self.log_reader)
    }

    fn task_types(&self) -> Arc<TaskTypes> {
        Arc::clone(&self.task_types)
    }

    fn can_resize_workers(&self) -> bool {
        true
    }

    fn send(&self, command: Command) {
        let scheduler = &self.scheduler;
        match command {
            Command::Submit(spec) => match scheduler.submit(spec) {
                Ok(id) => self.tell(Outcome::Submitted(id)),
                Err(error) => self.tell(Outcome::SubmitRefused(error.to_string())),
            },
            Command::SubmitBatch(specs) => match scheduler.submit_batch(specs) {
                Ok(ids) => self.say(queued_text(&ids), false),
                Err(error) => self.say(error.to_string(), true),
            },
            Command::Remove(ids) => {
                self.for_each(&ids, "removed from the queue", |id| scheduler.remove(id))
            }
            Command::Stop(ids) => {
                self.for_each(&ids, "asked to stop", |id| scheduler.cancel(id).map(drop))
            }
            Command::Retry(ids) => self.for_each(&ids, "queued again", |id| scheduler.retry(id)),
            Command::RetryWithDependents(ids) => self.retry_with_dependents(&ids),
            Command::Hold(ids) => self.for_each(&ids, "held", |id| scheduler.hold(id)),
            Command::Release(ids) => self.for_each(&ids, "released", |id| scheduler.release(id)),
            Command::SetPaused(paused) => {
                let result = if paused {
                    scheduler.pause()
                } else {
                    scheduler.resume()
                };
                match result {
                    Ok(()) => self.say(paused_text(paused), false),
                    Err(error) => self.say(format!("Could not pause or resume: {error}"), true),
                }
            }
            Command::PauseAndStop => match scheduler.pause_and_stop() {
                Ok(running) => self.say(pause_and_stop_text(running), false),
                Err(error) => self.say(format!("Could not pause: {error}"), true),
            },
            Command::SetQueue(name, change) => match scheduler.set_queue(&name, change) {
                Ok(info) => self.tell(Outcome::QueueChanged(info, change)),
                Err(error) => self.say(format!("Could not change queue {name}: {error}"), true),
            },
            Command::SetWorkers(count) => {
                scheduler.set_workers(count);
                self.tell(Outcome::WorkersSet(count));
            }
        }
    }

    fn outcomes(&self) -> &Receiver<Outcome> {
        &self.outcomes_rx
    }
}
