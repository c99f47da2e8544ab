//! The scheduler's side of the broker: sends the attempts the scheduler
//! places to their workers' queues (persistent, with publisher confirms),
//! applies what workers report, sends stop and hand-back requests and
//! expires leases.
//!
//! One thread, `taskdeck-broker`, runs the AMQP connection on a one-thread
//! tokio runtime. It places tasks when the scheduler says work may have
//! come (a submit, a retry due, a release), after each batch of worker
//! reports (an attempt that ended frees its slot) and on its lease tick.
//! A placement not yet confirmed by the broker when the connection drops is
//! sent again on the next (the worker ignores one it already has). The
//! scheduler learns of the bridge only through [`ExternalHooks`].

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::amqp::{self, Keep, LinkError, Reconnect};
use super::protocol::{Control, Names, PROTOCOL, WireOutcome, WorkerEvent, decode};
use super::url::BrokerUrl;
use crate::model::TaskId;
use crate::scheduler::{
    ExternalDispatch, ExternalHooks, GpuDevice, Heartbeat, Placed, Recovered, RemoteOutcome,
    Scheduler, SchedulerConfig, StartError, StopRequest, Store, TransportLink,
};
use crate::tasks::{Registry, TaskError};

/// Most attempts placed per round.
const PLACE_BATCH: usize = 1_000;
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
}

/// The hooks the scheduler calls, and what the bridge tells it.
struct Hooks {
    url: String,
    status: Mutex<Result<(), String>>,
    stops: mpsc::UnboundedSender<StopRequest>,
    /// Wakes the connection's loop to place tasks (one pending wake is
    /// enough).
    work: mpsc::Sender<()>,
    local_workers: AtomicUsize,
    resize: watch::Sender<usize>,
}

impl ExternalHooks for Hooks {
    fn ready(&self) -> Result<(), String> {
        self.status.lock().clone()
    }

    fn work(&self) {
        // Full: a wake is pending already, which places this work too.
        let _ = self.work.try_send(());
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
    work: mpsc::Receiver<()>,
    resize: watch::Receiver<usize>,
}

impl BridgeLink {
    /// Prepares a bridge; `local_workers` is the size of the worker process
    /// embedded in this one (0 for none).
    pub fn new(config: BridgeConfig, local_workers: usize) -> Self {
        let (stops_tx, stops) = mpsc::unbounded_channel();
        let (work_tx, work) = mpsc::channel(1);
        let (resize_tx, resize) = watch::channel(local_workers);
        let hooks = Arc::new(Hooks {
            url: config.url.to_string(),
            status: Mutex::new(Err(format!(
                "not yet connected to the broker at {}",
                config.url
            ))),
            stops: stops_tx,
            work: work_tx,
            local_workers: AtomicUsize::new(local_workers),
            resize: resize_tx,
        });
        Self {
            config,
            hooks,
            stops,
            work,
            resize,
        }
    }

    /// The scheduler's dispatch settings.
    fn dispatch(&self) -> ExternalDispatch {
        ExternalDispatch {
            lease: self.config.lease,
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
            work,
            resize: _,
        } = self;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let traffic = Arc::new(Traffic::default());
        let link = Link {
            scheduler,
            traffic: Arc::clone(&traffic),
            config,
            hooks: Arc::clone(&hooks),
            warned: parking_lot::Mutex::new(HashSet::new()),
            next_placement: AtomicU64::new(u64::try_from(crate::model::now_us()).unwrap_or(1)),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let io = thread::Builder::new()
            .name("taskdeck-broker".into())
            .spawn(move || runtime.block_on(link.run(stops, work, shutdown_rx)))?;
        Ok(Bridge {
            shutdown: shutdown_tx,
            thread: Some(io),
            url: hooks.url.clone(),
            traffic,
        })
    }
}

/// The running bridge.
pub struct Bridge {
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
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

    /// Stops placing and consuming and closes the connection. Reports not
    /// yet applied stay in the broker for the next start.
    pub fn stop(mut self) {
        self.shutdown.send_replace(true);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the broker thread panicked");
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
    /// Messages published: placements, stop and hand-back requests.
    pub published: u64,
    /// Messages consumed: every worker report (heartbeats, results,
    /// hand-backs, goodbyes, lost connections).
    pub consumed: u64,
}

struct Link {
    scheduler: TransportLink,
    traffic: Arc<Traffic>,
    config: BridgeConfig,
    hooks: Arc<Hooks>,
    /// Workers of an older protocol already warned about.
    warned: Mutex<HashSet<String>>,
    /// The next placement's id (from the clock at start, so ids stay unique
    /// across restarts).
    next_placement: AtomicU64,
}

/// One placement round, ready to send: placements (by task and attempt,
/// with their worker) and hand-back requests.
struct Round {
    runs: Vec<((TaskId, u32), String, Control)>,
    reclaims: Vec<(String, Control)>,
    /// The round was as large as allowed: there may be more to place.
    full: bool,
}

/// Placements sent but not yet confirmed by the broker, by task and
/// attempt: sent again on the next connection if this one drops first.
type Unconfirmed = BTreeMap<(TaskId, u32), (String, Control)>;

impl Link {
    async fn run(
        self,
        mut stops: mpsc::UnboundedReceiver<StopRequest>,
        mut work: mpsc::Receiver<()>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut reconnect = Reconnect::default();
        let mut unconfirmed = Unconfirmed::new();
        loop {
            let outcome = self
                .session(
                    &mut stops,
                    &mut work,
                    &mut shutdown,
                    &mut reconnect,
                    &mut unconfirmed,
                )
                .await;
            match outcome {
                Ok(()) => return,
                Err(error) => {
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

    /// One connection's life.
    async fn session(
        &self,
        stops: &mut mpsc::UnboundedReceiver<StopRequest>,
        work: &mut mpsc::Receiver<()>,
        shutdown: &mut watch::Receiver<bool>,
        reconnect: &mut Reconnect,
        unconfirmed: &mut Unconfirmed,
    ) -> Result<(), LinkError> {
        let connection = amqp::connect(&self.config.url, "taskdeck scheduler").await?;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        amqp::declare_shared(&publisher, &self.config.names).await?;
        let names = &self.config.names;
        let consumer_channel = connection.create_channel().await?;
        consumer_channel
            .basic_qos(EVENT_BATCH as u16, BasicQosOptions::default())
            .await?;
        let mut events = consumer_channel
            .basic_consume(
                names.events().into(),
                "taskdeck-scheduler".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        reconnect.reset();
        // Leases were not renewed while the broker was away.
        self.scheduler.renew_all_leases();
        let (confirmed_tx, mut confirmed) = mpsc::unbounded_channel::<Vec<(TaskId, u32)>>();
        let (failures_tx, mut failures) = mpsc::unbounded_channel::<LinkError>();
        let sender = Sender {
            channel: &publisher,
            names,
            confirmed: &confirmed_tx,
            failures: &failures_tx,
            traffic: &self.traffic,
        };
        // What the last connection may have lost goes out again first.
        if !unconfirmed.is_empty() {
            tracing::info!(
                placements = unconfirmed.len(),
                "sending again the placements the broker had not confirmed"
            );
            let again: Vec<((TaskId, u32), String, Control)> = unconfirmed
                .iter()
                .map(|(key, (worker, control))| (*key, worker.clone(), control.clone()))
                .collect();
            sender.send_runs(again).await?;
        }
        self.resend_recovered(&sender).await?;
        *self.hooks.status.lock() = Ok(());
        tracing::info!(broker = %self.config.url, namespace = names.namespace(), "connected to the broker");
        self.place(&sender, unconfirmed).await?;
        let mut lease_check = tokio::time::interval(LEASE_CHECK);
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    let _ = connection.close(200, "taskdeck scheduler stopping".into()).await;
                    return Ok(());
                }
                Some(()) = work.recv() => self.place(&sender, unconfirmed).await?,
                Some(keys) = confirmed.recv() => {
                    for key in keys {
                        unconfirmed.remove(&key);
                    }
                }
                Some(error) = failures.recv() => return Err(error),
                Some(stop) = stops.recv() => {
                    let control = Control::Stop {
                        task: stop.task,
                        attempt: stop.attempt,
                        reason: stop.reason.into(),
                    };
                    sender.send(&stop.worker, &control).await?;
                }
                delivery = events.next() => {
                    let Some(delivery) = delivery else {
                        return Err(LinkError::Connect {
                            url: self.config.url.to_string(),
                            reason: "the broker cancelled the event consumer".into(),
                        });
                    };
                    let mut batch = vec![delivery?];
                    while batch.len() < EVENT_BATCH {
                        match futures_lite::future::poll_once(events.next()).await {
                            Some(Some(next)) => batch.push(next?),
                            _ => break,
                        }
                    }
                    self.apply_events(&sender, batch, unconfirmed).await?;
                }
                _ = lease_check.tick() => {
                    let lost = self.scheduler.expire_leases();
                    if lost > 0 {
                        tracing::warn!(lost, "attempts lost: their workers stopped sending heartbeats");
                    }
                    self.place(&sender, unconfirmed).await?;
                    if !connection.status().connected() {
                        return Err(LinkError::Connect {
                            url: self.config.url.to_string(),
                            reason: "the connection closed".into(),
                        });
                    }
                }
            }
        }
    }

    /// Places what may start and sends it, round after round while rounds
    /// come back full; sends the hand-back requests the rounds decided. The
    /// attempts' running state is committed before they are sent, so a
    /// restarted scheduler knows every attempt a worker may have got.
    async fn place(
        &self,
        sender: &Sender<'_>,
        unconfirmed: &mut Unconfirmed,
    ) -> Result<(), LinkError> {
        loop {
            let round = self.take_placements(unconfirmed);
            if round.runs.is_empty() && round.reclaims.is_empty() {
                return Ok(());
            }
            if !round.runs.is_empty() {
                self.commit()?;
            }
            let full = round.full;
            self.send_round(sender, round).await?;
            if !full {
                return Ok(());
            }
        }
    }

    /// Sends again the attempts recovered at start as running on workers
    /// (the previous scheduler process may have died between committing
    /// and sending them); a worker that has or ran one ignores it.
    async fn resend_recovered(&self, sender: &Sender<'_>) -> Result<(), LinkError> {
        let lease_ms = u64::try_from(self.config.lease.as_millis()).unwrap_or(u64::MAX);
        let runs: Vec<((TaskId, u32), String, Control)> = self
            .scheduler
            .recovered_placements()
            .into_iter()
            .map(|run| {
                let control = Control::Run {
                    task: run.record.id,
                    attempt: run.attempt,
                    placement: self.next_placement.fetch_add(1, Ordering::Relaxed),
                    spec: run.record.spec.clone(),
                    timeout_ms: run.record.spec.timeout_ms,
                    lease_ms,
                    gpu_ids: run.gpu_ids,
                    again: true,
                };
                ((run.record.id, run.attempt), run.worker, control)
            })
            .collect();
        if !runs.is_empty() {
            tracing::info!(
                attempts = runs.len(),
                "sending again the attempts that were running on workers at the last stop"
            );
        }
        sender.send_runs(runs).await
    }

    /// One placement round, ready to send (recorded as unconfirmed).
    fn take_placements(&self, unconfirmed: &mut Unconfirmed) -> Round {
        let lease_ms = u64::try_from(self.config.lease.as_millis()).unwrap_or(u64::MAX);
        let Placed { runs, reclaims, .. } = self.scheduler.place(PLACE_BATCH);
        let full = runs.len() == PLACE_BATCH;
        let runs = runs
            .into_iter()
            .map(|run| {
                let key = (run.record.id, run.attempt);
                let control = Control::Run {
                    task: run.record.id,
                    attempt: run.attempt,
                    placement: self.next_placement.fetch_add(1, Ordering::Relaxed),
                    spec: run.record.spec.clone(),
                    timeout_ms: run.record.spec.timeout_ms,
                    lease_ms,
                    gpu_ids: run.gpu_ids,
                    again: false,
                };
                unconfirmed.insert(key, (run.worker.clone(), control.clone()));
                (key, run.worker, control)
            })
            .collect();
        let reclaims = reclaims
            .into_iter()
            .map(|reclaim| {
                let control = Control::Reclaim {
                    task: reclaim.task,
                    attempt: reclaim.attempt,
                };
                (reclaim.worker, control)
            })
            .collect();
        Round {
            runs,
            reclaims,
            full,
        }
    }

    async fn send_round(&self, sender: &Sender<'_>, round: Round) -> Result<(), LinkError> {
        sender.send_runs(round.runs).await?;
        for (worker, control) in &round.reclaims {
            sender.send(worker, control).await?;
        }
        Ok(())
    }

    /// Commits every change so far to the store.
    fn commit(&self) -> Result<(), LinkError> {
        self.scheduler.flush().map_err(|error| {
            tracing::error!(%error, "cannot commit to the store; nothing is acknowledged or sent");
            LinkError::Connect {
                url: self.config.url.to_string(),
                reason: format!("the store failed: {error}"),
            }
        })
    }

    /// Applies a batch of worker reports and places what their ended
    /// attempts made room for, commits both, answers and sends, and only
    /// then acknowledges the reports: a report is never lost.
    async fn apply_events(
        &self,
        sender: &Sender<'_>,
        batch: Vec<Delivery>,
        unconfirmed: &mut Unconfirmed,
    ) -> Result<(), LinkError> {
        let mut answers: Vec<(String, Control)> = Vec::new();
        self.traffic
            .consumed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for delivery in &batch {
            match decode::<WorkerEvent>(&delivery.data) {
                Ok(events) => {
                    for event in events {
                        self.apply(event, &mut answers);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "dropping a malformed worker report");
                }
            }
        }
        let round = self.take_placements(unconfirmed);
        let full = round.full;
        self.commit()?;
        // Stop requests are not waited for: a worker that misses one still
        // lists the attempt in its next heartbeat and is asked again.
        for (worker, control) in &answers {
            sender.send(worker, control).await?;
        }
        self.send_round(sender, round).await?;
        if let Some(last) = batch.last() {
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
        if full {
            self.place(sender, unconfirmed).await?;
        }
        Ok(())
    }

    fn apply(&self, event: WorkerEvent, answers: &mut Vec<(String, Control)>) {
        let scheduler = &self.scheduler;
        match event {
            WorkerEvent::Heartbeat {
                worker,
                host,
                concurrency,
                prefetch,
                protocol,
                running,
                resources,
                gpus,
                session,
            } => {
                if protocol < PROTOCOL && self.warned.lock().insert(worker.clone()) {
                    tracing::warn!(
                        %worker,
                        protocol,
                        expected = PROTOCOL,
                        "a worker of an older Taskdeck version is connected; nothing is placed on it until it is upgraded"
                    );
                }
                let beat = Heartbeat {
                    worker,
                    host,
                    concurrency,
                    prefetch,
                    takes_placements: protocol >= PROTOCOL,
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

/// Publishes to workers' queues on one connection's channel.
struct Sender<'a> {
    channel: &'a lapin::Channel,
    names: &'a Names,
    confirmed: &'a mpsc::UnboundedSender<Vec<(TaskId, u32)>>,
    failures: &'a mpsc::UnboundedSender<LinkError>,
    traffic: &'a Traffic,
}

impl Sender<'_> {
    /// Sends a request that its sender repeats when it is lost (kept in
    /// memory only, not confirmed).
    async fn send(&self, worker: &str, control: &Control) -> Result<(), LinkError> {
        let queue = self.names.control(worker);
        amqp::publish(self.channel, &queue, control, Keep::Transient).await?;
        self.traffic.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends placements (persistent), those for one worker as one message;
    /// their confirms are awaited beside the loop and reported by key, a
    /// negative one ends the connection.
    async fn send_runs(
        &self,
        runs: Vec<((TaskId, u32), String, Control)>,
    ) -> Result<(), LinkError> {
        if runs.is_empty() {
            return Ok(());
        }
        let mut by_worker: BTreeMap<String, (Vec<(TaskId, u32)>, Vec<Control>)> = BTreeMap::new();
        for (key, worker, control) in runs {
            let (keys, controls) = by_worker.entry(worker).or_default();
            keys.push(key);
            controls.push(control);
        }
        let mut pending = Vec::with_capacity(by_worker.len());
        for (worker, (keys, controls)) in by_worker {
            let queue = self.names.control(&worker);
            let confirm = match controls.as_slice() {
                [one] => amqp::publish(self.channel, &queue, one, Keep::Durable).await?,
                many => amqp::publish(self.channel, &queue, &many, Keep::Durable).await?,
            };
            pending.push((keys, confirm));
        }
        self.traffic
            .published
            .fetch_add(pending.len() as u64, Ordering::Relaxed);
        let confirmed = self.confirmed.clone();
        let failures = self.failures.clone();
        tokio::spawn(async move {
            let mut done = Vec::new();
            for (keys, confirm) in pending {
                match confirm.await {
                    Ok(confirmation) if !confirmation.is_nack() => done.extend(keys),
                    Ok(_) => {
                        let _ = failures.send(LinkError::Nacked);
                        break;
                    }
                    Err(error) => {
                        let _ = failures.send(error.into());
                        break;
                    }
                }
            }
            let _ = confirmed.send(done);
        });
        Ok(())
    }
}
