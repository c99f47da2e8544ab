//! The worker process: runs the attempts the scheduler places on it (on
//! threads), reports heartbeats (with the host's resources) and results,
//! and follows stop and hand-back requests. `taskdeck worker` runs it
//! alone; the window and `serve` embed one so the local machine keeps
//! working.
//!
//! Load balancing is the scheduler's: it knows each worker's slots from
//! its heartbeats and places at most one attempt per slot plus the
//! worker's prefetch, which waits here for a slot (so a slot that frees
//! starts the next attempt at once, without a round trip). Messages on the
//! worker's queue are acknowledged once handled, so none holds a delivery
//! while a task runs (the broker's consumer timeout never applies; the
//! scheduler's lease does).

mod attempts;
mod placed;
mod prefetch;
mod presence;
mod shipping;
mod slots;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::Channel;
use lapin::options::{BasicConsumeOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use tokio::sync::{mpsc, watch};

use super::amqp::{self, Beside, Keep, LinkError, Reconnect};
use super::key::BrokerKey;
use super::protocol::{Control, Names, PROTOCOL, WireOutcome, WireProgress, WireStop, WorkerEvent};
use super::signing::{Gate, Signer};
use super::url::BrokerUrl;
use crate::model::{
    HostSummary, ProgressReport, ResourceSample, TaskId, TaskLog, TaskSpec, now_us,
};
use crate::scheduler::{GpuDevice, RemoteOutcome, run_attempt};
use crate::tasks::{CancelToken, ProgressSink, Registry, StopReason, TaskContext};

pub use prefetch::Prefetch;

/// How long an attempt asked to stop may take before its thread is left
/// behind and its slot freed.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How often deadlines and the connection are checked.
const TICK: Duration = Duration::from_millis(250);
/// How many ended attempts are remembered, so that a placement the
/// scheduler sends again after a reconnect does not run twice.
const ENDED_REMEMBERED: usize = 65_536;
/// Most messages from the scheduler handled before they are acknowledged.
const CONTROL_BATCH: usize = 256;
/// Most reports sent as one message.
const REPORT_BATCH: usize = 256;
/// How long a report published to the broker's memory may go unanswered
/// by the scheduler before it is published again to the broker's disk (the
/// scheduler may be down, and the broker may restart meanwhile).
const SPILL_AFTER: Duration = Duration::from_secs(10);

/// Reads the host's latest resource sample.
pub type ResourceSource = Arc<dyn Fn() -> Option<Arc<ResourceSample>> + Send + Sync>;

/// How a worker process runs.
#[derive(Clone)]
pub struct WorkerConfig {
    /// The broker.
    pub url: BrokerUrl,
    /// Queue names.
    pub names: Names,
    /// Unique name among the workers of this broker namespace.
    pub name: String,
    /// The host name reported with heartbeats.
    pub host: String,
    /// Attempts run at once.
    pub concurrency: usize,
    /// Attempts that may wait here for a slot beyond those that run. They
    /// show as running from when they are placed; one waiting while
    /// another worker has a free slot is asked back.
    pub prefetch: Prefetch,
    /// Time between heartbeats; at most a third of the scheduler's lease
    /// is used once a grant says what the lease is.
    pub heartbeat: Duration,
    /// How long stopping lets running attempts finish before asking them to
    /// stop (they are then handed back and run again elsewhere).
    pub stop_grace: Duration,
    /// The tasks this worker can run.
    pub registry: Arc<Registry>,
    /// The host's resources, for heartbeats.
    pub resources: Option<ResourceSource>,
    /// The GPU devices tasks may be given on this host.
    pub gpus: Vec<GpuDevice>,
    /// Where this worker's tasks write their output logs, to ship them to
    /// the scheduler's copy; none when the scheduler reads the same
    /// directory (the worker embedded in it).
    pub ship_logs: Option<std::path::PathBuf>,
    /// The key the scheduler and its workers sign their messages with.
    pub key: BrokerKey,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("url", &self.url)
            .field("names", &self.names)
            .field("name", &self.name)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// A running worker process (or the embedded one).
pub struct WorkerHandle {
    shutdown: watch::Sender<bool>,
    thread: JoinHandle<()>,
    name: String,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// Starts the worker on its own thread; `size` changes its concurrency
    /// while it runs.
    pub fn start(
        config: WorkerConfig,
        size: Option<watch::Receiver<usize>>,
    ) -> std::io::Result<Self> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let name = config.name.clone();
        let thread = thread::Builder::new()
            .name("taskdeck-remote-worker".into())
            .spawn(move || {
                let worker = Worker::new(config);
                runtime.block_on(worker.run(shutdown_rx, size));
            })?;
        Ok(Self {
            shutdown,
            thread,
            name,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops gracefully: takes no new tasks, lets running ones finish within
    /// the grace period, hands back the rest, says goodbye, disconnects.
    pub fn stop(self) {
        self.shutdown.send_replace(true);
        if self.thread.join().is_err() {
            tracing::error!("the worker thread panicked");
        }
    }

    /// Whether it stopped by itself (it only does when its thread failed).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

struct Running {
    attempt: u32,
    placement: u64,
    cancel: CancelToken,
    deadline: Option<Instant>,
    stop_asked: Option<(Instant, StopReason)>,
    /// Bytes of its log shipped to the scheduler.
    log_shipped: u64,
    /// Progress reported since the last report sent.
    progress: Vec<WireProgress>,
}

struct Ended {
    task: TaskId,
    attempt: u32,
    outcome: RemoteOutcome,
    log: Option<TaskLog>,
    started_at_us: i64,
    finished_at_us: i64,
    run_time_us: i64,
}

/// An attempt placed on this worker that waits for a slot.
struct Waiting {
    task: TaskId,
    attempt: u32,
    placement: u64,
    /// Sent again by a restarted scheduler.
    again: bool,
    spec: TaskSpec,
    timeout_ms: Option<u64>,
    gpu_ids: Vec<u32>,
}

/// The newest ended attempts (placement, task, attempt), oldest first,
/// bounded.
#[derive(Default)]
struct EndedRecently {
    order: VecDeque<(u64, TaskId, u32)>,
    placements: HashSet<u64>,
    attempts: HashSet<(TaskId, u32)>,
}

struct Worker {
    config: WorkerConfig,
    concurrency: usize,
    running: HashMap<TaskId, Running>,
    /// Placed attempts waiting for a slot, in the order they came.
    waiting: VecDeque<Waiting>,
    /// Attempts that ended here, to ignore if placed again.
    ended_recently: EndedRecently,
    /// How long the attempts that ended lately ran (for `Prefetch::Auto`).
    lately: prefetch::Lately,
    /// The prefetch changed: the scheduler hears it with a heartbeat now.
    beat_now: bool,
    /// Reports the scheduler has not yet said it applied, nor the broker
    /// confirmed to have on disk, oldest first, by number.
    outbox: VecDeque<(u64, WorkerEvent)>,
    next_report: u64,
    /// This process's report stream: the scheduler's answers name it, so
    /// one meant for an earlier process of the same name is ignored.
    stream: u64,
    /// Said goodbye while stopping; waiting for its confirm.
    goodbye_sent: bool,
    ended_tx: mpsc::UnboundedSender<Ended>,
    ended_rx: mpsc::UnboundedReceiver<Ended>,
    stopping: Option<Instant>,
    /// The current connection, for heartbeats and the presence token.
    session_id: u64,
    /// The scheduler's lease, from its placements.
    lease: Option<Duration>,
    /// Where the attempts' contexts send progress.
    progress_sink: ProgressSink,
    progress_rx: mpsc::UnboundedReceiver<(TaskId, u32, ProgressReport)>,
    /// Signs what this worker publishes.
    signer: Signer,
    /// Checks what the scheduler sends; counts what it refuses.
    gate: Gate,
    /// The threads attempts run on.
    slots: slots::SlotThreads,
}

/// One connection's channel for reports, and what waits on it.
struct Session {
    publish: Channel,
    /// The newest report published on this connection (reports are
    /// numbered and published in order).
    published_upto: u64,
    /// The last report of each message published on this connection, and
    /// when, oldest first.
    published: VecDeque<(u64, Instant)>,
    /// The newest report published again to the broker's disk.
    spilled_upto: u64,
    /// Ranges of reports the broker confirmed to have on disk, from the
    /// tasks that wait for confirms.
    confirmed_tx: mpsc::UnboundedSender<(u64, u64)>,
    /// Operations that finish beside the loop.
    beside: Beside,
}

enum End {
    Stopped,
}

/// Which reports to publish again to the broker's disk.
#[derive(Debug, Clone, Copy)]
enum Spill {
    /// All published to its memory and unanswered, once the oldest was
    /// published this long ago.
    Unanswered(Duration),
    /// All that wait (the worker leaves).
    All,
}

impl Worker {
    fn new(config: WorkerConfig) -> Self {
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        let (progress_tx, progress_rx) = mpsc::unbounded_channel();
        let progress_sink: ProgressSink = Arc::new(move |task, attempt, report| {
            // The worker may have gone; its attempts' reports go nowhere then.
            let _ = progress_tx.send((task, attempt, report));
        });
        Self {
            concurrency: config.concurrency,
            signer: Signer::new(config.key.clone(), &config.name),
            gate: Gate::new(config.key.clone()),
            config,
            running: HashMap::new(),
            waiting: VecDeque::new(),
            ended_recently: EndedRecently::default(),
            lately: prefetch::Lately::default(),
            beat_now: false,
            outbox: VecDeque::new(),
            next_report: 0,
            stream: fastrand::u64(1..),
            goodbye_sent: false,
            ended_tx,
            ended_rx,
            stopping: None,
            session_id: 0,
            lease: None,
            progress_sink,
            progress_rx,
            slots: slots::SlotThreads::new(),
        }
    }

    /// Time between heartbeats: as configured, but at least three within
    /// the scheduler's lease once it is known.
    fn beat_every(&self) -> Duration {
        match self.lease {
            Some(lease) => self.config.heartbeat.min(lease / 3),
            None => self.config.heartbeat,
        }
    }

    /// Takes the scheduler's lease from a placement.
    fn learn_lease(&mut self, lease: Duration) {
        if self.lease == Some(lease) {
            return;
        }
        self.lease = Some(lease);
        if self.config.heartbeat > lease / 3 {
            tracing::info!(
                asked_ms = self.config.heartbeat.as_millis() as u64,
                lease_ms = lease.as_millis() as u64,
                every_ms = self.beat_every().as_millis() as u64,
                "sending heartbeats more often than asked, to stay within the scheduler's lease"
            );
        }
    }

    async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut size: Option<watch::Receiver<usize>>,
    ) {
        let mut reconnect = Reconnect::default();
        loop {
            match self.session(&mut shutdown, &mut size, &mut reconnect).await {
                Ok(End::Stopped) => return,
                Err(error) => {
                    if self.stopping.is_some() || *shutdown.borrow() {
                        tracing::warn!(%error, "broker unavailable while stopping; leaving without saying goodbye");
                        self.abandon_all();
                        return;
                    }
                    // Back within the scheduler's lease (it renews every
                    // lease when it gets the broker back itself), so a
                    // broker restart costs a healthy worker nothing.
                    let delay = reconnect
                        .delay()
                        .min(self.lease.map_or(Duration::MAX, |lease| lease / 4));
                    tracing::warn!(
                        %error,
                        retry_in_ms = delay.as_millis() as u64,
                        running = self.running.len(),
                        "worker lost the broker; retrying (running tasks go on)"
                    );
                    let sleep = tokio::time::sleep(delay);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            _ = shutdown.changed() => break,
                            Some(ended) = self.ended_rx.recv() => {
                                self.ended(ended);
                                self.start_waiting();
                            }
                        }
                    }
                }
            }
        }
    }

    async fn session(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        size: &mut Option<watch::Receiver<usize>>,
        reconnect: &mut Reconnect,
    ) -> Result<End, LinkError> {
        let names = self.config.names.clone();
        let connection = amqp::connect(
            &self.config.url,
            &format!("taskdeck worker {}", self.config.name),
        )
        .await?;
        let publish = connection.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        amqp::declare_shared(&publish, &names).await?;
        let control_queue = amqp::declare_control(&publish, &names, &self.config.name).await?;
        let control_channel = connection.create_channel().await?;
        let mut control = control_channel
            .basic_consume(
                control_queue.as_str().into(),
                format!("{}-control", self.config.name).as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.session_id = fastrand::u64(1..);
        let mut presence = presence::Presence::hold(
            &connection,
            &names,
            &self.config.name,
            self.session_id,
            &self.config.url,
            &self.signer,
        )
        .await?;
        let (confirmed_tx, mut confirmed) = mpsc::unbounded_channel();
        let (beside, mut failures) = Beside::new();
        let mut session = Session {
            publish,
            published_upto: 0,
            published: VecDeque::new(),
            spilled_upto: 0,
            confirmed_tx,
            beside,
        };
        reconnect.reset();
        tracing::info!(
            worker = %self.config.name,
            broker = %self.config.url,
            concurrency = self.concurrency,
            "worker connected"
        );
        self.flush_outbox(&mut session).await?;
        self.heartbeat(&session).await?;
        let mut tick = tokio::time::interval(TICK);
        let mut last_beat = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(last_beat + self.beat_every()) => {
                    last_beat = tokio::time::Instant::now();
                    self.heartbeat(&session).await?;
                    presence.renew().await?;
                }
                token = presence.next() => match token {
                    Some(token) => presence.took(token?).await?,
                    None => return Err(closed(&self.config.url, "the broker ended the presence consumer")),
                },
                changed = shutdown.changed(), if self.stopping.is_none() => {
                    if changed.is_err() || *shutdown.borrow() {
                        self.begin_stop();
                        self.flush_outbox(&mut session).await?;
                        self.heartbeat(&session).await?;
                    }
                }
                Some(changed) = next_size(size) => {
                    self.concurrency = changed;
                    tracing::info!(concurrency = changed, "worker resized");
                    self.start_waiting();
                    self.heartbeat(&session).await?;
                }
                Some((first, last)) = confirmed.recv() => {
                    self.outbox.retain(|(number, _)| !(first..=last).contains(number));
                }
                Some(error) = failures.recv() => return Err(error),
                message = control.next() => {
                    let Some(message) = message else {
                        return Err(closed(&self.config.url, "the broker cancelled the control consumer"));
                    };
                    let mut last = message?;
                    self.control(&control_queue, &last);
                    for _ in 1..CONTROL_BATCH {
                        match futures_lite::future::poll_once(control.next()).await {
                            Some(Some(next)) => {
                                last = next?;
                                self.control(&control_queue, &last);
                            }
                            _ => break,
                        }
                    }
                    self.start_waiting();
                    self.flush_outbox(&mut session).await?;
                    // Handled (or refused unread): a message delivered
                    // again after a reconnect is one this worker ignores.
                    session.beside.ack_upto(last.acker).await?;
                }
                Some((task, attempt, report)) = self.progress_rx.recv() => {
                    self.took_progress(task, attempt, report);
                }
                Some(ended) = self.ended_rx.recv() => {
                    let mut next = Some(ended);
                    while let Some(ended) = next {
                        self.ended(ended);
                        // The next waiting attempt takes the slot at once.
                        self.start_waiting();
                        // Attempts that ended meanwhile report in the same
                        // message.
                        next = self.ended_rx.try_recv().ok();
                    }
                    self.flush_outbox(&mut session).await?;
                    if std::mem::take(&mut self.beat_now) {
                        self.heartbeat(&session).await?;
                    }
                }
                _ = tick.tick() => {
                    if !connection.status().connected() {
                        return Err(closed(&self.config.url, "the connection closed"));
                    }
                    self.check_deadlines();
                    self.start_waiting();
                    self.ship();
                    self.flush_outbox(&mut session).await?;
                    self.spill(&mut session, Spill::Unanswered(SPILL_AFTER)).await?;
                    if self.stopping.is_some() && self.running.is_empty() {
                        if !self.goodbye_sent {
                            self.goodbye_sent = true;
                            self.report(WorkerEvent::Goodbye { worker: self.config.name.clone() });
                            self.flush_outbox(&mut session).await?;
                            // Leaving: what the scheduler has not answered
                            // yet goes to the broker's disk, confirmed.
                            self.spill(&mut session, Spill::All).await?;
                        } else if self.outbox.is_empty() {
                            presence.release().await?;
                            let _ = connection.close(200, "taskdeck worker stopping".into()).await;
                            tracing::info!(worker = %self.config.name, "worker stopped");
                            return Ok(End::Stopped);
                        }
                    }
                }
            }
        }
    }
}

async fn next_size(size: &mut Option<watch::Receiver<usize>>) -> Option<usize> {
    match size {
        Some(receiver) => match receiver.changed().await {
            Ok(()) => Some(*receiver.borrow_and_update()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

fn closed(url: &BrokerUrl, reason: &str) -> LinkError {
    LinkError::Connect {
        url: url.to_string(),
        reason: reason.to_owned(),
    }
}
