//! The scheduler's side of the broker: publishes queued tasks (with
//! publisher confirms), applies what workers report, answers their claims,
//! sends stop requests and expires leases.
//!
//! Threads: `taskdeck-broker` runs the AMQP connection on a one-thread
//! tokio runtime; `taskdeck-broker-pump` takes queued tasks from the
//! scheduler and hands them over in batches. The scheduler learns of the
//! bridge only through [`ExternalHooks`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use super::amqp::{self, Keep, LinkError, Reconnect};
use super::protocol::{Control, Names, TaskMessage, WireOutcome, WorkerEvent};
use super::url::BrokerUrl;
use crate::model::{TaskId, TaskRecord};
use crate::scheduler::{
    Denial, ExternalDispatch, ExternalHooks, GpuDevice, Heartbeat, Recovered, RemoteOutcome,
    Scheduler, SchedulerConfig, StartError, StopRequest, Store, TransportLink,
};
use crate::tasks::{Registry, TaskError};

/// Most tasks published per confirm round.
const PUBLISH_BATCH: usize = 1_000;
/// Most worker reports applied per store commit.
const EVENT_BATCH: usize = 1_000;
/// How often leases are checked.
const LEASE_CHECK: Duration = Duration::from_millis(250);
/// How long a worker whose connection closed may take to come back (after
/// a network blip it reconnects at once) before its attempts are lost.
const RECONNECT_GRACE: Duration = Duration::from_millis(400);

/// How the scheduler reaches the broker.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The broker.
    pub url: BrokerUrl,
    /// Queue names.
    pub names: Names,
    /// How long an attempt stays with a silent worker.
    pub lease: Duration,
    /// How long a submit waits for the broker's confirm.
    pub publish_wait: Duration,
}

/// The hooks the scheduler calls, and what the bridge tells it.
struct Hooks {
    url: String,
    status: Mutex<Result<(), String>>,
    stops: mpsc::UnboundedSender<StopRequest>,
    local_workers: AtomicUsize,
    resize: watch::Sender<usize>,
}

impl ExternalHooks for Hooks {
    fn ready(&self) -> Result<(), String> {
        self.status.lock().clone()
    }

    fn stop(&self, request: StopRequest) {
        // The receiver lives as long as the bridge; after it stopped, stop
        // requests have nowhere to go and the worker's lease settles it.
        let _ = self.stops.send(request);
    }

    fn resize(&self, workers: usize) {
        self.local_workers.store(workers, Ordering::Relaxed);
        self.resize.send_replace(workers);
    }

    fn local_workers(&self) -> usize {
        self.local_workers.load(Ordering::Relaxed)
    }
}

/// The bridge before the scheduler exists: it starts the scheduler with
/// dispatch through itself and keeps the transport link to it.
pub struct BridgeLink {
    config: BridgeConfig,
    hooks: Arc<Hooks>,
    stops: mpsc::UnboundedReceiver<StopRequest>,
    resize: watch::Receiver<usize>,
}

impl BridgeLink {
    /// Prepares a bridge; `local_workers` is the size of the worker process
    /// embedded in this one (0 for none).
    pub fn new(config: BridgeConfig, local_workers: usize) -> Self {
        let (stops_tx, stops) = mpsc::unbounded_channel();
        let (resize_tx, resize) = watch::channel(local_workers);
        let hooks = Arc::new(Hooks {
            url: config.url.to_string(),
            status: Mutex::new(Err(format!(
                "not yet connected to the broker at {}",
                config.url
            ))),
            stops: stops_tx,
            local_workers: AtomicUsize::new(local_workers),
            resize: resize_tx,
        });
        Self {
            config,
            hooks,
            stops,
            resize,
        }
    }

    /// The scheduler's dispatch settings.
    fn dispatch(&self) -> ExternalDispatch {
        ExternalDispatch {
            lease: self.config.lease,
            publish_wait: self.config.publish_wait,
            hooks: Arc::clone(&self.hooks) as Arc<dyn ExternalHooks>,
        }
    }

    /// Changes of the embedded worker's size asked for in the window.
    pub fn local_size(&self) -> watch::Receiver<usize> {
        self.resize.clone()
    }

    /// Starts the scheduler with dispatch through this bridge (see
    /// [`Scheduler::start_external`]; `opened` as for
    /// [`Scheduler::start_with_store`]), then the bridge's threads, which
    /// alone hold the scheduler's transport link.
    pub fn start(
        self,
        config: SchedulerConfig,
        registry: Registry,
        opened: Option<(Arc<Store>, Recovered)>,
    ) -> Result<(Scheduler, Bridge), StartError> {
        let (scheduler, link) =
            Scheduler::start_external(config, registry, opened, self.dispatch())?;
        match self.start_threads(link) {
            Ok(bridge) => Ok((scheduler, bridge)),
            Err(error) => {
                let _ = scheduler.shutdown();
                Err(StartError::Thread(error))
            }
        }
    }

    fn start_threads(self, scheduler: TransportLink) -> std::io::Result<Bridge> {
        let Self {
            config,
            hooks,
            stops,
            resize: _,
        } = self;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (batches_tx, batches_rx) = mpsc::channel::<Batch>(1);
        let connected = Arc::new(AtomicBool::new(false));
        let pump_stop = Arc::new(AtomicBool::new(false));
        let traffic = Arc::new(Traffic::default());
        let link = Link {
            scheduler: scheduler.clone(),
            traffic: Arc::clone(&traffic),
            config,
            hooks: Arc::clone(&hooks),
            connected: Arc::clone(&connected),
            gpu_queues: Mutex::new(std::collections::HashSet::new()),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let io = thread::Builder::new()
            .name("taskdeck-broker".into())
            .spawn(move || runtime.block_on(link.run(stops, batches_rx, shutdown_rx)))?;
        let pump = {
            let stop = Arc::clone(&pump_stop);
            thread::Builder::new()
                .name("taskdeck-broker-pump".into())
                .spawn(move || pump_main(&scheduler, &connected, &stop, &batches_tx))?
        };
        Ok(Bridge {
            shutdown: shutdown_tx,
            pump_stop,
            threads: vec![pump, io],
            url: hooks.url.clone(),
            traffic,
        })
    }
}

/// The running bridge.
pub struct Bridge {
    shutdown: watch::Sender<bool>,
    pump_stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    url: String,
    traffic: Arc<Traffic>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("url", &self.url).finish()
    }
}

impl Bridge {
    /// The messages published and consumed so far.
    pub fn traffic(&self) -> BridgeTraffic {
        BridgeTraffic {
            published: self.traffic.published.load(Ordering::Relaxed),
            consumed: self.traffic.consumed.load(Ordering::Relaxed),
        }
    }

    /// Stops publishing and consuming and closes the connection. Reports not
    /// yet applied stay in the broker for the next start.
    pub fn stop(mut self) {
        self.pump_stop.store(true, Ordering::Release);
        self.shutdown.send_replace(true);
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a broker thread panicked");
            }
        }
    }
}

/// Tasks to publish, and where to say whether they were.
type Batch = (Vec<Arc<TaskRecord>>, oneshot::Sender<bool>);

fn pump_main(
    scheduler: &TransportLink,
    connected: &AtomicBool,
    stop: &AtomicBool,
    batches: &mpsc::Sender<Batch>,
) {
    while !stop.load(Ordering::Acquire) {
        if !connected.load(Ordering::Acquire) {
            thread::sleep(Duration::from_millis(50));
            continue;
        }
        let tasks = scheduler.take_for_publishing(PUBLISH_BATCH, Duration::from_millis(200));
        if tasks.is_empty() {
            continue;
        }
        let ids: Vec<TaskId> = tasks.iter().map(|task| task.id).collect();
        let (reply_tx, reply) = oneshot::channel();
        let delivered = batches.blocking_send((tasks, reply_tx)).is_ok();
        if !delivered || !reply.blocking_recv().unwrap_or(false) {
            scheduler.unpublish(&ids);
        }
    }
}

/// Messages the bridge has published to and consumed from the broker.
#[derive(Debug, Default)]
struct Traffic {
    published: AtomicU64,
    consumed: AtomicU64,
}

/// What went through the bridge so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeTraffic {
    /// Messages published: tasks, grants, denials, stop requests.
    pub published: u64,
    /// Messages consumed: every worker report (claims, heartbeats, results,
    /// hand-backs, goodbyes, lost connections).
    pub consumed: u64,
}

struct Link {
    scheduler: TransportLink,
    traffic: Arc<Traffic>,
    config: BridgeConfig,
    hooks: Arc<Hooks>,
    connected: Arc<AtomicBool>,
    /// GPU task queues declared on the current connection.
    gpu_queues: Mutex<std::collections::HashSet<u32>>,
}

impl Link {
    async fn run(
        self,
        mut stops: mpsc::UnboundedReceiver<StopRequest>,
        mut batches: mpsc::Receiver<Batch>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut reconnect = Reconnect::default();
        let mut first = true;
        loop {
            let outcome = self
                .session(
                    first,
                    &mut stops,
                    &mut batches,
                    &mut shutdown,
                    &mut reconnect,
                )
                .await;
            self.connected.store(false, Ordering::Release);
            match outcome {
                Ok(()) => return,
                Err((error, connected_once)) => {
                    first &= !connected_once;
                    let message = error.to_string();
                    *self.hooks.status.lock() = Err(format!(
                        "the broker at {} is unavailable: {message}",
                        self.config.url
                    ));
                    let delay = reconnect.delay();
                    tracing::warn!(
                        error = %message,
                        retry_in_ms = delay.as_millis() as u64,
                        "broker connection failed; retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    /// One connection's life; `Err` carries whether it got connected.
    async fn session(
        &self,
        first: bool,
        stops: &mut mpsc::UnboundedReceiver<StopRequest>,
        batches: &mut mpsc::Receiver<Batch>,
        shutdown: &mut watch::Receiver<bool>,
        reconnect: &mut Reconnect,
    ) -> Result<(), (LinkError, bool)> {
        let not_connected = |error: LinkError| (error, false);
        let connection = amqp::connect(&self.config.url, "taskdeck scheduler")
            .await
            .map_err(not_connected)?;
        let publisher = connection
            .create_channel()
            .await
            .map_err(|e| not_connected(e.into()))?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| not_connected(e.into()))?;
        amqp::declare_shared(&publisher, &self.config.names)
            .await
            .map_err(not_connected)?;
        let names = &self.config.names;
        if first {
            // The store is the truth about what is queued: messages left from
            // before this start are replaced by a fresh publish of every
            // queued task (duplicates would only be denied anyway).
            let purged = publisher
                .queue_purge(names.tasks().into(), QueuePurgeOptions::default())
                .await
                .map_err(|e| not_connected(e.into()))?;
            if purged > 0 {
                tracing::info!(purged, "replaced the task messages left in the broker");
            }
        }
        let consumer_channel = connection
            .create_channel()
            .await
            .map_err(|e| not_connected(e.into()))?;
        consumer_channel
            .basic_qos(EVENT_BATCH as u16, BasicQosOptions::default())
            .await
            .map_err(|e| not_connected(e.into()))?;
        let mut events = consumer_channel
            .basic_consume(
                names.events().into(),
                "taskdeck-scheduler".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| not_connected(e.into()))?;
        reconnect.reset();
        self.gpu_queues.lock().clear();
        // Leases were not renewed while the broker was away.
        self.scheduler.renew_all_leases();
        *self.hooks.status.lock() = Ok(());
        self.connected.store(true, Ordering::Release);
        tracing::info!(broker = %self.config.url, namespace = names.namespace(), "connected to the broker");
        let mut lease_check = tokio::time::interval(LEASE_CHECK);
        let (failures_tx, mut failures) = mpsc::unbounded_channel::<LinkError>();
        let failed = |error: LinkError| (error, true);
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    let _ = connection.close(200, "taskdeck scheduler stopping".into()).await;
                    return Ok(());
                }
                Some((tasks, reply)) = batches.recv() => {
                    // The confirms are awaited beside the loop, so reports
                    // keep flowing meanwhile; the pump waits for the reply.
                    match self.publish_tasks(&publisher, &tasks).await {
                        Ok(confirms) => {
                            let scheduler = self.scheduler.clone();
                            let failures = failures_tx.clone();
                            tokio::spawn(async move {
                                let outcome = await_confirms(confirms).await;
                                if outcome.is_ok() {
                                    let ids: Vec<TaskId> = tasks.iter().map(|task| task.id).collect();
                                    scheduler.published(&ids);
                                }
                                let _ = reply.send(outcome.is_ok());
                                if let Err(error) = outcome {
                                    let _ = failures.send(error);
                                }
                            });
                        }
                        Err(error) => {
                            let _ = reply.send(false);
                            return Err(failed(error));
                        }
                    }
                }
                Some(error) = failures.recv() => return Err(failed(error)),
                Some(stop) = stops.recv() => {
                    let control = Control::Stop {
                        task: stop.task,
                        attempt: stop.attempt,
                        reason: stop.reason.into(),
                    };
                    amqp::publish(&publisher, &names.control(&stop.worker), &control, 0, Keep::Transient)
                        .await
                        .map_err(failed)?;
                    self.traffic.published.fetch_add(1, Ordering::Relaxed);
                }
                delivery = events.next() => {
                    let Some(delivery) = delivery else {
                        return Err(failed(LinkError::Connect {
                            url: self.config.url.to_string(),
                            reason: "the broker cancelled the event consumer".into(),
                        }));
                    };
                    let mut batch = vec![delivery.map_err(|e| failed(e.into()))?];
                    while batch.len() < EVENT_BATCH {
                        match futures_lite::future::poll_once(events.next()).await {
                            Some(Some(next)) => batch.push(next.map_err(|e| failed(e.into()))?),
                            _ => break,
                        }
                    }
                    self.apply_events(&publisher, batch).await.map_err(failed)?;
                }
                _ = lease_check.tick() => {
                    let lost = self.scheduler.expire_leases();
                    if lost > 0 {
                        tracing::warn!(lost, "attempts lost: their workers stopped sending heartbeats");
                    }
                    if !connection.status().connected() {
                        return Err(failed(LinkError::Connect {
                            url: self.config.url.to_string(),
                            reason: "the connection closed".into(),
                        }));
                    }
                }
            }
        }
    }

    /// Publishes tasks; returns their pending confirms.
    async fn publish_tasks(
        &self,
        channel: &lapin::Channel,
        tasks: &[Arc<TaskRecord>],
    ) -> Result<Vec<lapin::PublisherConfirm>, LinkError> {
        let names = &self.config.names;
        let mut confirms = Vec::with_capacity(tasks.len());
        for task in tasks {
            let message = TaskMessage {
                task: task.id,
                spec: task.spec.clone(),
            };
            // A GPU task goes to the queue of its GPU count, which only
            // workers with that many devices consume.
            let queue = match task.spec.gpus {
                0 => names.tasks(),
                gpus => {
                    let first = self.gpu_queues.lock().insert(gpus);
                    if first {
                        amqp::declare_gpu_tasks(channel, names, gpus).await?;
                    }
                    names.gpu_tasks(gpus)
                }
            };
            confirms.push(
                amqp::publish(channel, &queue, &message, task.spec.priority, Keep::Durable).await?,
            );
        }
        self.traffic
            .published
            .fetch_add(tasks.len() as u64, Ordering::Relaxed);
        Ok(confirms)
    }

    /// Applies a batch of worker reports, commits them, answers, and only
    /// then acknowledges them: a report is never lost, and a grant is sent
    /// only once the task's running state is on disk.
    async fn apply_events(
        &self,
        channel: &lapin::Channel,
        batch: Vec<Delivery>,
    ) -> Result<(), LinkError> {
        let mut answers: Vec<(String, Control)> = Vec::new();
        self.traffic
            .consumed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for delivery in &batch {
            match serde_json::from_slice::<WorkerEvent>(&delivery.data) {
                Ok(event) => self.apply(event, &mut answers),
                Err(error) => {
                    tracing::warn!(%error, "dropping a malformed worker report");
                }
            }
        }
        if let Err(error) = self.scheduler.flush() {
            tracing::error!(%error, "cannot commit worker reports; they stay in the broker");
            return Err(LinkError::Connect {
                url: self.config.url.to_string(),
                reason: format!("the store failed: {error}"),
            });
        }
        // Answers are not waited for: a worker sends an unanswered claim
        // again, and an attempt whose grant was lost runs out its lease.
        for (worker, control) in &answers {
            let queue = self.config.names.control(worker);
            amqp::publish(channel, &queue, control, 0, Keep::Transient).await?;
        }
        self.traffic
            .published
            .fetch_add(answers.len() as u64, Ordering::Relaxed);
        if let Some(last) = batch.last() {
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
        Ok(())
    }

    fn apply(&self, event: WorkerEvent, answers: &mut Vec<(String, Control)>) {
        let scheduler = &self.scheduler;
        match event {
            WorkerEvent::Claim {
                worker,
                task,
                gpu_ids,
            } => {
                let answer = match scheduler.claim(&worker, task, gpu_ids) {
                    Ok(grant) => Control::Grant {
                        task,
                        attempt: grant.attempt,
                        timeout_ms: grant
                            .timeout
                            .map(|timeout| u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
                        lease_ms: Some(
                            u64::try_from(self.config.lease.as_millis()).unwrap_or(u64::MAX),
                        ),
                    },
                    Err(denial) => Control::Deny {
                        task,
                        reason: describe(denial),
                    },
                };
                answers.push((worker, answer));
            }
            WorkerEvent::Heartbeat {
                worker,
                host,
                concurrency,
                running,
                resources,
                gpus,
                session,
            } => {
                let beat = Heartbeat {
                    worker,
                    host,
                    concurrency,
                    running,
                    resources,
                    gpus: gpus
                        .into_iter()
                        .map(|(id, memory_mb)| GpuDevice { id, memory_mb })
                        .collect(),
                    session,
                };
                for stop in scheduler.heartbeat(&beat) {
                    answers.push((
                        stop.worker,
                        Control::Stop {
                            task: stop.task,
                            attempt: stop.attempt,
                            reason: stop.reason.into(),
                        },
                    ));
                }
            }
            WorkerEvent::Finished {
                worker,
                task,
                attempt,
                outcome,
                run_time_us,
                log,
                ..
            } => {
                let outcome = match outcome {
                    WireOutcome::Completed { value } => RemoteOutcome::Completed(value),
                    WireOutcome::Error {
                        message,
                        retryable,
                        stop,
                    } => RemoteOutcome::Error(TaskError {
                        retryable,
                        stop: stop.map(Into::into),
                        message,
                    }),
                    WireOutcome::Panicked { message } => RemoteOutcome::Panicked(message),
                };
                scheduler.finish(&worker, task, attempt, outcome, log, run_time_us);
            }
            WorkerEvent::Release {
                worker,
                task,
                attempt,
            } => scheduler.release(&worker, task, attempt),
            WorkerEvent::ConnectionLost { worker, session } => {
                let waiting = scheduler.connection_lost(&worker, session, RECONNECT_GRACE);
                if waiting > 0 {
                    tracing::warn!(
                        %worker,
                        attempts = waiting,
                        grace_ms = RECONNECT_GRACE.as_millis() as u64,
                        "worker's connection closed; its attempts run again unless it is back within the grace"
                    );
                    let scheduler = scheduler.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(RECONNECT_GRACE).await;
                        scheduler.expire_leases();
                    });
                }
            }
            WorkerEvent::Goodbye { worker } => {
                tracing::info!(%worker, "worker stopped");
                scheduler.worker_gone(&worker);
            }
        }
    }
}

/// Waits for every confirm; a negative one is an error.
async fn await_confirms(confirms: Vec<lapin::PublisherConfirm>) -> Result<(), LinkError> {
    for confirm in confirms {
        if confirm.await?.is_nack() {
            return Err(LinkError::Nacked);
        }
    }
    Ok(())
}

fn describe(denial: Denial) -> String {
    match denial {
        Denial::Unknown => "unknown task".to_owned(),
        Denial::RunningElsewhere => "another worker runs it".to_owned(),
        Denial::NotQueued(status) => format!("it is {status}"),
        Denial::NotReady => "it may not start now".to_owned(),
    }
}
