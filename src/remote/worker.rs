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
    /// Time between heartbeats (keep it well under the scheduler's lease).
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
        let mut last_beat = Instant::now();
        loop {
            tokio::select! {
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
                    if last_beat.elapsed() >= self.config.heartbeat {
                        last_beat = Instant::now();
                        self.heartbeat(&session).await?;
                    }
                    if self.stopping.is_some() && self.running.is_empty() {
                        if !self.goodbye_sent {
                            self.goodbye_sent = true;
                            self.report(WorkerEvent::Goodbye { worker: self.config.name.clone() });
                            self.flush_outbox(&mut session).await?;
                        } else if self.outbox.is_empty() {
                            let _ = connection.close(200, "taskdeck worker stopping".into()).await;
                            tracing::info!(worker = %self.config.name, "worker stopped");
                            return Ok(End::Stopped);
                        }
                    }
                }
            }
        }
    }

    /// Stops taking tasks: cancels the consumers and gives back deliveries
    /// still waiting for an answer.
    async fn begin_stop(&mut self, session: &mut Session) -> Result<(), LinkError> {
        self.stopping = Some(Instant::now());
        tracing::info!(
            running = self.running.len(),
            grace_secs = self.config.stop_grace.as_secs_f64(),
            "worker stopping; letting running tasks finish"
        );
        let tags: Vec<String> = session.consumers.keys().cloned().collect();
        for tag in tags {
            session
                .consume
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await?;
            if let Some(Slot {
                claim: Some(claim), ..
            }) = session.consumers.remove(&tag)
            {
                self.gpus_free.extend(claim.gpu_ids.iter().copied());
                claim
                    .acker
                    .reject(BasicRejectOptions { requeue: true })
                    .await?;
            }
        }
        Ok(())
    }

    /// Opens consumers for free slots, or closes idle ones beyond the size.
    ///
    /// Rules:
    /// - one consumer with a prefetch of one on the task queue per slot that
    ///   runs no attempt;
    /// - while a slot is free, one consumer on the queue of tasks needing `k`
    ///   GPUs for each `k` up to the devices now free (a delivery that finds
    ///   no room after all goes back to the queue and its consumer closes).
    async fn top_up(&mut self, session: &mut Session) -> Result<(), LinkError> {
        if self.stopping.is_some() {
            return Ok(());
        }
        let cpu_consumers = session
            .consumers
            .values()
            .filter(|slot| slot.gpus == 0)
            .count();
        let cpu_wanted = self.concurrency.saturating_sub(self.running.len());
        for _ in cpu_consumers..cpu_wanted {
            self.consume(session, 0).await?;
        }
        let free_slots = self.free_slots(session);
        let mut surplus = cpu_consumers.saturating_sub(cpu_wanted);
        let free_gpus = self.gpus_free.len();
        let mut stale = Vec::new();
        for (tag, slot) in &session.consumers {
            if slot.claim.is_some() {
                continue;
            }
            let unwanted = if slot.gpus == 0 {
                surplus > 0
            } else {
                free_slots == 0 || usize::try_from(slot.gpus).unwrap_or(usize::MAX) > free_gpus
            };
            if unwanted {
                if slot.gpus == 0 {
                    surplus -= 1;
                }
                stale.push(tag.clone());
            }
        }
        for tag in stale {
            session.consumers.remove(&tag);
            session
                .consume
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await?;
        }
        if free_slots > 0 {
            for gpus in 1..=self.gpu_total() {
                let fits = usize::try_from(gpus).is_ok_and(|n| n <= free_gpus);
                let open = session.consumers.values().any(|slot| slot.gpus == gpus);
                if fits && !open {
                    self.consume(session, gpus).await?;
                }
            }
        }
        Ok(())
    }

    /// Starts a consumer with a prefetch of one on the task queue (`gpus`
    /// 0) or the queue of tasks that need `gpus` GPUs.
    async fn consume(&mut self, session: &mut Session, gpus: u32) -> Result<(), LinkError> {
        self.next_tag += 1;
        let tag = format!("{}-slot-{}", self.config.name, self.next_tag);
        let queue = match gpus {
            0 => self.config.names.tasks(),
            gpus => self.config.names.gpu_tasks(gpus),
        };
        let consumer = session
            .consume
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        session
            .consumers
            .insert(tag.clone(), Slot { gpus, claim: None });
        tokio::spawn(forward(consumer, tag, session.deliveries_tx.clone()));
        Ok(())
    }

    /// Slots neither running an attempt nor holding a claim.
    fn free_slots(&self, session: &Session) -> usize {
        let claimed = session
            .consumers
            .values()
            .filter(|slot| slot.claim.is_some())
            .count();
        self.concurrency
            .saturating_sub(self.running.len() + claimed)
    }

    /// The GPU devices this worker offers.
    fn gpu_total(&self) -> u32 {
        u32::try_from(self.config.gpus.len()).unwrap_or(u32::MAX)
    }

    /// Free devices with enough memory for `spec`, `spec.gpus` of them, or
    /// none when there are not that many.
    fn pick_gpus(&self, spec: &TaskSpec) -> Option<Vec<u32>> {
        let wanted = usize::try_from(spec.gpus).ok()?;
        let picked: Vec<u32> = self
            .config
            .gpus
            .iter()
            .filter(|device| self.gpus_free.contains(&device.id))
            .filter(|device| {
                spec.gpu_memory_mb
                    .is_none_or(|mb| device.memory_mb.is_none_or(|total| total >= mb))
            })
            .map(|device| device.id)
            .take(wanted)
            .collect();
        (picked.len() == wanted).then_some(picked)
    }

    async fn delivered(
        &mut self,
        session: &mut Session,
        tag: String,
        delivery: Delivery,
    ) -> Result<(), LinkError> {
        let room = self.free_slots(session) > 0;
        let Some(slot) = session.consumers.get_mut(&tag) else {
            // A consumer cancelled meanwhile (stopping or shrinking).
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: true })
                .await?;
            return Ok(());
        };
        let slot_gpus = slot.gpus;
        let message = match serde_json::from_slice::<TaskMessage>(&delivery.data) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "dropping a malformed task message");
                delivery.acker.ack(BasicAckOptions::default()).await?;
                return Ok(());
            }
        };
        if self.running.contains_key(&message.task) {
            // A duplicate of what this worker already runs.
            delivery.acker.ack(BasicAckOptions::default()).await?;
            return Ok(());
        }
        let gpu_ids = match slot_gpus {
            0 => Some(Vec::new()),
            _ => self.pick_gpus(&message.spec),
        };
        let (true, Some(gpu_ids)) = (room, gpu_ids) else {
            // Another consumer took the last slot or the devices first: the
            // task goes back for someone else, and this consumer closes.
            session.consumers.remove(&tag);
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: true })
                .await?;
            session
                .consume
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await?;
            return Ok(());
        };
        for id in &gpu_ids {
            self.gpus_free.remove(id);
        }
        let task = message.task;
        let Some(slot) = session.consumers.get_mut(&tag) else {
            return Ok(());
        };
        slot.claim = Some(Claim {
            task,
            spec: message.spec,
            acker: delivery.acker,
            sent_at: Instant::now(),
            gpu_ids: gpu_ids.clone(),
        });
        self.send_claim(session, task, gpu_ids).await?;
        // Devices set aside may close GPU consumers that no longer fit.
        self.top_up(session).await
    }

    /// Asks the scheduler for a task. Not waited for: the answer comes back
    /// on the control queue; a claim or answer lost on the way is sent again
    /// after [`CLAIM_RESEND`].
    async fn send_claim(
        &self,
        session: &Session,
        task: TaskId,
        gpu_ids: Vec<u32>,
    ) -> Result<(), LinkError> {
        let claim = WorkerEvent::Claim {
            worker: self.config.name.clone(),
            task,
            gpu_ids,
        };
        amqp::publish(
            &session.publish,
            &self.config.names.events(),
            &claim,
            0,
            Keep::Transient,
        )
        .await?;
        Ok(())
    }

    /// Sends again the claims that got no answer in time.
    async fn resend_claims(&self, session: &mut Session) -> Result<(), LinkError> {
        let now = Instant::now();
        let mut stale = Vec::new();
        for claim in session
            .consumers
            .values_mut()
            .filter_map(|slot| slot.claim.as_mut())
        {
            if now >= claim.sent_at + CLAIM_RESEND {
                claim.sent_at = now;
                stale.push((claim.task, claim.gpu_ids.clone()));
            }
        }
        for (task, gpu_ids) in stale {
            tracing::debug!(%task, "no answer to a claim yet; asking again");
            self.send_claim(session, task, gpu_ids).await?;
        }
        Ok(())
    }

    async fn control(&mut self, session: &mut Session, data: &[u8]) -> Result<(), LinkError> {
        let message = match serde_json::from_slice::<Control>(data) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "dropping a malformed message from the scheduler");
                return Ok(());
            }
        };
        match message {
            Control::Grant {
                task,
                attempt,
                timeout_ms,
            } => self.granted(session, task, attempt, timeout_ms).await?,
            Control::Deny { task, reason } => {
                if let Some((_, claim)) = take_claim(session, task) {
                    tracing::debug!(%task, %reason, "claim denied; dropping the message");
                    self.gpus_free.extend(claim.gpu_ids.iter().copied());
                    session.beside(async move {
                        claim.acker.ack(BasicAckOptions::default()).await?;
                        Ok(())
                    });
                }
            }
            Control::Stop {
                task,
                attempt,
                reason,
            } => {
                if let Some(run) = self.running.get_mut(&task)
                    && run.attempt == attempt
                {
                    let reason = StopReason::from(reason);
                    tracing::info!(%task, attempt, ?reason, "stopping an attempt as asked");
                    run.cancel.cancel(reason);
                    run.stop_asked.get_or_insert((Instant::now(), reason));
                }
            }
        }
        Ok(())
    }

    async fn granted(
        &mut self,
        session: &mut Session,
        task: TaskId,
        attempt: u32,
        timeout_ms: Option<u64>,
    ) -> Result<(), LinkError> {
        let Some((tag, claim)) = take_claim(session, task) else {
            if self
                .running
                .get(&task)
                .is_none_or(|run| run.attempt != attempt)
            {
                // Granted after this worker lost the delivery (reconnect or
                // stop): hand it back so it is queued again at once.
                self.report(WorkerEvent::Release {
                    worker: self.config.name.clone(),
                    task,
                    attempt,
                });
                self.flush_outbox(session).await?;
            }
            return Ok(());
        };
        // Cancel first, then acknowledge: the broker must not push another
        // task into the slot this attempt now takes. Both run beside the
        // loop; the attempt starts at once (the grant is what counts).
        session.consumers.remove(&tag);
        let Claim {
            spec,
            acker,
            gpu_ids,
            ..
        } = claim;
        let channel = session.consume.clone();
        session.beside(async move {
            channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await?;
            acker.ack(BasicAckOptions::default()).await?;
            Ok(())
        });
        self.start_attempt(task, attempt, timeout_ms, spec, gpu_ids);
        Ok(())
    }

    fn start_attempt(
        &mut self,
        task: TaskId,
        attempt: u32,
        timeout_ms: Option<u64>,
        spec: TaskSpec,
        gpu_ids: Vec<u32>,
    ) {
        let cancel = CancelToken::new();
        let ctx = TaskContext::new(task, attempt, self.config.name.clone(), cancel.clone())
            .with_gpus(gpu_ids.clone());
        let registry = Arc::clone(&self.config.registry);
        let ended = self.ended_tx.clone();
        let spawned = thread::Builder::new()
            .name(format!("taskdeck-task-{task}"))
            .spawn(move || {
                let started_at_us = now_us();
                let begun = Instant::now();
                let outcome = run_attempt(&registry, &ctx, &spec);
                let run_time_us = i64::try_from(begun.elapsed().as_micros()).unwrap_or(i64::MAX);
                // The worker may have gone; nothing to report to then.
                let _ = ended.send(Ended {
                    task,
                    attempt,
                    outcome,
                    log: ctx.take_log(),
                    started_at_us,
                    finished_at_us: now_us(),
                    run_time_us,
                });
            });
        self.running.insert(
            task,
            Running {
                attempt,
                gpu_ids,
                cancel,
                deadline: timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms)),
                stop_asked: None,
            },
        );
        if let Err(error) = spawned {
            tracing::error!(%error, %task, "cannot start a thread for the task");
            self.release(task);
            self.report(finished(
                &self.config.name,
                task,
                attempt,
                WireOutcome::Error {
                    message: format!("the worker cannot start a thread: {error}"),
                    retryable: true,
                    stop: None,
                },
                0,
            ));
        }
    }

    /// Records an attempt's end for reporting, when it still counts here.
    fn ended(&mut self, ended: Ended) {
        let current = self
            .running
            .get(&ended.task)
            .is_some_and(|run| run.attempt == ended.attempt);
        if !current {
            return;
        }
        self.release(ended.task);
        let outcome = match ended.outcome {
            RemoteOutcome::Completed(value) => WireOutcome::Completed { value },
            RemoteOutcome::Error(error) => WireOutcome::Error {
                message: error.message,
                retryable: error.retryable,
                stop: error.stop.map(WireStop::from),
            },
            RemoteOutcome::Panicked(message) => WireOutcome::Panicked { message },
        };
        self.report(WorkerEvent::Finished {
            worker: self.config.name.clone(),
            task: ended.task,
            attempt: ended.attempt,
            outcome,
            started_at_us: ended.started_at_us,
            finished_at_us: ended.finished_at_us,
            run_time_us: ended.run_time_us,
            log: ended.log,
        });
    }

    /// Enforces timeouts, the stop grace, and the wait for stopped attempts.
    fn check_deadlines(&mut self) {
        let now = Instant::now();
        let grace_over = self
            .stopping
            .is_some_and(|since| now >= since + self.config.stop_grace);
        let mut abandoned = Vec::new();
        for (task, run) in &mut self.running {
            if run.stop_asked.is_none() {
                let reason = if run.deadline.is_some_and(|deadline| now >= deadline) {
                    Some(StopReason::TimedOut)
                } else if grace_over {
                    Some(StopReason::Shutdown)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    run.cancel.cancel(reason);
                    run.stop_asked = Some((now, reason));
                }
            }
            if let Some((asked, reason)) = run.stop_asked
                && now >= asked + STOP_WAIT
            {
                abandoned.push((*task, run.attempt, reason));
            }
        }
        for (task, attempt, reason) in abandoned {
            tracing::warn!(%task, attempt, "attempt did not stop when asked; leaving its thread behind");
            self.release(task);
            let event = if reason == StopReason::Shutdown {
                WorkerEvent::Release {
                    worker: self.config.name.clone(),
                    task,
                    attempt,
                }
            } else {
                finished(
                    &self.config.name,
                    task,
                    attempt,
                    WireOutcome::Error {
                        message: format!(
                            "did not stop within {} s of being asked; its thread was left behind",
                            STOP_WAIT.as_secs()
                        ),
                        retryable: true,
                        stop: Some(reason.into()),
                    },
                    0,
                )
            };
            self.report(event);
        }
    }

    /// Forgets a running attempt and frees its devices.
    fn release(&mut self, task: TaskId) {
        if let Some(run) = self.running.remove(&task) {
            self.gpus_free.extend(run.gpu_ids);
        }
    }

    /// Asks every running attempt to stop (the broker is gone while the
    /// worker stops); their leases settle them on the scheduler's side.
    fn abandon_all(&mut self) {
        for run in self.running.values() {
            run.cancel.cancel(StopReason::Shutdown);
        }
    }

    async fn heartbeat(&self, session: &Session) -> Result<(), LinkError> {
        let resources = self
            .config
            .resources
            .as_ref()
            .and_then(|source| source())
            .map(|sample| HostSummary::from_sample(&sample));
        let mut running: Vec<(TaskId, u32)> = self
            .running
            .iter()
            .map(|(task, run)| (*task, run.attempt))
            .collect();
        running.sort_unstable();
        let beat = WorkerEvent::Heartbeat {
            worker: self.config.name.clone(),
            host: self.config.host.clone(),
            concurrency: self.concurrency,
            running,
            resources,
            gpus: self
                .config
                .gpus
                .iter()
                .map(|device| (device.id, device.memory_mb))
                .collect(),
        };
        amqp::publish(
            &session.publish,
            &self.config.names.events(),
            &beat,
            0,
            Keep::Transient,
        )
        .await?;
        Ok(())
    }

    /// Queues a report; it stays queued until the broker confirmed it.
    fn report(&mut self, event: WorkerEvent) {
        self.next_report += 1;
        self.outbox.push_back((self.next_report, event));
    }

    /// Publishes the reports not yet published on this connection, in
    /// order. Their confirms are awaited beside the loop; a report leaves
    /// the outbox once confirmed, and one unconfirmed when the connection
    /// drops is published again on the next (the scheduler ignores a report
    /// it already applied).
    async fn flush_outbox(&mut self, session: &mut Session) -> Result<(), LinkError> {
        let queue = self.config.names.events();
        for (number, event) in &self.outbox {
            if session.unconfirmed.contains(number) {
                continue;
            }
            let confirm = amqp::publish(&session.publish, &queue, event, 0, Keep::Durable).await?;
            session.unconfirmed.insert(*number);
            let number = *number;
            let confirmed = session.confirmed_tx.clone();
            session.beside(async move {
                if confirm.await?.is_nack() {
                    return Err(LinkError::Nacked);
                }
                let _ = confirmed.send(number);
                Ok(())
            });
        }
        Ok(())
    }
}

fn finished(
    worker: &str,
    task: TaskId,
    attempt: u32,
    outcome: WireOutcome,
    run_time_us: i64,
) -> WorkerEvent {
    let now = now_us();
    WorkerEvent::Finished {
        worker: worker.to_owned(),
        task,
        attempt,
        outcome,
        started_at_us: now - run_time_us,
        finished_at_us: now,
        run_time_us,
        log: None,
    }
}

fn take_claim(session: &mut Session, task: TaskId) -> Option<(String, Claim)> {
    let tag = session
        .consumers
        .iter()
        .find(|(_, slot)| slot.claim.as_ref().is_some_and(|claim| claim.task == task))
        .map(|(tag, _)| tag.clone())?;
    let claim = session.consumers.get_mut(&tag)?.claim.take()?;
    Some((tag, claim))
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
