//! The worker process: consumes tasks from the broker, claims each one from
//! the scheduler before running it, runs granted attempts on threads,
//! reports heartbeats (with the host's resources) and results, and follows
//! stop requests. `taskdeck worker` runs it alone; the window and `serve`
//! embed one so the local machine keeps working.
//!
//! Load balancing: each free slot is one consumer with a prefetch of one,
//! under a channel-wide prefetch equal to the concurrency. A granted
//! delivery's consumer is cancelled before the delivery is acknowledged, so
//! the broker never pushes a task to a worker without a free slot, and a
//! running task holds no unacknowledged delivery (the broker's consumer
//! timeout never applies to it; the scheduler's lease does).

mod attempts;
mod presence;
mod slots;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Acker, Channel, Consumer};
use tokio::sync::{mpsc, watch};

use super::amqp::{self, Keep, LinkError, Reconnect};
use super::protocol::{Control, Names, TaskMessage, WireOutcome, WireStop, WorkerEvent};
use super::url::BrokerUrl;
use crate::model::{HostSummary, ResourceSample, TaskId, TaskLog, TaskSpec, now_us};
use crate::scheduler::{GpuDevice, RemoteOutcome, run_attempt};
use crate::tasks::{CancelToken, Registry, StopReason, TaskContext};

/// How long an attempt asked to stop may take before its thread is left
/// behind and its slot freed.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How often deadlines and the connection are checked.
const TICK: Duration = Duration::from_millis(250);
/// A claim not answered for this long is sent again (the scheduler answers
/// repeated claims the same way).
const CLAIM_RESEND: Duration = Duration::from_secs(10);

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
    /// Device ids it holds.
    gpu_ids: Vec<u32>,
    cancel: CancelToken,
    deadline: Option<Instant>,
    stop_asked: Option<(Instant, StopReason)>,
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

/// A delivery claimed and waiting for the scheduler's answer.
struct Claim {
    task: TaskId,
    spec: TaskSpec,
    acker: Acker,
    sent_at: Instant,
    /// Device ids set aside for it (a GPU task).
    gpu_ids: Vec<u32>,
}

/// One consumer of a free slot: on the task queue (`gpus` 0) or on the queue
/// of tasks that need `gpus` GPUs, with the delivery it claimed, if any.
struct Slot {
    gpus: u32,
    claim: Option<Claim>,
}

struct Worker {
    config: WorkerConfig,
    concurrency: usize,
    running: HashMap<TaskId, Running>,
    /// Reports waiting for the broker's confirm, oldest first, by number.
    outbox: VecDeque<(u64, WorkerEvent)>,
    next_report: u64,
    /// Said goodbye while stopping; waiting for its confirm.
    goodbye_sent: bool,
    ended_tx: mpsc::UnboundedSender<Ended>,
    ended_rx: mpsc::UnboundedReceiver<Ended>,
    stopping: Option<Instant>,
    next_tag: u64,
    /// Device ids neither running nor set aside for a claim.
    gpus_free: BTreeSet<u32>,
    /// The current connection, for heartbeats and the presence token.
    session_id: u64,
    /// The scheduler's lease, from its grants.
    lease: Option<Duration>,
}

/// One connection's channels and consumers.
struct Session {
    consume: Channel,
    publish: Channel,
    consumers: HashMap<String, Slot>,
    deliveries_tx: mpsc::UnboundedSender<(String, Result<Delivery, lapin::Error>)>,
    /// Reports published on this connection, waiting for their confirm.
    unconfirmed: HashSet<u64>,
    /// Confirmed report numbers, from the tasks that wait for confirms.
    confirmed_tx: mpsc::UnboundedSender<u64>,
    /// Failures of operations that run beside the loop.
    failures_tx: mpsc::UnboundedSender<LinkError>,
}

impl Session {
    /// Runs a broker operation beside the loop; its failure ends the session.
    fn beside(
        &self,
        operation: impl std::future::Future<Output = Result<(), LinkError>> + Send + 'static,
    ) {
        let failures = self.failures_tx.clone();
        tokio::spawn(async move {
            if let Err(error) = operation.await {
                // The session may be over already; then nobody needs to know.
                let _ = failures.send(error);
            }
        });
    }
}

enum End {
    Stopped,
}

impl Worker {
    fn new(config: WorkerConfig) -> Self {
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        Self {
            concurrency: config.concurrency,
            config,
            running: HashMap::new(),
            outbox: VecDeque::new(),
            next_report: 0,
            goodbye_sent: false,
            ended_tx,
            ended_rx,
            stopping: None,
            next_tag: 0,
            gpus_free: BTreeSet::new(),
            session_id: 0,
            lease: None,
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

    /// Takes the scheduler's lease from a grant.
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
                    let delay = reconnect.delay();
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
                            Some(ended) = self.ended_rx.recv() => self.ended(ended),
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
        for gpus in 1..=self.gpu_total() {
            amqp::declare_gpu_tasks(&publish, &names, gpus).await?;
        }
        // Claims died with the last connection; what runs keeps its devices.
        self.gpus_free = self.config.gpus.iter().map(|device| device.id).collect();
        for run in self.running.values() {
            for id in &run.gpu_ids {
                self.gpus_free.remove(id);
            }
        }
        let consume = connection.create_channel().await?;
        let limit = u16::try_from(self.concurrency.max(1)).unwrap_or(u16::MAX);
        consume
            .basic_qos(1, BasicQosOptions { global: false })
            .await?;
        consume
            .basic_qos(limit, BasicQosOptions { global: true })
            .await?;
        let control_channel = connection.create_channel().await?;
        let mut control = control_channel
            .basic_consume(
                control_queue.as_str().into(),
                format!("{}-control", self.config.name).as_str().into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
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
        )
        .await?;
        let (deliveries_tx, mut deliveries) = mpsc::unbounded_channel();
        let (confirmed_tx, mut confirmed) = mpsc::unbounded_channel();
        let (failures_tx, mut failures) = mpsc::unbounded_channel();
        let mut session = Session {
            consume,
            publish,
            consumers: HashMap::new(),
            deliveries_tx,
            unconfirmed: HashSet::new(),
            confirmed_tx,
            failures_tx,
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
        if self.stopping.is_none() && !*shutdown.borrow() {
            self.top_up(&mut session).await?;
        }
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
                        self.begin_stop(&mut session).await?;
                    }
                }
                Some(changed) = next_size(size) => {
                    self.concurrency = changed;
                    tracing::info!(concurrency = changed, "worker resized");
                    let limit = u16::try_from(changed.max(1)).unwrap_or(u16::MAX);
                    session.consume.basic_qos(limit, BasicQosOptions { global: true }).await?;
                    self.top_up(&mut session).await?;
                    self.heartbeat(&session).await?;
                }
                Some((tag, delivery)) = deliveries.recv() => {
                    self.delivered(&mut session, tag, delivery?).await?;
                }
                Some(report) = confirmed.recv() => {
                    session.unconfirmed.remove(&report);
                    self.outbox.retain(|(number, _)| *number != report);
                }
                Some(error) = failures.recv() => return Err(error),
                message = control.next() => {
                    let Some(message) = message else {
                        return Err(closed(&self.config.url, "the broker cancelled the control consumer"));
                    };
                    self.control(&mut session, &message?.data).await?;
                }
                Some(ended) = self.ended_rx.recv() => {
                    self.ended(ended);
                    // Free the slot first, so the next task is on its way
                    // while the report is confirmed.
                    self.top_up(&mut session).await?;
                    self.flush_outbox(&mut session).await?;
                }
                _ = tick.tick() => {
                    if !connection.status().connected() {
                        return Err(closed(&self.config.url, "the connection closed"));
                    }
                    self.check_deadlines();
                    self.resend_claims(&mut session).await?;
                    self.flush_outbox(&mut session).await?;
                    if self.stopping.is_none() {
                        self.top_up(&mut session).await?;
                    }
                    if self.stopping.is_some() && self.running.is_empty() {
                        if !self.goodbye_sent {
                            self.goodbye_sent = true;
                            self.report(WorkerEvent::Goodbye { worker: self.config.name.clone() });
                            self.flush_outbox(&mut session).await?;
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

async fn forward(
    mut consumer: Consumer,
    tag: String,
    deliveries: mpsc::UnboundedSender<(String, Result<Delivery, lapin::Error>)>,
) {
    while let Some(delivery) = consumer.next().await {
        if deliveries.send((tag.clone(), delivery)).is_err() {
            return;
        }
    }
}

fn closed(url: &BrokerUrl, reason: &str) -> LinkError {
    LinkError::Connect {
        url: url.to_string(),
        reason: reason.to_owned(),
    }
}
